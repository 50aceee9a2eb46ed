#include "storage/job_store.h"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "storage/codec.h"

namespace ledgerq::storage {
namespace {

using v1::ChainHead;
using v1::IdempotencyRecord;

// The column families, declared once and bound by name after open (never by position).
enum class Cf { kLog, kJobs, kPayloads, kIdempotency, kMeta, kQueues, kByTrace, kFailures };
struct CfSpec {
  Cf id;
  const char* name;
  bool point_lookups;  // gets a bloom filter
};
constexpr CfSpec kColumnFamilies[] = {
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
};
constexpr uint8_t kFailureFormatVersion = 1;
constexpr size_t kNumCfs = std::size(kColumnFamilies);
constexpr char kChainHeadKey[] = "chain_head";
constexpr uint8_t kQueueFormatVersion = 1;

// The `payloads` family holds a job's large blobs: the payload under its id, the result and the
// latest checkpoint under the id plus a one-letter suffix.
std::string ResultKey(uint64_t id) { return EncodeU64(id) + "r"; }
std::string CheckpointKey(uint64_t id) { return EncodeU64(id) + "c"; }

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

  void WriteQueue(const std::string& name, const QueueRecord& rec) {
    batch_.Put(cf(Cf::kQueues), name, EncodeRecord(kQueueFormatVersion, rec));
    queues_[name] = rec;
  }

  Result<std::optional<IdempotencyRecord>> ReadIdempotency(const std::string& key) {
    if (auto it = idem_.find(key); it != idem_.end()) return std::optional(it->second);
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
  std::unordered_map<std::string, QueueRecord> queues_;
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
    for (size_t i = 0; i < items_.size(); ++i) outcomes_[i] = ApplyOne(txn, opts, i);
  }

  void Finish(const Status& write_status) override {
    if (!write_status.ok()) {
      // Nothing of the group was written (or it was never applied): every item failed.
      outcomes_.assign(items_.size(), EnqueueOutcome{write_status, {}, false});
    }
    done_(std::move(outcomes_));
  }

 private:
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
        job.add_event_seqs(txn.AppendEvent(ev));
        txn.WriteJob(job);
        return {Status::Ok(), std::move(job), true};
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
    rec.set_last_event_seq(txn.AppendEvent(ev));
    rec.add_event_seqs(rec.last_event_seq());

    txn.WriteJob(rec);
    txn.WritePayload(rec.id(), item.payload);
    if (rec.traceparent().size() >= 35) txn.IndexTrace(rec.traceparent().substr(3, 32), rec.id());
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

  void Apply(Txn& txn, const StoreOptions&) override {
    auto job = txn.ReadJob(id_);
    if (!job.ok()) {
      result_ = job.status();
      return;
    }
    JobRecord rec = std::move(job).value();
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

class QueueOp final : public Op {
 public:
  QueueOp(std::string queue, bool paused, std::string principal, std::function<void(Status)> done)
      : queue_(std::move(queue)),
        paused_(paused),
        principal_(std::move(principal)),
        done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions&) override {
    auto rec = txn.ReadQueue(queue_);
    if (!rec.ok()) {
      result_ = rec.status();
      return;
    }
    if (rec->paused() == paused_) return;  // already so: nothing to record
    rec->set_paused(paused_);
    rec->set_updated_at_us(txn.now_us());
    rec->set_updated_by(principal_);
    EventBody ev;
    ev.set_type(paused_ ? v1::EVENT_QUEUE_PAUSED : v1::EVENT_QUEUE_RESUMED);
    ev.set_principal(principal_);
    ev.set_queue(queue_);
    txn.AppendEvent(ev);
    txn.WriteQueue(queue_, *rec);
  }

  void Finish(const Status& write_status) override { done_(result_.ok() ? write_status : result_); }

 private:
  std::string queue_;
  bool paused_;
  std::string principal_;
  std::function<void(Status)> done_;
  Status result_;
};

}  // namespace

class TransitionOp final : public Op {
 public:
  TransitionOp(std::vector<TransitionItem> items, std::string principal, TransitionCallback done)
      : items_(std::move(items)), principal_(std::move(principal)), done_(std::move(done)) {}

