// Cron expressions (scheduler/cron.h): parsing, every error, and Next() against brute force.
#include "scheduler/cron.h"

#include <catch2/catch.hpp>
#include <cstdio>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "tests/support/text.h"

using ledgerq::Code;
using ledgerq::scheduler::CronExpr;
using ledgerq::scheduler::Rfc3339Utc;

namespace {

constexpr int64_t kMin = 60'000'000;

// "2026-11-29T19:05:00Z" (or without seconds) -> unix microseconds, via libc's timegm.
int64_t At(const char* text) {
  const int64_t us = ledgerq::testing::UtcMicros(text);
  REQUIRE(us >= 0);
  return us;
}

CronExpr Cron(const char* text) {
  auto c = CronExpr::Parse(text);
  INFO(text);
  REQUIRE(c.ok());
  return *c;
}

std::string NextText(const char* expr, const char* after) {
  auto n = Cron(expr).Next(At(after));
  return n ? Rfc3339Utc(*n) : "never";
}

std::string ErrorOf(const char* expr) {
  auto c = CronExpr::Parse(expr);
  if (c.ok()) return "ok";
  CHECK(c.status().code() == Code::kInvalidArgument);
  return c.status().message();
}

}  // namespace

TEST_CASE("cron: steps, lists and ranges fire at the next matching minute", "[cron]") {
  CHECK(NextText("*/5 * * * *", "2026-11-29T19:03:30") == "2026-11-29T19:05:00Z");
  // Strictly after: a firing time itself is not returned again.
  CHECK(NextText("*/5 * * * *", "2026-11-29T19:05:00") == "2026-11-29T19:10:00Z");
  CHECK(NextText("*/5 * * * *", "2026-11-29T19:04:59") == "2026-11-29T19:05:00Z");
  CHECK(NextText("* * * * *", "2026-11-29T19:05:00") == "2026-11-29T19:06:00Z");
  CHECK(NextText("1-30/2 * * * *", "2026-11-29T19:29:00") == "2026-11-29T20:01:00Z");
  CHECK(NextText("1-30/2 * * * *", "2026-11-29T19:02:00") == "2026-11-29T19:03:00Z");
  CHECK(NextText("5/15 * * * *", "2026-11-29T19:36:00") == "2026-11-29T19:50:00Z");
  CHECK(NextText("0,30 8-10 * * *", "2026-11-29T10:30:00") == "2026-11-30T08:00:00Z");
  CHECK(NextText("0 0 * * *", "2026-12-31T23:59:00") == "2027-01-01T00:00:00Z");
  CHECK(NextText("59 23 31 12 *", "2026-12-31T23:59:00") == "2027-12-31T23:59:00Z");
}

TEST_CASE("cron: leap days and month ends", "[cron]") {
  CHECK(NextText("0 12 29 2 *", "2025-03-01T00:00") == "2028-02-29T12:00:00Z");
  CHECK(NextText("0 12 29 2 *", "1999-03-01T00:00") == "2000-02-29T12:00:00Z");  // 2000 is leap
  CHECK(NextText("0 12 29 2 *", "2096-03-01T00:00") == "2104-02-29T12:00:00Z");  // 2100 is not
  CHECK(NextText("0 0 31 * *", "2026-01-31T00:00") == "2026-03-31T00:00:00Z");
  CHECK(NextText("0 0 31 * *", "2026-03-31T00:00") == "2026-05-31T00:00:00Z");
  CHECK(NextText("0 0 30 * *", "2026-01-30T00:00") == "2026-03-30T00:00:00Z");
  CHECK(NextText("0 0 1 * *", "2026-02-28T23:59") == "2026-03-01T00:00:00Z");
  CHECK(NextText("0 0 28-31 2 *", "2024-02-28T00:00") == "2024-02-29T00:00:00Z");
  CHECK(NextText("0 0 28-31 2 *", "2026-02-28T00:00") == "2027-02-28T00:00:00Z");
}

