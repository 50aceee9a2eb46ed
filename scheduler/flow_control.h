// Flow control: what keeps a queue from hammering the service behind it.
//
// - QueueLimits: a token bucket on leases per second, a cap on jobs leased at once, and a cap
//   per concurrency key. Enforced by the dispatcher when it picks jobs; they change what is
//   leased, never the order of what is ready.
// - CircuitBreaker: per (queue, job type). Closed until the transient-failure rate over a
//   sliding window passes a threshold (with a minimum number of attempts); then open (nothing of
//   the type is leased, its jobs wait without using attempts) for a cooldown that doubles with
//   each consecutive opening; then half-open, leasing at most `trials` jobs at once: `trials`
//   successes close it, one failure opens it again.
//
// Both are plain state machines of the times they are given (the injected clock's monotonic
// time), so every transition is testable without a server.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ledgerq::scheduler {

using Mono = std::chrono::steady_clock::time_point;

// 0 means unlimited.
struct QueueLimits {
  double rate_per_second = 0;
  uint32_t burst = 0;  // 0: max(1, rate_per_second)
  uint32_t max_concurrency = 0;
  uint32_t max_per_key = 0;

  bool operator==(const QueueLimits&) const = default;
  bool any() const { return rate_per_second > 0 || max_concurrency > 0 || max_per_key > 0; }
};

// Checks bounds; errors name `prefix` + the field (rate_per_second, burst, ...).
[[nodiscard]] Status ValidateLimits(const QueueLimits& l, std::string_view prefix);
// "rate 50/s burst 10, concurrency 20, per key 2" or "unlimited".
std::string DescribeLimits(const QueueLimits& l);

// Leases per second with a burst. Starts full.
class TokenBucket {
 public:
  // Refills for the time since the last call at `rate`, up to `burst` (0: max(1, rate)).
  void Refill(Mono now, double rate, uint32_t burst);
  // (A hair under 1 counts: refills add up in floating point.)
  bool Has() const { return tokens_ >= 1.0 - 1e-9; }
  void Take() { tokens_ -= 1.0; }
  // When the next whole token is there at `rate` (now, when there is one).
  Mono NextToken(Mono now, double rate) const;
  double tokens() const { return tokens_; }

 private:
  bool started_ = false;
  double tokens_ = 0;
  Mono last_{};
};

struct CircuitPolicy {
  bool enabled = false;
  double threshold = 0.5;  // transient failures / finished attempts in the window
  std::chrono::microseconds window = std::chrono::seconds(60);
  uint32_t min_attempts = 10;  // in the window before the rate counts
  std::chrono::microseconds cooldown = std::chrono::seconds(30);  // first opening
  std::chrono::microseconds max_cooldown = std::chrono::minutes(10);
  uint32_t trials = 3;  // half-open: leased at once, and successes needed to close

  bool operator==(const CircuitPolicy&) const = default;
};

// Errors name `prefix` + the config key (circuit-threshold, ...).
[[nodiscard]] Status ValidateCircuit(const CircuitPolicy& p, std::string_view prefix);

enum class CircuitState { kClosed, kOpen, kHalfOpen };
const char* CircuitStateName(CircuitState s);  // closed | open | half_open

// One state change and the numbers behind it.
struct CircuitChange {
  CircuitState from = CircuitState::kClosed;
  CircuitState to = CircuitState::kClosed;
  std::string cause;  // failure_rate | trial_failed | trials_succeeded | cooldown_elapsed | forced
  uint32_t window_attempts = 0;
  uint32_t window_failures = 0;
  double failure_rate = 0;
  std::chrono::microseconds cooldown{0};  // to open: how long
  std::string forced;                     // open | closed when an operator forced it
};

class CircuitBreaker {
 public:
  enum class Forced { kNone, kOpen, kClosed };

  CircuitState state() const { return state_; }
  Forced forced() const { return forced_; }
  const char* forced_name() const;  // "", "open", "closed"

  // May a job of this type be leased now, with `leased` of the type leased already?
  bool Allows(uint32_t leased, const CircuitPolicy& p) const;

  // A finished attempt: `failed` for a transient failure or an expired lease, else a success.
  // (Permanent failures are the job's fault, not the service's, and are not recorded.)
  std::optional<CircuitChange> Record(bool failed, Mono now, const CircuitPolicy& p);
  // Open -> half-open once the cooldown is over.
  std::optional<CircuitChange> Tick(Mono now, const CircuitPolicy& p);
  // An operator forces it open or closed, or gives it back (kNone: closed, fresh window).
  std::optional<CircuitChange> Force(Forced f, Mono now, const CircuitPolicy& p);
  // Without a change event: the forced state found in storage at recovery.
  void Restore(Forced f, Mono now);

  // When the open state ends, if it is open by itself.
  std::optional<Mono> half_open_at() const;
  uint32_t opens() const { return opens_; }
  std::chrono::microseconds cooldown() const { return cooldown_; }
  uint32_t window_attempts() const { return static_cast<uint32_t>(window_.size()); }
  uint32_t window_failures() const { return failures_; }
  double failure_rate() const;
  uint32_t trial_successes() const { return trial_successes_; }

 private:
  void Prune(Mono now, const CircuitPolicy& p);
  CircuitChange Change(CircuitState to, std::string cause);
  CircuitChange Open(Mono now, const CircuitPolicy& p, std::string cause);

  CircuitState state_ = CircuitState::kClosed;
  Forced forced_ = Forced::kNone;
  std::deque<std::pair<Mono, bool>> window_;  // (when, failed), oldest first
  uint32_t failures_ = 0;
  uint32_t opens_ = 0;  // consecutive openings; back to 0 when trials close it
  std::chrono::microseconds cooldown_{0};
  Mono open_until_{};
  uint32_t trial_successes_ = 0;
};

}  // namespace ledgerq::scheduler
