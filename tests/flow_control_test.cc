// Unit tests of scheduler/flow_control: the token bucket and the circuit breaker's state machine,
// on explicit monotonic times.
#include "scheduler/flow_control.h"

#include <catch2/catch.hpp>

using namespace ledgerq::scheduler;
using namespace std::chrono_literals;

namespace {
Mono T(std::chrono::milliseconds ms) { return Mono{} + 1h + ms; }

CircuitPolicy Policy() {
  CircuitPolicy p;
  p.enabled = true;
  p.threshold = 0.5;
  p.window = 10s;
  p.min_attempts = 4;
  p.cooldown = 5s;
  p.max_cooldown = 15s;
  p.trials = 2;
  return p;
}
}  // namespace

TEST_CASE("token bucket: starts full, refills at the rate, never above the burst", "[flow]") {
  TokenBucket b;
  b.Refill(T(0ms), 2.0, 3);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(b.Has());
    b.Take();
  }
  CHECK_FALSE(b.Has());
  // 1 token per 500 ms at 2/s: the next one is due at 500 ms.
  CHECK(b.NextToken(T(0ms), 2.0) > T(499ms));
  CHECK(b.NextToken(T(0ms), 2.0) <= T(501ms));
  b.Refill(T(400ms), 2.0, 3);
  CHECK_FALSE(b.Has());
  b.Refill(T(500ms), 2.0, 3);
  CHECK(b.Has());
  b.Refill(T(60'000ms), 2.0, 3);
  CHECK(b.tokens() == Approx(3.0));
  // Burst 0 means max(1, rate).
  TokenBucket c;
  c.Refill(T(0ms), 0.5, 0);
  CHECK(c.tokens() == Approx(1.0));
}

TEST_CASE("limits and circuit policies are validated, naming the field", "[flow]") {
  QueueLimits l;
  l.rate_per_second = -1;
  auto st = ValidateLimits(l, "limits.");
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("limits.rate_per_second") != std::string::npos);
  l.rate_per_second = 5;
  l.max_per_key = 20'000'000;
  st = ValidateLimits(l, "");
  REQUIRE_FALSE(st.ok());
  CHECK(st.message().find("max_per_key") != std::string::npos);
  CHECK(DescribeLimits(QueueLimits{}) == "unlimited");
  CHECK(DescribeLimits(QueueLimits{5, 0, 10, 2}) == "rate 5/s burst 5, concurrency 10, per key 2");

  CircuitPolicy p = Policy();
  REQUIRE(ValidateCircuit(p, "").ok());
  p.threshold = 1.5;
  CHECK(ValidateCircuit(p, "q.").message().find("q.circuit-threshold") != std::string::npos);
  p = Policy();
  p.max_cooldown = 1s;
  CHECK(ValidateCircuit(p, "").message().find("circuit-max-cooldown") != std::string::npos);
  p = Policy();
  p.trials = 0;
  CHECK(ValidateCircuit(p, "").message().find("circuit-trials") != std::string::npos);
}

TEST_CASE("circuit: opens on the failure rate only after the minimum attempts", "[flow]") {
  const CircuitPolicy p = Policy();
  CircuitBreaker b;
  // 3 failures: 100 % but below min_attempts (4).
  for (int i = 0; i < 3; ++i) CHECK_FALSE(b.Record(true, T(i * 100ms), p));
  CHECK(b.state() == CircuitState::kClosed);
  auto c = b.Record(true, T(400ms), p);
  REQUIRE(c);
  CHECK(c->from == CircuitState::kClosed);
  CHECK(c->to == CircuitState::kOpen);
  CHECK(c->cause == "failure_rate");
  CHECK(c->window_attempts == 4);
  CHECK(c->window_failures == 4);
  CHECK(c->failure_rate == Approx(1.0));
  CHECK(c->cooldown == 5s);
  CHECK_FALSE(b.Allows(0, p));
  // Outcomes of stragglers leased before it opened change nothing.
  CHECK_FALSE(b.Record(false, T(500ms), p));
  CHECK(b.state() == CircuitState::kOpen);
}

