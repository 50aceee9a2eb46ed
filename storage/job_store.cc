#include "storage/job_store.h"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <future>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "storage/codec.h"

namespace ledgerq::storage {
namespace {

using v1::ChainHead;
using v1::IdempotencyRecord;

// The column families, declared once and bound by name after open (never by position).
enum class Cf {
  kSchedules,
  kLog,
  kJobs,
  kPayloads,
  kIdempotency,
  kMeta,
  kQueues,
  kByTrace,
  kFailures,
  kRetention,
  kChildren,
  kRemediation
};
struct CfSpec {
  Cf id;
  const char* name;
  bool point_lookups;  // gets a bloom filter
};
constexpr CfSpec kColumnFamilies[] = {
    // Cron schedules by name -> ScheduleRecord (with its firing state).
    {Cf::kSchedules, "schedules", true},
    {Cf::kLog, "log", false},
    {Cf::kJobs, "jobs", true},
    {Cf::kPayloads, "payloads", true},
    {Cf::kIdempotency, "idempotency", true},
    {Cf::kMeta, "meta", false},
    {Cf::kQueues, "queues", false},
    // Index: W3C trace id (32 hex) ++ job id -> "", for lookups by trace.
    {Cf::kByTrace, "by_trace", false},
    // Index: time ++ sequence -> FailureRecord, one per failed attempt.
    {Cf::kFailures, "failures", false},
    // Index of retention work, so a sweep never scans every job (see "Retention" below):
    //   'd' due_us ++ job id -> ""                 a finished job's next retention step
    //   'j' job id -> finished_us ++ due_us        the same job's entry, to find and move it
    //   'k' created_us ++ idempotency key -> ""    when an idempotency record expires
    {Cf::kRetention, "retention", false},
    // Index: parent job id ++ child job id -> "", written with the child's creation.
    {Cf::kChildren, "children", false},
    // Dead-letter remediation, written in the same batch as the flags on the job record:
    //   'p' job id -> queue '\0' type   compensation_pending: the compensation to enqueue
    //   'a' job id -> queue             needs_attention
    {Cf::kRemediation, "remediation", false},
};
constexpr uint8_t kFailureFormatVersion = 1;
constexpr size_t kNumCfs = std::size(kColumnFamilies);
constexpr char kChainHeadKey[] = "chain_head";
constexpr char kCheckpointKey[] = "checkpoint";
// Present once every finished job and idempotency key is in the retention index.
constexpr char kRetentionIndexedKey[] = "retention_indexed";
constexpr char kPolicyKey[] = "policy";
constexpr uint8_t kQueueFormatVersion = 1;
constexpr uint8_t kScheduleFormatVersion = 1;

// The `payloads` family holds a job's large blobs: the payload under its id, the result and the
// latest checkpoint under the id plus a one-letter suffix.
std::string ResultKey(uint64_t id) { return EncodeU64(id) + "r"; }
std::string CheckpointKey(uint64_t id) { return EncodeU64(id) + "c"; }
std::string ChildKey(uint64_t parent, uint64_t child) {
  return EncodeU64(parent) + EncodeU64(child);
}
std::string PendingKey(uint64_t id) { return "p" + EncodeU64(id); }
std::string AttentionKey(uint64_t id) { return "a" + EncodeU64(id); }

std::string DbPath(const std::string& data_dir) {
  return (std::filesystem::path(data_dir) / "db").string();
}

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNoSpace()) return Status::ResourceExhausted("disk full: " + msg);
  if (s.IsCorruption()) return Status::Corruption(msg);
  if (s.IsIOError() || s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) {
    return Status::Unavailable(msg);
  }
  return Status::Internal(msg);
}

rocksdb::ColumnFamilyOptions CfOptions(const CfSpec& spec,
                                       const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions o;
  rocksdb::BlockBasedTableOptions t;
  t.block_cache = cache;
  if (spec.point_lookups) {
    t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10, false));
    // Most idempotency lookups miss; a memtable bloom answers those without a skiplist walk.
    o.memtable_whole_key_filtering = true;
    o.memtable_prefix_bloom_size_ratio = 0.05;
  }
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
  return o;
}

std::string StateName(State s);

bool Expired(const IdempotencyRecord& rec, int64_t now_us, std::chrono::microseconds window) {
  return now_us - rec.created_at_us() >= window.count();
}

// ---- Retention index keys (the `retention` family) ----
bool IsFinished(State s) {
  return s == v1::STATE_SUCCEEDED || s == v1::STATE_DEAD || s == v1::STATE_CANCELLED;
}
uint64_t TimeKey(int64_t us) { return static_cast<uint64_t>(std::max<int64_t>(0, us)); }
int64_t SatAdd(int64_t a, int64_t b) { return b > 0 && a > INT64_MAX - b ? INT64_MAX : a + b; }
std::string DueKey(int64_t due_us, uint64_t id) {
  return "d" + EncodeU64(TimeKey(due_us)) + EncodeU64(id);
}
std::string RetentionJobKey(uint64_t id) { return "j" + EncodeU64(id); }
std::string KeyExpiryKey(int64_t created_us, std::string_view idem_key) {
  std::string k = "k" + EncodeU64(TimeKey(created_us));
  k.append(idem_key);
  return k;
}
struct RetentionEntry {
  int64_t finished_us = 0;
  int64_t due_us = 0;
};
std::string EncodeRetentionEntry(const RetentionEntry& e) {
  return EncodeU64(TimeKey(e.finished_us)) + EncodeU64(TimeKey(e.due_us));
}
std::optional<RetentionEntry> DecodeRetentionEntry(std::string_view v) {
  if (v.size() != 16) return std::nullopt;
  auto f = DecodeU64(v.substr(0, 8));
  auto d = DecodeU64(v.substr(8));
  if (!f.ok() || !d.ok()) return std::nullopt;
  return RetentionEntry{static_cast<int64_t>(*f), static_cast<int64_t>(*d)};
}

// How long a sweep waits before looking again at a dead job whose compensation is still owed.
constexpr std::chrono::microseconds kOwedRecheck = std::chrono::hours(1);

// When a finished job's record may go: `records` (or `dead`) after it finished, but never while
// its idempotency key still names it (contract 2: a resubmission within the window must find
// the original). 0: kept forever.
int64_t RemovalTime(const JobRecord& job, int64_t finished_us, const RetentionPolicy& p,
                    std::chrono::microseconds dedup_window) {
  const auto keep = job.state() == v1::STATE_DEAD ? p.dead : p.records;
  if (keep.count() <= 0) return 0;
  int64_t t = SatAdd(finished_us, keep.count());
  if (!job.idempotency_key().empty()) {
    t = std::max(t, SatAdd(job.created_at_us(), dedup_window.count()));
  }
  return t;
}

// The time of a finished job's next retention step, or 0 when nothing is left to do.
int64_t NextRetentionDue(const JobRecord& job, int64_t finished_us, const RetentionPolicy& p,
                         std::chrono::microseconds dedup_window) {
  int64_t due = RemovalTime(job, finished_us, p, dedup_window);
  if (p.payloads.count() > 0 && !job.payload_purged()) {
    int64_t purge = SatAdd(finished_us, p.payloads.count());
    if (due == 0 || purge < due) due = purge;
  }
  return due;
}

}  // namespace

const char* SyncModeName(SyncMode mode) {
  switch (mode) {
    case SyncMode::kAlways:
      return "always";
    case SyncMode::kBatch:
      return "batch";
    case SyncMode::kNone:
      return "none";
  }
  return "?";
}

Digest Fingerprint(std::string_view type, const Digest& payload_sha256) {
  std::string buf;
  buf.reserve(type.size() + 1);
  buf.append(type);
  buf.push_back('\0');
  return Sha256Pair(buf, AsBytes(payload_sha256));
}

// An appended event as the committer saw it, kept as bytes until the finisher decodes it.
struct RawObserved {
  uint64_t job_id = 0;
  std::string event_bytes;
  std::string job_bytes;  // the encoded job record after the event, if the event changed one
};

// ---------------------------------------------------------------------------------------------
// Txn: what one committer group sees and writes. Reads see the group's own earlier writes
// (the overlay) before the database, so transitions later in a group build on earlier ones.

class Txn {
 public:
  Txn(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* const* cfs, ChainHeadInfo* head, int64_t now_us,
      std::vector<RawObserved>* observed)
      : db_(db), cfs_(cfs), head_(head), now_us_(now_us), observed_(observed) {}

  int64_t now_us() const { return now_us_; }
  rocksdb::WriteBatch& batch() { return batch_; }
  bool empty() const { return batch_.Count() == 0; }

