#include "server/job_mapping.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <optional>
#include <random>

namespace ledgerq::server {
namespace {

using google::protobuf::util::TimeUtil;

bool IsNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '-';
}

bool IsHex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool AllZero(std::string_view s) { return s.find_first_not_of('0') == std::string_view::npos; }

bool HasControlChars(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

std::string Quote(std::string_view s) {
  // Echo at most 64 bytes of a bad value back, with control characters escaped.
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    unsigned char c = s[i];
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (s.size() > 64) out += "...";
  return out + "\"";
}

}  // namespace

// TimeUtil aborts the process on a time outside 0001-01-01..9999-12-31, and a stored record
// (corrupt, or written by something else) can hold any int64: clamp to what a Timestamp holds.
google::protobuf::Timestamp TimestampFromMicros(int64_t us) {
  constexpr int64_t kMinUs = TimeUtil::kTimestampMinSeconds * 1'000'000;
  constexpr int64_t kMaxUs = TimeUtil::kTimestampMaxSeconds * 1'000'000 + 999'999;
  return TimeUtil::MicrosecondsToTimestamp(std::clamp(us, kMinUs, kMaxUs));
}

google::protobuf::Duration DurationFromMicros(int64_t us) {
  constexpr int64_t kMaxUs = TimeUtil::kDurationMaxSeconds * 1'000'000;
  return TimeUtil::MicrosecondsToDuration(std::clamp(us, -kMaxUs, kMaxUs));
}

Status ValidateName(std::string_view value, std::string_view field) {
  if (value.empty()) return Status::InvalidArgument(std::string(field) + ": must not be empty");
  if (value.size() > kMaxNameBytes) {
    return Status::InvalidArgument(std::string(field) + ": longer than 128 bytes (" +
                                   std::to_string(value.size()) + ")");
  }
  for (char c : value) {
    if (!IsNameChar(c)) {
      return Status::InvalidArgument(std::string(field) + ": " + Quote(value) +
                                     " has characters outside [A-Za-z0-9._:-]");
    }
  }
  return Status::Ok();
}

Status CheckIdempotencyRef(const v1::IdempotencyRef& ref) {
  LEDGERQ_RETURN_IF_ERROR(ValidateName(ref.queue(), "idempotency.queue"));
  if (ref.idempotency_key().empty()) {
    return Status::InvalidArgument("idempotency.idempotency_key: must not be empty");
  }
  return Status::Ok();
}

bool IsValidTraceparent(std::string_view tp) {
  if (tp.size() != 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return false;
  std::string_view version = tp.substr(0, 2), trace = tp.substr(3, 32), span = tp.substr(36, 16),
                   flags = tp.substr(53, 2);
  return IsHex(version) && version != "ff" && IsHex(trace) && !AllZero(trace) && IsHex(span) &&
         !AllZero(span) && IsHex(flags);
}

std::string NewTraceparent() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  auto hex = [](uint64_t v, int digits) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string s(digits, '0');
    for (int i = digits - 1; i >= 0; --i, v >>= 4) s[i] = kHex[v & 0xf];
    return s;
  };
  uint64_t a = rng() | 1, b = rng(), c = rng() | 1;
  return "00-" + hex(a, 16) + hex(b, 16) + "-" + hex(c, 16) + "-01";
}

