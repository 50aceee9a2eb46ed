#include "scheduler/cron.h"

#include <array>
#include <cctype>
#include <charconv>
#include <climits>
#include <cstdio>
#include <vector>

namespace ledgerq::scheduler {
namespace {

constexpr int64_t kMinuteUs = 60'000'000;
constexpr int64_t kMaxYear = 9999;

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// Proleptic Gregorian calendar <-> days since 1970-01-01 (H. Hinnant's civil algorithms).
struct Ymd {
  int64_t y;
  unsigned m, d;
};
Ymd CivilFromDays(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<int64_t>(yoe) + era * 400 + (m <= 2), m, d};
}
int64_t DaysFromCivil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}
unsigned Weekday(int64_t days) {  // 0 = Sunday; 1970-01-01 was a Thursday
  const int64_t w = (days + 4) % 7;
  return static_cast<unsigned>(w < 0 ? w + 7 : w);
}

constexpr std::array<const char*, 12> kMonthNames = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                                     "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr std::array<const char*, 7> kDayNames = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};
// Longest month by number (February may have 29 days).
constexpr std::array<unsigned, 13> kMaxDays = {0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

struct FieldSpec {
  const char* name;
  int lo, hi;
  const char* const* names;  // aliases for lo.. (months from 1, weekdays from 0), or null
  size_t name_count;
  const char* names_hint;
};
const FieldSpec kFields[5] = {
    {"minute", 0, 59, nullptr, 0, nullptr},
    {"hour", 0, 23, nullptr, 0, nullptr},
    {"day-of-month", 1, 31, nullptr, 0, nullptr},
    {"month", 1, 12, kMonthNames.data(), kMonthNames.size(), "JAN..DEC"},
    {"day-of-week", 0, 7, kDayNames.data(), kDayNames.size(), "SUN..SAT"},
};

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

class FieldParser {
 public:
  FieldParser(int index, std::string_view text)
      : spec_(kFields[index]), index_(index), text_(text) {}

  Result<uint64_t> Parse() {
    uint64_t bits = 0;
    size_t start = 0;
    for (;;) {
      const size_t comma = text_.find(',', start);
      const std::string_view item = text_.substr(
          start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
      if (item.empty()) return Error("empty list item in " + Quote(text_));
      auto b = Item(item);
      if (!b.ok()) return b.status();
      bits |= *b;
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    return bits;
  }

 private:
  Status Error(const std::string& what) const {
    return Status::InvalidArgument("field " + std::to_string(index_ + 1) + " (" + spec_.name +
                                   "): " + what);
  }

  // Digits only; a number too long for int comes back as INT_MAX (out of every range).
  Result<int> Number(std::string_view s) const {
    if (s.empty() || s.find_first_not_of("0123456789") != std::string_view::npos) {
      return Error(Quote(s) + " is not a number");
    }
    int v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size()) return INT_MAX;
    return v;
  }

  Result<int> Value(std::string_view s) const {
    if (spec_.names && !s.empty() && std::isalpha(static_cast<unsigned char>(s[0]))) {
      std::string upper(s);
      for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      for (size_t i = 0; i < spec_.name_count; ++i) {
        if (upper == spec_.names[i]) return static_cast<int>(i) + (spec_.lo == 1 ? 1 : 0);
      }
      return Error(Quote(s) + " is not a number or a name (" + spec_.names_hint + ")");
    }
    auto v = Number(s);
    if (!v.ok()) return v.status();
    if (*v < spec_.lo || *v > spec_.hi) {
      return Error(std::string(s) + " is out of range " + std::to_string(spec_.lo) + "-" +
                   std::to_string(spec_.hi));
    }
    return *v;
  }

  Result<uint64_t> Item(std::string_view item) const {
    const size_t slash = item.find('/');
    std::string_view base = item.substr(0, slash);
    int step = 1;
    const bool stepped = slash != std::string_view::npos;
    if (stepped) {
      std::string_view s = item.substr(slash + 1);
      if (s.find('/') != std::string_view::npos) return Error(Quote(item) + " has more than one /");
      if (s.empty()) return Error(Quote(item) + " has no step after /");
      auto n = Number(s);
      if (!n.ok()) return n.status();
      const int span = spec_.hi - spec_.lo + 1;
      if (*n < 1 || *n > span) {
        return Error("step " + std::string(s) + " in " + Quote(item) + " is out of range 1-" +
                     std::to_string(span));
      }
      step = *n;
    }
    if (base.empty()) return Error(Quote(item) + " has no value before /");
    int lo = 0, hi = 0;
    if (base == "*") {
      lo = spec_.lo;
      hi = spec_.hi;
    } else if (const size_t dash = base.find('-'); dash != std::string_view::npos) {
      auto a = Value(base.substr(0, dash));
      if (!a.ok()) return a.status();
      auto b = Value(base.substr(dash + 1));
      if (!b.ok()) return b.status();
      if (*a > *b) {
        return Error("range " + std::string(base) + " is backwards (a-b needs a <= b)");
      }
      lo = *a;
      hi = *b;
    } else {
      auto a = Value(base);
      if (!a.ok()) return a.status();
      lo = *a;
      hi = stepped ? spec_.hi : *a;  // "a/n": from a through the field's maximum
    }
    uint64_t bits = 0;
    for (int v = lo; v <= hi; v += step) bits |= uint64_t{1} << v;
    return bits;
  }

  const FieldSpec& spec_;
  int index_;
  std::string_view text_;
};

std::string_view Macro(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "@hourly") return "0 * * * *";
  if (lower == "@daily" || lower == "@midnight") return "0 0 * * *";
  if (lower == "@weekly") return "0 0 * * 0";
  if (lower == "@monthly") return "0 0 1 * *";
  if (lower == "@yearly" || lower == "@annually") return "0 0 1 1 *";
  return {};
}

std::vector<std::string_view> Fields(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    size_t j = i;
    while (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))) ++j;
    if (j > i) out.push_back(text.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace

Result<CronExpr> CronExpr::Parse(std::string_view text) {
  CronExpr c;
  c.text_ = std::string(text);
  std::vector<std::string_view> fields = Fields(text);
  if (fields.empty()) return Status::InvalidArgument("empty expression");
  if (fields.size() == 1 && fields[0][0] == '@') {
    std::string_view expanded = Macro(fields[0]);
    if (expanded.empty()) {
      return Status::InvalidArgument(Quote(fields[0]) +
                                     " is not a macro (@hourly, @daily, @weekly, @monthly, "
                                     "@yearly)");
    }
    fields = Fields(expanded);
  }
  if (fields.size() != 5) {
    return Status::InvalidArgument(
        "expected 5 fields (minute hour day-of-month month day-of-week), got " +
        std::to_string(fields.size()));
  }
  std::array<uint64_t, 5> bits{};
  for (int i = 0; i < 5; ++i) {
    auto b = FieldParser(i, fields[i]).Parse();
    if (!b.ok()) return b.status();
    bits[i] = *b;
  }
  c.minutes_ = std::bitset<60>(bits[0]);
  c.hours_ = std::bitset<24>(bits[1]);
  c.dom_ = std::bitset<32>(bits[2]);
  c.months_ = std::bitset<13>(bits[3]);
  const uint64_t dow = bits[4] | ((bits[4] >> 7) & 1);  // 7 is Sunday
  c.dow_ = std::bitset<7>(dow & 0x7f);
  c.dom_star_ = fields[2][0] == '*';
  c.dow_star_ = fields[4][0] == '*';
  // With the AND rule a chosen day-of-month must exist in a chosen month; with the OR rule the
  // weekdays alone fire every week.
  if (c.dom_star_ || c.dow_star_) {
    bool exists = false;
    for (unsigned m = 1; m <= 12 && !exists; ++m) {
      if (!c.months_[m]) continue;
      for (unsigned d = 1; d <= kMaxDays[m] && !exists; ++d) exists = c.dom_[d];
    }
    if (!exists) {
      return Status::InvalidArgument("field 3 (day-of-month): " + Quote(fields[2]) +
                                     " names no day that exists in month " + Quote(fields[3]) +
                                     ", so the expression never fires");
    }
  }
  return c;
}

bool CronExpr::DayMatches(int64_t days, unsigned dom) const {
  const bool d = dom_[dom];
  const bool w = dow_[Weekday(days)];
  return (dom_star_ || dow_star_) ? (d && w) : (d || w);
}

bool CronExpr::Matches(int64_t us) const {
  const int64_t minute = FloorDiv(us, kMinuteUs);
  const int64_t days = FloorDiv(minute, 1440);
  const int64_t rem = minute - days * 1440;
  const Ymd ymd = CivilFromDays(days);
  return months_[ymd.m] && DayMatches(days, ymd.d) && hours_[rem / 60] && minutes_[rem % 60];
}

std::optional<int64_t> CronExpr::Next(int64_t after_us) const {
  // Firing times start at 1970; a whole minute strictly after `after_us`.
  int64_t t = std::max<int64_t>(0, FloorDiv(after_us, kMinuteUs) + 1);
  for (int guard = 0; guard < 2'000'000; ++guard) {
    const int64_t days = FloorDiv(t, 1440);
    const int64_t rem = t - days * 1440;
    const Ymd ymd = CivilFromDays(days);
    if (ymd.y > kMaxYear) return std::nullopt;
    if (!months_[ymd.m]) {
      t = (ymd.m == 12 ? DaysFromCivil(ymd.y + 1, 1, 1) : DaysFromCivil(ymd.y, ymd.m + 1, 1)) *
          1440;
      continue;
    }
    if (!DayMatches(days, ymd.d)) {
      t = (days + 1) * 1440;
      continue;
    }
    const int64_t hour = rem / 60;
    if (!hours_[hour]) {
      t = days * 1440 + (hour + 1) * 60;
      continue;
    }
    if (!minutes_[rem % 60]) {
      ++t;
      continue;
    }
    return t * kMinuteUs;
  }
  return std::nullopt;
}

std::string Rfc3339Utc(int64_t us) {
  const int64_t secs = FloorDiv(us, 1'000'000);
  const int64_t days = FloorDiv(secs, 86400);
  const int64_t rem = secs - days * 86400;
  const Ymd ymd = CivilFromDays(days);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lldZ",
                static_cast<long long>(ymd.y), ymd.m, ymd.d, static_cast<long long>(rem / 3600),
                static_cast<long long>(rem / 60 % 60), static_cast<long long>(rem % 60));
  return buf;
}

}  // namespace ledgerq::scheduler
