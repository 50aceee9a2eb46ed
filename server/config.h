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
#include "server/policy.h"
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
  // [queues.NAME] and [types.NAME] declarations (server/policy.h); resolved per (queue, type)
  // over `retry` and `max_payload_bytes` by MakePolicies().
  std::map<std::string, PolicyDecl> queue_decls;
  std::map<std::string, PolicyDecl> type_decls;
  bool strict_types = false;       // refuse undeclared job types (file or flag)
  bool strict_types_flag = false;  // --strict-types was given: a reload keeps it on
  double redrive_rate = 5000;      // jobs per second moved back by a queue-wide redrive
  // [schedules.NAME] tables (server/schedules.h): cron schedules the daemon stores with
  // source "config" at start, validated (ValidateSchedule) and admitted by the policies above.
  std::map<std::string, storage::ScheduleRecord> schedule_decls;

  Policies MakePolicies() const {
    return Policies{retry, max_payload_bytes, strict_types, queue_decls, type_decls};
  }

  // Governance. Without an auth file every caller is "anonymous" with every permission, so
  // ledgerqd then listens on loopback only unless insecure_allow_remote is set.
  std::string auth_file;
  std::string tls_cert;  // PEM; with tls_key, gRPC and HTTP are served over TLS
  std::string tls_key;
  std::string tls_client_ca;  // PEM; client certificates are required, their subject names
                              // the principal (mTLS)
  bool insecure_allow_remote = false;
  // With an auth file: allows a non-loopback listener without TLS (tokens in clear).
  bool insecure_allow_plaintext = false;
  // The gRPC listener watchdog (server/listener_watchdog.h): exit after the listener has stopped
  // accepting for this long (gRPC 1.51's CVE-2023-4785). 0 disables the exit, not the probe.
  std::chrono::milliseconds grpc_watchdog{30'000};

  // Automatic log archiving (server/housekeeping.h): events older than archive_after are
  // exported to archive_dir/audit-<from>-<to>.jsonl, then removed from the log. Off unless both
  // are set.
  std::string archive_dir;
  std::chrono::microseconds archive_after{0};
};

// Applies the keys of a TOML document over `base`. Top-level keys are the long flag names
// (data-dir, grpc-listen, http-listen, sync, max-payload-bytes, dedup-window,
// default-max-attempts, log-level, log-format, backoff-base, backoff-factor, backoff-cap,
// redrive-rate, strict-types); [queues.NAME] and [types.NAME] tables declare policies (see
// README "Queue and job-type policies"). Unknown keys and wrong types are errors naming the
// key; every error is reported, one per line.
[[nodiscard]] Result<Config> ParseConfigToml(std::string_view text, Config base);

// Reads and parses a config file over `base`; errors start with the file's name (and list
// every problem, one per line). `flag` names the flag that gave the path.
[[nodiscard]] Result<Config> LoadConfigFile(const std::string& path, Config base,
                                            std::string_view flag);

// Parses argv. Returns nullopt when --help, --version or --check-config printed and the
// process should exit 0.
[[nodiscard]] Result<std::optional<Config>> ParseCommandLine(int argc, char** argv);

[[nodiscard]] Result<storage::SyncMode> ParseSyncMode(std::string_view text);

}  // namespace ledgerq::server
