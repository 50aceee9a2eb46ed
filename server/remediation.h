// server/remediation: what happens after a job dies, by its type's `on-dead-letter` policy
// (server/policy.h): a compensation job, enqueued exactly once per death, and/or a mark that a
// person must look at the job (`ledgerq dlq list --needs-attention`, cleared by `dlq resolve` or
// a redrive).
//
// Exactly once, even across a crash at any point: storage marks the dead job
// compensation_pending in the very write that kills it (StoreOptions::dead_letter_marks, answered
// by DeadLetterMarksFor), and one storage op (JobStore::Compensate) creates the compensation job
// and ends the mark together. This component only drives that op: woken when a live job dies
// (DispatcherOptions::on_dead), and at start for every mark a crash left behind (the store's
// pending index, never a scan of all jobs). Any number of passes may race: the op decides on the
// committer, so one creates the job and the others find nothing pending.
//
// It never changes a job itself; every change goes through the store's committer.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "common/status.h"
#include "metrics/metrics.h"
#include "server/policy.h"
#include "storage/job_store.h"

namespace ledgerq::server {

// The principal of compensation jobs and of COMPENSATION_ENQUEUED events.
inline constexpr char kRemediationPrincipal[] = "ledgerqd";

// What a job dying now gets from its type's on-dead-letter policy (nothing without one).
storage::DeadLetterMarks DeadLetterMarksFor(const Policies& p, const storage::JobRecord& job);

// The compensation job of a dead job, to be enqueued in `queue` as `type`: its parent is the dead
// job, its payload the JSON object
//   {"dead_job_id", "queue", "type", "dead_reason", "attempts",
//    "last_error": {"code", "message", "kind", "attempt"}}   (last_error null without errors)
// (never the dead job's payload), its idempotency key "compensate:<id>:<attempts>" (so a redriven
// job that dies again gets a new one), the dead job's trace, max_attempts from `p` for
// (queue, type), and `policy_version`.
storage::NewJob CompensationJob(const storage::JobRecord& dead, const std::string& queue,
                                const std::string& type, const Policies& p,
                                uint64_t policy_version);

// Resolves a dead job that needs attention: clears the mark with an ATTENTION_CLEARED event
// (the caller's principal, `note` as its reason). Any other job is FAILED_PRECONDITION naming
// why.
storage::TransitionFn ResolveAttentionFn(std::string note);

class Remediation {
 public:
  // `created` is told about every compensation job created (the dispatcher indexes it);
  // `metrics` may be null (tests). `policies` must outlive this.
  Remediation(storage::JobStore* store, const LivePolicies* policies,
              std::function<void(const storage::JobRecord&)> created,
              metrics::Metrics* metrics = nullptr);
  ~Remediation();
  Remediation(const Remediation&) = delete;
  Remediation& operator=(const Remediation&) = delete;

  // Starts the thread. Its first pass enqueues every compensation a crash left pending; then it
  // waits for OnDead, retrying failed passes every `retry` and refreshing the gauges.
  void Start(std::chrono::milliseconds retry = std::chrono::seconds(5));
  // Stops after the current compensation; idempotent.
  void Stop();

  // A live job died (any thread; never blocks): its pending compensation is enqueued soon.
  void OnDead(const storage::JobRecord& job);

  // One pass on the caller's thread: compensates every pending death. Returns how many
  // compensation jobs it created. A job whose compensation cannot be created (an idempotency
  // key conflict) is logged, left pending and skipped by later passes of this instance; a
  // failure of the store (writes refused) ends the pass with its error.
  [[nodiscard]] Result<uint64_t> RunPending();
  // Compensates one dead job now, waiting for the write.
  [[nodiscard]] Result<storage::CompensationOutcome> CompensateOne(uint64_t dead_id);

  // Sets the gauge of dead jobs needing attention by queue from the store's index.
  void RefreshGauges();

 private:
  void Loop(std::chrono::milliseconds retry);

  storage::JobStore* store_;
  const LivePolicies* policies_;
  std::function<void(const storage::JobRecord&)> created_;
  prometheus::Family<prometheus::Gauge>* attention_ = nullptr;
  prometheus::Family<prometheus::Counter>* compensations_ = nullptr;

  std::mutex mu_;
  std::condition_variable cv_;
  bool wake_ = false;                   // guarded by mu_
  bool stop_ = false;                   // guarded by mu_
  std::set<uint64_t> refused_;          // guarded by mu_: left pending, not retried by this run
  std::set<std::string> gauge_queues_;  // guarded by mu_: queues with a gauge series
  std::thread thread_;
};

}  // namespace ledgerq::server
