// storage/ owns durability: the append-only event log, the materialised job state, payloads,
// idempotency records, the hash chain and recovery of counters. Callers speak jobs and events;
// nothing outside storage/*.cc includes a RocksDB header or sees a RocksDB type.
//
// Invariants this module keeps (DESIGN.md contract 1, 2, 4, 6):
//  - Every transition is one atomic WriteBatch: the job state, its index entries and exactly one
//    appended, hash-chained event.
//  - One committer thread applies queued transitions in order and writes them as one group; a
//    syncer thread fsyncs the WAL for every group written meanwhile (SyncMode::kAlways). A
//    caller's callback runs, and readers see a change, only once its group is durable.
//  - Job ids and event sequences are strictly increasing and never reused across restarts: the
//    counters are persisted in the same batch that uses them, and rolled back if it fails.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "common/sha256.h"
#include "common/status.h"
#include "ledgerq/storage/v1/records.pb.h"

namespace ledgerq::storage {

using JobRecord = ledgerq::storage::v1::JobRecord;
using EventBody = ledgerq::storage::v1::EventBody;
using State = ledgerq::storage::v1::State;
using EventType = ledgerq::storage::v1::EventType;

// One appended event and, for job events, the job as it stood right after it.
struct ObservedEvent {
  EventBody event;
  std::optional<JobRecord> job;
};

// One log event exactly as stored and hashed: hash = SHA-256(prev_hash || body).
struct RawEvent {
  uint64_t seq = 0;
  Digest prev_hash{};
  Digest hash{};
  std::string body;  // the exact hashed EventBody bytes
  EventBody event;   // `body`, decoded
  // In an export only: why body and event are left out ("payload" or "scope"); seq and the
  // hashes are still given, so the chain's links verify across the event.
  std::string withheld;
};

// Reads of one consistent state: every read through the same view sees the store as of the same
// durable group, whatever is written meanwhile (so the log and the job records it shows agree).
class ReadView {
 public:
  ~ReadView();
  ReadView(const ReadView&) = delete;
  ReadView& operator=(const ReadView&) = delete;

  // The chain head this view shows.
  uint64_t head_seq() const;
  // Calls `fn` for every job with id >= from_id, in id order, until it returns false.
  [[nodiscard]] Status ScanJobs(const std::function<bool(const JobRecord&)>& fn,
                                uint64_t from_id = 0) const;
  // Events exactly as stored, in sequence order from `from_seq`, until `fn` returns false. An
  // event whose record or body cannot be decoded is kCorruption naming its sequence.
  [[nodiscard]] Status ScanRawEvents(uint64_t from_seq,
                                     const std::function<bool(const RawEvent&)>& fn) const;

  struct State;
  explicit ReadView(std::unique_ptr<State> state);

 private:
  std::unique_ptr<State> state_;
};

enum class SyncMode {
  kAlways,  // fsync every group before acknowledging (default; contract 1)
  kBatch,   // write the WAL per group, fsync it every `batch_sync_interval`
  kNone,    // leave syncing to the OS; a crash may lose acknowledged work
};

const char* SyncModeName(SyncMode mode);

// How long a finished job keeps what it carries. Zero keeps forever.
struct RetentionPolicy {
  // Payload and result of a SUCCEEDED, DEAD or CANCELLED job are purged this long after it
  // finished; a PURGED event keeps their digests, so the chain still verifies.
  std::chrono::microseconds payloads{0};
  // SUCCEEDED and CANCELLED job records are removed this long after they finished (a
  // RECORD_REMOVED event says so; the job's events stay until the log is archived).
  std::chrono::microseconds records{0};
  // DEAD job records are removed this long after they were dead-lettered.
  std::chrono::microseconds dead{0};