TEST_CASE("cron: day-of-month and day-of-week follow Vixie's OR rule", "[cron]") {
  // 2026-11-29 is a Sunday. Both restricted: every Friday and every 13th.
  CHECK(NextText("0 0 13 * FRI", "2026-11-29T00:00") == "2026-12-04T00:00:00Z");
  CHECK(NextText("0 0 13 * FRI", "2026-12-11T00:00") == "2026-12-13T00:00:00Z");  // a Sunday
  CHECK(NextText("0 0 13 * FRI", "2026-12-13T00:00") == "2026-12-18T00:00:00Z");
  // A field starting with * counts as unrestricted, so both must match: odd days that are
  // Fridays (Dec 4 is even, Dec 11 odd).
  CHECK(NextText("0 0 */2 * FRI", "2026-11-29T00:00") == "2026-12-11T00:00:00Z");
  // The 1st when it is a Sunday, Tuesday, Thursday or Saturday: 2026-12-01 is a Tuesday, and
  // 2027-01-01 a Friday, 2027-02-01 a Monday, 2027-03-01 a Monday, 2027-04-01 a Thursday.
  CHECK(NextText("0 0 1 * */2", "2026-11-29T00:00") == "2026-12-01T00:00:00Z");
  CHECK(NextText("0 0 1 * */2", "2026-12-01T00:00") == "2027-04-01T00:00:00Z");
  // Only the weekday restricted: Mondays.
  CHECK(NextText("0 0 * * 1", "2026-11-29T00:00") == "2026-11-30T00:00:00Z");
  // Feb 30 never exists, but with a weekday the OR rule fires on Mondays in February.
  CHECK(NextText("0 0 30 2 MON", "2026-11-29T00:00") == "2027-02-01T00:00:00Z");
}

TEST_CASE("cron: month and weekday names, and 7 is Sunday", "[cron]") {
  CHECK(NextText("30 9 * JAN-MAR MON-FRI", "2026-11-29T00:00") == "2027-01-01T09:30:00Z");
  CHECK(NextText("30 9 * jan-mar mon-fri", "2026-11-29T00:00") == "2027-01-01T09:30:00Z");
  CHECK(NextText("0 0 * * 7", "2026-11-29T00:00") == "2026-12-06T00:00:00Z");
  CHECK(NextText("0 0 * * 0", "2026-11-29T00:00") == "2026-12-06T00:00:00Z");
  CHECK(NextText("0 0 * * SUN", "2026-11-29T00:00") == "2026-12-06T00:00:00Z");
  CHECK(NextText("0 0 * * 5-7", "2026-11-29T00:00") == "2026-12-04T00:00:00Z");
  CHECK(NextText("0 0 * * 6-7", "2026-12-05T00:00") == "2026-12-06T00:00:00Z");
  CHECK(NextText("0 0 1 DEC *", "2026-11-29T00:00") == "2026-12-01T00:00:00Z");
}

TEST_CASE("cron: macros", "[cron]") {
  const char* after = "2026-11-29T19:03:00";
  CHECK(NextText("@hourly", after) == "2026-11-29T20:00:00Z");
  CHECK(NextText("@daily", after) == "2026-11-30T00:00:00Z");
  CHECK(NextText("@midnight", after) == "2026-11-30T00:00:00Z");
  CHECK(NextText("@DAILY", after) == "2026-11-30T00:00:00Z");
  CHECK(NextText("@weekly", after) == "2026-12-06T00:00:00Z");
  CHECK(NextText("@monthly", after) == "2026-12-01T00:00:00Z");
  CHECK(NextText("@yearly", after) == "2027-01-01T00:00:00Z");
  CHECK(NextText("@annually", after) == "2027-01-01T00:00:00Z");
  CHECK(NextText("  0  *  *  *  *  ", after) == "2026-11-29T20:00:00Z");  // spacing is free
  CHECK(Cron("@hourly").text() == "@hourly");
}

