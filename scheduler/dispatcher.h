// scheduler/ owns the decisions: which job goes to which lease, when timers fire, retries and
// dead-lettering. One strand owns all of its state; every public method may be called from any
// thread and posts into that strand. Storage is the authority on each job's state: every
// decision is a transition applied by the storage committer, and the strand submits them in the
// order it decided them, so the in-memory indexes and the store never disagree for long.
//
// Time: lease deadlines and long-poll waits run on the injected clock's monotonic time; run_at
// (a wall-clock instant chosen by users) is compared with its wall time.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "scheduler/flow_control.h"
#include "scheduler/retry_policy.h"
#include "scheduler/transitions.h"
#include "storage/job_store.h"

namespace ledgerq::scheduler {

// What the dispatcher needs of a job's (queue, type) policy.
struct JobPolicy {
  RetryPolicy retry;
  // A lease's duration (as asked, or the default) is clamped to these, per job; so is a
  // heartbeat's extension.
  std::chrono::microseconds min_lease = std::chrono::seconds(1);
  std::chrono::microseconds max_lease = std::chrono::hours(12);
  CircuitPolicy circuit;  // the (queue, type)'s circuit breaker; off unless enabled
};

struct DispatcherOptions {
  Clock* clock = SystemClock::Instance();
  RetryPolicy default_policy;  // when policy_of is not set
  // The policy in force for a (queue, type). Called on the strand and on the storage committer
  // (retries and expiries are decided there), so it must be thread-safe; a reload takes effect
  // for the next decision.
  std::function<JobPolicy(const std::string& queue, const std::string& type)> policy_of;
  std::chrono::microseconds default_lease = std::chrono::seconds(30);
  std::chrono::microseconds min_lease = std::chrono::seconds(1);
  std::chrono::microseconds max_lease_total = std::chrono::hours(12);
  std::chrono::microseconds max_wait = std::chrono::seconds(60);
  uint32_t max_jobs_per_lease = 256;
  double redrive_per_second = 5000;
  size_t redrive_chunk = 500;
  std::function<double()> random;  // [0, 1); default: a seeded mt19937_64
  // The masked payload snapshot kept with a failed attempt (expiries: the dispatcher fails
  // those itself); optional.
  std::function<std::string(uint64_t job_id)> payload_snapshot;
  // A live job reached DEAD (called on the strand, once per death; not for dead jobs found at
  // recovery). Remediation (on_dead_letter) hangs off it; optional, must not block.
  std::function<void(const storage::JobRecord& job)> on_dead;
  // The config file's limits of a queue (runtime ones set through SetLimits take precedence).
  // Read when a queue is first seen and on RefreshPolicies; thread-safe. Unset: unlimited.
  std::function<QueueLimits(const std::string& queue)> limits_of;
  // A circuit changed state (on the strand; after the change, before its event is durable).
  std::function<void(const std::string& queue, const std::string& type, const CircuitChange&)>
      on_circuit;
};

// Which limits a SetLimits call changes; unset fields keep their value, 0 removes a limit.
struct LimitsUpdate {
  std::optional<double> rate_per_second;
  std::optional<uint32_t> burst;
  std::optional<uint32_t> max_concurrency;
  std::optional<uint32_t> max_per_key;
};

struct LeaseParams {
  std::vector<std::string> queues;
  std::string worker_id;
  uint32_t max_jobs = 1;
  std::chrono::microseconds lease_duration{0};  // 0: default
  std::chrono::microseconds wait{0};
  std::string principal;
};

// Checks LeaseParams against the options; errors name the field.
[[nodiscard]] Status ValidateLease(const LeaseParams& p, const DispatcherOptions& o);

struct LeasedJob {
  storage::JobRecord job;
  std::string payload;
  std::optional<std::string> checkpoint;
  int64_t deadline_us = 0;
};

struct HeartbeatOutcome {
  Token token;
  bool lost = false;
  int64_t deadline_us = 0;
  std::string message;
};

struct CircuitStats {
  std::string type;
  CircuitState state = CircuitState::kClosed;
  std::string forced;  // "", "open", "closed"
  uint32_t window_attempts = 0, window_failures = 0;
  double failure_rate = 0;
  CircuitPolicy policy;
  int64_t half_open_at_us = 0;  // wall clock, when open by itself
  uint32_t opens = 0;
  std::chrono::microseconds cooldown{0};
  uint64_t held_back = 0;  // ready jobs of the type it holds back
};

struct QueueStats {
  std::string name;
  bool paused = false;
  uint64_t scheduled = 0, ready = 0, leased = 0, succeeded = 0, dead = 0, cancelled = 0;
  std::chrono::microseconds oldest_ready_age{0};
  QueueLimits limits;                  // in force
  bool runtime_limits = false;         // set through SetLimits (else from the config file)
  uint64_t held_back = 0;              // ready jobs a limit or an open circuit holds back now
  std::vector<CircuitStats> circuits;  // types with a circuit breaker, by name
};

struct DispatcherStats {
  uint64_t active_leases = 0;
  uint64_t parked_polls = 0;
};

class Dispatcher {
 public:
  using LeaseCallback = std::function<void(Result<std::vector<LeasedJob>>)>;
  using JobCallback = std::function<void(Result<storage::JobRecord>)>;