  Result<JobRecord> ReadJob(uint64_t id) {
    if (auto it = jobs_.find(id); it != jobs_.end()) return it->second;
    if (removed_jobs_.count(id)) {
      return Status::NotFound("job " + std::to_string(id) + " not found");
    }
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf(Cf::kJobs), EncodeU64(id), &value);
    if (s.IsNotFound()) return Status::NotFound("job " + std::to_string(id) + " not found");
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read job"));
    JobRecord rec;
    LEDGERQ_RETURN_IF_ERROR(DecodeRecord(value, kJobFormatVersion, &rec, "job"));
    return rec;
  }

  void WriteJob(const JobRecord& rec) {
    std::string value = EncodeRecord(kJobFormatVersion, rec);
    if (observed_) {
      // The job as it stands after the events just appended for it. Bytes only: the observer
      // decodes them on the finisher thread, off the committer.
      for (auto it = observed_->rbegin(); it != observed_->rend(); ++it) {
        if (it->job_id != rec.id() || !it->job_bytes.empty()) break;
        it->job_bytes = value;
      }
    }
    batch_.Put(cf(Cf::kJobs), EncodeU64(rec.id()), value);
    jobs_[rec.id()] = rec;
  }

  void IndexTrace(std::string_view trace_id, uint64_t job_id) {
    std::string key(trace_id);
    key += EncodeU64(job_id);
    batch_.Put(cf(Cf::kByTrace), key, "");
  }

  // Removes a job record with everything keyed by its id (payload, result, checkpoint) and its
  // trace index entry. Its events stay in the log.
  void DeleteJob(const JobRecord& rec) {
    const uint64_t id = rec.id();
    batch_.Delete(cf(Cf::kJobs), EncodeU64(id));
    batch_.Delete(cf(Cf::kPayloads), EncodeU64(id));
    batch_.Delete(cf(Cf::kPayloads), ResultKey(id));
    batch_.Delete(cf(Cf::kPayloads), CheckpointKey(id));
    if (rec.traceparent().size() >= 35) {
      batch_.Delete(cf(Cf::kByTrace), rec.traceparent().substr(3, 32) + EncodeU64(id));
    }
    if (rec.parent_job_id() != 0) {
      batch_.Delete(cf(Cf::kChildren), ChildKey(rec.parent_job_id(), id));
    }
    if (rec.compensation_pending()) DeleteRemediation(PendingKey(id));
    if (rec.needs_attention()) DeleteRemediation(AttentionKey(id));
    jobs_.erase(id);
    removed_jobs_.insert(id);
  }

  void IndexChild(uint64_t parent, uint64_t child) {
    batch_.Put(cf(Cf::kChildren), ChildKey(parent, child), "");
  }

  // The `remediation` family, reading this group's own writes first.
  Result<std::optional<std::string>> ReadRemediation(const std::string& key) {
    return ReadIndex(Cf::kRemediation, remediation_, key, "read remediation index");
  }
  void PutRemediation(const std::string& key, std::string value) {
    PutIndex(Cf::kRemediation, remediation_, key, std::move(value));
  }
  void DeleteRemediation(const std::string& key) {
    DeleteIndex(Cf::kRemediation, remediation_, key);
  }

  void DeletePayloads(uint64_t id) {
    batch_.Delete(cf(Cf::kPayloads), EncodeU64(id));
    batch_.Delete(cf(Cf::kPayloads), ResultKey(id));
    batch_.Delete(cf(Cf::kPayloads), CheckpointKey(id));
  }

  // A blob of the `payloads` family as last durable written (nullopt when absent).
  Result<std::optional<std::string>> ReadBlob(const std::string& key) {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf(Cf::kPayloads), key, &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read blob"));
    auto bytes = DecodePayload(value);
    if (!bytes.ok()) return bytes.status();
    return std::optional(std::move(bytes).value());
  }

  // The stored log value of event `seq` (nullopt when absent or not yet written).
  Result<std::optional<std::string>> ReadLogValue(uint64_t seq) {
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf(Cf::kLog), EncodeU64(seq), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read event"));
    return std::optional(std::move(value));
  }

  // Archiving: removes events 1..to_seq and the failure index entries up to that event's time.
  void DeleteLogUpTo(uint64_t to_seq, int64_t to_time_us) {
    batch_.DeleteRange(cf(Cf::kLog), EncodeU64(0), EncodeU64(to_seq + 1));
    batch_.DeleteRange(cf(Cf::kFailures), EncodeU64(0),
                       EncodeU64(TimeKey(to_time_us)) + EncodeU64(to_seq + 1));
  }

  const ChainHeadInfo& head() const { return *head_; }

  // The `retention` family, reading this group's own writes first.
  Result<std::optional<std::string>> ReadRetention(const std::string& key) {
    return ReadIndex(Cf::kRetention, retention_, key, "read retention index");
  }
  void PutRetention(const std::string& key, std::string value) {
    PutIndex(Cf::kRetention, retention_, key, std::move(value));
  }
  void DeleteRetention(const std::string& key) { DeleteIndex(Cf::kRetention, retention_, key); }
  // Schedules a finished job's next retention step at `due_us` (moving an earlier entry).
  Status IndexFinished(uint64_t id, int64_t finished_us, int64_t due_us) {
    LEDGERQ_RETURN_IF_ERROR(UnindexFinished(id));
    PutRetention(DueKey(due_us, id), "");
    PutRetention(RetentionJobKey(id), EncodeRetentionEntry({finished_us, due_us}));
    return Status::Ok();
  }
  Status UnindexFinished(uint64_t id) {
    auto old = ReadRetention(RetentionJobKey(id));
    if (!old.ok()) return old.status();
    if (!old->has_value()) return Status::Ok();
    if (auto e = DecodeRetentionEntry(**old)) DeleteRetention(DueKey(e->due_us, id));
    DeleteRetention(RetentionJobKey(id));
    return Status::Ok();
  }

  void WritePayload(uint64_t id, std::string_view payload) {
    batch_.Put(cf(Cf::kPayloads), EncodeU64(id), EncodePayload(payload));
  }

  void WriteBlob(const std::string& key, std::string_view bytes) {
    batch_.Put(cf(Cf::kPayloads), key, EncodePayload(bytes));
  }

  Result<QueueRecord> ReadQueue(const std::string& name) {
    if (auto it = queues_.find(name); it != queues_.end()) return it->second;
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf(Cf::kQueues), name, &value);
    QueueRecord rec;
    if (s.IsNotFound()) return rec;
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read queue"));
    LEDGERQ_RETURN_IF_ERROR(DecodeRecord(value, kQueueFormatVersion, &rec, "queue"));
    return rec;
  }

  // A `meta` column family value as of this group (nullopt when absent).
  Result<std::optional<std::string>> ReadMeta(const std::string& key) {
    if (auto it = meta_.find(key); it != meta_.end()) return std::optional(it->second);
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf(Cf::kMeta), key, &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read " + key));
    return std::optional(std::move(value));
  }

  void WriteMeta(const std::string& key, std::string value) {
    batch_.Put(cf(Cf::kMeta), key, value);
    meta_[key] = std::move(value);
  }

  void WriteQueue(const std::string& name, const QueueRecord& rec) {
    batch_.Put(cf(Cf::kQueues), name, EncodeRecord(kQueueFormatVersion, rec));
    queues_[name] = rec;
  }

  // A schedule as of this group (nullopt when absent or removed).
  Result<std::optional<ScheduleRecord>> ReadSchedule(const std::string& name) {
    if (auto it = schedules_.find(name); it != schedules_.end()) return it->second;
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf(Cf::kSchedules), name, &value);
    if (s.IsNotFound()) return std::optional<ScheduleRecord>();
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read schedule"));
    ScheduleRecord rec;
    LEDGERQ_RETURN_IF_ERROR(DecodeRecord(value, kScheduleFormatVersion, &rec, "schedule"));
    return std::optional(std::move(rec));
  }
  void WriteSchedule(const ScheduleRecord& rec) {
    batch_.Put(cf(Cf::kSchedules), rec.name(), EncodeRecord(kScheduleFormatVersion, rec));
    schedules_[rec.name()] = rec;
  }
  void DeleteSchedule(const std::string& name) {
    batch_.Delete(cf(Cf::kSchedules), name);
    schedules_[name] = std::nullopt;
  }

  Result<std::optional<IdempotencyRecord>> ReadIdempotency(const std::string& key) {
    if (auto it = idem_.find(key); it != idem_.end()) return std::optional(it->second);
    if (idem_deleted_.count(key)) return std::optional<IdempotencyRecord>();
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf(Cf::kIdempotency), key, &value);
    if (s.IsNotFound()) return std::optional<IdempotencyRecord>();
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read idempotency key"));
    IdempotencyRecord rec;
    LEDGERQ_RETURN_IF_ERROR(DecodeRecord(value, kIdempotencyFormatVersion, &rec, "idempotency"));
    return std::optional(rec);
  }

  void WriteIdempotency(const std::string& key, const IdempotencyRecord& rec) {
    batch_.Put(cf(Cf::kIdempotency), key, EncodeRecord(kIdempotencyFormatVersion, rec));
    idem_[key] = rec;
    idem_deleted_.erase(key);
    // Expiry index: retention deletes the record once its window has passed.
    PutRetention(KeyExpiryKey(rec.created_at_us(), key), "");
  }

  void DeleteIdempotency(const std::string& key) {
    batch_.Delete(cf(Cf::kIdempotency), key);
    idem_.erase(key);
    idem_deleted_.insert(key);
  }

  uint64_t AllocateJobId() { return head_->next_job_id++; }

  // Assigns the next sequence, chains the event onto the head and adds it to the batch.
  uint64_t AppendEvent(EventBody& body) {
    body.set_seq(head_->seq + 1);
    body.set_time_us(now_us_);
    std::string bytes = body.SerializeAsString();
    Digest hash = ChainHash(head_->hash, bytes);
    batch_.Put(cf(Cf::kLog), EncodeU64(body.seq()), EncodeEvent(head_->hash, hash, bytes));
    head_->seq = body.seq();
    head_->hash = hash;
    if (body.has_error()) {
      v1::FailureRecord f;
      f.set_job_id(body.job_id());
      f.set_queue(body.queue());
      f.set_job_type(body.job_type());
      f.set_code(body.error().code());
      f.set_kind(body.error().kind());
      batch_.Put(cf(Cf::kFailures),
                 EncodeU64(static_cast<uint64_t>(now_us_)) + EncodeU64(body.seq()),
                 EncodeRecord(kFailureFormatVersion, f));
    }
    if (observed_) observed_->push_back({body.job_id(), std::move(bytes), {}});
    return body.seq();
  }

 private:
  rocksdb::ColumnFamilyHandle* cf(Cf id) const { return cfs_[static_cast<size_t>(id)]; }

  rocksdb::DB* db_;
  rocksdb::ColumnFamilyHandle* const* cfs_;
  ChainHeadInfo* head_;
  int64_t now_us_;
  rocksdb::WriteBatch batch_;
  std::unordered_map<uint64_t, JobRecord> jobs_;
  std::unordered_map<std::string, IdempotencyRecord> idem_;
  std::unordered_set<std::string> idem_deleted_;
  std::unordered_set<uint64_t> removed_jobs_;
  // An index family's writes in this group (nullopt: deleted), read before the database.
  using Overlay = std::unordered_map<std::string, std::optional<std::string>>;
  Result<std::optional<std::string>> ReadIndex(Cf family, const Overlay& overlay,
                                               const std::string& key, const char* what) {
    if (auto it = overlay.find(key); it != overlay.end()) return it->second;
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf(family), key, &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, what));
    return std::optional(std::move(value));
  }
  void PutIndex(Cf family, Overlay& overlay, const std::string& key, std::string value) {
    batch_.Put(cf(family), key, value);
    overlay[key] = std::move(value);
  }
  void DeleteIndex(Cf family, Overlay& overlay, const std::string& key) {
    batch_.Delete(cf(family), key);
    overlay[key] = std::nullopt;
  }
  Overlay retention_;
  Overlay remediation_;
  std::unordered_map<std::string, QueueRecord> queues_;
  std::unordered_map<std::string, std::string> meta_;
  std::unordered_map<std::string, std::optional<ScheduleRecord>> schedules_;
  std::vector<RawObserved>* observed_;
};

// One queued transition. Apply runs on the committer thread and decides; Finish runs after the
// group's write with that write's status.
class Op {
 public:
  virtual ~Op() = default;
  virtual void Apply(Txn& txn, const StoreOptions& opts) = 0;
  virtual void Finish(const Status& write_status) = 0;
};

namespace {

// Keeps the retention index in step with a job entering or leaving a finished state (a redrive),
// in the transition's own batch, so a sweep finds exactly the finished jobs with work left.
Status TrackFinished(Txn& txn, const StoreOptions& opts, State before, const JobRecord& job) {
  const bool was = IsFinished(before);
  const bool is = IsFinished(job.state());
  if (was == is) return Status::Ok();
  if (was) return txn.UnindexFinished(job.id());
  if (!opts.retention) return Status::Ok();
  const int64_t due = NextRetentionDue(job, txn.now_us(), opts.retention(job.queue(), job.type()),
                                       opts.dedup_window);
  if (due == 0)
    return Status::Ok();  // kept forever: RebuildRetentionIndex finds it if that changes
  return txn.IndexFinished(job.id(), txn.now_us(), due);
}

class EnqueueOp final : public Op {
 public:
  EnqueueOp(std::vector<NewJob> items, std::string principal, EnqueueCallback done)
      : items_(std::move(items)), principal_(std::move(principal)), done_(std::move(done)) {
    // Hash payloads here, on the caller's thread, not on the committer.
    digests_.reserve(items_.size());
    for (const auto& item : items_) digests_.push_back(Sha256(item.payload));
  }

  void Apply(Txn& txn, const StoreOptions& opts) override {
    outcomes_.resize(items_.size());
    for (size_t i = 0; i < items_.size(); ++i) outcomes_[i] = ApplyFiring(txn, opts, i);
  }

  void Finish(const Status& write_status) override {
    if (!write_status.ok()) {
      // Nothing of the group was written (or it was never applied): every item failed.
      outcomes_.assign(items_.size(), EnqueueOutcome{write_status, {}, false});
    }
    done_(std::move(outcomes_));
  }

 private:
  // A schedule's firing: refused when the schedule is gone or already fired at or after this
  // time; otherwise the job as usual, and the schedule's firing state in the same write.
  EnqueueOutcome ApplyFiring(Txn& txn, const StoreOptions& opts, size_t i) {
    if (!items_[i].schedule_firing) return ApplyOne(txn, opts, i);
    const ScheduleFiring firing = *items_[i].schedule_firing;
    auto sched = txn.ReadSchedule(firing.name);
    if (!sched.ok()) return {sched.status(), {}, false};
    if (!sched->has_value()) {
      return {Status::NotFound("schedule \"" + firing.name + "\" no longer exists"), {}, false};
    }
    ScheduleRecord rec = std::move(**sched);
    if (rec.created_at_us() != firing.defined_at_us) {
      return {Status::FailedPrecondition("schedule \"" + firing.name +
                                         "\" was changed while this firing was being enqueued; "
                                         "its new definition fires from the next tick"),
              {},
              false};
    }
    if (rec.last_fire_us() >= firing.fire_us) {
      return {Status::AlreadyExists("schedule \"" + firing.name +
                                    "\" already enqueued this firing or a later one (job " +
                                    std::to_string(rec.last_job_id()) + ")"),
              {},
              false};
    }
    EnqueueOutcome out = ApplyOne(txn, opts, i);
    if (out.status.ok()) {
      rec.set_last_fire_us(firing.fire_us);
      rec.set_last_job_id(out.job.id());
      txn.WriteSchedule(rec);
    }
    return out;
  }

  EnqueueOutcome ApplyOne(Txn& txn, const StoreOptions& opts, size_t i) {
    NewJob& item = items_[i];
    const Digest& digest = digests_[i];
    const int64_t now = txn.now_us();
    std::string idem_key;
    Digest fp{};
    if (!item.idempotency_key.empty()) {
      idem_key = IdempotencyKey(item.queue, item.idempotency_key);
      fp = Fingerprint(item.type, digest);
      auto existing = txn.ReadIdempotency(idem_key);
      if (!existing.ok()) return {existing.status(), {}, false};
      if (existing->has_value() && !Expired(**existing, now, opts.dedup_window)) {
        const IdempotencyRecord& rec = **existing;
        if (rec.fingerprint() != AsBytes(fp)) {
          return {Status::AlreadyExists("idempotency_key \"" + item.idempotency_key +
                                        "\" in queue \"" + item.queue + "\" already names job " +
                                        std::to_string(rec.job_id()) +
                                        ", submitted with a different type or payload"),
                  {},
                  false};
        }
        auto original = txn.ReadJob(rec.job_id());
        if (!original.ok()) return {original.status(), {}, false};
        EventBody ev;
        ev.set_job_id(rec.job_id());
        ev.set_type(v1::EVENT_DEDUPLICATED);
        ev.set_principal(principal_);
        ev.set_attempt(original->attempts());
        ev.set_queue(item.queue);
        ev.set_job_type(item.type);
        ev.set_payload_sha256(std::string(AsBytes(digest)));
        ev.set_idempotency_key(item.idempotency_key);
        ev.set_traceparent(item.traceparent);
        ev.set_from_state(original->state());
        ev.set_to_state(original->state());
        JobRecord job = std::move(original).value();
        job.set_last_event_seq(txn.AppendEvent(ev));
        job.add_event_seqs(job.last_event_seq());
        txn.WriteJob(job);
        return {Status::Ok(), std::move(job), true};
      }
    }
    if (item.parent_job_id != 0) {
      // Checked here, against the authoritative state (a parent earlier in the same batch
      // counts); a refused item writes nothing.
      auto parent = txn.ReadJob(item.parent_job_id);
      if (!parent.ok()) {
        return {parent.status().code() == Code::kNotFound
                    ? Status::NotFound("parent_job_id: job " + std::to_string(item.parent_job_id) +
                                       " does not exist")
                    : parent.status(),
                {},
                false};
      }
    }

    JobRecord rec;
    rec.set_id(txn.AllocateJobId());
    rec.set_queue(item.queue);
    rec.set_type(item.type);
    rec.set_priority(item.priority);
    int64_t run_at = item.run_at_us > 0 ? item.run_at_us : now;
    rec.set_run_at_us(run_at);
    rec.set_max_attempts(item.max_attempts);
    rec.set_idempotency_key(item.idempotency_key);
    rec.set_parent_job_id(item.parent_job_id);
    for (auto& [k, v] : item.labels) (*rec.mutable_labels())[k] = v;
    rec.set_traceparent(item.traceparent);
    rec.set_tracestate(item.tracestate);
    if (item.retry) *rec.mutable_retry() = *item.retry;
    rec.set_state(run_at > now ? v1::STATE_SCHEDULED : v1::STATE_READY);
    rec.set_created_at_us(now);
    rec.set_updated_at_us(now);
    rec.set_payload_sha256(std::string(AsBytes(digest)));
    rec.set_payload_size(item.payload.size());
    rec.set_submitted_by(principal_);
    rec.set_policy_version(item.policy_version);
    rec.set_concurrency_key(item.concurrency_key);

    EventBody ev;
    ev.set_job_id(rec.id());
    ev.set_type(v1::EVENT_SUBMITTED);
    ev.set_principal(principal_);
    ev.set_queue(rec.queue());
    ev.set_job_type(rec.type());
    ev.set_payload_sha256(rec.payload_sha256());
    ev.set_payload_size(rec.payload_size());
    ev.set_idempotency_key(rec.idempotency_key());
    ev.set_traceparent(rec.traceparent());
    ev.set_priority(rec.priority());
    ev.set_run_at_us(rec.run_at_us());
    ev.set_max_attempts(rec.max_attempts());
    ev.set_parent_job_id(rec.parent_job_id());
    *ev.mutable_labels() = rec.labels();
    ev.set_to_state(rec.state());
    ev.set_policy_version(rec.policy_version());
    ev.set_concurrency_key(rec.concurrency_key());
    ev.set_reason(item.reason);
    rec.set_last_event_seq(txn.AppendEvent(ev));
    rec.add_event_seqs(rec.last_event_seq());

    txn.WriteJob(rec);
    txn.WritePayload(rec.id(), item.payload);
    if (rec.traceparent().size() >= 35) txn.IndexTrace(rec.traceparent().substr(3, 32), rec.id());
    if (rec.parent_job_id() != 0) txn.IndexChild(rec.parent_job_id(), rec.id());
    if (!idem_key.empty()) {
      IdempotencyRecord idem;
      idem.set_job_id(rec.id());
      idem.set_fingerprint(std::string(AsBytes(fp)));
      idem.set_created_at_us(now);
      txn.WriteIdempotency(idem_key, idem);
    }
    return {Status::Ok(), std::move(rec), false};
  }