TEST_CASE("circuit: a rate below the threshold keeps it closed, and old outcomes leave the window",
          "[flow]") {
  const CircuitPolicy p = Policy();
  CircuitBreaker b;
  // 3 successes, 2 failures: 40 % < 50 %.
  for (int i = 0; i < 3; ++i) CHECK_FALSE(b.Record(false, T(i * 100ms), p));
  CHECK_FALSE(b.Record(true, T(300ms), p));
  CHECK_FALSE(b.Record(true, T(400ms), p));
  CHECK(b.state() == CircuitState::kClosed);
  CHECK(b.window_attempts() == 5);
  // 11 s later the early outcomes are gone: 3 new failures make 3 of 3, still < min_attempts...
  CHECK_FALSE(b.Record(true, T(11'000ms), p));
  CHECK(b.window_attempts() == 1);
  CHECK_FALSE(b.Record(true, T(11'100ms), p));
  CHECK_FALSE(b.Record(true, T(11'200ms), p));
  // ... and the fourth opens it.
  auto c = b.Record(true, T(11'300ms), p);
  REQUIRE(c);
  CHECK(c->window_attempts == 4);
}

TEST_CASE("circuit: half-open after the cooldown, trials close it or reopen it for longer",
          "[flow]") {
  const CircuitPolicy p = Policy();
  CircuitBreaker b;
  for (int i = 0; i < 4; ++i) (void)b.Record(true, T(0ms), p);
  REQUIRE(b.state() == CircuitState::kOpen);
  REQUIRE(b.half_open_at() == T(5'000ms));
  CHECK_FALSE(b.Tick(T(4'999ms), p));
  auto h = b.Tick(T(5'000ms), p);
  REQUIRE(h);
  CHECK(h->to == CircuitState::kHalfOpen);
  CHECK(h->cause == "cooldown_elapsed");
  // Half-open leases at most `trials` at once.
  CHECK(b.Allows(0, p));
  CHECK(b.Allows(1, p));
  CHECK_FALSE(b.Allows(2, p));
  // A failed trial reopens it with twice the cooldown.
  auto o = b.Record(true, T(5'100ms), p);
  REQUIRE(o);
  CHECK(o->to == CircuitState::kOpen);
  CHECK(o->cause == "trial_failed");
  CHECK(o->cooldown == 10s);
  REQUIRE(b.Tick(T(15'100ms), p));
  // Again: capped at max_cooldown (15 s, not 20 s).
  auto o2 = b.Record(true, T(15'200ms), p);
  REQUIRE(o2);
  CHECK(o2->cooldown == 15s);
  REQUIRE(b.Tick(T(30'200ms), p));
  // Two successful trials close it, and the next opening starts from the first cooldown again.
  CHECK_FALSE(b.Record(false, T(30'300ms), p));
  auto cl = b.Record(false, T(30'400ms), p);
  REQUIRE(cl);
  CHECK(cl->to == CircuitState::kClosed);
  CHECK(cl->cause == "trials_succeeded");
  CHECK(b.window_attempts() == 0);
  for (int i = 0; i < 4; ++i) (void)b.Record(true, T(31'000ms), p);
  REQUIRE(b.state() == CircuitState::kOpen);
  CHECK(b.cooldown() == 5s);
}

TEST_CASE("circuit: forced open or closed holds until given back", "[flow]") {
  const CircuitPolicy p = Policy();
  CircuitBreaker b;
  auto f = b.Force(CircuitBreaker::Forced::kOpen, T(0ms), p);
  REQUIRE(f);
  CHECK(f->to == CircuitState::kOpen);
  CHECK(f->cause == "forced");
  CHECK(f->forced == "open");
  CHECK_FALSE(b.half_open_at());  // no cooldown: stays open
  CHECK_FALSE(b.Tick(T(3'600'000ms), p));
  CHECK_FALSE(b.Allows(0, p));
  // Forced closed: failures are counted but never open it.
  REQUIRE(b.Force(CircuitBreaker::Forced::kClosed, T(1ms), p));
  for (int i = 0; i < 10; ++i) CHECK_FALSE(b.Record(true, T(10ms), p));
  CHECK(b.state() == CircuitState::kClosed);
  CHECK(b.window_failures() == 10);
  // Given back: closed, with a fresh window.
  auto a = b.Force(CircuitBreaker::Forced::kNone, T(20ms), p);
  REQUIRE(a);
  CHECK(a->forced.empty());
  CHECK(b.window_attempts() == 0);
  // A breaker that is not enabled by policy never opens by itself.
  CircuitPolicy off = p;
  off.enabled = false;
  CircuitBreaker d;
  for (int i = 0; i < 10; ++i) CHECK_FALSE(d.Record(true, T(0ms), off));
}
