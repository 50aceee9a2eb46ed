// server/housekeeping: the daemon's background upkeep of its store, on one thread of its own so
// a long sweep never holds the Asio loop or a gRPC thread:
//  - retention sweeps (storage::JobStore::RunRetention: payload purges, record removals,
//    idempotency key expiry), with their counts and duration in metrics;
//  - automatic log archiving: events older than `archive_after` are exported to
//    `<archive_dir>/audit-<from>-<to>.jsonl` (storage/audit_export.h, the format `ledgerq audit
//    export` writes), the file and its directory fsynced, and only then truncated from the log.
// It changes nothing itself: every change goes through the store's committer.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "common/clock.h"
#include "common/status.h"
#include "metrics/metrics.h"
#include "storage/job_store.h"

namespace ledgerq::server {

struct HousekeepingOptions {
  std::chrono::milliseconds interval{std::chrono::seconds(30)};  // between rounds
  size_t batch = 256;       // jobs per retention op: leases wait at most for one such op
  std::string archive_dir;  // empty: no automatic archiving
  std::chrono::microseconds archive_after{0};  // zero: no automatic archiving
  uint64_t max_archive_events = 1'000'000;     // per archive file
};

// Exports events checkpoint+1 .. to_seq of `store` durably to
// `<dir>/audit-<from>-<to>.jsonl` and then truncates them from the log (TruncateLog with the
// export's head hash). Returns the new checkpoint. An existing file is never overwritten.
[[nodiscard]] Result<storage::Checkpoint> ArchiveRange(storage::JobStore& store,
                                                       const std::string& dir, uint64_t to_seq,
                                                       const std::string& principal);

class Housekeeper {
 public:
  // `metrics` may be null (tests).
  Housekeeper(storage::JobStore* store, metrics::Metrics* metrics, Clock* clock,
              HousekeepingOptions opts);
  ~Housekeeper();
  Housekeeper(const Housekeeper&) = delete;
  Housekeeper& operator=(const Housekeeper&) = delete;

  // Starts the thread: indexes what the retention index lacks, then a round every interval.
  void Start();
  // Stops after the current step (a sweep batch or an archive); idempotent.
  void Stop();

  // One round: a retention sweep, then archiving when enabled and due. Errors are returned
  // (the thread logs them and tries again next round).
  [[nodiscard]] Status RunOnce();
  // Archives the events older than archive_after (at most max_archive_events); 0 when none.
  [[nodiscard]] Result<uint64_t> ArchiveDue();

 private:
  void Loop();

  storage::JobStore* store_;
  metrics::Metrics* metrics_;
  Clock* clock_;
  HousekeepingOptions opts_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
};

}  // namespace ledgerq::server
