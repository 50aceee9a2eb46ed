#include "scheduler/dispatcher.h"

#include <algorithm>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/post.hpp>
#include <mutex>
#include <random>

namespace ledgerq::scheduler {
namespace {

namespace sv1 = storage::v1;
using std::chrono::microseconds;

// Errors that mean "the write did not happen", after which the in-memory decision is undone;
// anything else means the job moved on and is re-read from the store.
bool IsWriteFailure(const Status& st) {
  return st.code() == Code::kUnavailable || st.code() == Code::kResourceExhausted ||
         st.code() == Code::kInternal || st.code() == Code::kCorruption;
}

}  // namespace

Status ValidateLease(const LeaseParams& p, const DispatcherOptions& o) {
  if (p.queues.empty()) return Status::InvalidArgument("queues: give at least one queue");
  if (p.queues.size() > 64) return Status::InvalidArgument("queues: at most 64 queues");
  if (p.worker_id.empty() || p.worker_id.size() > 256) {
    return Status::InvalidArgument("worker_id: must be 1 to 256 bytes");
  }
  if (p.max_jobs > o.max_jobs_per_lease) {
    return Status::InvalidArgument("max_jobs: at most " + std::to_string(o.max_jobs_per_lease) +
                                   ", got " + std::to_string(p.max_jobs));
  }
  if (p.lease_duration.count() != 0 &&
      (p.lease_duration < o.min_lease || p.lease_duration > o.max_lease_total)) {
    return Status::InvalidArgument("lease_duration: must be between 1s and 12h");
  }
  if (p.wait.count() < 0 || p.wait > o.max_wait) {
    return Status::InvalidArgument("wait: must be between 0 and 60s");
  }
  return Status::Ok();
}

Dispatcher::Dispatcher(storage::JobStore* store, boost::asio::io_context& ioc,
                       DispatcherOptions opts)
    : store_(store),
      strand_(boost::asio::make_strand(ioc)),
      timer_(strand_),
      opts_(std::move(opts)) {
  if (!opts_.random) {
    auto rng = std::make_shared<std::mt19937_64>(std::random_device{}());
    auto mu = std::make_shared<std::mutex>();
    opts_.random = [rng, mu] {
      std::lock_guard lock(*mu);
      return std::uniform_real_distribution<double>(0.0, 1.0)(*rng);
    };
  }
}

Dispatcher::~Dispatcher() = default;

template <typename Fn>
void Dispatcher::OnStrand(Fn&& fn) {
  boost::asio::post(strand_, std::forward<Fn>(fn));
}

Dispatcher::Queue& Dispatcher::QueueOf(const std::string& name) {
  auto& slot = queues_[name];
  if (!slot) {
    slot = std::make_unique<Queue>();
    slot->name = name;
    if (opts_.limits_of) slot->limits = opts_.limits_of(name);
  }
  return *slot;
}

Dispatcher::TypeState& Dispatcher::TypeOf(Queue& q, const std::string& type) {
  auto [it, fresh] = q.types.try_emplace(type);
  TypeState& ts = it->second;
  if (fresh) {
    ts.name = type;
    ts.circuit = PolicyFor(q.name, type).circuit;
    if (ts.circuit.enabled) ts.breaker.emplace();
  }
  return ts;
}

Dispatcher::Lane& Dispatcher::LaneOf(Queue& q, const std::string& type, const std::string& key) {
  auto [it, fresh] = q.lanes.try_emplace({type, key});
  Lane& lane = it->second;
  if (fresh) {
    lane.type = &TypeOf(q, type);
    lane.key = key;
  }
  ++lane.refs;
  return lane;
}

void Dispatcher::ReleaseLane(Queue& q, Lane& lane) {
  if (--lane.refs > 0) return;
  if (lane.in_heads) q.heads.erase({lane.head.first, lane.head.second, &lane});
  q.lanes.erase({lane.type->name, lane.key});
}

// ---------------------------------------------------------------------------------------------
// Flow control. A lane is in its queue's `heads` exactly when it has a ready job and neither
// its key's limit nor its type's circuit holds it back; queue-wide limits (pause, concurrency,
// rate) are checked at each pick by QueueOpen.

void Dispatcher::RefreshLane(Queue& q, Lane& lane) {
  bool eligible = !lane.ready.empty();
  if (eligible && lane.type->breaker) {
    eligible = lane.type->breaker->Allows(lane.type->leased, lane.type->circuit);
  }
  if (eligible && !lane.key.empty() && q.limits.max_per_key > 0) {
    auto it = q.key_leased.find(lane.key);
    eligible = it == q.key_leased.end() || it->second < q.limits.max_per_key;
  }
  if (lane.in_heads && (!eligible || lane.head != *lane.ready.begin())) {
    q.heads.erase({lane.head.first, lane.head.second, &lane});
    lane.in_heads = false;
  }
  if (eligible && !lane.in_heads) {
    lane.head = *lane.ready.begin();
    q.heads.insert({lane.head.first, lane.head.second, &lane});
    lane.in_heads = true;
  }
}

void Dispatcher::RefreshKey(Queue& q, const std::string& key) {
  for (auto& [type, ts] : q.types) {
    auto it = q.lanes.find({type, key});
    if (it != q.lanes.end()) RefreshLane(q, it->second);
  }
}

void Dispatcher::RefreshType(Queue& q, const std::string& type) {
  for (auto it = q.lanes.lower_bound({type, std::string()});
       it != q.lanes.end() && it->first.first == type; ++it) {
    RefreshLane(q, it->second);
  }
}

void Dispatcher::RefreshQueue(Queue& q) {
  for (auto& [k, lane] : q.lanes) RefreshLane(q, lane);
}

void Dispatcher::AdjustLeased(Queue& q, Lane& lane, int delta) {
  q.leased += delta;
  lane.type->leased += delta;
  if (!lane.key.empty()) {
    auto& n = q.key_leased[lane.key];
    n += delta;
    if (n == 0) q.key_leased.erase(lane.key);
    if (q.limits.max_per_key > 0) RefreshKey(q, lane.key);
  }
  if (lane.type->breaker && lane.type->breaker->state() == CircuitState::kHalfOpen) {
    RefreshType(q, lane.type->name);
  }
}

bool Dispatcher::Limited(const Queue& q) const {
  if (q.limits.any()) return true;
  for (const auto& [name, ts] : q.types) {
    if (ts.breaker && ts.breaker->state() != CircuitState::kClosed) return true;
  }
  return false;
}

bool Dispatcher::QueueOpen(Queue& q, Mono now) {
  if (q.paused || q.heads.empty()) return false;
  if (q.limits.max_concurrency > 0 && q.leased >= q.limits.max_concurrency) return false;
  if (q.limits.rate_per_second > 0) {
    q.bucket.Refill(now, q.limits.rate_per_second, q.limits.burst);
    if (!q.bucket.Has()) {
      const Mono at = q.bucket.NextToken(now, q.limits.rate_per_second);
      if (!q.refill_armed || at < *q.refill_armed) {
        q.refill_armed = at;
        refills_.push({at, q.name});
      }
      return false;
    }
  }
  return true;
}

void Dispatcher::ArmCircuit(Queue& q, TypeState& ts) {
  if (!ts.breaker) return;
  if (auto at = ts.breaker->half_open_at()) circuit_timers_.push({*at, q.name, ts.name});
}

void Dispatcher::Emit(Queue& q, TypeState& ts, const CircuitChange& c, const std::string& principal,
                      std::optional<std::string> forced, std::function<void(Status)> done) {
  storage::CircuitRecord rec;
  rec.set_job_type(ts.name);
  rec.set_from_state(CircuitStateName(c.from));
  rec.set_to_state(CircuitStateName(c.to));
  rec.set_cause(c.cause);
  rec.set_window_attempts(c.window_attempts);
  rec.set_window_failures(c.window_failures);
  rec.set_failure_rate(c.failure_rate);
  rec.set_threshold(ts.circuit.threshold);
  rec.set_window_us(ts.circuit.window.count());
  rec.set_min_attempts(ts.circuit.min_attempts);
  rec.set_cooldown_us(c.cooldown.count());
  rec.set_trials(ts.circuit.trials);
  rec.set_forced(c.forced);
  if (opts_.on_circuit) opts_.on_circuit(q.name, ts.name, c);
  store_->RecordCircuit(q.name, std::move(rec), std::move(forced), principal,
                        [done = std::move(done)](Status st) {
                          if (done) done(st);
                        });
}

void Dispatcher::RecordOutcome(const storage::JobRecord& job, Outcome o) {
  if (o == Outcome::kNone) return;
  auto qit = queues_.find(job.queue());
  if (qit == queues_.end()) return;
  Queue& q = *qit->second;
  auto tit = q.types.find(job.type());
  if (tit == q.types.end() || !tit->second.breaker) return;
  TypeState& ts = tit->second;
  auto change = ts.breaker->Record(o == Outcome::kFailure, opts_.clock->MonoNow(), ts.circuit);
  if (!change) return;
  Emit(q, ts, *change, "ledgerqd", std::nullopt);
  ArmCircuit(q, ts);
  RefreshType(q, ts.name);
}

void Dispatcher::TickFlow() {
  const Mono now = opts_.clock->MonoNow();
  std::set<std::string> wake;
  while (!refills_.empty() && refills_.top().first <= now) {
    std::string name = refills_.top().second;
    refills_.pop();
    auto it = queues_.find(name);
    if (it == queues_.end()) continue;
    it->second->refill_armed.reset();
    wake.insert(name);
  }
  while (!circuit_timers_.empty() && std::get<0>(circuit_timers_.top()) <= now) {
    auto [at, qname, type] = circuit_timers_.top();
    circuit_timers_.pop();
    auto qit = queues_.find(qname);
    if (qit == queues_.end()) continue;
    Queue& q = *qit->second;
    auto tit = q.types.find(type);
    if (tit == q.types.end() || !tit->second.breaker) continue;
    TypeState& ts = tit->second;
    auto change = ts.breaker->Tick(now, ts.circuit);
    if (!change) continue;  // stale timer
    Emit(q, ts, *change, "ledgerqd", std::nullopt);
    RefreshType(q, type);
    wake.insert(qname);
  }
  for (const auto& name : wake) Wake(QueueOf(name));
}

void Dispatcher::ApplyPolicies(Queue& q) {
  if (!q.runtime && opts_.limits_of) q.limits = opts_.limits_of(q.name);
  const Mono now = opts_.clock->MonoNow();
  for (auto& [type, ts] : q.types) {
    ts.circuit = PolicyFor(q.name, type).circuit;
    if (ts.circuit.enabled && !ts.breaker) ts.breaker.emplace();
    if (!ts.circuit.enabled && ts.breaker &&
        ts.breaker->forced() == CircuitBreaker::Forced::kNone) {
      // Turned off: a circuit that was holding jobs back closes, and says so.
      if (ts.breaker->state() != CircuitState::kClosed) {
        auto change = ts.breaker->Force(CircuitBreaker::Forced::kNone, now, ts.circuit);
        if (change) {
          change->cause = "disabled";
          Emit(q, ts, *change, "ledgerqd", std::nullopt);
        }
      }
      ts.breaker.reset();
    }
  }
  RefreshQueue(q);
}

void Dispatcher::RefreshPolicies() {
  OnStrand([this] {
    for (auto& [name, q] : queues_) ApplyPolicies(*q);
    for (auto& [name, q] : queues_) Wake(*q);
    Arm();
  });
}

JobPolicy Dispatcher::PolicyFor(const std::string& queue, const std::string& type) const {
  if (opts_.policy_of) return opts_.policy_of(queue, type);
  return JobPolicy{opts_.default_policy, opts_.min_lease, opts_.max_lease_total, CircuitPolicy{}};
}

storage::TransitionFn Dispatcher::WithRetryPolicy(
    std::function<storage::TransitionFn(RetryPolicy)> make) const {
  return [this, make = std::move(make)](storage::JobRecord& job, storage::TransitionWriter& w,
                                        int64_t now) {
    return make(PolicyFor(job.queue(), job.type()).retry)(job, w, now);
  };
}

std::function<double()> Dispatcher::Drawer() { return opts_.random; }

// ---------------------------------------------------------------------------------------------
// Index maintenance. Every phase change goes through SetPhase so the per-queue counts and the
// timer heaps stay in step with the entries.

namespace {
bool IsLeasePhase(int p) { return p >= 3; }  // kLeasing, kLeased, kSettling
}  // namespace

void Dispatcher::SetPhase(uint64_t id, Entry& e, Phase phase) {
  Queue& q = *e.queue;
  Lane& lane = *e.lane;
  const ReadyKey key{-static_cast<int64_t>(e.priority), id};
  const bool was_leased = IsLeasePhase(static_cast<int>(e.phase));
  const bool now_leased = IsLeasePhase(static_cast<int>(phase));
  bool lane_changed = false;
  switch (e.phase) {
    case Phase::kReady:
      lane.ready.erase(key);
      --q.ready;
      --lane.type->ready;
      lane_changed = true;
      break;
    case Phase::kScheduled:
      --q.scheduled;
      break;
    case Phase::kLeased:
    case Phase::kSettling:
      --active_leases_;
      break;
    case Phase::kNone:
    case Phase::kLeasing:
      break;
  }
  e.phase = phase;
  switch (phase) {
    case Phase::kReady:
      lane.ready.insert(key);
      ++q.ready;
      ++lane.type->ready;
      lane_changed = true;
      break;
    case Phase::kScheduled:
      ++q.scheduled;
      delayed_.push({e.run_at_us, id});
      break;
    case Phase::kLeased:
      ++active_leases_;
      deadlines_.push({e.deadline, id});
      break;
    case Phase::kSettling:
      ++active_leases_;
      break;
    case Phase::kNone:
    case Phase::kLeasing:
      break;
  }
  if (was_leased != now_leased) AdjustLeased(q, lane, now_leased ? 1 : -1);
  if (lane_changed) RefreshLane(q, lane);
}

void Dispatcher::Unindex(uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  SetPhase(id, e, Phase::kNone);
  Queue& q = *e.queue;
  Lane& lane = *e.lane;
  entries_.erase(it);
  ReleaseLane(q, lane);
}

void Dispatcher::Index(const storage::JobRecord& job, bool recovering) {
  Queue& q = QueueOf(job.queue());
  // Terminal states are counted once: when a live job reaches them (or found at recovery), not
  // again when an idempotent repeat (a second Complete) reports the same record.
  const bool was_live = entries_.count(job.id()) > 0;
  Unindex(job.id());
  if (job.state() != sv1::STATE_DEAD) q.dead.erase(job.id());
  const int64_t now = opts_.clock->WallMicros();
  auto make_entry = [&]() -> Entry& {
    Entry& e = entries_[job.id()];
    e.queue = &q;
    e.lane = &LaneOf(q, job.type(), job.concurrency_key());
    e.priority = job.priority();
    e.run_at_us = job.run_at_us();
    e.attempt = job.attempts();
    e.phase = Phase::kNone;  // counted nowhere until the SetPhase below
    return e;
  };
  switch (job.state()) {
    case sv1::STATE_SCHEDULED:
    case sv1::STATE_READY: {
      Entry& e = make_entry();
      if (job.state() == sv1::STATE_READY || job.run_at_us() <= now) {
        e.ready_since_us = job.run_at_us();
        SetPhase(job.id(), e, Phase::kReady);
        // Whatever made it ready (an enqueue, a retry already due, a release, a redrive):
        // parked long-polls hear of it now.
        if (!recovering) Wake(q);
      } else {
        SetPhase(job.id(), e, Phase::kScheduled);
      }
      break;
    }
    case sv1::STATE_LEASED: {
      // A lease found in storage (at recovery) gets, from now, the time its last grant or
      // extension gave it: a worker that kept running through a restart can still finish.
      Entry& e = make_entry();
      const Mono mono = opts_.clock->MonoNow();
      e.lease_duration = std::max<microseconds>(
          opts_.min_lease, microseconds(job.lease_deadline_us() - job.lease_granted_us()));
      e.max_lease = PolicyFor(job.queue(), job.type()).max_lease;
      e.lease_started = mono - microseconds(job.lease_granted_us() - job.lease_started_us());
      e.deadline = mono + e.lease_duration;
      SetPhase(job.id(), e, Phase::kLeased);
      break;
    }
    case sv1::STATE_SUCCEEDED:
      if (was_live || recovering) ++q.succeeded;
      break;
    case sv1::STATE_CANCELLED:
      if (was_live || recovering) ++q.cancelled;
      break;
    case sv1::STATE_DEAD:
      q.dead.insert(job.id());
      if (was_live && !recovering && opts_.on_dead) opts_.on_dead(job);
      break;
    default:
      break;
  }
}

Status Dispatcher::Recover() {
  LEDGERQ_RETURN_IF_ERROR(store_->ScanQueues([&](const std::string& name,
                                                 const storage::QueueRecord& rec) {
    Queue& q = QueueOf(name);
    q.paused = rec.paused();
    if (rec.has_limits()) {
      const auto& l = rec.limits();
      q.runtime = QueueLimits{l.rate_per_second(), l.burst(), l.max_concurrency(), l.max_per_key()};
      q.limits = *q.runtime;
    }
    const Mono now = opts_.clock->MonoNow();
    for (const auto& [type, mode] : rec.forced_circuits()) {
      TypeState& ts = TypeOf(q, type);
      if (!ts.breaker) ts.breaker.emplace();
      ts.breaker->Restore(
          mode == "open" ? CircuitBreaker::Forced::kOpen : CircuitBreaker::Forced::kClosed, now);
    }
  }));
  LEDGERQ_RETURN_IF_ERROR(store_->ScanJobs([&](const storage::JobRecord& job) {
    Index(job, /*recovering=*/true);
    return true;
  }));
  OnStrand([this] { Arm(); });
  return Status::Ok();
}

// ---------------------------------------------------------------------------------------------
// Timers

void Dispatcher::PromoteDue() {
  const int64_t now = opts_.clock->WallMicros();
  std::set<Queue*> woken;
  while (!delayed_.empty() && delayed_.top().first <= now) {
    auto [run_at, id] = delayed_.top();
    delayed_.pop();
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.phase != Phase::kScheduled ||
        it->second.run_at_us != run_at) {
      continue;  // stale heap entry
    }
    it->second.ready_since_us = run_at;
    SetPhase(id, it->second, Phase::kReady);
    woken.insert(it->second.queue);
  }
  for (Queue* q : woken) Wake(*q);
}

