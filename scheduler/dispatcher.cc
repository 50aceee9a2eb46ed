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
  }
  return *slot;
}

JobPolicy Dispatcher::PolicyFor(const std::string& queue, const std::string& type) const {
  if (opts_.policy_of) return opts_.policy_of(queue, type);
  return JobPolicy{opts_.default_policy, opts_.min_lease, opts_.max_lease_total};
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

void Dispatcher::SetPhase(uint64_t id, Entry& e, Phase phase) {
  Queue& q = *e.queue;
  switch (e.phase) {
    case Phase::kReady:
      q.ready.erase({-static_cast<int64_t>(e.priority), id});
      break;
    case Phase::kScheduled:
      --q.scheduled;
      break;
    case Phase::kLeasing:
      --q.leased;
      break;
    case Phase::kLeased:
    case Phase::kSettling:
      --q.leased;
      --active_leases_;
      break;
  }
  e.phase = phase;
  switch (phase) {
    case Phase::kReady:
      q.ready.insert({-static_cast<int64_t>(e.priority), id});
      break;
    case Phase::kScheduled:
      ++q.scheduled;
      delayed_.push({e.run_at_us, id});
      break;
    case Phase::kLeasing:
      ++q.leased;
      break;
    case Phase::kLeased:
      ++q.leased;
      ++active_leases_;
      deadlines_.push({e.deadline, id});
      break;
    case Phase::kSettling:
      ++q.leased;
      ++active_leases_;
      break;
  }
}

void Dispatcher::Unindex(uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  // Leave the current phase by passing through kLeasing, whose count we then drop.
  SetPhase(id, e, Phase::kLeasing);
  --e.queue->leased;
  entries_.erase(it);
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
    e.priority = job.priority();
    e.run_at_us = job.run_at_us();
    e.attempt = job.attempts();
    e.phase = Phase::kLeasing;  // a neutral phase, left by the SetPhase below
    ++q.leased;
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
      break;
    default:
      break;
  }
}

