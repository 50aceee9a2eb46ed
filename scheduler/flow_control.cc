#include "scheduler/flow_control.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "common/duration.h"

namespace ledgerq::scheduler {

using std::chrono::microseconds;

Status ValidateLimits(const QueueLimits& l, std::string_view prefix) {
  const std::string p(prefix);
  if (!(l.rate_per_second >= 0) || l.rate_per_second > 1e6 || std::isnan(l.rate_per_second)) {
    return Status::InvalidArgument(p +
                                   "rate_per_second: must be between 0 (unlimited) and "
                                   "1000000, got " +
                                   std::to_string(l.rate_per_second));
  }
  if (l.burst > 1'000'000) {
    return Status::InvalidArgument(p + "burst: must be at most 1000000, got " +
                                   std::to_string(l.burst));
  }
  if (l.max_concurrency > 10'000'000) {
    return Status::InvalidArgument(p + "max_concurrency: must be at most 10000000, got " +
                                   std::to_string(l.max_concurrency));
  }
  if (l.max_per_key > 10'000'000) {
    return Status::InvalidArgument(p + "max_per_key: must be at most 10000000, got " +
                                   std::to_string(l.max_per_key));
  }
  return Status::Ok();
}

std::string DescribeLimits(const QueueLimits& l) {
  if (!l.any()) return "unlimited";
  std::ostringstream out;
  const char* sep = "";
  if (l.rate_per_second > 0) {
    out << "rate " << l.rate_per_second << "/s burst "
        << (l.burst ? l.burst : std::max<uint32_t>(1, static_cast<uint32_t>(l.rate_per_second)));
    sep = ", ";
  }
  if (l.max_concurrency > 0) {
    out << sep << "concurrency " << l.max_concurrency;
    sep = ", ";
  }
  if (l.max_per_key > 0) out << sep << "per key " << l.max_per_key;
  return out.str();
}

namespace {
double Capacity(double rate, uint32_t burst) {
  return burst > 0 ? static_cast<double>(burst) : std::max(1.0, std::floor(rate));
}
}  // namespace

void TokenBucket::Refill(Mono now, double rate, uint32_t burst) {
  const double cap = Capacity(rate, burst);
  if (!started_) {
    started_ = true;
    tokens_ = cap;
    last_ = now;
    return;
  }
  if (now > last_) {
    tokens_ += std::chrono::duration<double>(now - last_).count() * rate;
    last_ = now;
  }
  tokens_ = std::min(tokens_, cap);
}

Mono TokenBucket::NextToken(Mono now, double rate) const {
  if (Has() || rate <= 0) return now;
  const double seconds = (1.0 - tokens_) / rate;
  return now + std::chrono::ceil<Mono::duration>(std::chrono::duration<double>(seconds));
}

Status ValidateCircuit(const CircuitPolicy& p, std::string_view prefix) {
  const std::string pre(prefix);
  if (!(p.threshold > 0 && p.threshold <= 1)) {
    return Status::InvalidArgument(pre + "circuit-threshold: must be above 0 and at most 1, got " +
                                   std::to_string(p.threshold));
  }
  if (p.window < std::chrono::seconds(1) || p.window > std::chrono::hours(24)) {
    return Status::InvalidArgument(pre + "circuit-window: must be between 1s and 24h");
  }
  if (p.min_attempts < 1 || p.min_attempts > 1'000'000) {
    return Status::InvalidArgument(pre + "circuit-min-attempts: must be between 1 and 1000000");
  }
  if (p.cooldown < std::chrono::milliseconds(100) || p.cooldown > std::chrono::hours(24)) {
    return Status::InvalidArgument(pre + "circuit-cooldown: must be between 100ms and 24h");
  }
  if (p.max_cooldown < p.cooldown || p.max_cooldown > std::chrono::hours(24)) {
    return Status::InvalidArgument(pre +
                                   "circuit-max-cooldown: must be between circuit-cooldown and "
                                   "24h");
  }
  if (p.trials < 1 || p.trials > 1000) {
    return Status::InvalidArgument(pre + "circuit-trials: must be between 1 and 1000");
  }
  return Status::Ok();
}

const char* CircuitStateName(CircuitState s) {
  switch (s) {
    case CircuitState::kClosed:
      return "closed";
    case CircuitState::kOpen:
      return "open";
    case CircuitState::kHalfOpen:
      return "half_open";
  }
  return "?";
}

const char* CircuitBreaker::forced_name() const {
  switch (forced_) {
    case Forced::kOpen:
      return "open";
    case Forced::kClosed:
      return "closed";
    case Forced::kNone:
      break;
  }
  return "";
}

bool CircuitBreaker::Allows(uint32_t leased, const CircuitPolicy& p) const {
  switch (state_) {
    case CircuitState::kClosed:
      return true;
    case CircuitState::kOpen:
      return false;
    case CircuitState::kHalfOpen:
      return leased < p.trials;
  }
  return true;
}

double CircuitBreaker::failure_rate() const {
  return window_.empty() ? 0.0 : static_cast<double>(failures_) / window_.size();
}

void CircuitBreaker::Prune(Mono now, const CircuitPolicy& p) {
  while (!window_.empty() && window_.front().first + p.window <= now) {
    if (window_.front().second) --failures_;
    window_.pop_front();
  }
}

CircuitChange CircuitBreaker::Change(CircuitState to, std::string cause) {
  CircuitChange c;
  c.from = state_;
  c.to = to;
  c.cause = std::move(cause);
  c.window_attempts = window_attempts();
  c.window_failures = failures_;
  c.failure_rate = failure_rate();
  c.forced = forced_name();
  state_ = to;
  return c;
}

CircuitChange CircuitBreaker::Open(Mono now, const CircuitPolicy& p, std::string cause) {
  // Each consecutive opening doubles the cooldown, up to its cap.
  const uint32_t doublings = std::min<uint32_t>(opens_, 30);
  const double scaled = static_cast<double>(p.cooldown.count()) * std::ldexp(1.0, doublings);
  cooldown_ = microseconds(
      static_cast<int64_t>(std::min(scaled, static_cast<double>(p.max_cooldown.count()))));
  ++opens_;
  open_until_ = now + cooldown_;
  trial_successes_ = 0;
  CircuitChange c = Change(CircuitState::kOpen, std::move(cause));
  c.cooldown = cooldown_;
  return c;
}

std::optional<CircuitChange> CircuitBreaker::Record(bool failed, Mono now, const CircuitPolicy& p) {
  switch (state_) {
    case CircuitState::kOpen:
      return std::nullopt;  // stragglers leased before it opened say nothing new
    case CircuitState::kHalfOpen:
      if (forced_ != Forced::kNone) return std::nullopt;
      if (failed) return Open(now, p, "trial_failed");
      if (++trial_successes_ >= p.trials) {
        window_.clear();
        failures_ = 0;
        opens_ = 0;
        trial_successes_ = 0;
        return Change(CircuitState::kClosed, "trials_succeeded");
      }
      return std::nullopt;
    case CircuitState::kClosed:
      break;
  }
  window_.emplace_back(now, failed);
  if (failed) ++failures_;
  Prune(now, p);
  if (forced_ == Forced::kClosed || !p.enabled) return std::nullopt;
  if (window_.size() >= p.min_attempts && failure_rate() >= p.threshold) {
    return Open(now, p, "failure_rate");
  }
  return std::nullopt;
}

std::optional<CircuitChange> CircuitBreaker::Tick(Mono now, const CircuitPolicy& p) {
  if (state_ == CircuitState::kClosed) {
    Prune(now, p);
    return std::nullopt;
  }
  if (state_ != CircuitState::kOpen || forced_ != Forced::kNone || now < open_until_) {
    return std::nullopt;
  }
  trial_successes_ = 0;
  return Change(CircuitState::kHalfOpen, "cooldown_elapsed");
}

std::optional<CircuitChange> CircuitBreaker::Force(Forced f, Mono now, const CircuitPolicy& p) {
  forced_ = f;
  std::optional<CircuitChange> c;
  switch (f) {
    case Forced::kOpen:
      c = Change(CircuitState::kOpen, "forced");
      break;
    case Forced::kClosed:
    case Forced::kNone:
      // Closed with a fresh window: what happened before the operator acted is not held
      // against the service again.
      window_.clear();
      failures_ = 0;
      opens_ = 0;
      trial_successes_ = 0;
      c = Change(CircuitState::kClosed, "forced");
      break;
  }
  (void)now;
  (void)p;
  return c;
}

void CircuitBreaker::Restore(Forced f, Mono now) {
  forced_ = f;
  if (f == Forced::kOpen) {
    state_ = CircuitState::kOpen;
    open_until_ = now;
  } else {
    state_ = CircuitState::kClosed;
  }
}

std::optional<Mono> CircuitBreaker::half_open_at() const {
  if (state_ != CircuitState::kOpen || forced_ != Forced::kNone) return std::nullopt;
  return open_until_;
}

}  // namespace ledgerq::scheduler