  std::vector<NewJob> items_;
  std::vector<Digest> digests_;
  std::string principal_;
  EnqueueCallback done_;
  std::vector<EnqueueOutcome> outcomes_;
};

class CancelOp final : public Op {
 public:
  CancelOp(uint64_t id, std::string principal, std::string reason, JobCallback done)
      : id_(id),
        principal_(std::move(principal)),
        reason_(std::move(reason)),
        done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions& opts) override {
    auto job = txn.ReadJob(id_);
    if (!job.ok()) {
      result_ = job.status();
      return;
    }
    JobRecord rec = std::move(job).value();
    const State before = rec.state();
    if (rec.state() != v1::STATE_SCHEDULED && rec.state() != v1::STATE_READY) {
      result_ = Status::FailedPrecondition("job " + std::to_string(id_) + " is " +
                                           StateName(rec.state()) +
                                           "; only SCHEDULED or READY jobs can be cancelled");
      return;
    }
    EventBody ev;
    ev.set_job_id(id_);
    ev.set_type(v1::EVENT_CANCELLED);
    ev.set_principal(principal_);
    ev.set_attempt(rec.attempts());
    ev.set_queue(rec.queue());
    ev.set_job_type(rec.type());
    ev.set_from_state(rec.state());
    ev.set_to_state(v1::STATE_CANCELLED);
    ev.set_reason(reason_);
    rec.set_state(v1::STATE_CANCELLED);
    rec.set_cancel_reason(reason_);
    rec.set_updated_at_us(txn.now_us());
    if (Status st = TrackFinished(txn, opts, before, rec); !st.ok()) {
      result_ = st;
      return;
    }
    rec.set_last_event_seq(txn.AppendEvent(ev));
    rec.add_event_seqs(rec.last_event_seq());
    txn.WriteJob(rec);
    result_ = std::move(rec);
  }

  void Finish(const Status& write_status) override {
    if (!write_status.ok() && result_.ok()) result_ = write_status;
    done_(std::move(result_));
  }

 private:
  uint64_t id_;
  std::string principal_;
  std::string reason_;
  JobCallback done_;
  Result<JobRecord> result_ = Status::Internal("cancel not applied");
};

std::string StateName(State s) {
  std::string name = v1::State_Name(s);
  return name.rfind("STATE_", 0) == 0 ? name.substr(6) : name;
}

// Changes a queue's durable record with one event about it (pause, limits, circuit changes).
// `change` fills the event and edits the record; returning false records nothing.
class QueueChangeOp final : public Op {
 public:
  using Change = std::function<bool(QueueRecord& rec, EventBody& ev)>;
  QueueChangeOp(std::string queue, Change change, std::string principal,
                std::function<void(Status)> done)
      : queue_(std::move(queue)),
        change_(std::move(change)),
        principal_(std::move(principal)),
        done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions&) override {
    auto rec = txn.ReadQueue(queue_);
    if (!rec.ok()) {
      result_ = rec.status();
      return;
    }
    EventBody ev;
    if (!change_(*rec, ev)) return;
    rec->set_updated_at_us(txn.now_us());
    rec->set_updated_by(principal_);
    ev.set_principal(principal_);
    ev.set_queue(queue_);
    txn.AppendEvent(ev);
    txn.WriteQueue(queue_, *rec);
  }

  void Finish(const Status& write_status) override { done_(result_.ok() ? write_status : result_); }

 private:
  std::string queue_;
  Change change_;
  std::string principal_;
  std::function<void(Status)> done_;
  Status result_;
};

// The schedule as events carry it: without its payload (the event has the payload's digest).
EventBody ScheduleEvent(EventType type, const ScheduleRecord& rec, const std::string& principal) {
  EventBody ev;
  ev.set_type(type);
  ev.set_principal(principal);
  ev.set_queue(rec.queue());
  ev.set_job_type(rec.type());
  ev.set_payload_sha256(std::string(AsBytes(Sha256(rec.payload()))));
  ev.set_payload_size(rec.payload().size());
  *ev.mutable_schedule() = rec;
  ev.mutable_schedule()->clear_payload();
  return ev;
}

// What a schedule declares (not who made it when, nor its firing state).
bool SameSchedule(const ScheduleRecord& a, const ScheduleRecord& b) {
  if (a.labels_size() != b.labels_size()) return false;
  for (const auto& [k, v] : a.labels()) {
    auto it = b.labels().find(k);
    if (it == b.labels().end() || it->second != v) return false;
  }
  return a.name() == b.name() && a.cron() == b.cron() && a.queue() == b.queue() &&
         a.type() == b.type() && a.payload() == b.payload() && a.priority() == b.priority() &&
         a.max_attempts() == b.max_attempts() && a.missed() == b.missed() &&
         a.source() == b.source();
}

// Adds, replaces or removes one schedule, with its SCHEDULE_ADDED / SCHEDULE_REMOVED event.
class ScheduleOp final : public Op {
 public:
  // `put`: store `rec`; otherwise remove the schedule named rec.name() (when `source` is not
  // empty, only one of that source).
  ScheduleOp(bool put, ScheduleRecord rec, bool replace, std::string source, std::string principal,
             std::function<void(Result<ScheduleRecord>)> done)
      : put_(put),
        rec_(std::move(rec)),
        replace_(replace),
        source_(std::move(source)),
        principal_(std::move(principal)),
        done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions&) override {
    const std::string name = rec_.name();
    auto stored = txn.ReadSchedule(name);
    if (!stored.ok()) {
      result_ = stored.status();
      return;
    }
    if (!put_) {
      if (!stored->has_value()) {
        result_ = Status::NotFound("schedule \"" + name + "\" not found");
        return;
      }
      if (!source_.empty() && (*stored)->source() != source_) {
        result_ = Status::FailedPrecondition(
            "schedule \"" + name + "\" comes from the " + (*stored)->source() +
            (((*stored)->source() == "config") ? " file; remove it there" : ""));
        return;
      }
      EventBody ev = ScheduleEvent(v1::EVENT_SCHEDULE_REMOVED, **stored, principal_);
      txn.AppendEvent(ev);
      txn.DeleteSchedule(name);
      result_ = **stored;
      return;
    }
    if (stored->has_value()) {
      const ScheduleRecord& old = **stored;
      if (old.source() == "config" && rec_.source() != "config") {
        result_ = Status::FailedPrecondition("schedule \"" + name +
                                             "\" is declared in the config file; change it there");
        return;
      }
      if (SameSchedule(old, rec_)) {
        result_ = old;  // nothing changed: no event
        return;
      }
      if (!replace_) {
        result_ = Status::AlreadyExists("schedule \"" + name +
                                        "\" already exists; replace it to change it");
        return;
      }
      rec_.set_last_fire_us(old.last_fire_us());
      rec_.set_last_job_id(old.last_job_id());
    } else {
      rec_.set_last_fire_us(0);
      rec_.set_last_job_id(0);
    }
    rec_.set_created_by(principal_);
    rec_.set_created_at_us(txn.now_us());
    EventBody ev = ScheduleEvent(v1::EVENT_SCHEDULE_ADDED, rec_, principal_);
    ev.set_reason(stored->has_value() ? "replaced" : "added");
    txn.AppendEvent(ev);
    txn.WriteSchedule(rec_);
    result_ = rec_;
  }

  void Finish(const Status& write_status) override {
    if (result_.ok() && !write_status.ok()) result_ = write_status;
    done_(std::move(result_));
  }

 private:
  bool put_;
  ScheduleRecord rec_;
  bool replace_;
  std::string source_;
  std::string principal_;
  std::function<void(Result<ScheduleRecord>)> done_;
  Result<ScheduleRecord> result_ = Status::Internal("schedule change not applied");
};

// Records the policy in force: a POLICY_CHANGED event and a new version when its digest differs
// from the stored one, nothing otherwise.
class PolicyOp final : public Op {
 public:
  PolicyOp(std::string text, std::string summary, std::string principal,
           std::function<void(Result<PolicyVersion>)> done)
      : text_(std::move(text)),
        digest_(Sha256(text_)),
        summary_(std::move(summary)),
        principal_(std::move(principal)),
        done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions&) override {
    auto stored = txn.ReadMeta(kPolicyKey);
    if (!stored.ok()) {
      result_ = stored.status();
      return;
    }
    v1::PolicyState state;
    if (stored->has_value()) {
      Status st = DecodeRecord(**stored, kMetaFormatVersion, &state, "policy state");
      if (!st.ok()) {
        result_ = st;
        return;
      }
    }
    out_.version = state.version();
    out_.changed = state.digest() != AsBytes(digest_);
    if (!out_.changed) return;
    state.set_version(state.version() + 1);
    state.set_digest(std::string(AsBytes(digest_)));
    state.set_at_us(txn.now_us());
    EventBody ev;
    ev.set_type(v1::EVENT_POLICY_CHANGED);
    ev.set_principal(principal_);
    ev.set_policy_version(state.version());
    ev.set_policy_digest(state.digest());
    ev.set_policy_text(text_);
    ev.set_reason(summary_);
    txn.AppendEvent(ev);
    txn.WriteMeta(kPolicyKey, EncodeRecord(kMetaFormatVersion, state));
    out_.version = state.version();
  }

  void Finish(const Status& write_status) override {
    if (!result_.ok()) {
      done_(result_);
    } else if (!write_status.ok()) {
      done_(write_status);
    } else {
      done_(out_);
    }
  }

 private:
  std::string text_;
  Digest digest_;
  std::string summary_;
  std::string principal_;
  std::function<void(Result<PolicyVersion>)> done_;
  Status result_;
  PolicyVersion out_;
};

// ---------------------------------------------------------------------------------------------
// Retention and archiving. Every change is an op through the committer like any transition,
// each job's change its own hash-chained event; a sweep submits small batches one after the
// other, so leases and enqueues interleave with it.

constexpr char kRetentionPrincipal[] = "ledgerqd:retention";

std::string DurationText(std::chrono::microseconds d) {
  const int64_t s = d.count() / 1'000'000;
  if (s % 86400 == 0 && s > 0) return std::to_string(s / 86400) + "d";
  if (s % 3600 == 0 && s > 0) return std::to_string(s / 3600) + "h";
  return std::to_string(s) + "s";
}