TEST_CASE("cron: every error names the field and the value", "[cron]") {
  CHECK(ErrorOf("") == "empty expression");
  CHECK(ErrorOf("   ") == "empty expression");
  CHECK(ErrorOf("* * * *") ==
        "expected 5 fields (minute hour day-of-month month day-of-week), got 4");
  CHECK(ErrorOf("0 * * * * *") ==
        "expected 5 fields (minute hour day-of-month month day-of-week), got 6");
  CHECK(ErrorOf("60 * * * *") == "field 1 (minute): 60 is out of range 0-59");
  CHECK(ErrorOf("* 25 * * *") == "field 2 (hour): 25 is out of range 0-23");
  CHECK(ErrorOf("* * 0 * *") == "field 3 (day-of-month): 0 is out of range 1-31");
  CHECK(ErrorOf("* * 32 * *") == "field 3 (day-of-month): 32 is out of range 1-31");
  CHECK(ErrorOf("* * * 13 *") == "field 4 (month): 13 is out of range 1-12");
  CHECK(ErrorOf("* * * 0 *") == "field 4 (month): 0 is out of range 1-12");
  CHECK(ErrorOf("* * * * 8") == "field 5 (day-of-week): 8 is out of range 0-7");
  CHECK(ErrorOf("99999999999 * * * *") == "field 1 (minute): 99999999999 is out of range 0-59");
  CHECK(ErrorOf("x * * * *") == "field 1 (minute): \"x\" is not a number");
  CHECK(ErrorOf("* * * * 1.5") == "field 5 (day-of-week): \"1.5\" is not a number");
  CHECK(ErrorOf("* * * FOO *") == "field 4 (month): \"FOO\" is not a number or a name (JAN..DEC)");
  CHECK(ErrorOf("* * * * FUNDAY") ==
        "field 5 (day-of-week): \"FUNDAY\" is not a number or a name (SUN..SAT)");
  CHECK(ErrorOf("* * JAN * *") == "field 3 (day-of-month): \"JAN\" is not a number");
  CHECK(ErrorOf("*/0 * * * *") == "field 1 (minute): step 0 in \"*/0\" is out of range 1-60");
  CHECK(ErrorOf("* */25 * * *") == "field 2 (hour): step 25 in \"*/25\" is out of range 1-24");
  CHECK(ErrorOf("*/x * * * *") == "field 1 (minute): \"x\" is not a number");
  CHECK(ErrorOf("*/ * * * *") == "field 1 (minute): \"*/\" has no step after /");
  CHECK(ErrorOf("/5 * * * *") == "field 1 (minute): \"/5\" has no value before /");
  CHECK(ErrorOf("1/2/3 * * * *") == "field 1 (minute): \"1/2/3\" has more than one /");
  CHECK(ErrorOf("5-3 * * * *") == "field 1 (minute): range 5-3 is backwards (a-b needs a <= b)");
  CHECK(ErrorOf("* * * * SAT-SUN") ==
        "field 5 (day-of-week): range SAT-SUN is backwards (a-b needs a <= b)");
  CHECK(ErrorOf("-5 * * * *") == "field 1 (minute): \"\" is not a number");
  CHECK(ErrorOf("1,,2 * * * *") == "field 1 (minute): empty list item in \"1,,2\"");
  CHECK(ErrorOf("1, * * * *") == "field 1 (minute): empty list item in \"1,\"");
  CHECK(ErrorOf("@reboot") ==
        "\"@reboot\" is not a macro (@hourly, @daily, @weekly, @monthly, @yearly)");
  CHECK(ErrorOf("@hourly 5") ==
        "expected 5 fields (minute hour day-of-month month day-of-week), got 2");
  CHECK(ErrorOf("0 0 30 2 *") ==
        "field 3 (day-of-month): \"30\" names no day that exists in month \"2\", so the "
        "expression never fires");
  CHECK(ErrorOf("0 0 31 4,6,9,11 *") ==
        "field 3 (day-of-month): \"31\" names no day that exists in month \"4,6,9,11\", so the "
        "expression never fires");
  CHECK(ErrorOf("0 0 29 2 *") == "ok");  // leap years only, but it fires
}