  bool operator==(const RetentionPolicy&) const = default;
};

// What a job that just became DEAD needs besides its death (StoreOptions::dead_letter_marks).
struct DeadLetterMarks {
  bool needs_attention = false;  // a person must look at it (listed until resolved or redriven)
  // Enqueue a compensation job of this queue and type (empty: none). The job is marked
  // compensation_pending in the death's own write; JobStore::Compensate creates it.
  std::string compensate_queue;
  std::string compensate_type;
};

struct StoreOptions {
  std::string data_dir;
  SyncMode sync = SyncMode::kAlways;
  std::chrono::microseconds dedup_window = std::chrono::hours(24);
  std::chrono::milliseconds batch_sync_interval{100};
  Clock* clock = SystemClock::Instance();
  // Optional observers: the number of transitions sharing each group write (committer thread),
  // and the seconds each WAL fsync took (syncer thread).
  std::function<void(size_t ops)> on_group_written;
  std::function<void(double seconds)> on_wal_sync;
  // Optional observer of every event once its group is durable, in log order, on the finisher
  // thread and before the group's callbacks (metrics and lifecycle logs hang off it).
  std::function<void(const std::vector<ObservedEvent>&)> on_durable;
  // RocksDB's own warnings and errors (a failed flush, a full disk, recovery), one line each,
  // from any thread. RocksDB writes no LOG file into the data dir: on a full disk that file
  // could not be written either, and Debian's RocksDB build asserts on it. Null: dropped.
  std::function<void(bool error, std::string_view line)> on_rocksdb_log;
  // Fault seam for tests: consulted before every group write; a non-OK status fails the whole
  // group exactly as a failed RocksDB write would.
  std::function<Status()> write_fault;
  // Retention of finished jobs by queue and job type (null: keep everything forever). Called on
  // the committer thread and by RunRetention, so it must be cheap and thread-safe.
  std::function<RetentionPolicy(const std::string& queue, const std::string& type)> retention;
  // Dead-letter remediation (null: none). Called on the committer thread whenever a transition
  // leaves a job DEAD from another state; what it answers is written in the death's own batch
  // (the record's needs_attention / compensation_pending, the DEAD_LETTERED event's
  // needs_attention, the pending index). Must be cheap and thread-safe.
  std::function<DeadLetterMarks(const JobRecord& job)> dead_letter_marks;
};

// What one RunRetention call did.
struct RetentionStats {
  uint64_t purged_payloads = 0;  // jobs whose payload and result were purged (EVENT_PURGED)
  uint64_t removed_records = 0;  // job records removed (EVENT_RECORD_REMOVED)
  uint64_t expired_keys = 0;     // idempotency keys deleted after their dedup window
  uint64_t batches = 0;          // committer operations it took
  double seconds = 0;            // wall time of the sweep
};

// Where the retained log starts: the last event removed by archiving. seq 0: nothing removed,
// the chain starts from the all-zero hash.
struct Checkpoint {
  uint64_t seq = 0;
  Digest hash{};
  int64_t at_us = 0;
  std::string principal;
};

// A cron schedule's firing, enqueued with its job (NewJob::schedule_firing): in the same write,
// the schedule's last_fire_us and last_job_id are set. A firing at or before the schedule's
// last_fire_us is refused (kAlreadyExists) and a schedule that no longer exists is kNotFound,
// so no firing ever makes two jobs, whatever the idempotency window.
struct ScheduleFiring {
  std::string name;
  int64_t fire_us = 0;
  // The definition the job was made from (its created_at_us): a firing of a definition replaced
  // or removed and added again meanwhile is refused (FAILED_PRECONDITION).
  int64_t defined_at_us = 0;
};

// A job as submitted. The payload digest is computed by Enqueue on the caller's thread.
struct NewJob {
  std::string queue;
  std::string type;
  std::string payload;
  int32_t priority = 0;
  int64_t run_at_us = 0;  // 0: now
  uint32_t max_attempts = 0;
  std::string idempotency_key;
  uint64_t parent_job_id = 0;
  std::map<std::string, std::string> labels;
  std::string traceparent;
  std::string tracestate;
  std::optional<ledgerq::storage::v1::RetryPolicyRecord> retry;  // per-job backoff override
  uint64_t policy_version = 0;                    // the policy version it is admitted under
  std::string concurrency_key;                    // the queue's max_per_key applies per key
  std::optional<ScheduleFiring> schedule_firing;  // set by the schedules component only
  std::string reason;  // the SUBMITTED event's reason (a compensation: which job it compensates)
};

struct EnqueueOutcome {
  Status status;  // OK, or this item's own error (ALREADY_EXISTS for a key conflict)
  JobRecord job;  // the created job, or the original one when deduplicated
  bool deduplicated = false;
};

using EnqueueCallback = std::function<void(std::vector<EnqueueOutcome>)>;
using JobCallback = std::function<void(Result<JobRecord>)>;
using QueueRecord = ledgerq::storage::v1::QueueRecord;
using FailureRecord = ledgerq::storage::v1::FailureRecord;
using ScheduleRecord = ledgerq::storage::v1::ScheduleRecord;
using QueueLimitsRecord = ledgerq::storage::v1::QueueLimitsRecord;
using CircuitRecord = ledgerq::storage::v1::CircuitRecord;

// What a transition function may write besides the job record. Every event gets the next
// sequence, the group's time, the job's id, queue and type, and the op's principal unless it
// names its own. A state change without an event is refused (contract 6).
class TransitionWriter {
 public:
  void Event(EventBody ev) { events_.push_back(std::move(ev)); }
  void PutResult(std::string bytes) { result_ = std::move(bytes); }
  void PutCheckpoint(std::string bytes) { checkpoint_ = std::move(bytes); }
  // Persist the job record even without an event (a lease extension, not a transition).
  void SaveJob() { save_ = true; }