void Dispatcher::ExpireDue() {
  const Mono now = opts_.clock->MonoNow();
  while (!deadlines_.empty() && deadlines_.top().first <= now) {
    uint64_t id = deadlines_.top().second;
    deadlines_.pop();
    auto it = entries_.find(id);
    if (it == entries_.end() || it->second.phase != Phase::kLeased || it->second.deadline > now) {
      continue;  // completed, or extended since
    }
    Entry& e = it->second;
    SetPhase(id, e, Phase::kSettling);
    Token token{id, e.attempt, {}};  // the daemon fences on the attempt alone
    std::vector<storage::TransitionItem> items;
    items.push_back(
        {id, WithRetryPolicy([token, random = Drawer(),
                              snapshot = opts_.payload_snapshot ? opts_.payload_snapshot(id) : ""](
                                 RetryPolicy p) { return ExpireFn(token, p, random, snapshot); })});
    store_->Transition(std::move(items), "ledgerqd",
                       [this, token](std::vector<Result<storage::JobRecord>> rs) {
                         OnStrand([this, token, r = std::move(rs[0])] {
                           AfterWorkerCall(token, true, r, nullptr, Outcome::kFailure);
                         });
                       });
  }
}

void Dispatcher::TimeoutWaiters() {
  const Mono now = opts_.clock->MonoNow();
  while (!wait_deadlines_.empty() && wait_deadlines_.top().first <= now) {
    uint64_t wid = wait_deadlines_.top().second;
    wait_deadlines_.pop();
    auto it = waiters_.find(wid);
    if (it != waiters_.end() && it->second.parked && it->second.deadline <= now) {
      FinishWaiter(wid, std::vector<LeasedJob>{});
    }
  }
}