// One batch of a sweep: due entries of the retention index, each decided against the job's
// authoritative state and the policy in force now.
class RetentionOp final : public Op {
 public:
  struct Candidate {
    std::string due_key;
    int64_t due_us = 0;
    uint64_t id = 0;
  };
  RetentionOp(std::vector<Candidate> cands, std::function<void(Result<RetentionStats>)> done)
      : cands_(std::move(cands)), done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions& opts) override {
    for (const auto& c : cands_) {
      Status st = ApplyOne(txn, opts, c);
      if (!st.ok()) {
        // Reads come before writes in ApplyOne, so nothing of this job is in the batch; what
        // earlier jobs did stays, and this one is tried again by the next sweep.
        status_ = st;
        return;
      }
    }
  }

  void Finish(const Status& write_status) override {
    if (!status_.ok()) {
      done_(status_);
    } else if (!write_status.ok()) {
      done_(write_status);
    } else {
      done_(stats_);
    }
  }

 private:
  Status ApplyOne(Txn& txn, const StoreOptions& opts, const Candidate& c) {
    auto entry_bytes = txn.ReadRetention(RetentionJobKey(c.id));
    if (!entry_bytes.ok()) return entry_bytes.status();
    std::optional<RetentionEntry> entry;
    if (entry_bytes->has_value()) entry = DecodeRetentionEntry(**entry_bytes);
    if (!entry || entry->due_us != c.due_us) {
      txn.DeleteRetention(c.due_key);  // moved or gone since it was read
      return Status::Ok();
    }
    auto job = txn.ReadJob(c.id);
    if (!job.ok() && job.status().code() != Code::kNotFound) return job.status();
    if (!job.ok() || !IsFinished(job->state())) {
      txn.DeleteRetention(c.due_key);
      txn.DeleteRetention(RetentionJobKey(c.id));
      return Status::Ok();
    }
    JobRecord rec = std::move(job).value();
    const RetentionPolicy p =
        opts.retention ? opts.retention(rec.queue(), rec.type()) : RetentionPolicy{};
    const int64_t now = txn.now_us();
    const int64_t finished = entry->finished_us;
    const int64_t remove_at = RemovalTime(rec, finished, p, opts.dedup_window);
    // A dead job whose on-dead-letter compensation is still owed stays until it is enqueued:
    // removing it would drop the debt without a trace.
    const bool owed = rec.compensation_pending();
    const bool remove = remove_at != 0 && now >= remove_at && !owed;
    const bool purge = !remove && p.payloads.count() > 0 && !rec.payload_purged() &&
                       now >= SatAdd(finished, p.payloads.count());

    std::string result_digest;
    if ((remove || purge) && rec.result_size() > 0 && !rec.payload_purged()) {
      auto blob = txn.ReadBlob(ResultKey(rec.id()));
      if (!blob.ok()) return blob.status();
      if (blob->has_value()) result_digest = std::string(AsBytes(Sha256(**blob)));
    }
    std::string idem_key;
    bool drop_idem = false;
    if (remove && !rec.idempotency_key().empty()) {
      idem_key = IdempotencyKey(rec.queue(), rec.idempotency_key());
      auto idem = txn.ReadIdempotency(idem_key);
      if (!idem.ok()) return idem.status();
      drop_idem = idem->has_value() && (*idem)->job_id() == rec.id();
    }

    // Reads are done; from here on only writes.
    EventBody ev;
    ev.set_job_id(rec.id());
    ev.set_principal(kRetentionPrincipal);
    ev.set_attempt(rec.attempts());
    ev.set_queue(rec.queue());
    ev.set_job_type(rec.type());
    ev.set_from_state(rec.state());
    if (!rec.payload_purged()) {
      ev.set_payload_sha256(rec.payload_sha256());
      ev.set_payload_size(rec.payload_size());
      ev.set_result_sha256(result_digest);
      ev.set_result_size(rec.result_size());
    }
    if (remove) {
      ev.set_type(v1::EVENT_RECORD_REMOVED);
      ev.set_reason(
          std::string(rec.state() == v1::STATE_DEAD ? "dead-letters-keep" : "remove-after") + " " +
          DurationText(rec.state() == v1::STATE_DEAD ? p.dead : p.records));
      txn.AppendEvent(ev);
      txn.DeleteJob(rec);
      if (drop_idem) {
        txn.DeleteIdempotency(idem_key);  // past its window: RemovalTime waits for that
        ++stats_.expired_keys;
      }
      txn.DeleteRetention(c.due_key);
      txn.DeleteRetention(RetentionJobKey(rec.id()));
      ++stats_.removed_records;
      return Status::Ok();
    }
    if (purge) {
      ev.set_type(v1::EVENT_PURGED);
      ev.set_to_state(rec.state());
      ev.set_reason("purge-payloads-after " + DurationText(p.payloads));
      rec.set_payload_purged(true);
      // The failure snapshots are payload-derived too; their digests stay, as in the events.
      for (auto& e : *rec.mutable_errors()) e.clear_payload_snapshot();
      rec.set_last_event_seq(txn.AppendEvent(ev));
      rec.add_event_seqs(rec.last_event_seq());
      txn.WriteJob(rec);
      txn.DeletePayloads(rec.id());
      ++stats_.purged_payloads;
    }
    int64_t next = NextRetentionDue(rec, finished, p, opts.dedup_window);
    if (owed && next != 0 && next <= now) next = SatAdd(now, kOwedRecheck.count());
    if (next == 0) {
      txn.DeleteRetention(c.due_key);
      txn.DeleteRetention(RetentionJobKey(rec.id()));
    } else if (next != c.due_us) {
      return txn.IndexFinished(rec.id(), finished, next);  // moves the entry; reads are cached
    }
    return Status::Ok();
  }

  std::vector<Candidate> cands_;
  std::function<void(Result<RetentionStats>)> done_;
  Status status_;
  RetentionStats stats_;
};

// Deletes idempotency records whose dedup window has passed (no event: a key is not a job, and
// GetJobByIdempotencyKey already ignored it; the job keeps its key in its record and events).
class ExpireKeysOp final : public Op {
 public:
  struct Candidate {
    std::string index_key;
    int64_t created_us = 0;
    std::string idem_key;
  };
  ExpireKeysOp(std::vector<Candidate> cands, std::function<void(Result<RetentionStats>)> done)
      : cands_(std::move(cands)), done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions& opts) override {
    for (const auto& c : cands_) {
      auto rec = txn.ReadIdempotency(c.idem_key);
      if (!rec.ok()) {
        status_ = rec.status();
        return;
      }
      if (rec->has_value() && (*rec)->created_at_us() == c.created_us) {
        if (!Expired(**rec, txn.now_us(), opts.dedup_window)) continue;  // window grew: keep
        txn.DeleteIdempotency(c.idem_key);
        ++stats_.expired_keys;
      }
      txn.DeleteRetention(c.index_key);  // the record is gone or was made again (new entry)
    }
  }

  void Finish(const Status& write_status) override {
    done_(!status_.ok()        ? Result<RetentionStats>(status_)
          : !write_status.ok() ? Result<RetentionStats>(write_status)
                               : Result<RetentionStats>(stats_));
  }

 private:
  std::vector<Candidate> cands_;
  std::function<void(Result<RetentionStats>)> done_;
  Status status_;
  RetentionStats stats_;
};

// RebuildRetentionIndex's writes: finished jobs missing from the index (their finish time as
// their record last changed), idempotency expiry entries, and the mark that all are indexed.
class IndexOp final : public Op {
 public:
  IndexOp(std::vector<std::pair<uint64_t, int64_t>> jobs,
          std::vector<std::pair<std::string, int64_t>> keys, bool mark,
          std::function<void(Result<uint64_t>)> done)
      : jobs_(std::move(jobs)), keys_(std::move(keys)), mark_(mark), done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions& opts) override {
    for (const auto& [id, finished] : jobs_) {
      auto entry = txn.ReadRetention(RetentionJobKey(id));
      auto job = txn.ReadJob(id);
      if (!entry.ok() || (!job.ok() && job.status().code() != Code::kNotFound)) {
        status_ = !entry.ok() ? entry.status() : job.status();
        return;
      }
      if (entry->has_value() || !job.ok() || !IsFinished(job->state()) || !opts.retention) {
        continue;
      }
      const int64_t due = NextRetentionDue(
          *job, finished, opts.retention(job->queue(), job->type()), opts.dedup_window);
      if (due == 0) continue;
      Status st = txn.IndexFinished(id, finished, due);
      if (!st.ok()) {
        status_ = st;
        return;
      }
      ++indexed_;
    }
    for (const auto& [key, created] : keys_) {
      txn.PutRetention(KeyExpiryKey(created, key), "");
      ++indexed_;
    }
    if (mark_) txn.WriteMeta(kRetentionIndexedKey, "1");
  }

  void Finish(const Status& write_status) override {
    done_(!status_.ok()        ? Result<uint64_t>(status_)
          : !write_status.ok() ? Result<uint64_t>(write_status)
                               : Result<uint64_t>(indexed_));
  }

 private:
  std::vector<std::pair<uint64_t, int64_t>> jobs_;
  std::vector<std::pair<std::string, int64_t>> keys_;
  bool mark_;
  std::function<void(Result<uint64_t>)> done_;
  Status status_;
  uint64_t indexed_ = 0;
};

Result<Checkpoint> DecodeCheckpoint(std::string_view value) {
  v1::ChainCheckpoint rec;
  LEDGERQ_RETURN_IF_ERROR(DecodeRecord(value, kMetaFormatVersion, &rec, "checkpoint"));
  if (rec.hash().size() != 32) return Status::Corruption("checkpoint: hash is not 32 bytes");
  Checkpoint cp;
  cp.seq = rec.seq();
  std::memcpy(cp.hash.data(), rec.hash().data(), 32);
  cp.at_us = rec.at_us();
  cp.principal = rec.principal();
  return cp;
}

// Archiving: removes events 1..to_seq once their hash is proven, moves the checkpoint and
// records it, all in one write.
class TruncateOp final : public Op {
 public:
  TruncateOp(uint64_t to_seq, Digest to_hash, std::string principal,
             std::atomic<uint64_t>* archived_to, std::function<void(Result<Checkpoint>)> done)
      : to_seq_(to_seq),
        to_hash_(to_hash),
        principal_(std::move(principal)),
        archived_to_(archived_to),
        done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions&) override { result_ = ApplyIt(txn); }

  void Finish(const Status& write_status) override {
    if (result_.ok() && !write_status.ok()) result_ = write_status;
    if (result_.ok()) archived_to_->store(to_seq_);
    done_(std::move(result_));
  }

 private:
  Result<Checkpoint> ApplyIt(Txn& txn) {
    Checkpoint old;
    auto stored = txn.ReadMeta(kCheckpointKey);
    if (!stored.ok()) return stored.status();
    if (stored->has_value()) {
      auto cp = DecodeCheckpoint(**stored);
      if (!cp.ok()) return cp.status();
      old = *cp;
    }
    if (to_seq_ <= old.seq) {
      return Status::InvalidArgument("to_seq: " + std::to_string(to_seq_) +
                                     " is not after the checkpoint (events up to " +
                                     std::to_string(old.seq) + " are archived already)");
    }
    if (to_seq_ > txn.head().seq) {
      return Status::InvalidArgument("to_seq: " + std::to_string(to_seq_) +
                                     " is beyond the head of the log (" +
                                     std::to_string(txn.head().seq) + ")");
    }
    auto value = txn.ReadLogValue(to_seq_);
    if (!value.ok()) return value.status();
    if (!value->has_value()) {
      return Status::InvalidArgument("to_seq: event " + std::to_string(to_seq_) +
                                     " is not durable yet");
    }
    auto ev = DecodeEvent(**value);
    if (!ev.ok()) return ev.status();
    EventBody body;
    if (!body.ParseFromArray(ev->body_bytes.data(), static_cast<int>(ev->body_bytes.size()))) {
      return Status::Corruption("event " + std::to_string(to_seq_) + " cannot be parsed");
    }
    if (ev->hash != to_hash_) {
      return Status::FailedPrecondition("to_hash: is not the hash of event " +
                                        std::to_string(to_seq_) +
                                        " (export the range again and archive what it holds)");
    }
    Checkpoint cp;
    cp.seq = to_seq_;
    cp.hash = to_hash_;
    cp.at_us = txn.now_us();
    cp.principal = principal_;
    v1::ChainCheckpoint rec;
    rec.set_seq(cp.seq);
    rec.set_hash(std::string(AsBytes(cp.hash)));
    rec.set_at_us(cp.at_us);
    rec.set_principal(cp.principal);
    txn.DeleteLogUpTo(to_seq_, body.time_us());
    txn.WriteMeta(kCheckpointKey, EncodeRecord(kMetaFormatVersion, rec));
    EventBody archived;
    archived.set_type(v1::EVENT_LOG_ARCHIVED);
    archived.set_principal(principal_);
    archived.set_range_from_seq(old.seq + 1);
    archived.set_range_to_seq(to_seq_);
    archived.set_range_head_hash(std::string(AsBytes(to_hash_)));
    txn.AppendEvent(archived);
    return cp;
  }

  uint64_t to_seq_;
  Digest to_hash_;
  std::string principal_;
  std::atomic<uint64_t>* archived_to_;
  std::function<void(Result<Checkpoint>)> done_;
  Result<Checkpoint> result_ = Status::Internal("truncate not applied");
};

}  // namespace

// Dead-letter remediation in a transition's own batch: a job entering DEAD gets what
// opts.dead_letter_marks asks for (its DEAD_LETTERED event says whether it needs attention, and a
// compensation to enqueue goes into the pending index); a job leaving DEAD (a redrive) no longer
// needs attention; the attention index follows the record's flag.
static void TrackRemediation(Txn& txn, const StoreOptions& opts, const JobRecord& before,
                             JobRecord& job, std::vector<EventBody>& events) {
  const bool dying = job.state() == v1::STATE_DEAD && before.state() != v1::STATE_DEAD;
  if (dying && opts.dead_letter_marks) {
    const DeadLetterMarks m = opts.dead_letter_marks(job);
    if (m.needs_attention) {
      job.set_needs_attention(true);
      for (auto& ev : events) {
        if (ev.type() == v1::EVENT_DEAD_LETTERED) ev.set_needs_attention(true);
      }
    }
    if (!m.compensate_queue.empty() && !m.compensate_type.empty()) {
      job.set_compensation_pending(true);
      txn.PutRemediation(PendingKey(job.id()), m.compensate_queue + '\0' + m.compensate_type);
    }
  }
  if (before.state() == v1::STATE_DEAD && job.state() != v1::STATE_DEAD) {
    job.set_needs_attention(false);
  }
  if (job.needs_attention() != before.needs_attention()) {
    if (job.needs_attention()) {
      txn.PutRemediation(AttentionKey(job.id()), job.queue());
    } else {
      txn.DeleteRemediation(AttentionKey(job.id()));
    }
  }
}

