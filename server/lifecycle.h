// Turns every durable event into its metrics and one structured log line carrying the standard
// attribute set of DESIGN.md (job_id, parent_job_id, queue, type, attempt, status, trace_id,
// enqueued_at, started_at, finished_at, outcome, error.code, error.kind; plus worker_id and
// durations). Payloads never appear. Runs on the storage finisher thread, in log order.
#pragma once

#include <spdlog/logger.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "metrics/metrics.h"
#include "storage/job_store.h"

namespace ledgerq::server {

enum class LogFormat { kText, kJson };

// Appends `v` to `out` as a JSON string literal (quotes and escapes included).
void AppendJsonString(std::string& out, std::string_view v);

class Lifecycle {
 public:
  // `logger` may be null (no lifecycle lines); `metrics` may be null.
  Lifecycle(metrics::Metrics* metrics, std::shared_ptr<spdlog::logger> logger, LogFormat format);

  void OnDurable(const std::vector<storage::ObservedEvent>& events);

  // The log line for one event (exposed for tests).
  std::string Line(const storage::ObservedEvent& e) const;

 private:
  void Count(const storage::ObservedEvent& e);

  metrics::Metrics* metrics_;
  std::shared_ptr<spdlog::logger> logger_;
  LogFormat format_;
};

}  // namespace ledgerq::server