void Dispatcher::Tick() {
  if (stopped_) return;
  PromoteDue();
  ExpireDue();
  TickFlow();
  TimeoutWaiters();
  Arm();
}

void Dispatcher::Arm() {
  if (stopped_) return;
  const Mono mono = opts_.clock->MonoNow();
  std::optional<Mono> next;
  auto consider = [&](Mono t) {
    if (!next || t < *next) next = t;
  };
  if (!delayed_.empty()) {
    consider(mono + microseconds(delayed_.top().first - opts_.clock->WallMicros()));
  }
  if (!deadlines_.empty()) consider(deadlines_.top().first);
  if (!wait_deadlines_.empty()) consider(wait_deadlines_.top().first);
  if (!refills_.empty()) consider(refills_.top().first);
  if (!circuit_timers_.empty()) consider(std::get<0>(circuit_timers_.top()));
  if (!next) return;
  // Never sleep past an hour: a wall-clock jump must not strand delayed jobs for long.
  auto wait = std::clamp<std::chrono::steady_clock::duration>(*next - mono, microseconds(0),
                                                              std::chrono::hours(1));
  timer_.expires_after(wait);
  timer_.async_wait(boost::asio::bind_executor(strand_, [this](boost::system::error_code ec) {
    if (!ec) Tick();
  }));
}