class TransitionOp final : public Op {
 public:
  TransitionOp(std::vector<TransitionItem> items, std::string principal, TransitionCallback done)
      : items_(std::move(items)), principal_(std::move(principal)), done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions& opts) override {
    results_.reserve(items_.size());
    for (auto& item : items_) results_.push_back(ApplyOne(txn, opts, item));
  }

  void Finish(const Status& write_status) override {
    if (!write_status.ok()) {
      results_.assign(items_.size(), Result<JobRecord>(write_status));
    }
    done_(std::move(results_));
  }

 private:
  Result<JobRecord> ApplyOne(Txn& txn, const StoreOptions& opts, TransitionItem& item) {
    auto current = txn.ReadJob(item.id);
    if (!current.ok()) return current.status();
    JobRecord rec = *current;
    TransitionWriter w;
    Status st = item.fn(rec, w, txn.now_us());
    if (!st.ok()) return st;
    if (rec.id() != item.id || rec.queue() != current->queue()) {
      return Status::Internal("a transition may not change a job's id or queue");
    }
    if (rec.state() != current->state() && w.events_.empty()) {
      return Status::Internal("job " + std::to_string(item.id) + ": a change from " +
                              StateName(current->state()) + " to " + StateName(rec.state()) +
                              " must append an event");
    }
    if (w.events_.empty() && !w.save_ && !w.result_ && !w.checkpoint_) return rec;  // no-op
    // Before any event is appended: a failure here must leave the batch untouched.
    LEDGERQ_RETURN_IF_ERROR(TrackFinished(txn, opts, current->state(), rec));
    TrackRemediation(txn, opts, *current, rec, w.events_);
    for (auto& ev : w.events_) {
      ev.set_job_id(rec.id());
      if (ev.principal().empty()) ev.set_principal(principal_);
      ev.set_queue(rec.queue());
      ev.set_job_type(rec.type());
      rec.set_last_event_seq(txn.AppendEvent(ev));
      rec.add_event_seqs(rec.last_event_seq());
    }
    if (!w.events_.empty()) rec.set_updated_at_us(txn.now_us());
    if (w.result_) {
      rec.set_result_size(w.result_->size());
      txn.WriteBlob(ResultKey(rec.id()), *w.result_);
    }
    if (w.checkpoint_) {
      rec.set_has_checkpoint(true);
      txn.WriteBlob(CheckpointKey(rec.id()), *w.checkpoint_);
    }
    txn.WriteJob(rec);
    return rec;
  }

  std::vector<TransitionItem> items_;
  std::string principal_;
  TransitionCallback done_;
  std::vector<Result<JobRecord>> results_;
};

// A dead job's compensation: creates the job (as an enqueue would, its parent the dead job) and
// closes the dead job's pending mark with a COMPENSATION_ENQUEUED event, in one write. Decided
// on the committer against the pending mark, so however many calls race, one creates the job.
class CompensateOp final : public Op {
 public:
  CompensateOp(uint64_t id, CompensationFn make, std::string principal,
               std::function<void(Result<CompensationOutcome>)> done)
      : id_(id), make_(std::move(make)), principal_(std::move(principal)), done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions& opts) override { result_ = ApplyIt(txn, opts); }

  void Finish(const Status& write_status) override {
    if (result_.ok() && !write_status.ok()) result_ = write_status;
    done_(std::move(result_));
  }

 private:
  Result<CompensationOutcome> ApplyIt(Txn& txn, const StoreOptions& opts) {
    const std::string key = PendingKey(id_);
    auto pending = txn.ReadRemediation(key);
    if (!pending.ok()) return pending.status();
    auto dead = txn.ReadJob(id_);
    if (!dead.ok()) {
      // Removed meanwhile (retention): nothing left to compensate; drop a stale index entry.
      if (dead.status().code() == Code::kNotFound && pending->has_value()) {
        txn.DeleteRemediation(key);
      }
      return dead.status();
    }
    CompensationOutcome out;
    out.dead = std::move(dead).value();
    if (!out.dead.compensation_pending()) {
      if (pending->has_value()) txn.DeleteRemediation(key);
      return out;  // compensated already (or never asked for)
    }
    const std::string target = pending->value_or("");
    const size_t sep = target.find('\0');
    if (sep == std::string::npos || sep == 0 || sep + 1 == target.size()) {
      return Status::Corruption("job " + std::to_string(id_) +
                                ": compensation pending without its queue and type in the "
                                "remediation index");
    }
    NewJob item = make_(out.dead, target.substr(0, sep), target.substr(sep + 1));
    item.parent_job_id = id_;
    std::optional<EnqueueOutcome> made;
    EnqueueOp create({std::move(item)}, principal_,
                     [&made](std::vector<EnqueueOutcome> o) { made = std::move(o[0]); });
    create.Apply(txn, opts);
    create.Finish(Status::Ok());  // hands its outcome over now; the write is this op's
    if (!made || !made->status.ok()) {
      return made ? made->status : Status::Internal("compensation not applied");
    }
    JobRecord& rec = out.dead;
    rec.set_compensation_pending(false);
    rec.set_compensation_job_id(made->job.id());
    EventBody ev;
    ev.set_job_id(rec.id());
    ev.set_type(v1::EVENT_COMPENSATION_ENQUEUED);
    ev.set_principal(principal_);
    ev.set_attempt(rec.attempts());
    ev.set_queue(rec.queue());
    ev.set_job_type(rec.type());
    ev.set_from_state(rec.state());
    ev.set_to_state(rec.state());
    ev.set_related_job_id(made->job.id());
    ev.set_reason(made->job.queue() + "/" + made->job.type());
    rec.set_last_event_seq(txn.AppendEvent(ev));
    rec.add_event_seqs(rec.last_event_seq());
    rec.set_updated_at_us(txn.now_us());
    txn.WriteJob(rec);
    txn.DeleteRemediation(key);
    out.compensation = made->job;
    out.created = !made->deduplicated;
    return out;
  }

  uint64_t id_;
  CompensationFn make_;
  std::string principal_;
  std::function<void(Result<CompensationOutcome>)> done_;
  Result<CompensationOutcome> result_ = Status::Internal("compensate not applied");
};

// ---------------------------------------------------------------------------------------------

// A closeable FIFO between two pipeline threads.
template <typename T>
class Handoff {
 public:
  // False once closed: the item was not taken and is left with the caller.
  bool Push(T&& item) {
    {
      std::lock_guard lock(mu_);
      if (closed_) return false;
      items_.push_back(std::move(item));
    }
    cv_.notify_one();
    return true;
  }
  // Waits for items; false once closed and drained.
  bool PopAll(std::deque<T>* out) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) return false;
    out->swap(items_);
    return true;
  }
  // The same, waiting at most `limit`; true (with nothing) when it passed.
  bool PopAllFor(std::deque<T>* out, std::chrono::milliseconds limit) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, limit, [&] { return closed_ || !items_.empty(); });
    if (items_.empty()) return !closed_;
    out->swap(items_);
    return true;
  }
  void Close() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> items_;
  bool closed_ = false;
};

// RocksDB's info log, handed to StoreOptions::on_rocksdb_log instead of a LOG file.
class CallbackLogger : public rocksdb::Logger {
 public:
  explicit CallbackLogger(std::function<void(bool, std::string_view)> fn)
      : rocksdb::Logger(rocksdb::InfoLogLevel::WARN_LEVEL), fn_(std::move(fn)) {}
  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel() || !fn_) return;
    char buf[1024];
    int n = std::vsnprintf(buf, sizeof buf, format, ap);
    if (n < 0) return;
    std::string_view line(buf, std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1));
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.remove_suffix(1);
    fn_(level >= rocksdb::InfoLogLevel::ERROR_LEVEL, line);
  }

 private:
  std::function<void(bool, std::string_view)> fn_;
};

// Tracks RocksDB's background errors (a failed flush or WAL write, e.g. on a full disk) and
// its own recovery from them, so Health() can report writes refused while they are.
class WriteErrorState : public rocksdb::EventListener {
 public:
  void OnBackgroundError(rocksdb::BackgroundErrorReason, rocksdb::Status* bg_error) override {
    if (bg_error && !bg_error->ok()) Set(FromRocks(*bg_error, "background write"));
  }
  void OnErrorRecoveryEnd(const rocksdb::BackgroundErrorRecoveryInfo& info) override {
    if (info.new_bg_error.ok()) Clear();
  }
  void Set(Status st) {
    std::lock_guard lock(mu_);
    error_ = std::move(st);
  }
  void Clear() {
    std::lock_guard lock(mu_);
    error_ = Status::Ok();
  }
  Status Get() const {
    std::lock_guard lock(mu_);
    return error_;
  }

 private:
  // Its own mutex: RocksDB may call in with its DB mutex held, and durable_mu is held while
  // snapshots (which take the DB mutex) are released.
  mutable std::mutex mu_;
  Status error_;
};

// The write pipeline, one thread per stage, each handing groups to the next in order:
//   committer: applies a group of transitions and writes it to RocksDB without fsync;
//   syncer:    fsyncs the WAL once for every group written meanwhile, then publishes them;
//   finisher:  runs the callbacks (answers), off both of the above.
// So the committer builds group N+1 while group N is being fsynced (its WAL append then waits
// for that fsync: see wal_mu), and nothing is answered or made visible to readers before it is
// durable: readers use the snapshot taken right after the last durable group, never the live
// database.
class JobStore::Impl {
 public:
  using SnapshotPtr = std::shared_ptr<const rocksdb::Snapshot>;
  struct Group {
    std::deque<std::unique_ptr<Op>> ops;
    Status status;
    bool needs_sync = false;
    SnapshotPtr snapshot;               // the database right after this group's write
    ChainHeadInfo head;                 // the chain head after this group
    std::vector<RawObserved> observed;  // for opts.on_durable
  };

  StoreOptions opts;
  std::unique_ptr<rocksdb::DB> db;
  rocksdb::ColumnFamilyHandle* cfs[kNumCfs] = {};

  mutable std::mutex durable_mu;
  ChainHeadInfo committed_head;  // guarded by durable_mu
  SnapshotPtr durable_snapshot;  // guarded by durable_mu; null: read the latest
  Status failure;                // guarded by durable_mu; set once an fsync failed

  Handoff<std::unique_ptr<Op>> pending;
  Handoff<Group> to_sync;
  Handoff<Group> to_finish;
  std::thread committer, syncer, finisher, batch_syncer;
  ChainHeadInfo head;  // committer thread only
  std::atomic<bool> failed{false};
  // Archiving: the last sequence TruncateLog removed, and how far CompactArchived compacted.
  std::atomic<uint64_t> archived_to{0};
  std::mutex compact_mu;
  uint64_t compacted_to = 0;  // guarded by compact_mu
  std::shared_ptr<WriteErrorState> write_error = std::make_shared<WriteErrorState>();
  // Orders the committer's WAL writes against the syncer's fsyncs. RocksDB must not be asked to
  // sync a WAL whose last append failed (its Debian build asserts, and a release build would
  // report a failed fsync): a write that fails sets wal_write_failed under this mutex, and the
  // syncer checks it under the same mutex, so no append can fail during a sync. It costs the
  // overlap of one group's WAL append (a memcpy into the page cache) with the previous fsync.
  std::mutex wal_mu;
  bool wal_write_failed = false;  // guarded by wal_mu; cleared by a write or by recovery

  std::mutex close_mu;
  std::condition_variable close_cv;
  bool closing = false;  // guarded by close_mu
  bool closed = false;   // guarded by close_mu

  rocksdb::ColumnFamilyHandle* cf(Cf id) const { return cfs[static_cast<size_t>(id)]; }

  // Read options pinned to the last durable state; `hold` keeps the snapshot alive.
  rocksdb::ReadOptions DurableRead(SnapshotPtr* hold) const {
    {
      std::lock_guard lock(durable_mu);
      *hold = durable_snapshot;
    }
    rocksdb::ReadOptions ro;
    ro.snapshot = hold->get();
    return ro;
  }

  Result<std::string> GetBlob(const std::string& key, const std::string& what) const {
    SnapshotPtr hold;
    std::string value;
    auto s = db->Get(DurableRead(&hold), cf(Cf::kPayloads), key, &value);
    if (s.IsNotFound()) return Status::NotFound(what + " not found");
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read " + what));
    return DecodePayload(value);
  }

  Result<std::string> GetValue(Cf family, const std::string& key) const {
    SnapshotPtr hold;
    std::string value;
    auto s = db->Get(DurableRead(&hold), cf(family), key, &value);
    if (s.IsNotFound()) return Status::NotFound("");
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read"));
    return value;
  }

  std::unique_ptr<rocksdb::Iterator> DurableIterator(Cf family, SnapshotPtr* hold) const {
    return std::unique_ptr<rocksdb::Iterator>(db->NewIterator(DurableRead(hold), cf(family)));
  }

  SnapshotPtr TakeSnapshotConst() const {
    rocksdb::DB* raw = db.get();
    return SnapshotPtr(raw->GetSnapshot(),
                       [raw](const rocksdb::Snapshot* s) { raw->ReleaseSnapshot(s); });
  }

  SnapshotPtr TakeSnapshot() {
    rocksdb::DB* raw = db.get();
    return SnapshotPtr(raw->GetSnapshot(),
                       [raw](const rocksdb::Snapshot* s) { raw->ReleaseSnapshot(s); });
  }

  void Submit(std::unique_ptr<Op> op) {
    if (!pending.Push(std::move(op))) op->Finish(Status::Unavailable("the store is shutting down"));
  }

  void CommitLoop() {
    std::deque<std::unique_ptr<Op>> ops;
    while (pending.PopAll(&ops)) {
      Group g;
      g.ops.swap(ops);
      CommitGroup(g);
      to_sync.Push(std::move(g));
    }
    to_sync.Close();
  }

  // Applies every op of the group to one batch and writes it (without fsync: the syncer does
  // that). A failed write wrote nothing, so the group's ids and sequences are handed out again.
  void CommitGroup(Group& g) {
    if (failed) {
      std::lock_guard lock(durable_mu);
      g.status = failure;
      return;
    }
    const ChainHeadInfo before = head;
    Txn txn(db.get(), cfs, &head, opts.clock->WallMicros(),
            opts.on_durable ? &g.observed : nullptr);
    for (auto& op : g.ops) op->Apply(txn, opts);
    g.head = head;
    if (txn.empty()) return;  // answers only; still ordered behind earlier unsynced groups

    ChainHead meta;
    meta.set_seq(head.seq);
    meta.set_hash(std::string(AsBytes(head.hash)));
    meta.set_next_job_id(head.next_job_id);
    txn.batch().Put(cf(Cf::kMeta), kChainHeadKey, EncodeRecord(kMetaFormatVersion, meta));
    Status st = opts.write_fault ? opts.write_fault() : Status::Ok();
    if (st.ok()) {
      std::lock_guard lock(wal_mu);
      st = FromRocks(db->Write(rocksdb::WriteOptions(), &txn.batch()), "commit");
      wal_write_failed = !st.ok();
    }
    if (!st.ok()) {
      head = before;
      g.head = before;
      g.status = st;
      g.observed.clear();
      write_error->Set(st);
      return;
    }
    write_error->Clear();
    g.snapshot = TakeSnapshot();
    g.needs_sync = opts.sync == SyncMode::kAlways;
    if (opts.on_group_written) opts.on_group_written(g.ops.size());
  }

