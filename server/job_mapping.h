// Wire <-> domain mapping for jobs: request validation (every rule names its field), defaults,
// conversion of stored records to API messages, and Status -> grpc::Status. Pure functions,
// so they are tested without a server.
#pragma once

#include <grpcpp/support/status.h>

#include <cstdint>
#include <map>
#include <string>

#include "common/status.h"
#include "ledgerq/v1/ledgerq.pb.h"
#include "server/policy.h"
#include "storage/job_store.h"

namespace ledgerq::server {

// Microseconds to a protobuf Timestamp / Duration, clamped to what those types hold: TimeUtil
// aborts the process outside 0001..9999 (or ±10,000 years), and stored records can hold any int64.
google::protobuf::Timestamp TimestampFromMicros(int64_t us);
google::protobuf::Duration DurationFromMicros(int64_t us);

struct EnqueueLimits {
  uint64_t max_payload_bytes = 1 << 20;  // the ceiling for every queue and type
  uint32_t default_max_attempts = 5;
  // Queue and job-type policies: admission checks, per-type defaults, the version a job is
  // admitted under. Null: none.
  const LivePolicies* policies = nullptr;
};

inline constexpr size_t kMaxNameBytes = 128;
inline constexpr size_t kMaxLabels = 64;
inline constexpr size_t kMaxLabelBytes = 256;
inline constexpr size_t kMaxIdempotencyKeyBytes = 256;
inline constexpr uint32_t kMaxAttemptsCeiling = 1000;
inline constexpr size_t kMaxBatchItems = 1000;
inline constexpr int64_t kMaxScheduleAheadUs = 366LL * 24 * 3600 * 1'000'000;

// Queue and type names: [A-Za-z0-9._:-]{1,128}.
[[nodiscard]] Status ValidateName(std::string_view value, std::string_view field);

// A lookup by queue + idempotency key: a valid queue name and a non-empty key.
[[nodiscard]] Status CheckIdempotencyRef(const v1::IdempotencyRef& ref);

// Validates `req` and fills `out` with defaults applied (run_at resolved against `now_us`,
// traceparent generated when absent) and the policy's admission checks for `principal`.
// `metadata_traceparent` is the request's gRPC metadata value, used when the field is empty.
// Writes nothing on error.
[[nodiscard]] Status ToNewJob(const v1::EnqueueRequest& req, const EnqueueLimits& limits,
                              int64_t now_us, std::string_view metadata_traceparent,
                              storage::NewJob* out, std::string_view metadata_tracestate = {},
                              std::string_view principal = "anonymous");

// W3C trace context: "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>", ids not all zero.
bool IsValidTraceparent(std::string_view tp);
std::string NewTraceparent();

// A stored job as the API shows it. A SCHEDULED job whose run_at has passed shows READY.
v1::Job ToApiJob(const storage::JobRecord& rec, int64_t now_us);

v1::JobEvent ToApiEvent(const storage::EventBody& ev);
v1::QueueLimits ToApiLimits(const storage::v1::QueueLimitsRecord& rec);
// A circuit breaker change as recorded in an event (the numbers that caused it).
v1::CircuitInfo ToApiCircuitChange(const storage::v1::CircuitRecord& rec);
// A schedule; its payload only when `with_payload` (else payload_omitted when it has one).
v1::Schedule ToApiSchedule(const storage::v1::ScheduleRecord& rec, bool with_payload);

grpc::Status ToGrpcStatus(const Status& st);
grpc::StatusCode ToGrpcCode(Code code);
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace ledgerq::server