 private:
  friend class TransitionOp;
  std::vector<EventBody> events_;
  std::optional<std::string> result_;
  std::optional<std::string> checkpoint_;
  bool save_ = false;
};

// Decides one job's transition on the committer thread against its authoritative current state.
// Returning an error writes nothing for that job.
using TransitionFn = std::function<Status(JobRecord& job, TransitionWriter& w, int64_t now_us)>;
struct TransitionItem {
  uint64_t id = 0;
  TransitionFn fn;
};
using TransitionCallback = std::function<void(std::vector<Result<JobRecord>>)>;

struct PolicyVersion {
  uint64_t version = 0;  // 0: no policy recorded yet
  bool changed = false;  // this call appended POLICY_CHANGED
};

// The outcome of walking the hash chain from the checkpoint to the head.
struct VerifyReport {
  bool ok = true;
  uint64_t events = 0;  // events checked (those after the checkpoint)
  Digest head{};
  uint64_t head_seq = 0;
  uint64_t checkpoint_seq = 0;  // where the retained chain starts (0: from the beginning)
  Digest checkpoint_hash{};
  uint64_t first_bad_seq = 0;  // when !ok
  std::string problem;         // when !ok
};

// Builds a dead job's compensation job (queue and type as recorded at its death), on the
// committer thread against the dead job's authoritative record: must be cheap and pure.
using CompensationFn =
    std::function<NewJob(const JobRecord& dead, const std::string& queue, const std::string& type)>;
struct CompensationOutcome {
  JobRecord dead;          // the dead job after the call
  JobRecord compensation;  // the job created (when `created`)
  bool created = false;    // false: nothing was pending (compensated already), nothing written
};

struct ChainHeadInfo {
  uint64_t seq = 0;
  Digest hash{};
  uint64_t next_job_id = 1;
};

class JobStore {
 public:
  // Opens (creating if needed) the store under options.data_dir. Fails with kUnavailable when
  // another process holds the directory, kCorruption when the records cannot be read.
  [[nodiscard]] static Result<std::unique_ptr<JobStore>> Open(StoreOptions options);
  ~JobStore();

  JobStore(const JobStore&) = delete;
  JobStore& operator=(const JobStore&) = delete;

  // Enqueues the items in one atomic write. `done` runs on the committer thread once the write
  // is durable (or failed), with one outcome per item in order. Items must be pre-validated.
  void Enqueue(std::vector<NewJob> items, std::string principal, EnqueueCallback done);

  // Cancels a SCHEDULED or READY job; any other state is kFailedPrecondition naming it.
  void Cancel(uint64_t id, std::string principal, std::string reason, JobCallback done);

  // Applies each item's function to its job, all in one atomic write; one result per item.
  void Transition(std::vector<TransitionItem> items, std::string principal,
                  TransitionCallback done);

  // Durably pauses or resumes a queue, with a QUEUE_PAUSED / QUEUE_RESUMED event.
  void SetQueuePaused(std::string queue, bool paused, std::string principal,
                      std::function<void(Status)> done);
  // Durably sets a queue's flow-control limits (they replace the config file's), with a
  // QUEUE_LIMITS_CHANGED event carrying them.
  void SetQueueLimits(std::string queue, QueueLimitsRecord limits, std::string principal,
                      std::function<void(Status)> done);
  // Appends a circuit breaker change (CIRCUIT_OPENED / HALF_OPEN / CLOSED by change.to_state)
  // with its numbers. With `forced`, also stores the operator's setting for the type ("open",
  // "closed", or "" to give it back to the breaker).
  void RecordCircuit(std::string queue, CircuitRecord change, std::optional<std::string> forced,
                     std::string principal, std::function<void(Status)> done);
  // Records the daemon's policy (the canonical text of its queue and job-type declarations) by
  // its SHA-256: when that differs from the stored digest, a POLICY_CHANGED event (new version,
  // digest, the text, `summary` as its reason) is appended. `done` gets the version in force.
  // Call one at a time.
  void RecordPolicy(std::string text, std::string summary, std::string principal,
                    std::function<void(Result<PolicyVersion>)> done);

