// Human durations for flags, config and the CLI: "500ms", "30s", "5m", "24h", "7d", and
// sums such as "1h30m". A bare number is rejected: the unit is never guessed.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ledgerq {

// `field` names the flag or key in the error message.
Result<std::chrono::microseconds> ParseDuration(std::string_view text, std::string_view field);

// Shortest exact rendering: 1500ms -> "1.5s", 90s -> "1m30s", 0 -> "0s".
std::string FormatDuration(std::chrono::microseconds d);

}  // namespace ledgerq
