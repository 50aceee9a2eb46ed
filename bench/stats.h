// Latency summaries shared by every ledgerq-bench subcommand.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace ledgerq::bench {

// Percentiles of a set of latencies given in microseconds, reported in milliseconds.
struct LatencySummary {
  size_t count = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

// The nearest-rank percentile p (0..1) of sorted microsecond latencies, in milliseconds.
[[nodiscard]] inline double PercentileMs(const std::vector<double>& sorted_us, double p) {
  if (sorted_us.empty()) return 0.0;
  const size_t i = std::min(sorted_us.size() - 1, static_cast<size_t>(p * sorted_us.size()));
  return sorted_us[i] / 1000.0;
}

// Sorts `us` in place and summarises it.
[[nodiscard]] inline LatencySummary Summarize(std::vector<double>& us) {
  std::sort(us.begin(), us.end());
  LatencySummary s;
  s.count = us.size();
  s.p50_ms = PercentileMs(us, 0.50);
  s.p99_ms = PercentileMs(us, 0.99);
  s.max_ms = us.empty() ? 0.0 : us.back() / 1000.0;
  return s;
}

}  // namespace ledgerq::bench
