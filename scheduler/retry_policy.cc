#include "scheduler/retry_policy.h"

#include <algorithm>
#include <cmath>

namespace ledgerq::scheduler {

Status ValidateRetryPolicy(const RetryPolicy& p, std::string_view prefix) {
  auto bad = [&](const char* field, const std::string& why) {
    return Status::InvalidArgument(std::string(prefix) + field + ": " + why);
  };
  if (p.max_attempts < 1 || p.max_attempts > 1000) {
    return bad("max_attempts", "must be between 1 and 1000, got " + std::to_string(p.max_attempts));
  }
  if (p.backoff_base < std::chrono::milliseconds(1)) return bad("backoff_base", "must be >= 1ms");
  if (!(p.backoff_factor >= 1.0 && p.backoff_factor <= 100.0)) {
    return bad("backoff_factor", "must be between 1 and 100");
  }
  if (p.backoff_cap < p.backoff_base) return bad("backoff_cap", "must be >= backoff_base");
  if (p.backoff_cap > std::chrono::hours(24 * 7)) return bad("backoff_cap", "must be <= 7d");
  return Status::Ok();
}

std::chrono::microseconds BackoffCeiling(const RetryPolicy& p, uint32_t attempt) {
  const double cap = static_cast<double>(p.backoff_cap.count());
  const double exp = std::pow(p.backoff_factor, static_cast<double>(attempt > 0 ? attempt - 1 : 0));
  const double raw = static_cast<double>(p.backoff_base.count()) * exp;
  return std::chrono::microseconds(static_cast<int64_t>(std::min(cap, raw)));
}

std::chrono::microseconds RetryDelay(const RetryPolicy& p, uint32_t attempt, double unit_random,
                                     std::optional<std::chrono::microseconds> retry_after) {
  if (retry_after) {
    return std::clamp(*retry_after, std::chrono::microseconds(0), p.backoff_cap);
  }
  const double u = std::clamp(unit_random, 0.0, 1.0);
  const auto ceiling = BackoffCeiling(p, attempt);
  return std::chrono::microseconds(static_cast<int64_t>(static_cast<double>(ceiling.count()) * u));
}

}  // namespace ledgerq::scheduler
