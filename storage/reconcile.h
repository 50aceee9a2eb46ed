// Reconciliation: recounts jobs by state from the retained log and compares the count with the
// live job records, both read from one ReadView (one durable snapshot), so concurrent writes
// cannot produce a false difference. The server adds the dispatcher's counts (the ledgerq_jobs
// gauge) with CompareWithGauge. Read-only: never writes to the store.
//
// How the log is read:
//  - a job's state is the to_state of its last retained event that names one (PURGED and other
//    events without a to_state leave it as it was);
//  - a RECORD_REMOVED event means retention removed the record on purpose: such a job is
//    counted as removed, in no state, and a live record for it is a difference;
//  - a job whose every event was archived (its last event is before the first retained one)
//    cannot be recounted from the daemon's log: it is counted in the log column by its live
//    state and reported in the notes (verify the archives offline for those); a job whose early
//    events were archived is recounted from its retained events, which carry its latest state.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "storage/job_store.h"

namespace ledgerq::storage {

struct StateTally {
  uint64_t from_log = 0;
  uint64_t live = 0;
  uint64_t gauge = 0;
};

struct RecountReport {
  // (queue, state) -> counts. Every pair any source knows, zeros included.
  std::map<std::pair<std::string, State>, StateTally> counts;
  std::vector<std::string> differences;        // one line each; empty when everything agrees
  std::vector<std::string> difference_queues;  // the queue each difference is about
  std::vector<std::string> notes;
  uint64_t jobs_checked = 0;         // live job records read
  uint64_t events_checked = 0;       // retained events read
  uint64_t first_seq = 0;            // the first retained event (0: the log is empty)
  uint64_t head_seq = 0;             // the view's head
  uint64_t removed = 0;              // jobs the log says retention removed
  uint64_t archived_only = 0;        // live jobs with no retained event
  uint64_t omitted_differences = 0;  // beyond kMaxListedDifferences
  // Per queue: SCHEDULED records whose run_at has passed. The dispatcher counts those as READY
  // (the record changes only when one is leased), so the gauge comparison does too.
  std::map<std::string, uint64_t> scheduled_due;

  bool ok() const { return differences.empty() && omitted_differences == 0; }
};

inline constexpr size_t kMaxListedDifferences = 1000;

// Recounts from the view's log and compares with the view's job records. `now_us` (wall
// clock) decides which SCHEDULED jobs are due.
[[nodiscard]] Result<RecountReport> Recount(const ReadView& view, int64_t now_us);

using StateKey = std::pair<std::string, State>;
using GaugeCounts = std::map<StateKey, uint64_t>;

// The (queue, state) pairs where the dispatcher's counts (what the ledgerq_jobs{queue,state}
// gauge shows) differ from the live records, due SCHEDULED jobs counted as READY, with the
// difference (records minus gauge). `gauge` holds every queue the dispatcher knows; a missing
// pair counts as zero.
std::map<StateKey, int64_t> GaugeMismatches(const GaugeCounts& gauge, const RecountReport& report);

// Adds the gauge column to the counts, and a difference line for every mismatching pair that is
// also in `listed` (all of them when null).
void CompareWithGauge(const GaugeCounts& gauge, RecountReport* report,
                      const std::set<StateKey>* listed = nullptr);

// Keeps only what concerns the queues `visible` accepts (counts, listed differences), for a
// queue-scoped caller. Totals (jobs and events checked) stay whole.
void ScopeRecount(RecountReport* report, const std::function<bool(const std::string&)>& visible);

// "READY" for STATE_READY.
std::string StateShortName(State s);

}  // namespace ledgerq::storage