void Dispatcher::Poke() {
  OnStrand([this] { Tick(); });
}

void Dispatcher::Sync(std::function<void()> fn) { OnStrand(std::move(fn)); }

void Dispatcher::Stop() {
  OnStrand([this] {
    stopped_ = true;
    timer_.cancel();
    std::vector<uint64_t> parked;
    for (auto& [wid, w] : waiters_) {
      if (w.parked) parked.push_back(wid);
    }
    for (uint64_t wid : parked) FinishWaiter(wid, std::vector<LeasedJob>{});
  });
}

DispatcherStats Dispatcher::Stats() const { return {active_leases_.load(), parked_polls_.load()}; }

// ---------------------------------------------------------------------------------------------
// Leasing

void Dispatcher::OnCreated(const storage::JobRecord& job) {
  OnStrand([this, job] {
    Index(job);
    Arm();
  });
}

void Dispatcher::OnCancelled(const storage::JobRecord& job) {
  OnStrand([this, job] { Index(job); });
}

void Dispatcher::OnRemoved(uint64_t id, const std::string& queue, storage::State last_state) {
  OnStrand([this, id, queue, last_state] {
    Queue& q = QueueOf(queue);
    switch (last_state) {
      case sv1::STATE_SUCCEEDED:
        if (q.succeeded > 0) --q.succeeded;
        break;
      case sv1::STATE_CANCELLED:
        if (q.cancelled > 0) --q.cancelled;
        break;
      case sv1::STATE_DEAD:
        q.dead.erase(id);
        break;
      default:
        break;
    }
  });
}

uint64_t Dispatcher::Lease(LeaseParams params, LeaseCallback cb) {
  static std::atomic<uint64_t> next_id{1};
  const uint64_t wid = next_id++;
  OnStrand([this, wid, params = std::move(params), cb = std::move(cb)]() mutable {
    if (stopped_) {
      cb(Status::Unavailable("the server is shutting down"));
      return;
    }
    Waiter& w = waiters_[wid];
    w.id = wid;
    w.params = std::move(params);
    if (w.params.max_jobs == 0) w.params.max_jobs = 1;
    if (w.params.lease_duration.count() == 0) w.params.lease_duration = opts_.default_lease;
    w.delivery = std::make_shared<Delivery>();
    w.delivery->cb = std::move(cb);
    w.deadline = opts_.clock->MonoNow() + w.params.wait;
    PromoteDue();
    if (TryLease(w)) return;
    if (w.params.wait.count() == 0) {
      FinishWaiter(wid, std::vector<LeasedJob>{});
      return;
    }
    w.parked = true;
    ++parked_polls_;
    for (const auto& name : w.params.queues) QueueOf(name).waiters.push_back(wid);
    wait_deadlines_.push({w.deadline, wid});
    Arm();
  });
  return wid;
}

void Dispatcher::CancelLease(uint64_t wid) {
  OnStrand([this, wid] {
    auto it = waiters_.find(wid);
    if (it == waiters_.end()) return;
    if (it->second.parked) {
      FinishWaiter(wid, Status::Unavailable("the call was cancelled"));
    } else {
      // In flight: answer now; leases that land afterwards are given back.
      it->second.delivery->Give(Status::Unavailable("the call was cancelled"));
    }
  });
}

void Dispatcher::FinishWaiter(uint64_t wid, Result<std::vector<LeasedJob>> result) {
  auto it = waiters_.find(wid);
  if (it == waiters_.end()) return;
  Waiter& w = it->second;
  if (w.parked) {
    --parked_polls_;
    for (const auto& name : w.params.queues) QueueOf(name).waiters.remove(wid);
  }
  std::shared_ptr<Delivery> d = std::move(w.delivery);
  waiters_.erase(it);
  if (d) d->Give(std::move(result));
}

