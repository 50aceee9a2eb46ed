// Clocks are injected everywhere time matters, so tests drive time instead of sleeping.
// Wall time (unix microseconds) stamps records and dedup windows, which must survive restarts;
// monotonic time runs deadlines and never trusts anyone's wall clock (DESIGN.md contract 4).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace ledgerq {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t WallMicros() const = 0;
  virtual std::chrono::steady_clock::time_point MonoNow() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t WallMicros() const override;
  std::chrono::steady_clock::time_point MonoNow() const override;
  static SystemClock* Instance();
};

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t wall_micros = 1'700'000'000'000'000) : wall_(wall_micros) {}
  int64_t WallMicros() const override { return wall_.load(); }
  std::chrono::steady_clock::time_point MonoNow() const override {
    return std::chrono::steady_clock::time_point(std::chrono::microseconds(mono_.load()));
  }
  void Advance(std::chrono::microseconds d) {
    wall_ += d.count();
    mono_ += d.count();
  }

 private:
  std::atomic<int64_t> wall_;
  std::atomic<int64_t> mono_{1'000'000};
};

}  // namespace ledgerq