  Dispatcher(storage::JobStore* store, boost::asio::io_context& ioc, DispatcherOptions opts);
  ~Dispatcher();

  // Rebuilds every index from storage. Call once, before serving.
  [[nodiscard]] Status Recover();

  void OnCreated(const storage::JobRecord& job);
  void OnCancelled(const storage::JobRecord& job);
  // Retention removed a finished job's record (a RECORD_REMOVED event): it leaves the counts.
  void OnRemoved(uint64_t id, const std::string& queue, storage::State last_state);

  // Leases up to max_jobs, waiting up to `wait` for the first. The callback runs exactly once.
  // Returns an id for CancelLease.
  uint64_t Lease(LeaseParams params, LeaseCallback cb);
  // The caller is gone: answer CANCELLED if still parked; lease nothing more for it.
  void CancelLease(uint64_t lease_call_id);

  void Heartbeat(std::vector<Token> tokens, std::chrono::microseconds extend_by,
                 std::optional<std::string> checkpoint, std::string principal,
                 std::function<void(Result<std::vector<HeartbeatOutcome>>)> cb);
  using BatchCallback = std::function<void(std::vector<Result<storage::JobRecord>>)>;
  void Complete(Token token, std::string result, std::string principal, JobCallback cb);
  // Completes several leases in one durable write; one result per item, in order.
  void CompleteMany(std::vector<std::pair<Token, std::string>> items, std::string principal,
                    BatchCallback cb);
  void Fail(Token token, AttemptFailure failure,
            std::optional<std::chrono::microseconds> retry_after, std::string principal,
            JobCallback cb);
  void Release(Token token, std::chrono::microseconds delay, std::string principal, JobCallback cb);

  void SetPaused(std::string queue, bool paused, std::string principal,
                 std::function<void(Result<QueueStats>)> cb);
  void ListQueues(std::function<void(std::vector<QueueStats>)> cb);
  // Changes a queue's limits durably (QUEUE_LIMITS_CHANGED by `principal`); errors name the
  // field. Long-polls waiting on the queue are woken if the change lets them lease.
  void SetLimits(std::string queue, LimitsUpdate update, std::string principal,
                 std::function<void(Result<QueueStats>)> cb);
  // Forces a (queue, type) circuit open or closed, or gives it back to its breaker (kNone),
  // durably and as a CIRCUIT_* event by `principal`.
  void SetCircuit(std::string queue, std::string type, CircuitBreaker::Forced mode,
                  std::string principal, std::function<void(Result<QueueStats>)> cb);
  // The policies changed (SIGHUP): re-read config limits and circuit policies.
  void RefreshPolicies();
  // Dead jobs of `queue` with id > after_id, ascending, at most `limit`.
  void ListDeadIds(std::string queue, uint64_t after_id, size_t limit,
                   std::function<void(std::vector<uint64_t>)> cb);
  void Redrive(std::vector<uint64_t> ids, std::string principal,
               std::function<void(std::vector<Result<storage::JobRecord>>)> cb);
  // Selects up to `limit` (0: all) dead jobs of the queue and redrives them in the background
  // at the configured rate. Answers with how many were selected.
  void RedriveQueue(std::string queue, uint64_t limit, std::string principal,
                    std::function<void(Result<uint64_t>)> cb);

