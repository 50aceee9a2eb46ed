// Standard 5-field cron expressions (minute hour day-of-month month day-of-week), evaluated in
// UTC with Vixie cron's semantics. Pure: no clock, no I/O, so every rule is unit-tested.
//
//  - Each field: `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (a through the
//    field's maximum), or a comma-separated list of those.
//  - Months may be JAN..DEC and weekdays SUN..SAT (any case); weekday 7 is Sunday like 0.
//  - Macros: @hourly, @daily (@midnight), @weekly, @monthly, @yearly (@annually).
//  - Day-of-month and day-of-week: when both are restricted, a day matches if EITHER matches;
//    when either field starts with `*` (also `*/2`), a day must match both (Vixie's rule).
//  - An expression that can never fire (e.g. `0 0 30 FEB *`) is refused when parsed.
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ledgerq::scheduler {

class CronExpr {
 public:
  // Errors name the field and the value, e.g. "field 2 (hour): 25 is out of range 0-23"; the
  // caller prefixes where the expression came from ("cron: ...").
  [[nodiscard]] static Result<CronExpr> Parse(std::string_view text);

  // The first firing strictly after `after_us` (unix microseconds), always a whole minute, or
  // nullopt when none falls before year 9999.
  std::optional<int64_t> Next(int64_t after_us) const;
  // Whether the minute holding `us` is a firing time.
  bool Matches(int64_t us) const;

  const std::string& text() const { return text_; }

 private:
  CronExpr() = default;
  bool DayMatches(int64_t days_since_epoch, unsigned dom) const;

  std::string text_;
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> dom_;     // 1..31
  std::bitset<13> months_;  // 1..12
  std::bitset<7> dow_;      // 0..6, Sunday = 0
  bool dom_star_ = false;
  bool dow_star_ = false;
};

// A firing time as RFC 3339 UTC with whole seconds, e.g. "2026-11-29T19:05:00Z" (the time part
// of a schedule's idempotency key).
std::string Rfc3339Utc(int64_t us);

}  // namespace ledgerq::scheduler