  void Apply(Txn& txn, const StoreOptions&) override {
    results_.reserve(items_.size());
    for (auto& item : items_) results_.push_back(ApplyOne(txn, item));
  }

  void Finish(const Status& write_status) override {
    if (!write_status.ok()) {
      results_.assign(items_.size(), Result<JobRecord>(write_status));
    }
    done_(std::move(results_));
  }

 private:
  Result<JobRecord> ApplyOne(Txn& txn, TransitionItem& item) {
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
      (void)db->SyncWAL();
      lock.lock();
    }
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
  impl_->Submit(
      std::make_unique<QueueOp>(std::move(queue), paused, std::move(principal), std::move(done)));
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
  Impl::SnapshotPtr hold;
  auto it = impl_->DurableIterator(Cf::kJobs, &hold);
  for (it->Seek(EncodeU64(from_id)); it->Valid(); it->Next()) {
    JobRecord rec;
    LEDGERQ_RETURN_IF_ERROR(DecodeRecord(std::string_view(it->value().data(), it->value().size()),
                                         kJobFormatVersion, &rec, "job"));
    if (!fn(rec)) break;
  }
  return FromRocks(it->status(), "scan jobs");
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

Result<VerifyReport> VerifyChain(const std::string& data_dir) {
  const std::string path = DbPath(data_dir);
  if (!std::filesystem::exists(std::filesystem::path(path) / "CURRENT")) {
    return Status::NotFound("no ledgerq data in " + data_dir);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  descs.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (const auto& spec : kColumnFamilies) {
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
  auto cleanup = [&] {
    for (auto* h : handles) (void)db->DestroyColumnFamilyHandle(h);
  };

  VerifyReport report;
  auto fail = [&](uint64_t seq, std::string problem) {
    report.ok = false;
    report.first_bad_seq = seq;
    report.problem = std::move(problem);
  };
  Digest prev{};
  uint64_t expected = 1;
  {
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), log));
    for (it->SeekToFirst(); it->Valid() && report.ok; it->Next(), ++expected) {
      auto key = DecodeU64(std::string_view(it->key().data(), it->key().size()));
      if (!key.ok()) {
        fail(expected, "a log key is malformed");
        break;
      }
      if (*key != expected) {
        fail(expected, "event " + std::to_string(expected) + " is missing (the next stored is " +
                           std::to_string(*key) + ")");
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
        fail(expected, "event " + std::to_string(expected) +
                           " does not chain onto the event before it (prev_hash differs)");
        break;
      }
      if (ChainHash(prev, ev->body_bytes) != ev->hash) {
        fail(expected, "event " + std::to_string(expected) + " was altered (hash differs)");
        break;
      }
      prev = ev->hash;
      report.events = expected;
    }
    if (report.ok && !it->status().ok()) {
      Status st = FromRocks(it->status(), "read log");
      cleanup();
      return st;
    }
  }
  if (report.ok) {
    std::string value;
    auto s = db->Get(rocksdb::ReadOptions(), meta, kChainHeadKey, &value);
    v1::ChainHead head;
    if (s.IsNotFound()) {
      if (report.events != 0) fail(1, "the chain head record is missing");
    } else if (!s.ok() || !DecodeRecord(value, kMetaFormatVersion, &head, "chain head").ok()) {
      fail(report.events + 1, "the chain head record is unreadable");
    } else if (head.seq() > report.events) {
      fail(report.events + 1,
           "events " + std::to_string(report.events + 1) + ".." + std::to_string(head.seq()) +
               " are missing (the chain head names " + std::to_string(head.seq()) + ")");
    } else if (head.seq() < report.events) {
      fail(head.seq() + 1,
           "events after " + std::to_string(head.seq()) + " are not covered by the chain head");
    } else if (head.hash() != AsBytes(prev)) {
      fail(head.seq(), "the chain head's hash does not match event " + std::to_string(head.seq()));
    }
  }
  report.head = prev;
  cleanup();
  return report;
}

}  // namespace ledgerq::storage
