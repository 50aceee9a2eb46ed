// The daemon's one Config: parsed once in main (flags over an optional TOML file over
// defaults) and passed into constructors. No module reads flags or the environment itself.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "scheduler/retry_policy.h"
#include "storage/job_store.h"

namespace ledgerq::server {

struct Config {
  std::string config_file;
  std::string data_dir = "./ledgerq-data";
  std::string grpc_listen = "127.0.0.1:7400";
  std::string http_listen = "127.0.0.1:7401";
  storage::SyncMode sync = storage::SyncMode::kAlways;
  uint64_t max_payload_bytes = 1 << 20;
  std::chrono::microseconds dedup_window = std::chrono::hours(24);
  std::string log_level = "info";
  std::string log_format = "text";  // text | json
  // Lifecycle metrics and log lines from durable events; off only to measure what they cost.
  bool lifecycle_events = true;
  // The retry policy of queues without their own; max_attempts is --default-max-attempts.
  scheduler::RetryPolicy retry;
  // Per-queue policies from [queues.NAME] tables, fully resolved over `retry`.
  std::map<std::string, scheduler::RetryPolicy> queues;
  double redrive_rate = 5000;  // jobs per second moved back by a queue-wide redrive
  // Per-queue words masked in the payload snapshots of failed attempts ([queues.NAME]
  // mask-fields); queues without their own use server::DefaultMaskFields().
  std::map<std::string, std::vector<std::string>> queue_masks;

  // Governance. Without an auth file every caller is "anonymous" with every permission, so
  // ledgerqd then listens on loopback only unless insecure_allow_remote is set.
  std::string auth_file;
  std::string tls_cert;       // PEM; with tls_key, gRPC and HTTP are served over TLS
  std::string tls_key;
  std::string tls_client_ca;  // PEM; client certificates are required, their subject names
                              // the principal (mTLS)
  bool insecure_allow_remote = false;

  const scheduler::RetryPolicy& PolicyOf(const std::string& queue) const {
    auto it = queues.find(queue);
    return it == queues.end() ? retry : it->second;
  }
};

// Applies the keys of a TOML document over `base`. Top-level keys are the long flag names
// (data-dir, grpc-listen, http-listen, sync, max-payload-bytes, dedup-window,
// default-max-attempts, log-level, log-format, backoff-base, backoff-factor, backoff-cap,
// redrive-rate); a [queues.NAME] table may set max-attempts, backoff-base, backoff-factor and
// backoff-cap for one queue. Unknown keys and wrong types are errors naming the key.
[[nodiscard]] Result<Config> ParseConfigToml(std::string_view text, Config base);

// Parses argv. Returns nullopt when --help or --version was printed (exit 0).
[[nodiscard]] Result<std::optional<Config>> ParseCommandLine(int argc, char** argv);

[[nodiscard]] Result<storage::SyncMode> ParseSyncMode(std::string_view text);

}  // namespace ledgerq::server