  // True when the WAL may be synced: no append has failed since RocksDB last recovered. Called
  // with wal_mu held.
  bool WalSyncable() {
    if (wal_write_failed && write_error->Get().ok()) wal_write_failed = false;  // recovered
    return !wal_write_failed;
  }

  void SyncStageLoop() {
    // Groups written but not yet durable, in order. They wait here while RocksDB recovers from a
    // failed write (a full disk): the write is in its memtable, and the recovery flushes it to a
    // table file, so it becomes durable then; until that, it is neither acknowledged nor
    // visible. Failed groups (answers only, no state) pass them meanwhile.
    std::deque<Group> waiting, batch;
    for (;;) {
      bool open = waiting.empty() ? to_sync.PopAll(&batch)
                                  : to_sync.PopAllFor(&batch, std::chrono::milliseconds(50));
      for (auto& g : batch) waiting.push_back(std::move(g));
      batch.clear();
      if (waiting.empty()) {
        if (!open) break;
        continue;
      }
      Status failed_now;
      bool hold = false;
      if (failed) {
        // After a failed fsync nothing more is acknowledged: later groups were built on writes
        // that may be lost. (Groups applied after the failure were refused already.)
        std::lock_guard lock(durable_mu);
        failed_now = failure;
      } else {
        bool need = false;
        for (auto& g : waiting) need |= g.needs_sync && g.status.ok();
        if (need) {
          std::lock_guard wal_lock(wal_mu);
          if (!WalSyncable()) {
            hold = true;
          } else {
            const auto start = std::chrono::steady_clock::now();
            Status st = FromRocks(db->SyncWAL(), "fsync of the write-ahead log");
            const double secs =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            if (opts.on_wal_sync) opts.on_wal_sync(secs);
            if (!st.ok()) {
              // What was written may or may not be on disk, and later groups build on it: stop
              // accepting writes. A restart recovers a consistent prefix from the WAL.
              std::lock_guard lock(durable_mu);
              failure = Status::Unavailable(st.message() + "; restart ledgerqd to recover");
              failed = true;
              failed_now = failure;
            }
          }
        }
      }
      if (hold) {
        if (!open) {
          // Shutting down before recovery: these writes were never acknowledged.
          failed_now = Status::Unavailable(
              "shutting down while the store refuses writes; the write may or may not persist");
        } else {
          // Pass the failed groups (answers with an error, no state) and keep waiting.
          std::deque<Group> keep;
          for (auto& g : waiting) {
            if (g.status.ok()) {
              keep.push_back(std::move(g));
            } else {
              to_finish.Push(std::move(g));
            }
          }
          waiting.swap(keep);
          continue;
        }
      }
      {
        std::lock_guard lock(durable_mu);
        for (auto& g : waiting) {
          if (!failed_now.ok()) {
            // Every group of the batch, answers included: they may have read the lost writes.
            if (g.status.ok()) g.status = failed_now;
            continue;
          }
          if (!g.status.ok()) continue;
          committed_head = g.head;
          if (g.snapshot) durable_snapshot = g.snapshot;
        }
      }
      for (auto& g : waiting) {
        g.snapshot.reset();
        to_finish.Push(std::move(g));
      }
      waiting.clear();
      if (!open) break;
    }
    to_finish.Close();
  }

  void Observe(const std::vector<RawObserved>& raw) {
    std::vector<ObservedEvent> out(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      out[i].event.ParseFromString(raw[i].event_bytes);
      if (!raw[i].job_bytes.empty()) {
        JobRecord job;
        if (DecodeRecord(raw[i].job_bytes, kJobFormatVersion, &job, "job").ok()) out[i].job = job;
      }
    }
    opts.on_durable(out);
  }

  void FinishLoop() {
    std::deque<Group> batch;
    while (to_finish.PopAll(&batch)) {
      for (auto& g : batch) {
        if (g.status.ok() && !g.observed.empty()) Observe(g.observed);
        for (auto& op : g.ops) op->Finish(g.status);
      }
      batch.clear();
    }
  }

  // --sync=batch: the WAL is fsynced on a timer instead of per group.
  void BatchSyncLoop() {
    std::unique_lock lock(close_mu);
    while (!closing) {
      close_cv.wait_for(lock, opts.batch_sync_interval);
      lock.unlock();
      SyncBatch();
      lock.lock();
    }
  }

  // One timed fsync of --sync=batch. Its failure means what it means under --sync=always:
  // writes already answered may not be on disk, and later ones build on them, so the store
  // refuses writes from now on and Health() says why (/readyz 503); a restart recovers a
  // consistent prefix from the WAL.
  void SyncBatch() {
    if (failed) return;
    std::lock_guard wal_lock(wal_mu);
    if (!WalSyncable()) return;  // RocksDB is recovering from a failed append (a full disk)
    const auto start = std::chrono::steady_clock::now();
    Status st = FromRocks(db->SyncWAL(), "fsync of the write-ahead log (--sync=batch)");
    if (opts.on_wal_sync) {
      opts.on_wal_sync(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    if (st.ok()) return;
    std::lock_guard lock(durable_mu);
    failure = Status::Unavailable(st.message() + "; restart ledgerqd to recover");
    failed = true;
  }

  Status Close() {
    {
      std::lock_guard lock(close_mu);
      if (closed) return Status::Ok();
      closed = true;
      closing = true;
    }
    close_cv.notify_all();
    pending.Close();
    if (committer.joinable()) committer.join();
    if (syncer.joinable()) syncer.join();
    if (finisher.joinable()) finisher.join();
    if (batch_syncer.joinable()) batch_syncer.join();
    Status st;
    if (db) {
      {
        std::lock_guard lock(durable_mu);
        durable_snapshot.reset();
      }
      st = FromRocks(db->SyncWAL(), "sync WAL on close");
      for (auto*& h : cfs) {
        if (h) {
          (void)db->DestroyColumnFamilyHandle(h);
          h = nullptr;
        }
      }
      Status close = FromRocks(db->Close(), "close database");
      if (st.ok()) st = close;
      db.reset();
    }
    return st;
  }
};

JobStore::JobStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

JobStore::~JobStore() { (void)Close(); }

Status JobStore::Close() { return impl_ ? impl_->Close() : Status::Ok(); }

Result<std::unique_ptr<JobStore>> JobStore::Open(StoreOptions options) {
  if (options.data_dir.empty()) return Status::InvalidArgument("data_dir: must not be empty");
  std::error_code ec;
  std::filesystem::create_directories(DbPath(options.data_dir), ec);
  if (ec) {
    return Status::Unavailable("data_dir: cannot create " + DbPath(options.data_dir) + ": " +
                               ec.message());
  }
  auto impl = std::make_unique<Impl>();
  impl->opts = std::move(options);

  rocksdb::DBOptions dbo;
  dbo.create_if_missing = true;
  dbo.create_missing_column_families = true;
  dbo.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  dbo.max_background_jobs = 2;
  dbo.keep_log_file_num = 5;
  // The `meta` family is written by every group but holds a few keys, so its memtable never
  // fills and never flushes on its own: without a bound, every WAL file would be kept for it
  // and the data dir would grow without end even with retention. Past this much WAL, RocksDB
  // flushes the families holding the oldest file, and deletes it.
  dbo.max_total_wal_size = 64 << 20;
  // On a full disk RocksDB refuses writes and, through its SstFileManager, polls for free space
  // and resumes by itself (max_bgerror_resume_count); the listener tells Health() meanwhile.
  dbo.listeners.push_back(impl->write_error);
  dbo.info_log = std::make_shared<CallbackLogger>(impl->opts.on_rocksdb_log);
  auto cache = rocksdb::NewLRUCache(64 << 20);
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  descs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (const auto& spec : kColumnFamilies) descs.emplace_back(spec.name, CfOptions(spec, cache));
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(dbo, DbPath(impl->opts.data_dir), descs, &handles, &raw);
  if (!s.ok()) {
    std::string text = s.ToString();
    if (s.IsIOError() && text.find("lock") != std::string::npos) {
      return Status::Unavailable("data dir " + impl->opts.data_dir +
                                 " is locked by another process (is another ledgerqd running "
                                 "on it?): " +
                                 text);
    }
    return FromRocks(s, "open database in " + impl->opts.data_dir);
  }
  impl->db.reset(raw);
  // Bind by name. The default family is opened because RocksDB requires it; ledgerq never uses
  // it.
  for (auto* h : handles) {
    bool bound = false;
    for (size_t i = 0; i < kNumCfs; ++i) {
      if (h->GetName() == kColumnFamilies[i].name) {
        impl->cfs[static_cast<size_t>(kColumnFamilies[i].id)] = h;
        bound = true;
      }
    }
    if (!bound) (void)impl->db->DestroyColumnFamilyHandle(h);
  }

  std::string value;
  s = impl->db->Get(rocksdb::ReadOptions(), impl->cf(Cf::kMeta), kChainHeadKey, &value);
  if (s.ok()) {
    ChainHead meta;
    Status st = DecodeRecord(value, kMetaFormatVersion, &meta, "chain head");
    if (!st.ok() || meta.hash().size() != 32) {
      (void)impl->Close();
      return Status::Corruption("chain head in " + impl->opts.data_dir + " is unreadable");
    }
    impl->head.seq = meta.seq();
    std::memcpy(impl->head.hash.data(), meta.hash().data(), 32);
    impl->head.next_job_id = meta.next_job_id();
  } else if (!s.IsNotFound()) {
    Status st = FromRocks(s, "read chain head");
    (void)impl->Close();
    return st;
  }
  impl->committed_head = impl->head;

  Impl* p = impl.get();
  p->committer = std::thread([p] { p->CommitLoop(); });
  p->syncer = std::thread([p] { p->SyncStageLoop(); });
  p->finisher = std::thread([p] { p->FinishLoop(); });
  if (p->opts.sync == SyncMode::kBatch) p->batch_syncer = std::thread([p] { p->BatchSyncLoop(); });
  return std::unique_ptr<JobStore>(new JobStore(std::move(impl)));
}

void JobStore::Enqueue(std::vector<NewJob> items, std::string principal, EnqueueCallback done) {
  impl_->Submit(
      std::make_unique<EnqueueOp>(std::move(items), std::move(principal), std::move(done)));
}

void JobStore::Cancel(uint64_t id, std::string principal, std::string reason, JobCallback done) {
  impl_->Submit(
      std::make_unique<CancelOp>(id, std::move(principal), std::move(reason), std::move(done)));
}

void JobStore::Transition(std::vector<TransitionItem> items, std::string principal,
                          TransitionCallback done) {
  impl_->Submit(
      std::make_unique<TransitionOp>(std::move(items), std::move(principal), std::move(done)));
}

void JobStore::SetQueuePaused(std::string queue, bool paused, std::string principal,
                              std::function<void(Status)> done) {
  impl_->Submit(std::make_unique<QueueChangeOp>(
      std::move(queue),
      [paused](QueueRecord& rec, EventBody& ev) {
        if (rec.paused() == paused) return false;  // already so: nothing to record
        rec.set_paused(paused);
        ev.set_type(paused ? v1::EVENT_QUEUE_PAUSED : v1::EVENT_QUEUE_RESUMED);
        return true;
      },
      std::move(principal), std::move(done)));
}

void JobStore::SetQueueLimits(std::string queue, QueueLimitsRecord limits, std::string principal,
                              std::function<void(Status)> done) {
  impl_->Submit(std::make_unique<QueueChangeOp>(
      std::move(queue),
      [limits = std::move(limits)](QueueRecord& rec, EventBody& ev) {
        *rec.mutable_limits() = limits;
        ev.set_type(v1::EVENT_QUEUE_LIMITS_CHANGED);
        *ev.mutable_limits() = limits;
        return true;
      },
      std::move(principal), std::move(done)));
}

void JobStore::RecordCircuit(std::string queue, CircuitRecord change,
                             std::optional<std::string> forced, std::string principal,
                             std::function<void(Status)> done) {
  impl_->Submit(std::make_unique<QueueChangeOp>(
      std::move(queue),
      [change = std::move(change), forced = std::move(forced)](QueueRecord& rec, EventBody& ev) {
        if (forced) {
          if (forced->empty()) {
            rec.mutable_forced_circuits()->erase(change.job_type());
          } else {
            (*rec.mutable_forced_circuits())[change.job_type()] = *forced;
          }
        }
        if (change.to_state() == "open") {
          ev.set_type(v1::EVENT_CIRCUIT_OPENED);
        } else if (change.to_state() == "half_open") {
          ev.set_type(v1::EVENT_CIRCUIT_HALF_OPEN);
        } else {
          ev.set_type(v1::EVENT_CIRCUIT_CLOSED);
        }
        ev.set_job_type(change.job_type());
        ev.set_reason(change.cause());
        *ev.mutable_circuit() = change;
        return true;
      },
      std::move(principal), std::move(done)));
}

void JobStore::RecordPolicy(std::string text, std::string summary, std::string principal,
                            std::function<void(Result<PolicyVersion>)> done) {
  impl_->Submit(std::make_unique<PolicyOp>(std::move(text), std::move(summary),
                                           std::move(principal), std::move(done)));
}

void JobStore::Compensate(uint64_t dead_id, CompensationFn make, std::string principal,
                          std::function<void(Result<CompensationOutcome>)> done) {
  impl_->Submit(std::make_unique<CompensateOp>(dead_id, std::move(make), std::move(principal),
                                               std::move(done)));
}

Result<std::vector<uint64_t>> JobStore::PendingCompensations(uint64_t after_id,
                                                             size_t limit) const {
  std::vector<uint64_t> out;
  if (after_id == UINT64_MAX) return out;
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kRemediation, &hold);
  for (it->Seek(PendingKey(after_id + 1));
       it->Valid() && it->key().starts_with("p") && out.size() < limit; it->Next()) {
    auto id = DecodeU64(std::string_view(it->key().data() + 1, it->key().size() - 1));
    if (id.ok()) out.push_back(*id);
  }
  LEDGERQ_RETURN_IF_ERROR(FromRocks(it->status(), "scan remediation index"));
  return out;
}

Result<std::vector<uint64_t>> JobStore::ListChildren(uint64_t parent, size_t limit) const {
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kChildren, &hold);
  const std::string prefix = EncodeU64(parent);
  std::vector<uint64_t> out;
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix) && out.size() < limit;
       it->Next()) {
    auto id = DecodeU64(
        std::string_view(it->key().data() + prefix.size(), it->key().size() - prefix.size()));
    if (id.ok()) out.push_back(*id);
  }
  LEDGERQ_RETURN_IF_ERROR(FromRocks(it->status(), "scan children index"));
  return out;
}

