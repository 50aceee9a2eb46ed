#include "tests/torture/history.h"

#include <algorithm>
#include <set>
#include <sstream>

namespace ledgerq::torture {
namespace {

const char* KindName(OpKind k) {
  switch (k) {
    case OpKind::kEnqueue:
      return "enqueue";
    case OpKind::kLease:
      return "lease";
    case OpKind::kHeartbeat:
      return "heartbeat";
    case OpKind::kComplete:
      return "complete";
    case OpKind::kFail:
      return "fail";
    case OpKind::kKill:
      return "kill";
  }
  return "?";
}

const char* OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kOk:
      return "ok";
    case Outcome::kRejected:
      return "rejected";
    case Outcome::kUnknown:
      return "unknown";
  }
  return "?";
}

bool Terminal(v1::JobState s) { return s == v1::JOB_STATE_SUCCEEDED || s == v1::JOB_STATE_DEAD; }

std::string Events(const v1::JobHistory& h) {
  std::ostringstream o;
  o << "    job " << h.job().id() << " state " << v1::JobState_Name(h.job().state()) << " attempts "
    << h.job().attempts() << " key \"" << h.job().idempotency_key() << "\"\n";
  for (const auto& e : h.events()) {
    o << "      seq " << e.seq() << " " << e.type() << " attempt " << e.attempt();
    if (!e.worker_id().empty()) o << " worker " << e.worker_id();
    if (!e.reason().empty()) o << " reason " << e.reason();
    o << "\n";
  }
  return o.str();
}

class Checker {
 public:
  Checker(const std::vector<Op>& history, const Observed& observed)
      : history_(history), observed_(observed) {}

  Summary Run() {
    Index();
    CheckEnqueues();
    CheckIdsMonotonic();
    CheckTimelines();
    CheckWorkerOps();
    return std::move(summary_);
  }

 private:
  void Count(const std::string& what, uint64_t n = 1) { summary_.counts[what] += n; }

  // One violation: what is wrong, then the offending history entries and the job's timeline.
  void Violation(const std::string& what, const std::vector<const Op*>& ops, uint64_t job_id) {
    std::ostringstream o;
    o << what << "\n";
    size_t shown = 0;
    for (const Op* op : ops) {
      if (++shown > 20) {
        o << "    ... " << ops.size() - 20 << " more\n";
        break;
      }
      o << "    " << Describe(*op) << "\n";
    }
    if (job_id != 0) {
      auto it = observed_.jobs.find(job_id);
      if (it != observed_.jobs.end()) o << Events(it->second);
    }
    summary_.violations.push_back(o.str());
  }

  std::vector<const Op*> OpsForJob(uint64_t id) const {
    auto it = by_job_.find(id);
    return it == by_job_.end() ? std::vector<const Op*>{} : it->second;
  }

  void Index() {
    for (const Op& op : history_) {
      Count(std::string(KindName(op.kind)) + " " + OutcomeName(op.outcome));
      if (op.kind == OpKind::kKill) continue;
      if (op.job_id != 0) by_job_[op.job_id].push_back(&op);
      if (op.kind == OpKind::kEnqueue && !op.key.empty()) by_key_[op.key].push_back(&op);
    }
  }