TEST_CASE("cron: Next agrees with a minute-by-minute brute force", "[cron]") {
  struct Case {
    const char* expr;
    std::function<bool(const std::tm&)> match;
  };
  const Case cases[] = {
      {"*/15 9-17 * * MON-FRI",
       [](const std::tm& t) {
         return t.tm_min % 15 == 0 && t.tm_hour >= 9 && t.tm_hour <= 17 && t.tm_wday >= 1 &&
                t.tm_wday <= 5;
       }},
      {"0 0 13 * FRI",
       [](const std::tm& t) {
         return t.tm_min == 0 && t.tm_hour == 0 && (t.tm_mday == 13 || t.tm_wday == 5);
       }},
      {"7 */6 */10 * *",
       [](const std::tm& t) {
         return t.tm_min == 7 && t.tm_hour % 6 == 0 && (t.tm_mday - 1) % 10 == 0;
       }},
      {"45 23 28-31 * 0",
       [](const std::tm& t) {
         return t.tm_min == 45 && t.tm_hour == 23 && (t.tm_mday >= 28 || t.tm_wday == 0);
       }},
  };
  const int64_t start = At("2027-12-20T00:00");
  const int64_t minutes = 80 * 24 * 60;  // across a year end, February and a leap day
  for (const auto& c : cases) {
    INFO(c.expr);
    const CronExpr cron = Cron(c.expr);
    int64_t expected_next = -1;
    // Walk backwards so each minute knows the next matching minute after it.
    std::vector<int64_t> next_of(minutes);
    for (int64_t i = minutes - 1; i >= 0; --i) {
      next_of[i] = expected_next;
      const int64_t us = start + i * kMin;
      const time_t secs = static_cast<time_t>(us / 1'000'000);
      std::tm tm{};
      gmtime_r(&secs, &tm);
      const bool m = c.match(tm);
      CHECK(cron.Matches(us) == m);
      if (m) expected_next = us;
    }
    int checked = 0;
    for (int64_t i = 0; i < minutes; ++i) {
      if (next_of[i] < 0) continue;
      const int64_t us = start + i * kMin + 17'000'000;  // mid-minute: still strictly after
      auto n = cron.Next(us);
      REQUIRE(n.has_value());
      if (*n != next_of[i]) {
        FAIL("after " << Rfc3339Utc(us) << ": got " << Rfc3339Utc(*n) << ", want "
                      << Rfc3339Utc(next_of[i]));
      }
      ++checked;
    }
    CHECK(checked > 0);
  }
}

TEST_CASE("cron: times before 1970 and after 9999", "[cron]") {
  CHECK(Cron("* * * * *").Next(-1) == 0);
  CHECK(Cron("* * * * *").Next(-5 * kMin) == 0);
  CHECK_FALSE(Cron("0 0 1 1 *").Next(At("9999-06-01T00:00")).has_value());
  CHECK(Cron("59 23 31 12 *").Next(At("9999-06-01T00:00")) == At("9999-12-31T23:59:00"));
}

TEST_CASE("cron: RFC 3339 UTC text of firing times", "[cron]") {
  CHECK(Rfc3339Utc(0) == "1970-01-01T00:00:00Z");
  CHECK(Rfc3339Utc(At("2026-11-29T19:05:00")) == "2026-11-29T19:05:00Z");
  CHECK(Rfc3339Utc(At("2028-02-29T23:59:59") + 999'999) == "2028-02-29T23:59:59Z");
  CHECK(Rfc3339Utc(-1) == "1969-12-31T23:59:59Z");
}