Result<std::vector<uint64_t>> JobStore::ListNeedsAttention(const std::string& queue,
                                                           uint64_t after_id, size_t limit) const {
  std::vector<uint64_t> out;
  if (after_id == UINT64_MAX) return out;
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kRemediation, &hold);
  for (it->Seek(AttentionKey(after_id + 1));
       it->Valid() && it->key().starts_with("a") && out.size() < limit; it->Next()) {
    if (!queue.empty() && it->value() != rocksdb::Slice(queue)) continue;
    auto id = DecodeU64(std::string_view(it->key().data() + 1, it->key().size() - 1));
    if (id.ok()) out.push_back(*id);
  }
  LEDGERQ_RETURN_IF_ERROR(FromRocks(it->status(), "scan remediation index"));
  return out;
}

Result<std::map<std::string, uint64_t>> JobStore::CountNeedsAttention() const {
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kRemediation, &hold);
  std::map<std::string, uint64_t> out;
  for (it->Seek("a"); it->Valid() && it->key().starts_with("a"); it->Next()) {
    ++out[it->value().ToString()];
  }
  LEDGERQ_RETURN_IF_ERROR(FromRocks(it->status(), "scan remediation index"));
  return out;
}

void JobStore::PutSchedule(ScheduleRecord rec, bool replace, std::string principal,
                           std::function<void(Result<ScheduleRecord>)> done) {
  impl_->Submit(std::make_unique<ScheduleOp>(true, std::move(rec), replace, std::string(),
                                             std::move(principal), std::move(done)));
}

void JobStore::RemoveSchedule(std::string name, std::string source, std::string principal,
                              std::function<void(Result<ScheduleRecord>)> done) {
  ScheduleRecord rec;
  rec.set_name(std::move(name));
  impl_->Submit(std::make_unique<ScheduleOp>(false, std::move(rec), false, std::move(source),
                                             std::move(principal), std::move(done)));
}

Status JobStore::ScanSchedules(const std::function<void(const ScheduleRecord&)>& fn) const {
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kSchedules, &hold);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    ScheduleRecord rec;
    LEDGERQ_RETURN_IF_ERROR(DecodeRecord(std::string_view(it->value().data(), it->value().size()),
                                         kScheduleFormatVersion, &rec, "schedule"));
    fn(rec);
  }
  return FromRocks(it->status(), "scan schedules");
}

Result<ScheduleRecord> JobStore::GetSchedule(const std::string& name) const {
  auto value = impl_->GetValue(Cf::kSchedules, name);
  if (!value.ok()) {
    if (value.status().code() == Code::kNotFound) {
      return Status::NotFound("schedule \"" + name + "\" not found");
    }
    return value.status();
  }
  ScheduleRecord rec;
  LEDGERQ_RETURN_IF_ERROR(DecodeRecord(*value, kScheduleFormatVersion, &rec, "schedule"));
  return rec;
}

Status JobStore::ScanQueues(
    const std::function<void(const std::string&, const QueueRecord&)>& fn) const {
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kQueues, &hold);
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    QueueRecord rec;
    LEDGERQ_RETURN_IF_ERROR(DecodeRecord(std::string_view(it->value().data(), it->value().size()),
                                         kQueueFormatVersion, &rec, "queue"));
    fn(it->key().ToString(), rec);
  }
  return FromRocks(it->status(), "scan queues");
}

Result<std::string> JobStore::GetResult(uint64_t id) const {
  return impl_->GetBlob(ResultKey(id), "result of job " + std::to_string(id));
}

Result<std::string> JobStore::GetCheckpoint(uint64_t id) const {
  return impl_->GetBlob(CheckpointKey(id), "checkpoint of job " + std::to_string(id));
}

Result<JobRecord> JobStore::GetJob(uint64_t id) const {
  auto value = impl_->GetValue(Cf::kJobs, EncodeU64(id));
  if (!value.ok()) {
    return value.status().code() == Code::kNotFound
               ? Status::NotFound("job " + std::to_string(id) + " not found")
               : value.status();
  }
  JobRecord rec;
  LEDGERQ_RETURN_IF_ERROR(DecodeRecord(*value, kJobFormatVersion, &rec, "job"));
  return rec;
}

Result<std::string> JobStore::GetPayload(uint64_t id) const {
  return impl_->GetBlob(EncodeU64(id), "payload of job " + std::to_string(id));
}

Result<JobRecord> JobStore::GetJobByIdempotencyKey(const std::string& queue,
                                                   const std::string& key) const {
  auto value = impl_->GetValue(Cf::kIdempotency, IdempotencyKey(queue, key));
  auto not_found = [&] {
    return Status::NotFound("no job with idempotency_key \"" + key + "\" in queue \"" + queue +
                            "\"");
  };
  if (!value.ok()) return value.status().code() == Code::kNotFound ? not_found() : value.status();
  v1::IdempotencyRecord rec;
  LEDGERQ_RETURN_IF_ERROR(DecodeRecord(*value, kIdempotencyFormatVersion, &rec, "idempotency"));
  if (Expired(rec, impl_->opts.clock->WallMicros(), impl_->opts.dedup_window)) {
    return not_found();
  }
  return GetJob(rec.job_id());
}

Status JobStore::ScanJobs(const std::function<bool(const JobRecord&)>& fn, uint64_t from_id) const {
  return View()->ScanJobs(fn, from_id);
}

// ---------------------------------------------------------------------------------------------
// ReadView: one durable snapshot, held for the view's life.

struct ReadView::State {
  const JobStore::Impl* impl = nullptr;
  JobStore::Impl::SnapshotPtr snapshot;  // null before the first write: the latest, still empty
  uint64_t head_seq = 0;

  rocksdb::ReadOptions Read() const {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot.get();
    return ro;
  }
};

ReadView::ReadView(std::unique_ptr<State> state) : state_(std::move(state)) {}
ReadView::~ReadView() = default;

uint64_t ReadView::head_seq() const { return state_->head_seq; }

std::unique_ptr<ReadView> JobStore::View() const {
  auto state = std::make_unique<ReadView::State>();
  state->impl = impl_.get();
  {
    // The snapshot and the head are published together under durable_mu.
    std::lock_guard lock(impl_->durable_mu);
    state->snapshot = impl_->durable_snapshot;
    state->head_seq = impl_->committed_head.seq;
  }
  return std::make_unique<ReadView>(std::move(state));
}

Status ReadView::ScanJobs(const std::function<bool(const JobRecord&)>& fn, uint64_t from_id) const {
  std::unique_ptr<rocksdb::Iterator> it(
      state_->impl->db->NewIterator(state_->Read(), state_->impl->cf(Cf::kJobs)));
  for (it->Seek(EncodeU64(from_id)); it->Valid(); it->Next()) {
    JobRecord rec;
    LEDGERQ_RETURN_IF_ERROR(DecodeRecord(std::string_view(it->value().data(), it->value().size()),
                                         kJobFormatVersion, &rec, "job"));
    if (!fn(rec)) break;
  }
  return FromRocks(it->status(), "scan jobs");
}

Status ReadView::ScanRawEvents(uint64_t from_seq,
                               const std::function<bool(const RawEvent&)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(
      state_->impl->db->NewIterator(state_->Read(), state_->impl->cf(Cf::kLog)));
  for (it->Seek(EncodeU64(from_seq)); it->Valid(); it->Next()) {
    RawEvent raw;
    auto key = DecodeU64(std::string_view(it->key().data(), it->key().size()));
    if (!key.ok()) return Status::Corruption("a log key is malformed");
    raw.seq = *key;
    auto ev = DecodeEvent(std::string_view(it->value().data(), it->value().size()));
    if (!ev.ok()) {
      return Status::Corruption("event " + std::to_string(raw.seq) + ": " + ev.status().message());
    }
    raw.prev_hash = ev->prev_hash;
    raw.hash = ev->hash;
    raw.body.assign(ev->body_bytes);
    if (!raw.event.ParseFromString(raw.body)) {
      return Status::Corruption("event " + std::to_string(raw.seq) + " cannot be parsed");
    }
    if (!fn(raw)) break;
  }
  return FromRocks(it->status(), "scan log");
}

Status JobStore::ScanRawEvents(uint64_t from_seq,
                               const std::function<bool(const RawEvent&)>& fn) const {
  return View()->ScanRawEvents(from_seq, fn);
}

Status JobStore::ScanEvents(uint64_t from_seq,
                            const std::function<bool(const EventBody&)>& fn) const {
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kLog, &hold);
  for (it->Seek(EncodeU64(from_seq)); it->Valid(); it->Next()) {
    auto ev = DecodeEvent(std::string_view(it->value().data(), it->value().size()));
    if (!ev.ok()) return ev.status();
    EventBody body;
    if (!body.ParseFromArray(ev->body_bytes.data(), static_cast<int>(ev->body_bytes.size()))) {
      return Status::Corruption("event body cannot be parsed");
    }
    if (!fn(body)) break;
  }
  return FromRocks(it->status(), "scan events");
}

Result<std::vector<EventBody>> JobStore::GetJobEvents(uint64_t id) const {
  Impl::SnapshotPtr hold;
  rocksdb::ReadOptions ro = impl_->DurableRead(&hold);
  std::string value;
  auto s = impl_->db->Get(ro, impl_->cf(Cf::kJobs), EncodeU64(id), &value);
  if (s.IsNotFound()) return Status::NotFound("job " + std::to_string(id) + " not found");
  LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read job"));
  JobRecord job;
  LEDGERQ_RETURN_IF_ERROR(DecodeRecord(value, kJobFormatVersion, &job, "job"));
  std::vector<EventBody> out;
  out.reserve(job.event_seqs_size());
  for (uint64_t seq : job.event_seqs()) {
    s = impl_->db->Get(ro, impl_->cf(Cf::kLog), EncodeU64(seq), &value);
    if (s.IsNotFound()) continue;  // archived away (issue 6)
    LEDGERQ_RETURN_IF_ERROR(FromRocks(s, "read event"));
    auto ev = DecodeEvent(value);
    if (!ev.ok()) return ev.status();
    EventBody body;
    if (!body.ParseFromArray(ev->body_bytes.data(), static_cast<int>(ev->body_bytes.size()))) {
      return Status::Corruption("event " + std::to_string(seq) + " cannot be parsed");
    }
    out.push_back(std::move(body));
  }
  return out;
}

Status JobStore::ScanFailures(
    int64_t since_us, const std::function<void(int64_t at_us, const FailureRecord&)>& fn) const {
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kFailures, &hold);
  for (it->Seek(EncodeU64(static_cast<uint64_t>(std::max<int64_t>(0, since_us)))); it->Valid();
       it->Next()) {
    if (it->key().size() != 16) continue;
    auto at = DecodeU64(std::string_view(it->key().data(), 8));
    FailureRecord f;
    LEDGERQ_RETURN_IF_ERROR(DecodeRecord(std::string_view(it->value().data(), it->value().size()),
                                         kFailureFormatVersion, &f, "failure"));
    fn(static_cast<int64_t>(*at), f);
  }
  return FromRocks(it->status(), "scan failures");
}

Result<std::vector<uint64_t>> JobStore::JobsByTraceId(const std::string& trace_id,
                                                      size_t limit) const {
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kByTrace, &hold);
  std::vector<uint64_t> out;
  for (it->Seek(trace_id); it->Valid() && it->key().starts_with(trace_id) && out.size() < limit;
       it->Next()) {
    auto id = DecodeU64(
        std::string_view(it->key().data() + trace_id.size(), it->key().size() - trace_id.size()));
    if (id.ok()) out.push_back(*id);
  }
  LEDGERQ_RETURN_IF_ERROR(FromRocks(it->status(), "scan trace index"));
  return out;
}

JobStore::DiskStats JobStore::Disk() const {
  DiskStats d;
  (void)impl_->db->GetAggregatedIntProperty("rocksdb.live-sst-files-size", &d.live_sst_bytes);
  (void)impl_->db->GetAggregatedIntProperty("rocksdb.estimate-pending-compaction-bytes",
                                            &d.pending_compaction_bytes);
  return d;
}

Status JobStore::Health() const {
  {
    std::lock_guard lock(impl_->durable_mu);
    if (!impl_->failure.ok()) return impl_->failure;
  }
  return impl_->write_error->Get();
}

ChainHeadInfo JobStore::Head() const {
  std::lock_guard lock(impl_->durable_mu);
  return impl_->committed_head;
}