  // Enqueues the compensation job of a dead job marked compensation_pending, in ONE write with
  // the end of its pending mark, its compensation_job_id and a COMPENSATION_ENQUEUED event
  // (related_job_id) on the dead job: exactly once per death, however often it is called, even
  // concurrently. The compensation's parent is the dead job. Not pending: OK, created=false.
  // kNotFound when the job does not exist; an item error of the new job (an idempotency key
  // conflict) is returned as is and leaves it pending.
  void Compensate(uint64_t dead_id, CompensationFn make, std::string principal,
                  std::function<void(Result<CompensationOutcome>)> done);
  // Dead jobs whose compensation is not enqueued yet (a small index written with the death),
  // with id > after_id, ascending, at most `limit`.
  [[nodiscard]] Result<std::vector<uint64_t>> PendingCompensations(uint64_t after_id = 0,
                                                                   size_t limit = 1000) const;
  // Jobs enqueued with `parent` as their parent_job_id, ascending, at most `limit` (an index
  // written with each child's creation).
  [[nodiscard]] Result<std::vector<uint64_t>> ListChildren(uint64_t parent,
                                                           size_t limit = 1000) const;
  // Dead jobs that need attention, with id > after_id, ascending, at most `limit`; only those
  // of `queue` unless it is empty.
  [[nodiscard]] Result<std::vector<uint64_t>> ListNeedsAttention(const std::string& queue,
                                                                 uint64_t after_id,
                                                                 size_t limit) const;
  // How many dead jobs need attention, by queue.
  [[nodiscard]] Result<std::map<std::string, uint64_t>> CountNeedsAttention() const;

  [[nodiscard]] Status ScanQueues(
      const std::function<void(const std::string&, const QueueRecord&)>& fn) const;

  // Cron schedules (the `schedules` family, keyed by name). PutSchedule stores `rec` (its
  // firing state, last_fire_us and last_job_id, is kept from a schedule it replaces; created_at
  // and created_by become now and `principal`) with a SCHEDULE_ADDED event carrying the schedule
  // without its payload, and the payload's digest. An existing name is kAlreadyExists unless
  // `replace`; a "config" schedule is never replaced by an "api" one (kFailedPrecondition); an
  // identical schedule writes nothing. `done` gets the schedule as stored.
  void PutSchedule(ScheduleRecord rec, bool replace, std::string principal,
                   std::function<void(Result<ScheduleRecord>)> done);
  // Removes a schedule with a SCHEDULE_REMOVED event: kNotFound for an unknown name, and
  // kFailedPrecondition when `source` is given and the schedule's differs. `done` gets the
  // removed schedule.
  void RemoveSchedule(std::string name, std::string source, std::string principal,
                      std::function<void(Result<ScheduleRecord>)> done);
  // Schedules in name order, as of the last durable group.
  [[nodiscard]] Status ScanSchedules(const std::function<void(const ScheduleRecord&)>& fn) const;
  [[nodiscard]] Result<ScheduleRecord> GetSchedule(const std::string& name) const;

