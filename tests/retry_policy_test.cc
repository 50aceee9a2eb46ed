#include "scheduler/retry_policy.h"

#include <catch2/catch.hpp>

using namespace ledgerq::scheduler;
using namespace std::chrono_literals;

TEST_CASE("backoff ceilings grow by the factor and stop at the cap", "[scheduler][retry]") {
  RetryPolicy p;  // 1s base, factor 2, cap 1h
  CHECK(BackoffCeiling(p, 1) == 1s);
  CHECK(BackoffCeiling(p, 2) == 2s);
  CHECK(BackoffCeiling(p, 5) == 16s);
  CHECK(BackoffCeiling(p, 13) == 1h);   // 4096s > 1h
  CHECK(BackoffCeiling(p, 200) == 1h);  // no overflow far past the cap
}

TEST_CASE("full jitter stays within [0, ceiling] and never exceeds the cap", "[scheduler][retry]") {
  RetryPolicy p;
  for (uint32_t attempt = 1; attempt <= 40; ++attempt) {
    for (double u : {0.0, 0.25, 0.5, 0.999999}) {
      auto d = RetryDelay(p, attempt, u, std::nullopt);
      CHECK(d >= 0us);
      CHECK(d <= BackoffCeiling(p, attempt));
      CHECK(d <= p.backoff_cap);
    }
  }
  CHECK(RetryDelay(p, 3, 0.5, std::nullopt) == 2s);
}

TEST_CASE("a worker's retry_after is honoured within the cap", "[scheduler][retry]") {
  RetryPolicy p;
  p.backoff_cap = 10min;
  CHECK(RetryDelay(p, 1, 0.9, 42s) == 42s);
  CHECK(RetryDelay(p, 1, 0.9, 2h) == 10min);
}

TEST_CASE("retry policies are validated field by field", "[scheduler][retry]") {
  RetryPolicy p;
  CHECK(ValidateRetryPolicy(p, "").ok());
  p.backoff_factor = 0.5;
  CHECK_THAT(ValidateRetryPolicy(p, "q.").message(), Catch::Contains("q.backoff_factor"));
  p = RetryPolicy{};
  p.backoff_cap = 1ms;
  CHECK_THAT(ValidateRetryPolicy(p, "").message(), Catch::Contains("backoff_cap"));
  p = RetryPolicy{};
  p.max_attempts = 0;
  CHECK_THAT(ValidateRetryPolicy(p, "").message(), Catch::Contains("max_attempts"));
}