// ---------------------------------------------------------------------------------------------
// Retention and archiving

// Runs one op through the committer and waits for its answer.
template <typename T, typename MakeOp>
Result<T> RunSyncOp(JobStore::Impl& impl, MakeOp make) {
  std::promise<Result<T>> p;
  auto f = p.get_future();
  impl.Submit(make([&p](Result<T> r) { p.set_value(std::move(r)); }));
  return f.get();
}

Result<RetentionStats> JobStore::RunRetention(size_t batch) {
  const auto start = std::chrono::steady_clock::now();
  batch = std::max<size_t>(batch, 1);
  RetentionStats total;
  const int64_t now = impl_->opts.clock->WallMicros();
  auto add = [&total](const RetentionStats& s) {
    total.purged_payloads += s.purged_payloads;
    total.removed_records += s.removed_records;
    total.expired_keys += s.expired_keys;
    ++total.batches;
  };

  // Finished jobs whose next step is due, in due order. The cursor moves past every entry
  // handed to an op, so an entry the op leaves in place is not read again in this sweep.
  std::string cursor = "d";
  for (;;) {
    std::vector<RetentionOp::Candidate> cands;
    {
      Impl::SnapshotPtr hold;
      auto it = impl_->DurableIterator(Cf::kRetention, &hold);
      for (it->Seek(cursor); it->Valid() && cands.size() < batch; it->Next()) {
        std::string_view key(it->key().data(), it->key().size());
        if (key.empty() || key[0] != 'd') break;
        if (key.size() != 17) continue;
        auto due = DecodeU64(key.substr(1, 8));
        auto id = DecodeU64(key.substr(9));
        if (!due.ok() || !id.ok()) continue;
        if (static_cast<int64_t>(*due) > now) break;
        cands.push_back({std::string(key), static_cast<int64_t>(*due), *id});
      }
      LEDGERQ_RETURN_IF_ERROR(FromRocks(it->status(), "scan retention index"));
    }
    if (cands.empty()) break;
    cursor = cands.back().due_key + std::string(1, '\0');
    auto r = RunSyncOp<RetentionStats>(*impl_, [&](auto done) {
      return std::make_unique<RetentionOp>(std::move(cands), std::move(done));
    });
    if (!r.ok()) return r.status();
    add(*r);
  }

  // Idempotency records past the dedup window, oldest first.
  const int64_t cutoff = now - impl_->opts.dedup_window.count();
  cursor = "k";
  for (;;) {
    std::vector<ExpireKeysOp::Candidate> cands;
    {
      Impl::SnapshotPtr hold;
      auto it = impl_->DurableIterator(Cf::kRetention, &hold);
      for (it->Seek(cursor); it->Valid() && cands.size() < batch; it->Next()) {
        std::string_view key(it->key().data(), it->key().size());
        if (key.empty() || key[0] != 'k') break;
        if (key.size() < 9) continue;
        auto created = DecodeU64(key.substr(1, 8));
        if (!created.ok()) continue;
        if (static_cast<int64_t>(*created) > cutoff) break;
        cands.push_back(
            {std::string(key), static_cast<int64_t>(*created), std::string(key.substr(9))});
      }
      LEDGERQ_RETURN_IF_ERROR(FromRocks(it->status(), "scan retention index"));
    }
    if (cands.empty()) break;
    cursor = cands.back().index_key + std::string(1, '\0');
    auto r = RunSyncOp<RetentionStats>(*impl_, [&](auto done) {
      return std::make_unique<ExpireKeysOp>(std::move(cands), std::move(done));
    });
    if (!r.ok()) return r.status();
    add(*r);
  }
  total.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return total;
}

Result<uint64_t> JobStore::RebuildRetentionIndex() {
  constexpr size_t kBatch = 512;
  uint64_t indexed = 0;
  const bool keys_indexed = impl_->GetValue(Cf::kMeta, kRetentionIndexedKey).ok();
  std::vector<std::pair<uint64_t, int64_t>> jobs;
  std::vector<std::pair<std::string, int64_t>> keys;
  auto flush = [&](bool mark) -> Status {
    if (jobs.empty() && keys.empty() && !mark) return Status::Ok();
    auto r = RunSyncOp<uint64_t>(*impl_, [&](auto done) {
      return std::make_unique<IndexOp>(std::move(jobs), std::move(keys), mark, std::move(done));
    });
    jobs.clear();
    keys.clear();
    if (!r.ok()) return r.status();
    indexed += *r;
    return Status::Ok();
  };
  if (impl_->opts.retention) {
    std::set<uint64_t> known;
    {
      Impl::SnapshotPtr hold;
      auto it = impl_->DurableIterator(Cf::kRetention, &hold);
      for (it->Seek("j"); it->Valid() && it->key().starts_with("j"); it->Next()) {
        auto id = DecodeU64(std::string_view(it->key().data() + 1, it->key().size() - 1));
        if (id.ok()) known.insert(*id);
      }
      LEDGERQ_RETURN_IF_ERROR(FromRocks(it->status(), "scan retention index"));
    }
    Status st;
    LEDGERQ_RETURN_IF_ERROR(ScanJobs([&](const JobRecord& job) {
      if (!IsFinished(job.state()) || known.count(job.id())) return true;
      const RetentionPolicy p = impl_->opts.retention(job.queue(), job.type());
      if (NextRetentionDue(job, job.updated_at_us(), p, impl_->opts.dedup_window) == 0) {
        return true;
      }
      jobs.emplace_back(job.id(), job.updated_at_us());
      if (jobs.size() >= kBatch) st = flush(false);
      return st.ok();
    }));
    LEDGERQ_RETURN_IF_ERROR(st);
  }
  if (!keys_indexed) {
    Impl::SnapshotPtr hold;
    auto it = impl_->DurableIterator(Cf::kIdempotency, &hold);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      v1::IdempotencyRecord rec;
      if (!DecodeRecord(std::string_view(it->value().data(), it->value().size()),
                        kIdempotencyFormatVersion, &rec, "idempotency")
               .ok()) {
        continue;
      }
      keys.emplace_back(it->key().ToString(), rec.created_at_us());
      if (keys.size() >= kBatch) LEDGERQ_RETURN_IF_ERROR(flush(false));
    }
    LEDGERQ_RETURN_IF_ERROR(FromRocks(it->status(), "scan idempotency keys"));
  }
  LEDGERQ_RETURN_IF_ERROR(flush(!keys_indexed));
  return indexed;
}

void JobStore::TruncateLog(uint64_t to_seq, Digest to_hash, std::string principal,
                           std::function<void(Result<Checkpoint>)> done) {
  impl_->Submit(std::make_unique<TruncateOp>(to_seq, to_hash, std::move(principal),
                                             &impl_->archived_to, std::move(done)));
}

Checkpoint JobStore::GetCheckpoint() const {
  auto value = impl_->GetValue(Cf::kMeta, kCheckpointKey);
  if (!value.ok()) return {};
  auto cp = DecodeCheckpoint(*value);
  return cp.ok() ? *cp : Checkpoint{};
}

Status JobStore::CompactArchived() {
  std::lock_guard lock(impl_->compact_mu);
  const uint64_t to = impl_->archived_to.load();
  if (to <= impl_->compacted_to) return Status::Ok();
  rocksdb::CompactRangeOptions o;
  // The removed range's tombstones and the values under them are dropped only where a
  // compaction reaches the bottommost level holding them.
  o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  const std::string end = EncodeU64(to + 1);
  rocksdb::Slice end_slice(end);
  LEDGERQ_RETURN_IF_ERROR(
      FromRocks(impl_->db->CompactRange(o, impl_->cf(Cf::kLog), nullptr, &end_slice),
                "compact the archived log range"));
  LEDGERQ_RETURN_IF_ERROR(FromRocks(
      impl_->db->CompactRange(o, impl_->cf(Cf::kFailures), nullptr, nullptr), "compact failures"));
  impl_->compacted_to = to;
  return Status::Ok();
}

namespace {

// Walks the retained hash chain as `ro` sees the database: from the checkpoint ("meta"
// checkpoint; the all-zero hash when there is none) through every stored event to the chain
// head record. Shared by VerifyChain (offline, read-only open) and JobStore::VerifyLog (online,
// on a snapshot).
Result<VerifyReport> WalkChain(rocksdb::DB* db, const rocksdb::ReadOptions& ro,
                               rocksdb::ColumnFamilyHandle* log,
                               rocksdb::ColumnFamilyHandle* meta) {
  VerifyReport report;
  auto fail = [&](uint64_t seq, std::string problem) {
    report.ok = false;
    report.first_bad_seq = seq;
    report.problem = std::move(problem);
  };
  {
    std::string value;
    auto s = db->Get(ro, meta, kCheckpointKey, &value);
    if (s.ok()) {
      auto cp = DecodeCheckpoint(value);
      if (!cp.ok()) {
        fail(1, "the checkpoint record is unreadable");
        return report;
      }
      report.checkpoint_seq = cp->seq;
      report.checkpoint_hash = cp->hash;
    } else if (!s.IsNotFound()) {
      return FromRocks(s, "read checkpoint");
    }
  }
  Digest prev = report.checkpoint_hash;
  uint64_t expected = report.checkpoint_seq + 1;
  uint64_t last = report.checkpoint_seq;
  {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(ro, log));
    for (it->SeekToFirst(); it->Valid() && report.ok; it->Next(), ++expected) {
      auto key = DecodeU64(std::string_view(it->key().data(), it->key().size()));
      if (!key.ok()) {
        fail(expected, "a log key is malformed");
        break;
      }
      if (*key != expected) {
        if (*key < expected) {
          fail(*key, "event " + std::to_string(*key) + " is still stored below the checkpoint (" +
                         std::to_string(report.checkpoint_seq) + ")");
        } else {
          fail(expected, "event " + std::to_string(expected) + " is missing (the next stored is " +
                             std::to_string(*key) + ")");
        }
        break;
      }
      auto ev = DecodeEvent(std::string_view(it->value().data(), it->value().size()));
      EventBody body;
      if (!ev.ok() ||
          !body.ParseFromArray(ev->body_bytes.data(), static_cast<int>(ev->body_bytes.size()))) {
        fail(expected, "event " + std::to_string(expected) + " cannot be decoded");
        break;
      }
      if (body.seq() != expected) {
        fail(expected, "the event stored at " + std::to_string(expected) + " says it is " +
                           std::to_string(body.seq()) + " (events moved or reordered)");
        break;
      }
      if (ev->prev_hash != prev) {
        fail(expected, expected == report.checkpoint_seq + 1 && report.checkpoint_seq > 0
                           ? "event " + std::to_string(expected) +
                                 " does not chain onto the checkpoint (prev_hash differs)"
                           : "event " + std::to_string(expected) +
                                 " does not chain onto the event before it (prev_hash differs)");
        break;
      }
      if (ChainHash(prev, ev->body_bytes) != ev->hash) {
        fail(expected, "event " + std::to_string(expected) + " was altered (hash differs)");
        break;
      }
      prev = ev->hash;
      last = expected;
      ++report.events;
    }
    if (report.ok && !it->status().ok()) return FromRocks(it->status(), "read log");
  }
  if (report.ok) {
    std::string value;
    auto s = db->Get(ro, meta, kChainHeadKey, &value);
    v1::ChainHead head;
    if (s.IsNotFound()) {
      if (last != 0) fail(1, "the chain head record is missing");
    } else if (!s.ok() || !DecodeRecord(value, kMetaFormatVersion, &head, "chain head").ok()) {
      fail(last + 1, "the chain head record is unreadable");
    } else if (head.seq() > last) {
      fail(last + 1, "events " + std::to_string(last + 1) + ".." + std::to_string(head.seq()) +
                         " are missing (the chain head names " + std::to_string(head.seq()) + ")");
    } else if (head.seq() < last) {
      fail(head.seq() + 1,
           "events after " + std::to_string(head.seq()) + " are not covered by the chain head");
    } else if (head.hash() != AsBytes(prev)) {
      fail(head.seq(), "the chain head's hash does not match event " + std::to_string(head.seq()));
    }
  }
  report.head = prev;
  report.head_seq = last;
  return report;
}

}  // namespace

Result<VerifyReport> JobStore::VerifyLog() const {
  Impl::SnapshotPtr hold;
  rocksdb::ReadOptions ro = impl_->DurableRead(&hold);
  if (!hold) {
    // Nothing written since open: pin the database as it is now.
    hold = impl_->TakeSnapshotConst();
    ro.snapshot = hold.get();
  }
  return WalkChain(impl_->db.get(), ro, impl_->cf(Cf::kLog), impl_->cf(Cf::kMeta));
}

// ---------------------------------------------------------------------------------------------

Result<VerifyReport> VerifyChain(const std::string& data_dir) {
  const std::string path = DbPath(data_dir);
  if (!std::filesystem::exists(std::filesystem::path(path) / "CURRENT")) {
    return Status::NotFound("no ledgerq data in " + data_dir);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  descs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  std::vector<std::string> existing;
  (void)rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), path, &existing);
  for (const auto& spec : kColumnFamilies) {
    // A store written before a family existed is still verified (the family is simply absent).
    if (!existing.empty() &&
        std::find(existing.begin(), existing.end(), spec.name) == existing.end()) {
      continue;
    }
    descs.emplace_back(spec.name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  LEDGERQ_RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), path, descs, &handles, &raw),
                "open " + data_dir + " read-only"));
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::ColumnFamilyHandle* log = nullptr;
  rocksdb::ColumnFamilyHandle* meta = nullptr;
  for (auto* h : handles) {
    if (h->GetName() == "log") log = h;
    if (h->GetName() == "meta") meta = h;
  }
  auto report = WalkChain(db.get(), rocksdb::ReadOptions(), log, meta);
  for (auto* h : handles) (void)db->DestroyColumnFamilyHandle(h);
  return report;
}

}  // namespace ledgerq::storage
