// Retry policy: exponential backoff with full jitter, capped, and the dead-letter rules.
// Pure functions of their inputs (the random draw is passed in), so bounds are testable.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"

namespace ledgerq::scheduler {

struct RetryPolicy {
  uint32_t max_attempts = 5;
  std::chrono::microseconds backoff_base = std::chrono::seconds(1);
  double backoff_factor = 2.0;
  std::chrono::microseconds backoff_cap = std::chrono::hours(1);
};

// Checks the bounds of a policy; errors name `field_prefix` + the field.
[[nodiscard]] Status ValidateRetryPolicy(const RetryPolicy& p, std::string_view field_prefix);

// The ceiling of the jittered delay before retrying after `attempt` (1-based):
// min(cap, base * factor^(attempt-1)).
std::chrono::microseconds BackoffCeiling(const RetryPolicy& p, uint32_t attempt);

// Full jitter: a delay uniformly drawn from [0, ceiling], `unit_random` in [0, 1).
// A worker's retry_after, when given, replaces the draw but never exceeds the cap.
std::chrono::microseconds RetryDelay(const RetryPolicy& p, uint32_t attempt, double unit_random,
                                     std::optional<std::chrono::microseconds> retry_after);

}  // namespace ledgerq::scheduler