  void CheckEnqueues() {
    std::set<uint64_t> announced;
    uint64_t unkeyed_unknown = 0;
    for (const Op& op : history_) {
      if (op.kind != OpKind::kEnqueue) continue;
      if (op.outcome == Outcome::kUnknown && op.key.empty()) ++unkeyed_unknown;
      if (op.outcome != Outcome::kOk) continue;
      if (op.deduplicated) Count("enqueue deduplicated");
      announced.insert(op.job_id);
      auto it = observed_.jobs.find(op.job_id);
      if (it == observed_.jobs.end()) {
        Violation("LOST: an acknowledged enqueue's job does not exist", {&op}, 0);
        continue;
      }
      const v1::Job& job = it->second.job();
      if (job.idempotency_key() != op.key) {
        Violation("an enqueue was answered with a job of another idempotency key", {&op},
                  op.job_id);
      }
      if (!Terminal(job.state())) {
        Violation("an acknowledged job did not finish (not SUCCEEDED or DEAD)", OpsForJob(job.id()),
                  job.id());
      }
    }
    // One key, one job: across every answer...
    for (const auto& [key, ops] : by_key_) {
      std::set<uint64_t> ids;
      for (const Op* op : ops) {
        if (op->outcome == Outcome::kOk) ids.insert(op->job_id);
      }
      if (ids.size() > 1) Violation("idempotency key \"" + key + "\" produced two jobs", ops, 0);
    }
    // ...and in what the daemon holds.
    std::map<std::string, std::vector<uint64_t>> held;
    uint64_t unannounced_unkeyed = 0;
    for (const auto& [id, h] : observed_.jobs) {
      const v1::Job& job = h.job();
      if (!job.idempotency_key().empty()) held[job.idempotency_key()].push_back(id);
      if (announced.count(id)) continue;
      if (job.idempotency_key().empty()) {
        ++unannounced_unkeyed;
      } else if (!by_key_.count(job.idempotency_key())) {
        Violation("UNEXPECTED: job with a key no client submitted", {}, id);
      }
      if (!Terminal(job.state())) {
        Violation("a job from an unknown-outcome enqueue did not finish", OpsForJob(id), id);
      }
    }
    for (const auto& [key, ids] : held) {
      if (ids.size() > 1) {
        std::vector<const Op*> ops;
        auto it = by_key_.find(key);
        if (it != by_key_.end()) ops = it->second;
        Violation(
            "idempotency key \"" + key + "\" is held by " + std::to_string(ids.size()) + " jobs",
            ops, ids.front());
      }
    }
    if (unannounced_unkeyed > unkeyed_unknown) {
      Violation("UNEXPECTED: " + std::to_string(unannounced_unkeyed) +
                    " unkeyed jobs no answer announced, but only " +
                    std::to_string(unkeyed_unknown) + " unkeyed enqueues had an unknown outcome",
                {}, 0);
    }
    Count("jobs held", observed_.jobs.size());
    Count("jobs from unknown-outcome enqueues", observed_.jobs.size() - announced.size());
  }

  // A job created by an enqueue that was answered before another enqueue began has the
  // smaller id.
  void CheckIdsMonotonic() {
    std::vector<const Op*> created;
    for (const Op& op : history_) {
      if (op.kind == OpKind::kEnqueue && op.outcome == Outcome::kOk && !op.deduplicated) {
        created.push_back(&op);
      }
    }
    std::vector<const Op*> by_end = created;
    std::sort(by_end.begin(), by_end.end(),
              [](const Op* a, const Op* b) { return a->end_us < b->end_us; });
    std::sort(created.begin(), created.end(),
              [](const Op* a, const Op* b) { return a->start_us < b->start_us; });
    size_t e = 0;
    const Op* max_before = nullptr;
    for (const Op* op : created) {
      while (e < by_end.size() && by_end[e]->end_us < op->start_us) {
        if (!max_before || by_end[e]->job_id > max_before->job_id) max_before = by_end[e];
        ++e;
      }
      if (max_before && max_before->job_id >= op->job_id) {
        Violation("ids not monotonic: a later enqueue got a smaller or equal id", {max_before, op},
                  op->job_id);
        return;  // one example is enough; the rest would repeat it
      }
    }
  }

  // Each job's own timeline: leases never overlap, attempt numbers only grow, every end of an
  // attempt names the live lease, one completion at most, terminal states are final.
  void CheckTimelines() {
    for (const auto& [id, h] : observed_.jobs) {
      const v1::Job& job = h.job();
      Count("events checked", h.events_size());
      Count(std::string("jobs ") + v1::JobState_Name(job.state()));
      uint64_t last_seq = 0;
      uint32_t live = 0, last_leased = 0, completions = 0;
      bool finished = false, dead = false;
      auto bad = [&, id = id](const std::string& what) {  // clang 14 cannot capture a binding
        Violation("job " + std::to_string(id) + ": " + what, OpsForJob(id), id);
      };
      if (h.events_size() == 0 || h.events(0).type() != "SUBMITTED")
        bad("first event is not SUBMITTED");
      for (const auto& e : h.events()) {
        if (e.seq() <= last_seq) bad("event sequence numbers do not grow");
        last_seq = e.seq();
        if (e.type() == "DEDUPLICATED") continue;  // a resubmission; may come at any time
        if (finished) {
          bad("event " + e.type() + " after the job finished");
          break;
        }
        const std::string& t = e.type();
        if (t == "LEASED") {
          if (live != 0) bad("leased while attempt " + std::to_string(live) + " still held it");
          if (e.attempt() <= last_leased) bad("attempt numbers did not grow");
          live = last_leased = e.attempt();
        } else if (t == "COMPLETED" || t == "FAILED" || t == "RELEASED" || t == "LEASE_EXPIRED") {
          if (live == 0 || e.attempt() != live) {
            bad(t + " of attempt " + std::to_string(e.attempt()) + " but the live lease is " +
                std::to_string(live));
          }
          live = 0;
          if (t == "COMPLETED") {
            ++completions;
            finished = true;
          }
        } else if (t == "DEAD_LETTERED") {
          dead = finished = true;
        }
      }
      if (completions > 1) bad("completed twice");
      if (job.state() == v1::JOB_STATE_SUCCEEDED && completions != 1)
        bad("SUCCEEDED without one COMPLETED");
      if (job.state() == v1::JOB_STATE_DEAD && (!dead || completions != 0)) {
        bad("DEAD without DEAD_LETTERED, or with a completion");
      }
      if (job.attempts() < last_leased) bad("job.attempts is below the last leased attempt");
    }
  }