void Dispatcher::Wake(Queue& q) {
  if (q.waiters.empty()) return;
  std::vector<uint64_t> candidates(q.waiters.begin(), q.waiters.end());
  for (uint64_t wid : candidates) {
    if (!QueueOpen(q, opts_.clock->MonoNow())) return;
    auto it = waiters_.find(wid);
    if (it != waiters_.end() && it->second.parked) TryLease(it->second);
  }
}

bool Dispatcher::TryLease(Waiter& w) {
  std::vector<uint64_t> picks;
  const Mono now = opts_.clock->MonoNow();
  while (picks.size() < w.params.max_jobs) {
    Queue* best = nullptr;
    for (const auto& name : w.params.queues) {
      auto it = queues_.find(name);
      if (it == queues_.end()) continue;
      Queue& q = *it->second;
      if (!QueueOpen(q, now)) continue;
      if (!best || *q.heads.begin() < *best->heads.begin()) best = &q;
    }
    if (!best) break;
    const uint64_t id = std::get<1>(*best->heads.begin());
    if (best->limits.rate_per_second > 0) best->bucket.Take();
    SetPhase(id, entries_.at(id), Phase::kLeasing);
    picks.push_back(id);
  }
  if (picks.empty()) return false;

  if (w.parked) {
    w.parked = false;
    --parked_polls_;
    for (const auto& name : w.params.queues) QueueOf(name).waiters.remove(w.id);
  }
  const microseconds duration = w.params.lease_duration;
  std::vector<storage::TransitionItem> items;
  for (uint64_t id : picks) {
    // Each job's lease is the asked duration within its type's bounds, from the group's time.
    items.push_back(
        {id, [this, worker = w.params.worker_id, principal = w.params.principal, duration](
                 storage::JobRecord& job, storage::TransitionWriter& tw, int64_t now) {
           const JobPolicy p = PolicyFor(job.queue(), job.type());
           const microseconds d = std::clamp(duration, p.min_lease, p.max_lease);
           return LeaseFn({worker, now + d.count(), principal})(job, tw, now);
         }});
  }
  const uint64_t wid = w.id;
  std::shared_ptr<Delivery> d = w.delivery;
  store_->Transition(
      std::move(items), w.params.principal,
      [this, wid, d, picks](std::vector<Result<storage::JobRecord>> rs) {
        // On the storage finisher thread, once the leases are durable: fetch what the worker
        // needs and answer right here; the strand only updates its indexes.
        std::vector<LeasedJob> leased;
        for (auto& r : rs) {
          if (!r.ok()) continue;
          LeasedJob lj;
          lj.job = *r;
          lj.deadline_us = r->lease_deadline_us();
          auto payload = store_->GetPayload(r->id());
          if (payload.ok()) lj.payload = std::move(payload).value();
          if (r->has_checkpoint()) {
            auto cp = store_->GetCheckpoint(r->id());
            if (cp.ok()) lj.checkpoint = std::move(cp).value();
          }
          leased.push_back(std::move(lj));
        }
        // Decide before posting, answer after: the strand sees this lease before any call the
        // worker makes with its tokens.
        const bool deliver = !leased.empty() && !d->done.exchange(true);
        std::vector<LeasedJob> answer;
        if (deliver) {
          d->delivered_leases = true;
          answer = leased;
        }
        OnStrand([this, wid, d, picks, rs = std::move(rs), leased = std::move(leased)]() mutable {
          AfterLease(wid, d, picks, rs, leased);
        });
        if (deliver) d->cb(std::move(answer));
      });
  return true;
}

void Dispatcher::AfterLease(uint64_t wid, const std::shared_ptr<Delivery>& d,
                            const std::vector<uint64_t>& picks,
                            const std::vector<Result<storage::JobRecord>>& rs,
                            const std::vector<LeasedJob>& leased) {
  const Mono now = opts_.clock->MonoNow();
  std::set<Queue*> back;
  Status write_failure;
  for (size_t i = 0; i < picks.size(); ++i) {
    if (!rs[i].ok() && IsWriteFailure(rs[i].status())) write_failure = rs[i].status();
    auto it = entries_.find(picks[i]);
    if (it == entries_.end()) continue;  // already settled by a fast worker
    Entry& e = it->second;
    if (e.phase != Phase::kLeasing) continue;
    if (rs[i].ok()) {
      e.attempt = rs[i]->attempts();
      e.lease_started = now;
      e.lease_duration = microseconds(rs[i]->lease_deadline_us() - rs[i]->lease_granted_us());
      e.max_lease = PolicyFor(rs[i]->queue(), rs[i]->type()).max_lease;
      e.deadline = now + e.lease_duration;
      SetPhase(picks[i], e, Phase::kLeased);
    } else if (IsWriteFailure(rs[i].status())) {
      SetPhase(picks[i], e, Phase::kReady);
      back.insert(e.queue);
    } else {
      auto fresh = store_->GetJob(picks[i]);
      if (fresh.ok())
        Index(*fresh);
      else
        Unindex(picks[i]);
    }
  }
  auto wit = waiters_.find(wid);
  if (d->delivered_leases) {
    if (wit != waiters_.end()) waiters_.erase(wit);
  } else if (d->done) {
    // The caller vanished while its leases were being written: give them back.
    if (wit != waiters_.end()) waiters_.erase(wit);
    std::vector<storage::TransitionItem> undo;
    std::vector<Token> tokens;
    for (const auto& lj : leased) {
      Token t{lj.job.id(), lj.job.attempts(), lj.job.lease_nonce()};
      tokens.push_back(t);
      auto e = entries_.find(t.job_id);
      if (e != entries_.end() && e->second.phase == Phase::kLeased) {
        SetPhase(t.job_id, e->second, Phase::kSettling);
      }
      undo.push_back({t.job_id, UnleaseFn(t)});
    }
    if (!undo.empty()) {
      store_->Transition(
          std::move(undo), "ledgerqd", [this, tokens](std::vector<Result<storage::JobRecord>> urs) {
            OnStrand([this, tokens, urs = std::move(urs)] {
              for (size_t k = 0; k < urs.size(); ++k) {
                if (urs[k].ok()) {
                  Index(*urs[k]);
                  continue;
                }
                auto it = entries_.find(tokens[k].job_id);
                if (IsWriteFailure(urs[k].status()) && it != entries_.end() &&
                    it->second.phase == Phase::kSettling) {
                  // Not given back: the lease stands, and expiry will reclaim it.
                  it->second.deadline = opts_.clock->MonoNow() + it->second.lease_duration;
                  SetPhase(tokens[k].job_id, it->second, Phase::kLeased);
                } else {
                  auto fresh = store_->GetJob(tokens[k].job_id);
                  if (fresh.ok()) Index(*fresh);
                }
              }
              Arm();
            });
          });
    }
  } else if (wit != waiters_.end() && !write_failure.ok()) {
    // The store refused the write (e.g. disk full): say so rather than retry in a loop.
    FinishWaiter(wid, write_failure);
  } else if (wit != waiters_.end()) {
    // Everything picked moved on meanwhile (e.g. cancelled): try again, keep waiting, or answer
    // empty once the wait is over.
    Waiter& w = wit->second;
    if (stopped_ || w.deadline <= now) {
      FinishWaiter(wid, std::vector<LeasedJob>{});
    } else if (!TryLease(w)) {
      w.parked = true;
      ++parked_polls_;
      for (const auto& name : w.params.queues) QueueOf(name).waiters.push_back(wid);
      wait_deadlines_.push({w.deadline, wid});
    }
  }
  for (Queue* q : back) Wake(*q);
  Arm();
}