Status Dispatcher::Recover() {
  LEDGERQ_RETURN_IF_ERROR(
      store_->ScanQueues([&](const std::string& name, const storage::QueueRecord& rec) {
        QueueOf(name).paused = rec.paused();
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
    Token token{id, e.attempt};
    std::vector<storage::TransitionItem> items;
    items.push_back(
        {id, WithRetryPolicy([token, random = Drawer(),
                              snapshot = opts_.payload_snapshot ? opts_.payload_snapshot(id) : ""](
                                 RetryPolicy p) { return ExpireFn(token, p, random, snapshot); })});
    store_->Transition(
        std::move(items), "ledgerqd", [this, token](std::vector<Result<storage::JobRecord>> rs) {
          OnStrand(
              [this, token, r = std::move(rs[0])] { AfterWorkerCall(token, true, r, nullptr); });
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
  std::vector<uint64_t> candidates(q.waiters.begin(), q.waiters.end());
  for (uint64_t wid : candidates) {
    if (q.ready.empty() || q.paused) return;
    auto it = waiters_.find(wid);
    if (it != waiters_.end() && it->second.parked) TryLease(it->second);
  }
}

bool Dispatcher::TryLease(Waiter& w) {
  std::vector<uint64_t> picks;
  while (picks.size() < w.params.max_jobs) {
    Queue* best = nullptr;
    for (const auto& name : w.params.queues) {
      auto it = queues_.find(name);
      if (it == queues_.end()) continue;
      Queue& q = *it->second;
      if (q.paused || q.ready.empty()) continue;
      if (!best || *q.ready.begin() < *best->ready.begin()) best = &q;
    }
    if (!best) break;
    uint64_t id = best->ready.begin()->second;
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
    items.push_back({id, [this, worker = w.params.worker_id, duration](
                             storage::JobRecord& job, storage::TransitionWriter& tw, int64_t now) {
                       const JobPolicy p = PolicyFor(job.queue(), job.type());
                       const microseconds d = std::clamp(duration, p.min_lease, p.max_lease);
                       return LeaseFn({worker, now + d.count()})(job, tw, now);
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
      Token t{lj.job.id(), lj.job.attempts()};
      tokens.push_back(t);
      auto e = entries_.find(t.job_id);
      if (e != entries_.end() && e->second.phase == Phase::kLeased) {
        SetPhase(t.job_id, e->second, Phase::kSettling);
      }
      undo.push_back({t.job_id, UnleaseFn(t)});
    }
    if (!undo.empty()) {
      store_->Transition(std::move(undo), "ledgerqd",
                         [this, tokens](std::vector<Result<storage::JobRecord>> urs) {
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
                                 it->second.deadline =
                                     opts_.clock->MonoNow() + it->second.lease_duration;
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
        o.message = "lease " + TokenText(tokens[i]) + " is lost: it expired or moved on";
        continue;
      }
      Entry& e = it->second;
      microseconds ext = extend_by.count() > 0 ? std::min(extend_by, e.max_lease) : e.lease_duration;
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
      items.push_back({tokens[i].job_id, HeartbeatFn(tokens[i], o.deadline_us, checkpoint)});
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
                         }
                         cb(std::move(*out));
                       });
  });
}

void Dispatcher::WorkerCalls(std::vector<Token> tokens, std::vector<storage::TransitionFn> fns,
                             std::string principal, BatchCallback cb) {
  OnStrand([this, tokens = std::move(tokens), fns = std::move(fns),
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
    store_->Transition(
        std::move(items), principal,
        [this, tokens, had, cb = std::move(cb)](std::vector<Result<storage::JobRecord>> rs) {
          OnStrand([this, tokens, had, rs] {
            for (size_t i = 0; i < rs.size(); ++i) {
              AfterWorkerCall(tokens[i], had[i], rs[i], nullptr);
            }
          });
          cb(std::move(rs));
        });
  });
}

void Dispatcher::WorkerCall(Token token, storage::TransitionFn fn, std::string principal,
                            JobCallback cb) {
  std::vector<storage::TransitionFn> fns;
  fns.push_back(std::move(fn));
  WorkerCalls(
      {token}, std::move(fns), std::move(principal),
      [cb = std::move(cb)](std::vector<Result<storage::JobRecord>> rs) { cb(std::move(rs[0])); });
}

void Dispatcher::CompleteMany(std::vector<std::pair<Token, std::string>> items,
                              std::string principal, BatchCallback cb) {
  std::vector<Token> tokens;
  std::vector<storage::TransitionFn> fns;
  for (auto& [token, result] : items) {
    tokens.push_back(token);
    fns.push_back(CompleteFn(token, std::move(result)));
  }
  WorkerCalls(std::move(tokens), std::move(fns), std::move(principal), std::move(cb));
}

void Dispatcher::AfterWorkerCall(Token token, bool had_lease, const Result<storage::JobRecord>& r,
                                 const JobCallback& cb) {
  if (r.ok()) {
    Index(*r);
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
  WorkerCall(token, CompleteFn(token, std::move(result)), std::move(principal), std::move(cb));
}

void Dispatcher::Fail(Token token, AttemptFailure failure, std::optional<microseconds> retry_after,
                      std::string principal, JobCallback cb) {
  // The job's retry policy is resolved on the committer, when the failure is decided.
  OnStrand([this, token, failure = std::move(failure), retry_after,
            principal = std::move(principal), cb = std::move(cb)]() mutable {
    WorkerCall(token,
               WithRetryPolicy([token, failure = std::move(failure), retry_after,
                                random = Drawer()](RetryPolicy p) {
                 return FailFn(token, failure, retry_after, p, random);
               }),
               std::move(principal), std::move(cb));
  });
}

void Dispatcher::Release(Token token, microseconds delay, std::string principal, JobCallback cb) {
  WorkerCall(token, ReleaseFn(token, delay), std::move(principal), std::move(cb));
}

// ---------------------------------------------------------------------------------------------
// Operators

QueueStats Dispatcher::StatsOf(const Queue& q) const {
  QueueStats s;
  s.name = q.name;
  s.paused = q.paused;
  s.scheduled = q.scheduled;
  s.ready = q.ready.size();
  s.leased = q.leased;
  s.succeeded = q.succeeded;
  s.dead = q.dead.size();
  s.cancelled = q.cancelled;
  int64_t oldest = 0;
  for (const auto& [neg_prio, id] : q.ready) {
    auto it = entries_.find(id);
    if (it != entries_.end() && (oldest == 0 || it->second.ready_since_us < oldest)) {
      oldest = it->second.ready_since_us;
    }
  }
  if (oldest > 0) {
    s.oldest_ready_age = microseconds(std::max<int64_t>(0, opts_.clock->WallMicros() - oldest));
  }
  return s;
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