  // What workers were told against what the log holds, and the fencing rule from the clients'
  // side: once a client has seen attempt b granted, no operation that starts afterwards with
  // an older token may be accepted.
  void CheckWorkerOps() {
    for (const auto& [id, ops] : by_job_) {
      auto it = observed_.jobs.find(id);
      if (it == observed_.jobs.end()) continue;  // reported by CheckEnqueues
      const v1::JobHistory& h = it->second;
      auto has_event = [&](const std::string& type, uint32_t attempt) {
        return std::any_of(h.events().begin(), h.events().end(), [&](const v1::JobEvent& e) {
          return e.type() == type && e.attempt() == attempt;
        });
      };
      std::map<uint32_t, const Op*> grants;  // attempt -> the lease op that saw it
      std::set<uint32_t> completed_attempts;
      std::vector<const Op*> completes;
      for (const Op* op : ops) {
        if (op->outcome != Outcome::kOk) continue;
        switch (op->kind) {
          case OpKind::kLease:
            if (grants.count(op->attempt)) {
              Violation("job " + std::to_string(id) + ": attempt " + std::to_string(op->attempt) +
                            " granted twice",
                        {grants[op->attempt], op}, id);
            }
            grants[op->attempt] = op;
            if (!has_event("LEASED", op->attempt)) {
              Violation("an acknowledged lease is not in the log", {op}, id);
            }
            break;
          case OpKind::kComplete:
            completes.push_back(op);
            completed_attempts.insert(op->attempt);
            if (op->late) Count("late complete accepted (lease not yet expired)");
            if (!has_event("COMPLETED", op->attempt)) {
              Violation("an acknowledged completion is not in the log", {op}, id);
            }
            break;
          case OpKind::kFail:
            if (!has_event("FAILED", op->attempt)) {
              Violation("an acknowledged failure is not in the log", {op}, id);
            }
            break;
          default:
            break;
        }
      }
      if (completed_attempts.size() > 1) {
        Violation("job " + std::to_string(id) + ": two accepted completions", completes, id);
      }
      for (const Op* op : ops) {
        if (op->outcome != Outcome::kOk) continue;
        if (op->kind != OpKind::kComplete && op->kind != OpKind::kFail &&
            op->kind != OpKind::kHeartbeat) {
          continue;
        }
        for (auto g = grants.upper_bound(op->attempt); g != grants.end(); ++g) {
          if (g->second->end_us < op->start_us) {
            Violation("STALE TOKEN accepted: attempt " + std::to_string(g->first) +
                          " was granted before this operation with attempt " +
                          std::to_string(op->attempt) + " began",
                      {g->second, op}, id);
            break;
          }
        }
      }
    }
  }

  const std::vector<Op>& history_;
  const Observed& observed_;
  Summary summary_;
  std::map<uint64_t, std::vector<const Op*>> by_job_;
  std::map<std::string, std::vector<const Op*>> by_key_;
};

}  // namespace

std::string Describe(const Op& op) {
  std::ostringstream o;
  o << "[t" << op.thread << " " << op.start_us / 1000.0 << "-" << op.end_us / 1000.0 << "ms] "
    << KindName(op.kind) << " " << OutcomeName(op.outcome);
  if (op.code != 0) o << " (code " << op.code << ": " << op.message << ")";
  if (!op.key.empty()) o << " key=" << op.key;
  if (op.job_id != 0) o << " job=" << op.job_id;
  if (op.attempt != 0) o << " attempt=" << op.attempt;
  if (op.deduplicated) o << " deduplicated";
  if (op.late) o << " late";
  if (op.permanent) o << " permanent";
  if (op.repeat) o << " repeat";
  return o.str();
}

Summary Check(const std::vector<Op>& history, const Observed& observed) {
  return Checker(history, observed).Run();
}

}  // namespace ledgerq::torture