// ---------------------------------------------------------------------------------------------
// Worker calls

void Dispatcher::Heartbeat(std::vector<Token> tokens, microseconds extend_by,
                           std::optional<std::string> checkpoint, std::string principal,
                           std::function<void(Result<std::vector<HeartbeatOutcome>>)> cb) {
  OnStrand([this, tokens = std::move(tokens), extend_by, checkpoint = std::move(checkpoint),
            principal = std::move(principal), cb = std::move(cb)]() mutable {
    const Mono now = opts_.clock->MonoNow();
    const int64_t wall = opts_.clock->WallMicros();
    auto out = std::make_shared<std::vector<HeartbeatOutcome>>(tokens.size());
    std::vector<storage::TransitionItem> items;
    auto slots = std::make_shared<std::vector<size_t>>();
    // (deadline before, deadline set) per extension, to undo them if the write fails.
    auto previous = std::make_shared<std::vector<std::pair<Mono, Mono>>>();
    for (size_t i = 0; i < tokens.size(); ++i) {
      HeartbeatOutcome& o = (*out)[i];
      o.token = tokens[i];
      auto it = entries_.find(tokens[i].job_id);
      if (it == entries_.end() || it->second.phase != Phase::kLeased ||
          it->second.attempt != tokens[i].attempt || it->second.deadline <= now) {
        o.lost = true;
        o.message = LeaseLostText(tokens[i]);
        continue;
      }
      Entry& e = it->second;
      microseconds ext =
          extend_by.count() > 0 ? std::min(extend_by, e.max_lease) : e.lease_duration;
      Mono limit = e.lease_started + opts_.max_lease_total;
      Mono deadline = std::min(now + ext, limit);
      if (deadline <= now) {
        o.lost = true;
        o.message = "lease " + TokenText(tokens[i]) + " reached its 12h limit";
        continue;
      }
      previous->push_back({e.deadline, deadline});
      e.deadline = deadline;
      deadlines_.push({deadline, tokens[i].job_id});
      o.deadline_us = wall + std::chrono::duration_cast<microseconds>(deadline - now).count();
      items.push_back(
          {tokens[i].job_id, HeartbeatFn(tokens[i], principal, o.deadline_us, checkpoint)});
      slots->push_back(i);
    }
    if (items.empty()) {
      cb(std::move(*out));
      return;
    }
    store_->Transition(std::move(items), principal,
                       [this, tokens, out, slots, previous,
                        cb = std::move(cb)](std::vector<Result<storage::JobRecord>> rs) {
                         for (size_t k = 0; k < rs.size(); ++k) {
                           if (rs[k].ok()) continue;
                           if (IsWriteFailure(rs[k].status())) {
                             // Nothing was extended on disk: neither is it in memory.
                             OnStrand([this, tokens, slots, previous] {
                               for (size_t j = 0; j < slots->size(); ++j) {
                                 const Token& t = tokens[(*slots)[j]];
                                 auto it = entries_.find(t.job_id);
                                 if (it != entries_.end() && it->second.phase == Phase::kLeased &&
                                     it->second.attempt == t.attempt &&
                                     it->second.deadline == (*previous)[j].second) {
                                   it->second.deadline = (*previous)[j].first;
                                   deadlines_.push({it->second.deadline, t.job_id});
                                 }
                               }
                               Arm();
                             });
                             cb(rs[k].status());
                             return;
                           }
                           HeartbeatOutcome& o = (*out)[(*slots)[k]];
                           o.lost = true;
                           o.deadline_us = 0;
                           o.message = rs[k].status().message();
                           // Refused (a wrong nonce or principal, or the lease moved on): the
                           // extension made in memory for it is taken back.
                           OnStrand([this, t = tokens[(*slots)[k]], prev = (*previous)[k]] {
                             auto it = entries_.find(t.job_id);
                             if (it != entries_.end() && it->second.phase == Phase::kLeased &&
                                 it->second.attempt == t.attempt &&
                                 it->second.deadline == prev.second) {
                               it->second.deadline = prev.first;
                               deadlines_.push({it->second.deadline, t.job_id});
                               Arm();
                             }
                           });
                         }
                         cb(std::move(*out));
                       });
  });
}

void Dispatcher::WorkerCalls(std::vector<Token> tokens, std::vector<storage::TransitionFn> fns,
                             std::vector<Outcome> outcomes, std::string principal,
                             BatchCallback cb) {
  OnStrand([this, tokens = std::move(tokens), fns = std::move(fns), outcomes = std::move(outcomes),
            principal = std::move(principal), cb = std::move(cb)]() mutable {
    std::vector<storage::TransitionItem> items;
    std::vector<bool> had(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto it = entries_.find(tokens[i].job_id);
      had[i] = it != entries_.end() && it->second.phase == Phase::kLeased &&
               it->second.attempt == tokens[i].attempt;
      if (had[i]) SetPhase(tokens[i].job_id, it->second, Phase::kSettling);  // expiry stands aside
      items.push_back({tokens[i].job_id, std::move(fns[i])});
    }
    store_->Transition(std::move(items), principal,
                       [this, tokens, had, outcomes,
                        cb = std::move(cb)](std::vector<Result<storage::JobRecord>> rs) {
                         OnStrand([this, tokens, had, outcomes, rs] {
                           for (size_t i = 0; i < rs.size(); ++i) {
                             AfterWorkerCall(tokens[i], had[i], rs[i], nullptr, outcomes[i]);
                           }
                         });
                         cb(std::move(rs));
                       });
  });
}