  // Runs whatever is due now (timers do this by themselves; tests with a FakeClock call it).
  void Poke();
  // Answers parked long-polls with no jobs and stops timers. Called before the server drains.
  void Stop();
  // Runs `fn` on the strand once everything posted before it has run (tests).
  void Sync(std::function<void()> fn);
  DispatcherStats Stats() const;

  const DispatcherOptions& options() const { return opts_; }

 private:
  struct Queue;
  struct Lane;
  // kNone: not counted anywhere (an entry being created or removed).
  enum class Phase { kNone, kScheduled, kReady, kLeasing, kLeased, kSettling };
  struct Entry {
    Queue* queue = nullptr;
    Lane* lane = nullptr;
    int32_t priority = 0;
    Phase phase = Phase::kNone;
    int64_t run_at_us = 0;
    int64_t ready_since_us = 0;
    uint32_t attempt = 0;
    std::chrono::steady_clock::time_point deadline{};
    std::chrono::steady_clock::time_point lease_started{};
    std::chrono::microseconds lease_duration{0};
    std::chrono::microseconds max_lease{0};  // the type's bound on one extension
  };
  // A Lease call's answer, given exactly once: by the storage finisher when its leases are
  // durable (one thread hop less than going through the strand), or by the strand when it times
  // out, is cancelled or the dispatcher stops. Whoever wins `done` answers.
  struct Delivery {
    LeaseCallback cb;
    std::atomic<bool> done{false};
    bool delivered_leases = false;  // written before the strand hears of it

    bool Give(Result<std::vector<LeasedJob>> r) {
      if (done.exchange(true)) return false;
      cb(std::move(r));
      return true;
    }
  };
  struct Waiter {
    uint64_t id = 0;
    LeaseParams params;
    std::shared_ptr<Delivery> delivery;
    std::chrono::steady_clock::time_point deadline{};
    bool parked = false;
  };
  using ReadyKey = std::pair<int64_t, uint64_t>;  // (-priority, id): highest first, then FIFO
  // Per job type of a queue: its circuit breaker, if it has one.
  struct TypeState {
    std::string name;
    uint32_t leased = 0;
    uint64_t ready = 0;
    CircuitPolicy circuit;  // cached from policy_of; refreshed on RefreshPolicies
    std::optional<CircuitBreaker> breaker;
  };
  // The ready jobs of one (type, concurrency key) in lease order. A lane whose key is at its
  // limit, or whose type's circuit holds it back, leaves the queue's `heads`: the leasable
  // lanes ordered by their first job, so a pick skips held-back jobs without scanning them.
  struct Lane {
    TypeState* type = nullptr;
    std::string key;
    std::set<ReadyKey> ready;
    uint32_t refs = 0;  // entries of this lane
    bool in_heads = false;
    ReadyKey head{};
  };
  struct Queue {
    std::string name;
    bool paused = false;
    std::map<std::pair<std::string, std::string>, Lane> lanes;  // (type, key)
    std::set<std::tuple<int64_t, uint64_t, Lane*>> heads;
    std::map<std::string, TypeState> types;
    std::unordered_map<std::string, uint32_t> key_leased;
    uint64_t ready = 0;
    std::set<uint64_t> dead;
    uint64_t scheduled = 0, leased = 0, succeeded = 0, cancelled = 0;
    std::list<uint64_t> waiters;
    QueueLimits limits;                  // in force
    std::optional<QueueLimits> runtime;  // set through SetLimits
    TokenBucket bucket;
    std::optional<std::chrono::steady_clock::time_point> refill_armed;
  };
  using Mono = std::chrono::steady_clock::time_point;

  template <typename Fn>
  void OnStrand(Fn&& fn);

