#include "server/lifecycle.h"

#include <cstdio>
#include <ctime>

namespace ledgerq::server {
namespace {

namespace sv1 = storage::v1;

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

// RFC 3339 in UTC with microseconds, e.g. 2026-11-29T11:30:53.850566Z. Hand-rolled: this runs
// several times per log line, and the general formatters cost more than the rest of the line.
std::string Time(int64_t us) {
  if (us <= 0) return "";
  const time_t secs = static_cast<time_t>(us / 1'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[80];  // room for any int in each field, so the compiler can prove no truncation
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(us % 1'000'000));
  return buf;
}

double Seconds(int64_t from_us, int64_t to_us) {
  return from_us > 0 && to_us >= from_us ? static_cast<double>(to_us - from_us) / 1e6 : -1;
}

const char* KindName(int32_t kind) { return kind == 2 ? "permanent" : "transient"; }

// The outcome attribute: what this event means for the job, in one word.
const char* Outcome(sv1::EventType t) {
  switch (t) {
    case sv1::EVENT_COMPLETED:
      return "success";
    case sv1::EVENT_FAILED:
      return "failure";
    case sv1::EVENT_LEASE_EXPIRED:
      return "lease_expired";
    case sv1::EVENT_DEAD_LETTERED:
      return "dead";
    case sv1::EVENT_CANCELLED:
      return "cancelled";
    default:
      return "";
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
    case sv1::EVENT_SUBMITTED:
      metrics_->JobEnqueued(q, t);
      break;
    case sv1::EVENT_DEDUPLICATED:
      metrics_->JobDeduplicated(q, t);
      break;
    case sv1::EVENT_CANCELLED:
      metrics_->JobCancelled(q, t);
      break;
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
    case sv1::EVENT_LEASE_EXPIRED:
      metrics_->LeaseExpired(q, t, attempt_s);
      break;
    case sv1::EVENT_RETRY_SCHEDULED:
      metrics_->JobRetried(q, t);
      break;
    case sv1::EVENT_DEAD_LETTERED:
      metrics_->JobDeadLettered(q, t, ev.reason());
      break;
    case sv1::EVENT_REDRIVEN:
      metrics_->JobRedriven(q, t);
      break;
    default:
      break;
  }
}

void AppendJsonString(std::string& out, std::string_view v) {
  out += '"';
  for (unsigned char c : v) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

namespace {

// Builds one log line without intermediate objects: JSON ({"k":v,...}) or text (msg k=v ...).
class LineWriter {
 public:
  LineWriter(LogFormat f, std::string_view msg) : json_(f == LogFormat::kJson) {
    out_.reserve(512);
    if (json_) {
      out_ += "{\"msg\":";
      Quoted(msg);
    } else {
      out_ += msg;
    }
  }
  void Str(std::string_view key, std::string_view v) {
    Key(key);
    if (json_ || v.empty() || v.find_first_of(" \"=\n\t\\") != std::string_view::npos) {
      Quoted(v);
    } else {
      out_ += v;
    }
  }
  void Num(std::string_view key, uint64_t v) {
    Key(key);
    out_ += std::to_string(v);
  }
  // The time from one instant to another, in ms. Subtracted as doubles: a record's times can be
  // anything (a corrupt one), and int64 subtraction could overflow.
  void Ms(std::string_view key, int64_t from_us, int64_t to_us) {
    Key(key);
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f",
                  (static_cast<double>(to_us) - static_cast<double>(from_us)) / 1e3);
    out_ += buf;
  }
  std::string Done() {
    if (json_) out_ += "}";
    return std::move(out_);
  }

 private:
  void Key(std::string_view key) {
    if (json_) {
      out_ += ",\"";
      out_ += key;
      out_ += "\":";
    } else {
      out_ += " ";
      out_ += key;
      out_ += "=";
    }
  }
  void Quoted(std::string_view v) { AppendJsonString(out_, v); }

  bool json_;
  std::string out_;
};

}  // namespace

std::string Lifecycle::Line(const storage::ObservedEvent& e) const {
  const auto& ev = e.event;
  const std::string event = EventName(ev.type());
  LineWriter w(format_, "job." + Lower(event));
  if (format_ == LogFormat::kJson) w.Str("ts", Time(ev.time_us()));
  w.Str("event", event);
  w.Num("seq", ev.seq());
  if (ev.job_id()) w.Num("job_id", ev.job_id());
  const uint64_t parent = e.job ? e.job->parent_job_id() : ev.parent_job_id();
  if (parent) w.Num("parent_job_id", parent);
  w.Str("queue", ev.queue());
  if (!ev.job_type().empty()) w.Str("type", ev.job_type());
  if (ev.job_id()) {
    w.Num("attempt", ev.attempt());
    w.Str("status", StateName(ev.to_state()));
  }
  const std::string& tp = !ev.traceparent().empty() ? ev.traceparent()
                          : e.job                   ? e.job->traceparent()
                                                    : ev.traceparent();
  if (tp.size() >= 52) {
    w.Str("trace_id", std::string_view(tp).substr(3, 32));
    w.Str("span_id", std::string_view(tp).substr(36, 16));
  }
  w.Str("principal", ev.principal());
  if (!ev.worker_id().empty()) w.Str("worker_id", ev.worker_id());
  if (e.job) w.Str("enqueued_at", Time(e.job->created_at_us()));
  if (ev.attempt_started_us()) w.Str("started_at", Time(ev.attempt_started_us()));
  if (*Outcome(ev.type())) {
    w.Str("finished_at", Time(ev.time_us()));
    w.Str("outcome", Outcome(ev.type()));
  }
  if (ev.type() == sv1::EVENT_LEASED && e.job) w.Ms("wait_ms", e.job->run_at_us(), ev.time_us());
  if (ev.attempt_started_us()) w.Ms("run_ms", ev.attempt_started_us(), ev.time_us());
  if (ev.has_error()) {
    w.Str("error.kind", KindName(ev.error().kind()));
    w.Str("error.code", ev.error().code());
    w.Str("error.message", ev.error().message());
  }
  if (ev.type() == sv1::EVENT_RETRY_SCHEDULED) w.Str("retry_at", Time(ev.run_at_us()));
  if (!ev.reason().empty()) w.Str("reason", ev.reason());
  return w.Done();
}

}  // namespace ledgerq::server
