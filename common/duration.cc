#include "common/duration.h"

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <limits>

namespace ledgerq {

Result<std::chrono::microseconds> ParseDuration(std::string_view text, std::string_view field) {
  auto bad = [&](std::string_view why) {
    return Status::InvalidArgument(std::string(field) + ": invalid duration \"" +
                                   std::string(text) + "\": " + std::string(why) +
                                   " (use e.g. 500ms, 30s, 5m, 24h, 7d, 1h30m)");
  };
  if (text.empty()) return bad("empty");
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) return bad("expected a number");
    int64_t n = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      if (n > (std::numeric_limits<int64_t>::max() / 10) - 10) return bad("too large");
      n = n * 10 + (text[i] - '0');
      ++i;
    }
    size_t u = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string_view unit = text.substr(u, i - u);
    int64_t mult;
    if (unit == "us")
      mult = 1;
    else if (unit == "ms")
      mult = 1'000;
    else if (unit == "s")
      mult = 1'000'000;
    else if (unit == "m")
      mult = 60'000'000;
    else if (unit == "h")
      mult = 3'600'000'000;
    else if (unit == "d")
      mult = 86'400'000'000;
    else if (unit.empty())
      return bad("missing unit");
    else
      return bad("unknown unit \"" + std::string(unit) + "\"");
    if (n > (std::numeric_limits<int64_t>::max() - total) / mult) return bad("too large");
    total += n * mult;
  }
  return std::chrono::microseconds(total);
}

std::string FormatDuration(std::chrono::microseconds d) {
  int64_t us = d.count();
  std::string out;
  if (us < 0) {
    out = "-";
    us = -us;
  }
  if (us == 0) return "0s";
  if (us < 1'000) return out + std::to_string(us) + "us";
  if (us < 1'000'000) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", static_cast<double>(us) / 1'000.0);
    return out + buf + "ms";
  }
  if (us < 60'000'000) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3g", static_cast<double>(us) / 1'000'000.0);
    return out + buf + "s";
  }
  int64_t s = us / 1'000'000;
  int64_t days = s / 86400, hours = (s % 86400) / 3600, mins = (s % 3600) / 60, secs = s % 60;
  if (days) out += std::to_string(days) + "d";
  if (hours) out += std::to_string(hours) + "h";
  if (mins) out += std::to_string(mins) + "m";
  if (secs) out += std::to_string(secs) + "s";
  return out;
}

}  // namespace ledgerq