Status ToNewJob(const v1::EnqueueRequest& req, const EnqueueLimits& limits, int64_t now_us,
                std::string_view metadata_traceparent, storage::NewJob* out,
                std::string_view metadata_tracestate, std::string_view principal) {
  LEDGERQ_RETURN_IF_ERROR(ValidateName(req.queue(), "queue"));
  LEDGERQ_RETURN_IF_ERROR(ValidateName(req.type(), "type"));
  if (req.payload().size() > limits.max_payload_bytes) {
    return Status::InvalidArgument("payload: " + std::to_string(req.payload().size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(limits.max_payload_bytes) + " bytes");
  }
  if (req.idempotency_key().size() > kMaxIdempotencyKeyBytes) {
    return Status::InvalidArgument("idempotency_key: longer than 256 bytes (" +
                                   std::to_string(req.idempotency_key().size()) + ")");
  }
  if (HasControlChars(req.idempotency_key())) {
    return Status::InvalidArgument("idempotency_key: " + Quote(req.idempotency_key()) +
                                   " contains control characters");
  }
  if (req.labels_size() > static_cast<int>(kMaxLabels)) {
    return Status::InvalidArgument("labels: " + std::to_string(req.labels_size()) +
                                   " entries exceeds the limit of 64");
  }
  for (const auto& [k, v] : req.labels()) {
    if (k.empty()) return Status::InvalidArgument("labels: a key is empty");
    if (k.size() > kMaxLabelBytes) {
      return Status::InvalidArgument("labels: key " + Quote(k) + " is longer than 256 bytes");
    }
    if (v.size() > kMaxLabelBytes) {
      return Status::InvalidArgument("labels[" + Quote(k) + "]: value is longer than 256 bytes");
    }
  }
  if (req.max_attempts() > kMaxAttemptsCeiling) {
    return Status::InvalidArgument("max_attempts: must be between 1 and 1000, got " +
                                   std::to_string(req.max_attempts()));
  }
  int64_t run_at = now_us;
  if (req.has_run_at() && req.has_delay()) {
    return Status::InvalidArgument("run_at, delay: give one or the other, not both");
  }
  if (req.has_run_at()) {
    if (req.run_at().seconds() < TimeUtil::kTimestampMinSeconds ||
        req.run_at().seconds() > TimeUtil::kTimestampMaxSeconds || req.run_at().nanos() < 0 ||
        req.run_at().nanos() > 999'999'999) {
      return Status::InvalidArgument("run_at: not a valid timestamp");
    }
    int64_t t = TimeUtil::TimestampToMicroseconds(req.run_at());
    if (t > now_us + kMaxScheduleAheadUs) {
      return Status::InvalidArgument("run_at: " + TimeUtil::ToString(req.run_at()) +
                                     " is more than 1 year in the future");
    }
    if (t < now_us - kMaxScheduleAheadUs) {
      return Status::InvalidArgument("run_at: " + TimeUtil::ToString(req.run_at()) +
                                     " is more than 1 year in the past");
    }
    run_at = std::max(t, now_us);
  } else if (req.has_delay()) {
    if (req.delay().seconds() < 0 || req.delay().nanos() < 0 || req.delay().nanos() > 999'999'999 ||
        req.delay().seconds() > TimeUtil::kDurationMaxSeconds) {
      return Status::InvalidArgument("delay: must be a non-negative duration");
    }
    int64_t d = TimeUtil::DurationToMicroseconds(req.delay());
    if (d > kMaxScheduleAheadUs) {
      return Status::InvalidArgument("delay: " + TimeUtil::ToString(req.delay()) +
                                     " is more than 1 year");
    }
    run_at = now_us + d;
  }
  std::string traceparent = req.traceparent();
  if (traceparent.empty()) traceparent = std::string(metadata_traceparent);
  if (!traceparent.empty() && !IsValidTraceparent(traceparent)) {
    return Status::InvalidArgument("traceparent: " + Quote(traceparent) +
                                   " is not a W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>)");
  }
  if (traceparent.empty()) traceparent = NewTraceparent();
  std::string tracestate = req.tracestate();
  if (tracestate.empty()) tracestate = std::string(metadata_tracestate);
  if (tracestate.size() > 512 || HasControlChars(tracestate)) {
    return Status::InvalidArgument("tracestate: must be at most 512 printable bytes (W3C)");
  }
  if (req.concurrency_key().size() > kMaxIdempotencyKeyBytes) {
    return Status::InvalidArgument("concurrency_key: longer than 256 bytes (" +
                                   std::to_string(req.concurrency_key().size()) + ")");
  }
  if (HasControlChars(req.concurrency_key())) {
    return Status::InvalidArgument("concurrency_key: " + Quote(req.concurrency_key()) +
                                   " contains control characters");
  }
  std::optional<storage::v1::RetryPolicyRecord> retry;
  if (req.has_retry_policy()) {
    const auto& rp = req.retry_policy();
    storage::v1::RetryPolicyRecord r;
    constexpr int64_t kDay = 86400LL * 1'000'000;
    // Out-of-range seconds map to -1 (rejected below) instead of overflowing the conversion.
    auto duration_us = [](const google::protobuf::Duration& d) -> int64_t {
      if (d.seconds() < 0 || d.seconds() > 8 * 86400 || d.nanos() < 0) return -1;
      return TimeUtil::DurationToMicroseconds(d);
    };
    if (rp.has_backoff_base()) {
      int64_t us = duration_us(rp.backoff_base());
      if (us < 1000 || us > kDay) {
        return Status::InvalidArgument("retry_policy.backoff_base: must be between 1ms and 1d");
      }
      r.set_backoff_base_us(us);
    }
    if (rp.backoff_factor() != 0) {
      if (!(rp.backoff_factor() >= 1.0 && rp.backoff_factor() <= 100.0)) {
        return Status::InvalidArgument("retry_policy.backoff_factor: must be between 1 and 100");
      }
      r.set_backoff_factor(rp.backoff_factor());
    }
    if (rp.has_backoff_cap()) {
      int64_t us = duration_us(rp.backoff_cap());
      if (us < 1000 || us > 7 * kDay) {
        return Status::InvalidArgument("retry_policy.backoff_cap: must be between 1ms and 7d");
      }
      if (r.backoff_base_us() > us) {
        return Status::InvalidArgument("retry_policy.backoff_cap: must be >= backoff_base");
      }
      r.set_backoff_cap_us(us);
    }
    retry = r;
  }

  storage::NewJob job;
  job.queue = req.queue();
  job.type = req.type();
  job.payload = req.payload();
  job.priority = req.priority();
  job.run_at_us = run_at;
  job.max_attempts = req.max_attempts() ? req.max_attempts() : limits.default_max_attempts;
  job.retry = std::move(retry);
  job.idempotency_key = req.idempotency_key();
  job.parent_job_id = req.parent_job_id();
  job.concurrency_key = req.concurrency_key();
  for (const auto& [k, v] : req.labels()) job.labels.emplace(k, v);
  job.traceparent = std::move(traceparent);
  job.tracestate = std::move(tracestate);
  if (limits.policies) {
    auto current = limits.policies->Get();
    const Policies& policies = current->policies;
    LEDGERQ_RETURN_IF_ERROR(policies.Admit(job, principal));
    if (!req.max_attempts()) {
      job.max_attempts = policies.Resolve(job.queue, job.type).retry.max_attempts;
    }
    job.policy_version = current->version;
  }
  *out = std::move(job);
  return Status::Ok();
}

v1::Job ToApiJob(const storage::JobRecord& rec, int64_t now_us) {
  v1::Job job;
  job.set_id(rec.id());
  job.set_queue(rec.queue());
  job.set_type(rec.type());
  job.set_priority(rec.priority());
  *job.mutable_run_at() = TimestampFromMicros(rec.run_at_us());
  job.set_max_attempts(rec.max_attempts());
  job.set_idempotency_key(rec.idempotency_key());
  job.set_parent_job_id(rec.parent_job_id());
  for (const auto& [k, v] : rec.labels()) (*job.mutable_labels())[k] = v;
  job.set_traceparent(rec.traceparent());
  job.set_tracestate(rec.tracestate());
  job.set_policy_version(rec.policy_version());
  job.set_payload_purged(rec.payload_purged());
  job.set_concurrency_key(rec.concurrency_key());
  job.set_needs_attention(rec.needs_attention());
  job.set_compensation_job_id(rec.compensation_job_id());
  auto state = static_cast<v1::JobState>(rec.state());
  if (state == v1::JOB_STATE_SCHEDULED && rec.run_at_us() <= now_us) {
    state = v1::JOB_STATE_READY;
  }
  job.set_state(state);
  job.set_attempts(rec.attempts());
  *job.mutable_created_at() = TimestampFromMicros(rec.created_at_us());
  *job.mutable_updated_at() = TimestampFromMicros(rec.updated_at_us());
  for (const auto& e : rec.errors()) {
    auto* out = job.add_errors();
    out->set_attempt(e.attempt());
    *out->mutable_at() = TimestampFromMicros(e.at_us());
    out->set_worker_id(e.worker_id());
    out->set_kind(static_cast<v1::ErrorKind>(e.kind()));
    out->set_code(e.code());
    out->set_message(e.message());
    out->set_details(e.details());
    out->set_worker_host(e.worker_host());
    if (e.lease_started_us())
      *out->mutable_lease_started() = TimestampFromMicros(e.lease_started_us());
    if (e.lease_ended_us()) *out->mutable_lease_ended() = TimestampFromMicros(e.lease_ended_us());
    out->set_payload_snapshot(e.payload_snapshot());
    out->set_payload_snapshot_sha256(e.payload_snapshot_sha256());
  }
  job.set_payload_sha256(rec.payload_sha256());
  job.set_submitted_by(rec.submitted_by());
  job.set_cancel_reason(rec.cancel_reason());
  job.set_dead_reason(rec.dead_reason());
  if (rec.state() == storage::v1::STATE_LEASED) {
    job.set_lease_worker_id(rec.lease_worker_id());
    *job.mutable_lease_deadline() = TimestampFromMicros(rec.lease_deadline_us());
  }
  const uint32_t used = rec.attempts() - std::min(rec.attempts(), rec.attempt_budget_base());
  job.set_attempts_remaining(rec.max_attempts() > used ? rec.max_attempts() - used : 0);
  if (rec.has_retry()) {
    auto* rp = job.mutable_retry_policy();
    if (rec.retry().backoff_base_us()) {
      *rp->mutable_backoff_base() = DurationFromMicros(rec.retry().backoff_base_us());
    }
    rp->set_backoff_factor(rec.retry().backoff_factor());
    if (rec.retry().backoff_cap_us()) {
      *rp->mutable_backoff_cap() = DurationFromMicros(rec.retry().backoff_cap_us());
    }
  }
  return job;
}

v1::JobEvent ToApiEvent(const storage::EventBody& ev) {
  v1::JobEvent out;
  out.set_seq(ev.seq());
  std::string name = storage::v1::EventType_Name(ev.type());
  out.set_type(name.rfind("EVENT_", 0) == 0 ? name.substr(6) : name);
  *out.mutable_at() = TimestampFromMicros(ev.time_us());
  out.set_principal(ev.principal());
  out.set_attempt(ev.attempt());
  out.set_from_state(static_cast<v1::JobState>(ev.from_state()));
  out.set_to_state(static_cast<v1::JobState>(ev.to_state()));
  out.set_worker_id(ev.worker_id());
  if (ev.lease_deadline_us())
    *out.mutable_lease_deadline() = TimestampFromMicros(ev.lease_deadline_us());
  if (ev.has_error()) {
    auto* e = out.mutable_error();
    e->set_attempt(ev.error().attempt());
    *e->mutable_at() = TimestampFromMicros(ev.error().at_us());
    e->set_worker_id(ev.error().worker_id());
    e->set_kind(static_cast<v1::ErrorKind>(ev.error().kind()));
    e->set_code(ev.error().code());
    e->set_message(ev.error().message());
    e->set_details(ev.error().details());
    e->set_worker_host(ev.error().worker_host());
    if (ev.error().lease_started_us()) {
      *e->mutable_lease_started() = TimestampFromMicros(ev.error().lease_started_us());
    }
    if (ev.error().lease_ended_us()) {
      *e->mutable_lease_ended() = TimestampFromMicros(ev.error().lease_ended_us());
    }
    e->set_payload_snapshot(ev.error().payload_snapshot());  // only in events before 2026-12
    e->set_payload_snapshot_sha256(ev.error().payload_snapshot_sha256());
  }
  if (ev.run_at_us()) *out.mutable_run_at() = TimestampFromMicros(ev.run_at_us());
  out.set_reason(ev.reason());
  out.set_traceparent(ev.traceparent());
  if (ev.attempt_started_us()) {
    *out.mutable_attempt_started() = TimestampFromMicros(ev.attempt_started_us());
  }
  out.set_payload_sha256(ev.payload_sha256());
  out.set_result_sha256(ev.result_sha256());
  out.set_policy_version(ev.policy_version());
  out.set_policy_digest(ev.policy_digest());
  out.set_policy_text(ev.policy_text());
  out.set_related_job_id(ev.related_job_id());
  if (ev.has_limits()) *out.mutable_limits() = ToApiLimits(ev.limits());
  if (ev.has_circuit()) *out.mutable_circuit() = ToApiCircuitChange(ev.circuit());
  if (ev.has_schedule()) *out.mutable_schedule() = ToApiSchedule(ev.schedule(), false);
  out.set_needs_attention(ev.needs_attention());
  out.set_concurrency_key(ev.concurrency_key());
  out.set_parent_job_id(ev.parent_job_id());
  return out;
}

v1::QueueLimits ToApiLimits(const storage::v1::QueueLimitsRecord& rec) {
  v1::QueueLimits out;
  out.set_rate_per_second(rec.rate_per_second());
  out.set_burst(rec.burst());
  out.set_max_concurrency(rec.max_concurrency());
  out.set_max_per_key(rec.max_per_key());
  return out;
}

v1::CircuitInfo ToApiCircuitChange(const storage::v1::CircuitRecord& rec) {
  v1::CircuitInfo out;
  out.set_type(rec.job_type());
  out.set_from_state(rec.from_state());
  out.set_state(rec.to_state());
  out.set_cause(rec.cause());
  out.set_window_attempts(rec.window_attempts());
  out.set_window_failures(rec.window_failures());
  out.set_failure_rate(rec.failure_rate());
  out.set_threshold(rec.threshold());
  *out.mutable_window() = DurationFromMicros(rec.window_us());
  out.set_min_attempts(rec.min_attempts());
  *out.mutable_cooldown() = DurationFromMicros(rec.cooldown_us());
  out.set_trials(rec.trials());
  out.set_forced(rec.forced());
  return out;
}

v1::Schedule ToApiSchedule(const storage::v1::ScheduleRecord& rec, bool with_payload) {
  v1::Schedule out;
  out.set_name(rec.name());
  out.set_cron(rec.cron());
  out.set_queue(rec.queue());
  out.set_type(rec.type());
  if (with_payload) {
    out.set_payload(rec.payload());
  } else {
    out.set_payload_omitted(!rec.payload().empty());
  }
  out.set_priority(rec.priority());
  out.set_max_attempts(rec.max_attempts());
  out.set_missed(rec.missed());
  out.set_source(rec.source());
  out.set_created_by(rec.created_by());
  if (rec.created_at_us()) *out.mutable_created_at() = TimestampFromMicros(rec.created_at_us());
  if (rec.last_fire_us()) *out.mutable_last_fire() = TimestampFromMicros(rec.last_fire_us());
  for (const auto& [k, v] : rec.labels()) (*out.mutable_labels())[k] = v;
  out.set_last_job_id(rec.last_job_id());
  return out;
}

grpc::StatusCode ToGrpcCode(Code code) {
  switch (code) {
    case Code::kOk:
      return grpc::StatusCode::OK;
    case Code::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case Code::kNotFound:
      return grpc::StatusCode::NOT_FOUND;
    case Code::kAlreadyExists:
      return grpc::StatusCode::ALREADY_EXISTS;
    case Code::kFailedPrecondition:
      return grpc::StatusCode::FAILED_PRECONDITION;
    case Code::kResourceExhausted:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Code::kUnavailable:
      return grpc::StatusCode::UNAVAILABLE;
    case Code::kCorruption:
      return grpc::StatusCode::DATA_LOSS;
    case Code::kInternal:
      return grpc::StatusCode::INTERNAL;
    case Code::kPermissionDenied:
      return grpc::StatusCode::PERMISSION_DENIED;
    case Code::kUnauthenticated:
      return grpc::StatusCode::UNAUTHENTICATED;
  }
  return grpc::StatusCode::UNKNOWN;
}

grpc::Status ToGrpcStatus(const Status& st) {
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(ToGrpcCode(st.code()), st.message());
}

const char* GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "OTHER";
  }
}

}  // namespace ledgerq::server
