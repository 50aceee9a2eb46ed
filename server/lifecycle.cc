#include "server/lifecycle.h"

#include <google/protobuf/util/time_util.h>

#include <nlohmann/json.hpp>

namespace ledgerq::server {
namespace {

namespace sv1 = storage::v1;
using google::protobuf::util::TimeUtil;

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string EventName(sv1::EventType t) {
  std::string name = sv1::EventType_Name(t);
  return name.rfind("EVENT_", 0) == 0 ? name.substr(6) : name;
}

std::string StateName(sv1::State s) {
  std::string name = sv1::State_Name(s);
  return Lower(name.rfind("STATE_", 0) == 0 ? name.substr(6) : name);
}

std::string Time(int64_t us) {
  return us > 0 ? TimeUtil::ToString(TimeUtil::MicrosecondsToTimestamp(us)) : "";
}

double Seconds(int64_t from_us, int64_t to_us) {
  return from_us > 0 && to_us >= from_us ? static_cast<double>(to_us - from_us) / 1e6 : -1;
}

const char* KindName(int32_t kind) { return kind == 2 ? "permanent" : "transient"; }

// The outcome attribute: what this event means for the job, in one word.
const char* Outcome(sv1::EventType t) {
  switch (t) {
    case sv1::EVENT_COMPLETED: return "success";
    case sv1::EVENT_FAILED: return "failure";
    case sv1::EVENT_LEASE_EXPIRED: return "lease_expired";
    case sv1::EVENT_DEAD_LETTERED: return "dead";
    case sv1::EVENT_CANCELLED: return "cancelled";
    default: return "";
  }
}

}  // namespace

Lifecycle::Lifecycle(metrics::Metrics* metrics, std::shared_ptr<spdlog::logger> logger,
                     LogFormat format)
    : metrics_(metrics), logger_(std::move(logger)), format_(format) {}

void Lifecycle::OnDurable(const std::vector<storage::ObservedEvent>& events) {
  for (const auto& e : events) {
    if (metrics_) Count(e);
    if (logger_ && logger_->should_log(spdlog::level::info)) logger_->info(Line(e));
  }
}

void Lifecycle::Count(const storage::ObservedEvent& e) {
  const auto& ev = e.event;
  const std::string& q = ev.queue();
  const std::string& t = ev.job_type();
  const double attempt_s = Seconds(ev.attempt_started_us(), ev.time_us());
  switch (ev.type()) {
    case sv1::EVENT_SUBMITTED: metrics_->JobEnqueued(q, t); break;
    case sv1::EVENT_DEDUPLICATED: metrics_->JobDeduplicated(q, t); break;
    case sv1::EVENT_CANCELLED: metrics_->JobCancelled(q, t); break;
    case sv1::EVENT_LEASED:
      metrics_->JobLeased(q, t, e.job ? Seconds(e.job->run_at_us(), ev.time_us()) : -1);
      break;
    case sv1::EVENT_COMPLETED:
      metrics_->JobCompleted(q, t, attempt_s,
                             e.job ? Seconds(e.job->created_at_us(), ev.time_us()) : -1);
      break;
    case sv1::EVENT_FAILED:
      metrics_->JobFailed(q, t, KindName(ev.error().kind()), ev.error().code(), attempt_s);
      break;
    case sv1::EVENT_LEASE_EXPIRED: metrics_->LeaseExpired(q, t, attempt_s); break;
    case sv1::EVENT_RETRY_SCHEDULED: metrics_->JobRetried(q, t); break;
    case sv1::EVENT_DEAD_LETTERED: metrics_->JobDeadLettered(q, t, ev.reason()); break;
    case sv1::EVENT_REDRIVEN: metrics_->JobRedriven(q, t); break;
    default: break;
  }
}

std::string Lifecycle::Line(const storage::ObservedEvent& e) const {
  const auto& ev = e.event;
  nlohmann::ordered_json j;
  j["msg"] = "job." + Lower(EventName(ev.type()));
  j["event"] = EventName(ev.type());
  j["seq"] = ev.seq();
  if (ev.job_id()) j["job_id"] = ev.job_id();
  const uint64_t parent = e.job ? e.job->parent_job_id() : ev.parent_job_id();
  if (parent) j["parent_job_id"] = parent;
  j["queue"] = ev.queue();
  if (!ev.job_type().empty()) j["type"] = ev.job_type();
  if (ev.job_id()) j["attempt"] = ev.attempt();
  if (ev.job_id()) j["status"] = StateName(ev.to_state());
  const std::string& tp = !ev.traceparent().empty() ? ev.traceparent()
                          : e.job                   ? e.job->traceparent()
                                                    : std::string();
  if (tp.size() >= 52) {
    j["trace_id"] = tp.substr(3, 32);
    j["span_id"] = tp.substr(36, 16);
  }
  j["principal"] = ev.principal();
  if (!ev.worker_id().empty()) j["worker_id"] = ev.worker_id();
  if (e.job) j["enqueued_at"] = Time(e.job->created_at_us());
  if (ev.attempt_started_us()) j["started_at"] = Time(ev.attempt_started_us());
  if (*Outcome(ev.type())) {
    j["finished_at"] = Time(ev.time_us());
    j["outcome"] = Outcome(ev.type());
  }
  if (ev.type() == sv1::EVENT_LEASED && e.job) {
    j["wait_ms"] = static_cast<double>(ev.time_us() - e.job->run_at_us()) / 1e3;
  }
  if (ev.attempt_started_us()) {
    j["run_ms"] = static_cast<double>(ev.time_us() - ev.attempt_started_us()) / 1e3;
  }
  if (ev.has_error()) {
    j["error.kind"] = KindName(ev.error().kind());
    j["error.code"] = ev.error().code();
    j["error.message"] = ev.error().message();
  }
  if (ev.type() == sv1::EVENT_RETRY_SCHEDULED) j["retry_at"] = Time(ev.run_at_us());
  if (!ev.reason().empty()) j["reason"] = ev.reason();
  if (format_ == LogFormat::kJson) {
    j["ts"] = Time(ev.time_us());
    return j.dump();
  }
  std::string line = j["msg"].get<std::string>();
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "msg") continue;
    line += " " + it.key() + "=" + (it->is_string() ? it->get<std::string>() : it->dump());
  }
  return line;
}

}  // namespace ledgerq::server
