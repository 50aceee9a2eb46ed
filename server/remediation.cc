#include "server/remediation.h"

#include <spdlog/spdlog.h>

#include <future>
#include <nlohmann/json.hpp>

namespace ledgerq::server {
namespace {

namespace sv1 = storage::v1;

std::string StateText(sv1::State s) {
  std::string name = sv1::State_Name(s);
  return name.rfind("STATE_", 0) == 0 ? name.substr(6) : name;
}

const char* KindText(int32_t kind) {
  switch (kind) {
    case 1:
      return "transient";
    case 2:
      return "permanent";
    default:
      return "unspecified";
  }
}

// Errors that a later pass cannot fix: the job stays pending (a restart tries again) and this
// instance stops trying it.
bool Lasting(const Status& st) {
  return st.code() == Code::kAlreadyExists || st.code() == Code::kCorruption ||
         st.code() == Code::kInvalidArgument || st.code() == Code::kFailedPrecondition;
}

}  // namespace

storage::DeadLetterMarks DeadLetterMarksFor(const Policies& p, const storage::JobRecord& job) {
  storage::DeadLetterMarks m;
  auto t = p.types.find(job.type());
  if (t == p.types.end() || !t->second.on_dead_letter) return m;
  const OnDeadLetter& o = *t->second.on_dead_letter;
  m.needs_attention = o.needs_attention;
  if (o.compensates()) {
    m.compensate_queue = o.queue;
    m.compensate_type = o.type;
  }
  return m;
}

storage::NewJob CompensationJob(const storage::JobRecord& dead, const std::string& queue,
                                const std::string& type, const Policies& p,
                                uint64_t policy_version) {
  nlohmann::json body = {{"dead_job_id", dead.id()},    {"queue", dead.queue()},
                         {"type", dead.type()},         {"dead_reason", dead.dead_reason()},
                         {"attempts", dead.attempts()}, {"last_error", nullptr}};
  if (dead.errors_size() > 0) {
    const auto& e = dead.errors(dead.errors_size() - 1);
    body["last_error"] = {{"code", e.code()},
                          {"message", e.message()},
                          {"kind", KindText(e.kind())},
                          {"attempt", e.attempt()}};
  }
  storage::NewJob job;
  job.queue = queue;
  job.type = type;
  // Error messages come from workers: replace invalid UTF-8 rather than fail the dump.
  job.payload = body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  job.max_attempts = p.Resolve(queue, type).retry.max_attempts;
  job.idempotency_key =
      "compensate:" + std::to_string(dead.id()) + ":" + std::to_string(dead.attempts());
  job.parent_job_id = dead.id();
  job.traceparent = dead.traceparent();
  job.tracestate = dead.tracestate();
  job.policy_version = policy_version;
  job.reason = "compensates job " + std::to_string(dead.id()) +
               (dead.dead_reason().empty() ? "" : " (" + dead.dead_reason() + ")");
  return job;
}

storage::TransitionFn ResolveAttentionFn(std::string note) {
  return [note = std::move(note)](storage::JobRecord& job, storage::TransitionWriter& w,
                                  int64_t) -> Status {
    if (job.state() != sv1::STATE_DEAD) {
      return Status::FailedPrecondition("job " + std::to_string(job.id()) + " is " +
                                        StateText(job.state()) + "; only dead jobs need attention");
    }
    if (!job.needs_attention()) {
      return Status::FailedPrecondition(
          "job " + std::to_string(job.id()) +
          " does not need attention (resolved already, or its type does not ask for it)");
    }
    job.set_needs_attention(false);
    storage::EventBody ev;
    ev.set_type(sv1::EVENT_ATTENTION_CLEARED);
    ev.set_attempt(job.attempts());
    ev.set_from_state(job.state());
    ev.set_to_state(job.state());
    ev.set_reason(note);
    w.Event(std::move(ev));
    return Status::Ok();
  };
}

Remediation::Remediation(storage::JobStore* store, const LivePolicies* policies,
                         std::function<void(const storage::JobRecord&)> created,
                         metrics::Metrics* metrics)
    : store_(store), policies_(policies), created_(std::move(created)) {
  if (metrics) {
    attention_ = &prometheus::BuildGauge()
                      .Name("ledgerq_dead_jobs_needing_attention")
                      .Help(
                          "Dead jobs whose type's on-dead-letter asks for a person, not yet "
                          "resolved or redriven, by queue")
                      .Register(metrics->registry());
    compensations_ = &prometheus::BuildCounter()
                          .Name("ledgerq_compensations_enqueued_total")
                          .Help(
                              "Compensation jobs enqueued for dead jobs (on-dead-letter), by "
                              "the compensation's queue and type")
                          .Register(metrics->registry());
  }
}

Remediation::~Remediation() { Stop(); }

void Remediation::Start(std::chrono::milliseconds retry) {
  {
    std::lock_guard lock(mu_);
    wake_ = true;  // the first pass finishes what a crash left pending
  }
  thread_ = std::thread([this, retry] { Loop(retry); });
}

void Remediation::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Remediation::OnDead(const storage::JobRecord& job) {
  if (!job.compensation_pending() && !job.needs_attention()) return;
  {
    std::lock_guard lock(mu_);
    wake_ = true;
  }
  cv_.notify_all();
}

void Remediation::Loop(std::chrono::milliseconds retry) {
  std::unique_lock lock(mu_);
  bool failed = false;
  while (!stop_) {
    // Idle, the gauges are refreshed every `retry`; after a failed pass it runs again then.
    if (!wake_) cv_.wait_for(lock, retry, [this] { return stop_ || wake_; });
    if (stop_) break;
    const bool run = wake_ || failed;
    wake_ = false;
    lock.unlock();
    if (run) {
      auto r = RunPending();
      failed = !r.ok();
      if (failed) {
        spdlog::error("remediation: enqueueing compensations failed (retrying in {}ms): {}",
                      retry.count(), r.status().message());
      }
    }
    RefreshGauges();
    lock.lock();
  }
}

Result<storage::CompensationOutcome> Remediation::CompensateOne(uint64_t dead_id) {
  const LivePolicies* live = policies_;
  std::promise<Result<storage::CompensationOutcome>> p;
  auto f = p.get_future();
  store_->Compensate(
      dead_id,
      [live](const storage::JobRecord& dead, const std::string& queue, const std::string& type) {
        auto entry = live->Get();
        return CompensationJob(dead, queue, type, entry->policies, entry->version);
      },
      kRemediationPrincipal,
      [&p](Result<storage::CompensationOutcome> r) { p.set_value(std::move(r)); });
  auto r = f.get();
  if (r.ok() && r->created) {
    const auto& c = r->compensation;
    spdlog::info("remediation: job {} ({}/{}) is compensated by job {} ({}/{})", dead_id,
                 r->dead.queue(), r->dead.type(), c.id(), c.queue(), c.type());
    if (compensations_) compensations_->Add({{"queue", c.queue()}, {"type", c.type()}}).Increment();
    if (created_) created_(c);
  }
  return r;
}

Result<uint64_t> Remediation::RunPending() {
  uint64_t made = 0;
  uint64_t after = 0;
  for (;;) {
    auto ids = store_->PendingCompensations(after, 256);
    if (!ids.ok()) return ids.status();
    if (ids->empty()) return made;
    for (uint64_t id : *ids) {
      after = id;
      {
        std::lock_guard lock(mu_);
        if (refused_.count(id)) continue;
      }
      auto r = CompensateOne(id);
      if (r.ok()) {
        made += r->created ? 1 : 0;
      } else if (r.status().code() == Code::kNotFound) {
        continue;  // removed by retention meanwhile: nothing left to compensate
      } else if (Lasting(r.status())) {
        spdlog::error(
            "remediation: job {}: its compensation cannot be enqueued, left pending "
            "until the next start: {}",
            id, r.status().message());
        std::lock_guard lock(mu_);
        refused_.insert(id);
      } else {
        return r.status();
      }
    }
  }
}

void Remediation::RefreshGauges() {
  if (!attention_) return;
  auto counts = store_->CountNeedsAttention();
  if (!counts.ok()) return;
  std::lock_guard lock(mu_);
  for (const auto& q : gauge_queues_) {
    if (!counts->count(q)) attention_->Add({{"queue", q}}).Set(0);
  }
  for (const auto& [q, n] : *counts) {
    attention_->Add({{"queue", q}}).Set(static_cast<double>(n));
    gauge_queues_.insert(q);
  }
}

}  // namespace ledgerq::server
