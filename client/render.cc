#include "client/render.h"

#include <google/protobuf/util/time_util.h>
#include <openssl/evp.h>

#include <sstream>

#include "common/duration.h"
#include "common/sha256.h"

namespace ledgerq::client {
namespace {

// Shown instead of a payload the server left out for the caller's role.
constexpr char kOmitted[] = "(omitted: no payload access)";

using google::protobuf::util::TimeUtil;

std::string Time(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "";
  return TimeUtil::ToString(ts);
}

std::string Base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(n);
  return out;
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string ErrorKindName(v1::ErrorKind kind) {
  std::string name = v1::ErrorKind_Name(kind);
  return name.rfind("ERROR_KIND_", 0) == 0 ? name.substr(11) : name;
}

}  // namespace

std::string StateName(v1::JobState state) {
  std::string name = v1::JobState_Name(state);
  return name.rfind("JOB_STATE_", 0) == 0 ? name.substr(10) : name;
}

nlohmann::json JobToJson(const v1::Job& job) {
  nlohmann::json j;
  j["id"] = job.id();
  j["queue"] = job.queue();
  j["type"] = job.type();
  j["state"] = StateName(job.state());
  j["priority"] = job.priority();
  j["run_at"] = Time(job.run_at());
  j["attempts"] = job.attempts();
  j["max_attempts"] = job.max_attempts();
  if (!job.idempotency_key().empty()) j["idempotency_key"] = job.idempotency_key();
  if (!job.concurrency_key().empty()) j["concurrency_key"] = job.concurrency_key();
  if (job.parent_job_id()) j["parent_job_id"] = job.parent_job_id();
  if (job.child_job_ids_size() > 0) {
    j["child_job_ids"] =
        std::vector<uint64_t>(job.child_job_ids().begin(), job.child_job_ids().end());
  }
  if (job.needs_attention()) j["needs_attention"] = true;
  if (job.compensation_job_id()) j["compensation_job_id"] = job.compensation_job_id();
  j["labels"] = nlohmann::json::object();
  for (const auto& [k, v] : job.labels()) j["labels"][k] = v;
  j["traceparent"] = job.traceparent();
  j["created_at"] = Time(job.created_at());
  j["updated_at"] = Time(job.updated_at());
  j["submitted_by"] = job.submitted_by();
  if (job.policy_version()) j["policy_version"] = job.policy_version();
  j["payload_sha256"] = ToHex(job.payload_sha256());
  if (job.payload_omitted()) {
    j["payload"] = kOmitted;
    j["payload_omitted"] = true;
  } else if (!job.payload().empty()) {
    auto parsed = nlohmann::json::parse(job.payload(), nullptr, /*allow_exceptions=*/false);
    if (!parsed.is_discarded()) {
      j["payload"] = std::move(parsed);
    } else {
      j["payload_base64"] = Base64(job.payload());
    }
  }
  if (!job.result().empty()) {
    auto parsed = nlohmann::json::parse(job.result(), nullptr, false);
    if (!parsed.is_discarded()) {
      j["result"] = std::move(parsed);
    } else {
      j["result_base64"] = Base64(job.result());
    }
  }
  if (!job.cancel_reason().empty()) j["cancel_reason"] = job.cancel_reason();
  if (!job.dead_reason().empty()) j["dead_reason"] = job.dead_reason();
  j["attempts_remaining"] = job.attempts_remaining();
  if (!job.lease_worker_id().empty()) {
    j["lease_worker_id"] = job.lease_worker_id();
    j["lease_deadline"] = Time(job.lease_deadline());
  }
  if (job.errors_size() > 0) {
    auto& errors = j["errors"] = nlohmann::json::array();
    for (const auto& e : job.errors()) {
      nlohmann::json err{{"attempt", e.attempt()},     {"at", Time(e.at())},
                         {"worker_id", e.worker_id()}, {"kind", ErrorKindName(e.kind())},
                         {"code", e.code()},           {"message", e.message()},
                         {"details", e.details()}};
      if (!e.worker_host().empty()) err["worker_host"] = e.worker_host();
      if (e.has_lease_started()) err["lease_started"] = Time(e.lease_started());
      if (e.has_lease_ended()) err["lease_ended"] = Time(e.lease_ended());
      if (!e.payload_snapshot().empty()) err["payload_snapshot"] = e.payload_snapshot();
      errors.push_back(std::move(err));
    }
  }
  return j;
}

std::string JobToText(const v1::Job& job) {
  std::ostringstream out;
  auto row = [&](const char* name, const std::string& value) {
    if (value.empty()) return;
    out << name;
    for (size_t i = std::char_traits<char>::length(name); i < 16; ++i) out << ' ';
    out << value << "\n";
  };
  row("id", std::to_string(job.id()));
  row("queue", job.queue());
  row("type", job.type());
  row("state", StateName(job.state()));
  row("priority", std::to_string(job.priority()));
  row("attempts", std::to_string(job.attempts()) + " (" + std::to_string(job.attempts_remaining()) +
                      " left of " + std::to_string(job.max_attempts()) + ")");
  row("dead_reason", job.dead_reason());
  if (job.needs_attention()) {
    row("attention", "needed (ledgerq dlq resolve " + std::to_string(job.id()) + ")");
  }
  if (job.compensation_job_id()) {
    row("compensated_by", "job " + std::to_string(job.compensation_job_id()));
  }
  if (!job.lease_worker_id().empty()) {
    row("leased_by", job.lease_worker_id() + " until " + Time(job.lease_deadline()));
  }
  row("run_at", Time(job.run_at()));
  row("created_at", Time(job.created_at()));
  row("updated_at", Time(job.updated_at()));
  row("submitted_by", job.submitted_by());
  if (job.policy_version()) row("policy_version", std::to_string(job.policy_version()));
  row("idempotency_key", job.idempotency_key());
  row("concurrency_key", job.concurrency_key());
  if (job.parent_job_id()) row("parent_job_id", std::to_string(job.parent_job_id()));
  if (job.child_job_ids_size() > 0) {
    std::string ids;
    for (uint64_t id : job.child_job_ids()) ids += (ids.empty() ? "" : ", ") + std::to_string(id);
    row("children", ids);
  }
  for (const auto& [k, v] : job.labels()) row("label", k + "=" + v);
  row("traceparent", job.traceparent());
  row("payload_sha256", ToHex(job.payload_sha256()));
  if (job.payload_omitted()) {
    row("payload", kOmitted);
  } else if (!job.payload().empty()) {
    auto parsed = nlohmann::json::parse(job.payload(), nullptr, false);
    row("payload", parsed.is_discarded()
                       ? "(" + std::to_string(job.payload().size()) + " bytes, not JSON)"
                       : parsed.dump());
  }
  if (!job.result().empty()) {
    auto parsed = nlohmann::json::parse(job.result(), nullptr, false);
    row("result", parsed.is_discarded()
                      ? "(" + std::to_string(job.result().size()) + " bytes, not JSON)"
                      : parsed.dump());
  }
  row("cancel_reason", job.cancel_reason());
  for (const auto& e : job.errors()) {
    row("error", "attempt " + std::to_string(e.attempt()) + " " + ErrorKindName(e.kind()) + " " +
                     e.code() + ": " + e.message() +
                     (e.worker_id().empty() ? "" : " (worker " + e.worker_id() + ")"));
    if (!e.payload_snapshot().empty()) row("  payload was", e.payload_snapshot());
  }
  return out.str();
}

namespace {

int64_t Us(const google::protobuf::Timestamp& t) { return TimeUtil::TimestampToMicroseconds(t); }

std::string Since(int64_t from_us, int64_t to_us) {
  return FormatDuration(std::chrono::microseconds(std::max<int64_t>(0, to_us - from_us)));
}

}  // namespace

nlohmann::json HistoryToJson(const v1::JobHistory& h) {
  nlohmann::json j;
  j["job"] = JobToJson(h.job());
  auto& events = j["events"] = nlohmann::json::array();
  for (const auto& e : h.events()) {
    nlohmann::json ev{{"seq", e.seq()},
                      {"type", e.type()},
                      {"at", Time(e.at())},
                      {"principal", e.principal()},
                      {"attempt", e.attempt()},
                      {"from_state", StateName(e.from_state())},
                      {"to_state", StateName(e.to_state())}};
    if (!e.worker_id().empty()) ev["worker_id"] = e.worker_id();
    if (e.has_error()) {
      ev["error"] = {{"kind", ErrorKindName(e.error().kind())},
                     {"code", e.error().code()},
                     {"message", e.error().message()}};
    }
    if (e.has_run_at()) ev["run_at"] = Time(e.run_at());
    if (e.has_attempt_started()) ev["attempt_started"] = Time(e.attempt_started());
    if (!e.reason().empty()) ev["reason"] = e.reason();
    if (!e.traceparent().empty()) ev["traceparent"] = e.traceparent();
    if (e.parent_job_id()) ev["parent_job_id"] = e.parent_job_id();
    if (e.related_job_id()) ev["related_job_id"] = e.related_job_id();
    if (e.needs_attention()) ev["needs_attention"] = true;
    events.push_back(std::move(ev));
  }
  return j;
}

std::string HistoryToText(const v1::JobHistory& h) {
  std::ostringstream out;
  const auto& job = h.job();
  out << "job " << job.id() << "  " << job.queue() << "/" << job.type() << "  "
      << StateName(job.state());
  if (job.traceparent().size() >= 35) out << "  trace " << job.traceparent().substr(3, 32);
  out << "\n";
  int64_t prev = 0;
  int64_t ready_at = 0;
  for (const auto& e : h.events()) {
    const int64_t at = Us(e.at());
    std::string when = prev == 0 ? Time(e.at()) : "+" + Since(prev, at);
    prev = at;
    std::string what;
    const std::string& t = e.type();
    if (t == "SUBMITTED") {
      what = "submitted by " + e.principal();
      if (e.parent_job_id() && e.reason().rfind("compensates job ", 0) == 0) {
        what += ": " + e.reason();
      } else if (e.parent_job_id()) {
        what += ", child of job " + std::to_string(e.parent_job_id());
      }
      ready_at = e.has_run_at() ? Us(e.run_at()) : at;
      if (ready_at > at) what += ", to run in " + Since(at, ready_at);
    } else if (t == "DEDUPLICATED") {
      what = "resubmitted by " + e.principal() + " with the same idempotency key: deduplicated";
    } else if (t == "LEASED") {
      what = "leased (attempt " + std::to_string(e.attempt()) + ", worker " + e.worker_id() +
             ", waited " + Since(ready_at, at) + ")";
    } else if (t == "COMPLETED") {
      what = "completed";
      if (e.has_attempt_started()) what += " after " + Since(Us(e.attempt_started()), at);
    } else if (t == "FAILED" || t == "LEASE_EXPIRED") {
      what = t == "FAILED"
                 ? "failed " + Lower(ErrorKindName(e.error().kind())) + " " + e.error().code()
                 : "lease expired (worker " + e.worker_id() + ")";
      if (e.has_attempt_started()) what += " after " + Since(Us(e.attempt_started()), at);
      if (t == "FAILED" && !e.error().message().empty()) {
        what += ": " + e.error().message().substr(0, 120);
      }
    } else if (t == "RETRY_SCHEDULED") {
      ready_at = Us(e.run_at());
      what = "retry scheduled +" + Since(at, ready_at);
    } else if (t == "DEAD_LETTERED") {
      what = "dead-lettered (" + e.reason() + ")";
      if (e.needs_attention()) what += ", needs attention";
    } else if (t == "COMPENSATION_ENQUEUED") {
      what = "compensated by job " + std::to_string(e.related_job_id()) + " (" + e.reason() + ")";
    } else if (t == "ATTENTION_CLEARED") {
      what =
          "attention resolved by " + e.principal() + (e.reason().empty() ? "" : ": " + e.reason());
    } else if (t == "RELEASED") {
      ready_at = e.has_run_at() ? Us(e.run_at()) : at;
      what = "released by worker " + e.worker_id();
      if (!e.reason().empty()) what += " (" + e.reason() + ")";
    } else if (t == "REDRIVEN") {
      ready_at = at;
      what = "redriven by " + e.principal();
    } else if (t == "CANCELLED") {
      what = "cancelled by " + e.principal() + (e.reason().empty() ? "" : ": " + e.reason());
    } else {
      what = Lower(t);
    }
    out << "  " << when << std::string(when.size() < 28 ? 28 - when.size() : 1, ' ') << what
        << "\n";
  }
  return out.str();
}

}  // namespace ledgerq::client