  [[nodiscard]] Result<JobRecord> GetJob(uint64_t id) const;
  // The job's events in order (its history); kNotFound for an unknown job. Events removed from
  // the log by TruncateLog (archived) are left out: only the retained ones are returned.
  [[nodiscard]] Result<std::vector<EventBody>> GetJobEvents(uint64_t id) const;
  // Every failed attempt (a FAILED or LEASE_EXPIRED event) at or after `since_us`, in time order.
  [[nodiscard]] Status ScanFailures(
      int64_t since_us, const std::function<void(int64_t at_us, const FailureRecord&)>& fn) const;
  // Jobs submitted with this W3C trace id (32 lowercase hex), ascending, at most `limit`.
  [[nodiscard]] Result<std::vector<uint64_t>> JobsByTraceId(const std::string& trace_id,
                                                            size_t limit = 100) const;
  [[nodiscard]] Result<std::string> GetPayload(uint64_t id) const;
  [[nodiscard]] Result<std::string> GetResult(uint64_t id) const;
  // kNotFound when no attempt has stored a checkpoint.
  [[nodiscard]] Result<std::string> GetCheckpoint(uint64_t id) const;
  // The job a live (unexpired) idempotency key names, or kNotFound.
  [[nodiscard]] Result<JobRecord> GetJobByIdempotencyKey(const std::string& queue,
                                                         const std::string& key) const;
  // Calls `fn` for every job with id >= from_id, in id order, until it returns false.
  [[nodiscard]] Status ScanJobs(const std::function<bool(const JobRecord&)>& fn,
                                uint64_t from_id = 0) const;
  // Events in sequence order, from `from_seq`, until `fn` returns false.
  [[nodiscard]] Status ScanEvents(uint64_t from_seq,
                                  const std::function<bool(const EventBody&)>& fn) const;
  // The same, exactly as stored and hashed (audit export), on one snapshot.
  [[nodiscard]] Status ScanRawEvents(uint64_t from_seq,
                                     const std::function<bool(const RawEvent&)>& fn) const;
  // A consistent view of the last durable state, for reads that must agree with each other.
  std::unique_ptr<ReadView> View() const;

  // The head of the chain as of the last durable group.
  ChainHeadInfo Head() const;

  // Retention (StoreOptions::retention): purges payloads and results of finished jobs, removes
  // job records, and deletes idempotency keys past the dedup window, whose time (by
  // opts.clock) has come. Each change is an ordinary transition through the committer, in
  // batches of at most `batch` jobs, so leases and enqueues interleave with a long sweep.
  // Candidates come from a small index written with each finishing transition, never a scan.
  // Blocks until done; call from one thread at a time (the daemon's housekeeping thread).
  [[nodiscard]] Result<RetentionStats> RunRetention(size_t batch = 256);
  // Indexes finished jobs and idempotency keys the retention index does not know yet: stores
  // written before it existed, and jobs that finished while their policy kept them forever.
  // Scans every job; run once at start, off the hot path. Returns how many it indexed.
  [[nodiscard]] Result<uint64_t> RebuildRetentionIndex();

  // Archiving: removes the events with seq <= to_seq from the log once the caller holds them
  // (exported), after checking that `to_hash` is event to_seq's stored hash
  // (kFailedPrecondition otherwise; kInvalidArgument when to_seq is beyond the durable head or
  // not after the current checkpoint; either changes nothing). The new checkpoint (to_seq,
  // to_hash) is stored in the same write, with an EVENT_LOG_ARCHIVED event.
  void TruncateLog(uint64_t to_seq, Digest to_hash, std::string principal,
                   std::function<void(Result<Checkpoint>)> done);
  // The checkpoint as of the last durable group.
  Checkpoint GetCheckpoint() const;
  // Walks the retained chain from the checkpoint on one consistent snapshot of the running
  // store (the online twin of VerifyChain; both share the walking code).
  [[nodiscard]] Result<VerifyReport> VerifyLog() const;
  // Makes RocksDB give back the space of log ranges removed by TruncateLog (a compaction of the
  // removed key range); a no-op when nothing was removed since the last call.
  [[nodiscard]] Status CompactArchived();
  // OK, or why writes are refused now. Two kinds:
  //  - a failed fsync (UNAVAILABLE): permanent; nothing more is acknowledged, restart to recover;
  //  - a failed write or RocksDB background error, e.g. disk full (RESOURCE_EXHAUSTED): writes
  //    are refused until RocksDB recovers on its own (it polls free space) or a write succeeds.
  // Reads keep working in both.
  Status Health() const;

  struct DiskStats {
    uint64_t live_sst_bytes = 0;
    uint64_t pending_compaction_bytes = 0;
  };
  DiskStats Disk() const;

  // Stops accepting work, commits what is queued, syncs the WAL and closes the database.
  // Idempotent; the destructor calls it.
  [[nodiscard]] Status Close();

  class Impl;

 private:
  explicit JobStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Fingerprint of a submission for idempotency: SHA-256(type '\0' SHA-256(payload)).
Digest Fingerprint(std::string_view type, const Digest& payload_sha256);

// Walks the hash chain of the store under `data_dir`, opened read-only, from its checkpoint:
// the first retained event must chain onto the checkpoint's hash.
[[nodiscard]] Result<VerifyReport> VerifyChain(const std::string& data_dir);

}  // namespace ledgerq::storage