void Dispatcher::WorkerCall(Token token, storage::TransitionFn fn, Outcome outcome,
                            std::string principal, JobCallback cb) {
  std::vector<storage::TransitionFn> fns;
  fns.push_back(std::move(fn));
  WorkerCalls(
      {token}, std::move(fns), {outcome}, std::move(principal),
      [cb = std::move(cb)](std::vector<Result<storage::JobRecord>> rs) { cb(std::move(rs[0])); });
}

void Dispatcher::CompleteMany(std::vector<std::pair<Token, std::string>> items,
                              std::string principal, BatchCallback cb) {
  std::vector<Token> tokens;
  std::vector<storage::TransitionFn> fns;
  for (auto& [token, result] : items) {
    tokens.push_back(token);
    fns.push_back(CompleteFn(token, principal, std::move(result)));
  }
  std::vector<Outcome> outcomes(tokens.size(), Outcome::kSuccess);
  WorkerCalls(std::move(tokens), std::move(fns), std::move(outcomes), std::move(principal),
              std::move(cb));
}

void Dispatcher::AfterWorkerCall(Token token, bool had_lease, const Result<storage::JobRecord>& r,
                                 const JobCallback& cb, Outcome outcome) {
  if (r.ok()) {
    // Only the call that ended this lease speaks for the service behind it (a repeated
    // Complete answers with the same record and says nothing new).
    if (had_lease) RecordOutcome(*r, outcome);
    Index(*r);
    // A lease ended: a limit may have room again for parked long-polls.
    auto qit = queues_.find(r->queue());
    if (qit != queues_.end() && Limited(*qit->second)) Wake(*qit->second);
  } else if (had_lease) {
    auto it = entries_.find(token.job_id);
    if (IsWriteFailure(r.status()) && it != entries_.end() &&
        it->second.phase == Phase::kSettling) {
      // Nothing was written: the lease stands. Retry an expiry soon rather than never.
      it->second.deadline =
          std::max(it->second.deadline, opts_.clock->MonoNow() + std::chrono::seconds(1));
      SetPhase(token.job_id, it->second, Phase::kLeased);
    } else {
      auto fresh = store_->GetJob(token.job_id);
      if (fresh.ok()) Index(*fresh);
    }
  }
  Arm();
  if (cb) cb(r);
}

void Dispatcher::Complete(Token token, std::string result, std::string principal, JobCallback cb) {
  storage::TransitionFn fn = CompleteFn(token, principal, std::move(result));
  WorkerCall(token, std::move(fn), Outcome::kSuccess, std::move(principal), std::move(cb));
}

void Dispatcher::Fail(Token token, AttemptFailure failure, std::optional<microseconds> retry_after,
                      std::string principal, JobCallback cb) {
  // The job's retry policy is resolved on the committer, when the failure is decided.
  OnStrand([this, token, failure = std::move(failure), retry_after,
            principal = std::move(principal), cb = std::move(cb)]() mutable {
    // Transient failures count against the service; permanent ones are the job's own.
    const Outcome outcome = failure.kind == kPermanent ? Outcome::kNone : Outcome::kFailure;
    storage::TransitionFn fn = WithRetryPolicy([token, principal, failure = std::move(failure),
                                                retry_after, random = Drawer()](RetryPolicy p) {
      return FailFn(token, principal, failure, retry_after, p, random);
    });
    WorkerCall(token, std::move(fn), outcome, std::move(principal), std::move(cb));
  });
}

void Dispatcher::Release(Token token, microseconds delay, std::string principal, JobCallback cb) {
  storage::TransitionFn fn = ReleaseFn(token, principal, delay);
  WorkerCall(token, std::move(fn), Outcome::kNone, std::move(principal), std::move(cb));
}

// ---------------------------------------------------------------------------------------------
// Operators

QueueStats Dispatcher::StatsOf(const Queue& q) const {
  QueueStats s;
  s.name = q.name;
  s.paused = q.paused;
  s.scheduled = q.scheduled;
  s.ready = q.ready;
  s.leased = q.leased;
  s.succeeded = q.succeeded;
  s.dead = q.dead.size();
  s.cancelled = q.cancelled;
  s.limits = q.limits;
  s.runtime_limits = q.runtime.has_value();
  int64_t oldest = 0;
  const bool queue_full = q.limits.max_concurrency > 0 && q.leased >= q.limits.max_concurrency;
  for (const auto& [k, lane] : q.lanes) {
    if (!lane.in_heads || queue_full) s.held_back += lane.ready.size();
    for (const auto& [neg_prio, id] : lane.ready) {
      auto it = entries_.find(id);
      if (it != entries_.end() && (oldest == 0 || it->second.ready_since_us < oldest)) {
        oldest = it->second.ready_since_us;
      }
    }
  }
  if (oldest > 0) {
    s.oldest_ready_age = microseconds(std::max<int64_t>(0, opts_.clock->WallMicros() - oldest));
  }
  const Mono mono = opts_.clock->MonoNow();
  const int64_t wall = opts_.clock->WallMicros();
  for (const auto& [name, ts] : q.types) {
    if (!ts.breaker) continue;
    CircuitStats c;
    c.type = name;
    c.state = ts.breaker->state();
    c.forced = ts.breaker->forced_name();
    c.window_attempts = ts.breaker->window_attempts();
    c.window_failures = ts.breaker->window_failures();
    c.failure_rate = ts.breaker->failure_rate();
    c.policy = ts.circuit;
    if (auto at = ts.breaker->half_open_at()) {
      c.half_open_at_us = wall + std::chrono::duration_cast<microseconds>(*at - mono).count();
    }
    c.opens = ts.breaker->opens();
    c.cooldown = ts.breaker->cooldown();
    if (c.state != CircuitState::kClosed) c.held_back = ts.ready;
    s.circuits.push_back(std::move(c));
  }
  return s;
}