  Queue& QueueOf(const std::string& name);
  TypeState& TypeOf(Queue& q, const std::string& type);
  Lane& LaneOf(Queue& q, const std::string& type, const std::string& key);
  void ReleaseLane(Queue& q, Lane& lane);
  // Flow control (strand only).
  void RefreshLane(Queue& q, Lane& lane);
  void RefreshKey(Queue& q, const std::string& key);
  void RefreshType(Queue& q, const std::string& type);
  void RefreshQueue(Queue& q);
  void AdjustLeased(Queue& q, Lane& lane, int delta);
  // Whether the queue may lease one more job now (pause, concurrency, rate); arms the refill
  // timer when only the rate holds it back.
  bool QueueOpen(Queue& q, Mono now);
  bool Limited(const Queue& q) const;
  enum class Outcome { kNone, kSuccess, kFailure };
  void RecordOutcome(const storage::JobRecord& job, Outcome o);
  void Emit(Queue& q, TypeState& ts, const CircuitChange& c, const std::string& principal,
            std::optional<std::string> forced, std::function<void(Status)> done = nullptr);
  void ArmCircuit(Queue& q, TypeState& ts);
  void ApplyPolicies(Queue& q);
  void TickFlow();
  JobPolicy PolicyFor(const std::string& queue, const std::string& type) const;
  // A transition that resolves the job's retry policy when it runs (on the committer).
  storage::TransitionFn WithRetryPolicy(
      std::function<storage::TransitionFn(RetryPolicy)> make) const;
  double Draw();
  std::function<double()> Drawer();

  // Index maintenance (strand only).
  // Makes the indexes match a stored record.
  void Index(const storage::JobRecord& job, bool recovering = false);
  void Unindex(uint64_t id);
  void SetPhase(uint64_t id, Entry& e, Phase phase);
  void MakeReady(uint64_t id, Entry& e);
  void PromoteDue();
  void ExpireDue();
  void TimeoutWaiters();
  void Wake(Queue& q);
  bool TryLease(Waiter& w);
  void FinishWaiter(uint64_t waiter_id, Result<std::vector<LeasedJob>> result);
  void AfterLease(uint64_t waiter_id, const std::shared_ptr<Delivery>& d,
                  const std::vector<uint64_t>& picks,
                  const std::vector<Result<storage::JobRecord>>& rs,
                  const std::vector<LeasedJob>& leased);
  void Tick();
  void Arm();
  void AfterWorkerCall(Token token, bool had_lease, const Result<storage::JobRecord>& r,
                       const JobCallback& cb, Outcome outcome);
  void WorkerCall(Token token, storage::TransitionFn fn, Outcome outcome, std::string principal,
                  JobCallback cb);
  void WorkerCalls(std::vector<Token> tokens, std::vector<storage::TransitionFn> fns,
                   std::vector<Outcome> outcomes, std::string principal, BatchCallback cb);
  void RedriveChunk(std::shared_ptr<std::vector<uint64_t>> ids, size_t offset,
                    std::string principal);
  QueueStats StatsOf(const Queue& q) const;

  storage::JobStore* store_;
  boost::asio::strand<boost::asio::io_context::executor_type> strand_;
  boost::asio::steady_timer timer_;
  DispatcherOptions opts_;

  std::unordered_map<uint64_t, Entry> entries_;  // every SCHEDULED, READY or LEASED job
  std::map<std::string, std::unique_ptr<Queue>> queues_;
  using TimedId = std::pair<int64_t, uint64_t>;
  std::priority_queue<TimedId, std::vector<TimedId>, std::greater<>> delayed_;  // run_at_us
  using MonoId = std::pair<Mono, uint64_t>;
  std::priority_queue<MonoId, std::vector<MonoId>, std::greater<>> deadlines_;
  std::priority_queue<MonoId, std::vector<MonoId>, std::greater<>> wait_deadlines_;
  // Rate-limited queues waiting for a token, and open circuits waiting for their cooldown.
  using MonoQueue = std::pair<Mono, std::string>;
  std::priority_queue<MonoQueue, std::vector<MonoQueue>, std::greater<>> refills_;
  using MonoCircuit = std::tuple<Mono, std::string, std::string>;  // (when, queue, type)
  std::priority_queue<MonoCircuit, std::vector<MonoCircuit>, std::greater<>> circuit_timers_;
  std::unordered_map<uint64_t, Waiter> waiters_;
  uint64_t next_waiter_id_ = 1;
  bool stopped_ = false;
  std::atomic<uint64_t> active_leases_{0};
  std::atomic<uint64_t> parked_polls_{0};
};

}  // namespace ledgerq::scheduler