void Dispatcher::SetLimits(std::string queue, LimitsUpdate u, std::string principal,
                           std::function<void(Result<QueueStats>)> cb) {
  OnStrand([this, queue = std::move(queue), u, principal = std::move(principal),
            cb = std::move(cb)]() mutable {
    QueueLimits next = QueueOf(queue).limits;
    if (u.rate_per_second) next.rate_per_second = *u.rate_per_second;
    if (u.burst) next.burst = *u.burst;
    if (u.max_concurrency) next.max_concurrency = *u.max_concurrency;
    if (u.max_per_key) next.max_per_key = *u.max_per_key;
    if (Status st = ValidateLimits(next, ""); !st.ok()) {
      cb(st);
      return;
    }
    storage::QueueLimitsRecord rec;
    rec.set_rate_per_second(next.rate_per_second);
    rec.set_burst(next.burst);
    rec.set_max_concurrency(next.max_concurrency);
    rec.set_max_per_key(next.max_per_key);
    store_->SetQueueLimits(queue, std::move(rec), std::move(principal),
                           [this, queue, next, cb = std::move(cb)](Status st) {
                             if (!st.ok()) {
                               cb(st);
                               return;
                             }
                             OnStrand([this, queue, next, cb] {
                               Queue& q = QueueOf(queue);
                               q.runtime = next;
                               q.limits = next;
                               RefreshQueue(q);
                               Wake(q);
                               Arm();
                               cb(StatsOf(q));
                             });
                           });
  });
}

void Dispatcher::SetCircuit(std::string queue, std::string type, CircuitBreaker::Forced mode,
                            std::string principal, std::function<void(Result<QueueStats>)> cb) {
  OnStrand([this, queue = std::move(queue), type = std::move(type), mode,
            principal = std::move(principal), cb = std::move(cb)]() mutable {
    Queue& q = QueueOf(queue);
    TypeState& ts = TypeOf(q, type);
    if (!ts.breaker) ts.breaker.emplace();
    // Decide on a copy: the change is applied once it is durable.
    CircuitBreaker next = *ts.breaker;
    auto change = next.Force(mode, opts_.clock->MonoNow(), ts.circuit);
    std::string forced = next.forced_name();
    Emit(q, ts, *change, principal, forced,
         [this, queue, type, mode, cb = std::move(cb)](Status st) {
           if (!st.ok()) {
             cb(st);
             return;
           }
           OnStrand([this, queue, type, mode, cb] {
             Queue& q = QueueOf(queue);
             TypeState& ts = TypeOf(q, type);
             if (!ts.breaker) ts.breaker.emplace();
             (void)ts.breaker->Force(mode, opts_.clock->MonoNow(), ts.circuit);
             // Given back to a type without a breaker of its own: nothing left to keep.
             if (mode == CircuitBreaker::Forced::kNone && !ts.circuit.enabled) ts.breaker.reset();
             RefreshType(q, type);
             Wake(q);
             Arm();
             cb(StatsOf(q));
           });
         });
  });
}

void Dispatcher::SetPaused(std::string queue, bool paused, std::string principal,
                           std::function<void(Result<QueueStats>)> cb) {
  store_->SetQueuePaused(queue, paused, std::move(principal),
                         [this, queue, paused, cb = std::move(cb)](Status st) {
                           if (!st.ok()) {
                             cb(st);
                             return;
                           }
                           OnStrand([this, queue, paused, cb] {
                             Queue& q = QueueOf(queue);
                             q.paused = paused;
                             if (!paused) Wake(q);
                             cb(StatsOf(q));
                           });
                         });
}

void Dispatcher::ListQueues(std::function<void(std::vector<QueueStats>)> cb) {
  OnStrand([this, cb = std::move(cb)] {
    std::vector<QueueStats> out;
    for (const auto& [name, q] : queues_) out.push_back(StatsOf(*q));
    cb(std::move(out));
  });
}

void Dispatcher::ListDeadIds(std::string queue, uint64_t after_id, size_t limit,
                             std::function<void(std::vector<uint64_t>)> cb) {
  OnStrand([this, queue = std::move(queue), after_id, limit, cb = std::move(cb)] {
    std::vector<uint64_t> ids;
    auto it = queues_.find(queue);
    if (it != queues_.end()) {
      for (auto d = it->second->dead.upper_bound(after_id);
           d != it->second->dead.end() && ids.size() < limit; ++d) {
        ids.push_back(*d);
      }
    }
    cb(std::move(ids));
  });
}

void Dispatcher::Redrive(std::vector<uint64_t> ids, std::string principal,
                         std::function<void(std::vector<Result<storage::JobRecord>>)> cb) {
  std::vector<storage::TransitionItem> items;
  for (uint64_t id : ids) items.push_back({id, RedriveFn()});
  store_->Transition(std::move(items), std::move(principal),
                     [this, cb = std::move(cb)](std::vector<Result<storage::JobRecord>> rs) {
                       OnStrand([this, rs] {
                         for (const auto& r : rs) {
                           if (r.ok()) Index(*r);
                         }
                       });
                       cb(std::move(rs));
                     });
}

void Dispatcher::RedriveQueue(std::string queue, uint64_t limit, std::string principal,
                              std::function<void(Result<uint64_t>)> cb) {
  OnStrand([this, queue = std::move(queue), limit, principal = std::move(principal),
            cb = std::move(cb)]() mutable {
    auto ids = std::make_shared<std::vector<uint64_t>>();
    auto it = queues_.find(queue);
    if (it != queues_.end()) {
      for (uint64_t id : it->second->dead) {
        if (limit && ids->size() >= limit) break;
        ids->push_back(id);
      }
    }
    cb(static_cast<uint64_t>(ids->size()));
    if (!ids->empty()) RedriveChunk(ids, 0, std::move(principal));
  });
}

void Dispatcher::RedriveChunk(std::shared_ptr<std::vector<uint64_t>> ids, size_t offset,
                              std::string principal) {
  const size_t end = std::min(ids->size(), offset + opts_.redrive_chunk);
  std::vector<uint64_t> chunk(ids->begin() + offset, ids->begin() + end);
  const auto pause = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(static_cast<double>(chunk.size()) / opts_.redrive_per_second));
  Redrive(std::move(chunk), principal,
          [this, ids, end, principal, pause](std::vector<Result<storage::JobRecord>>) {
            if (end >= ids->size()) return;
            // Pace the next chunk so live traffic keeps the committer most of the time.
            OnStrand([this, ids, end, principal, pause] {
              if (stopped_) return;
              auto t = std::make_shared<boost::asio::steady_timer>(strand_, pause);
              t->async_wait([this, t, ids, end, principal](boost::system::error_code ec) {
                if (!ec && !stopped_) RedriveChunk(ids, end, principal);
              });
            });
          });
}

}  // namespace ledgerq::scheduler
