#include "server/config.h"

#include <CLI/CLI.hpp>
#include <fstream>
#include <sstream>
#include <toml++/toml.h>

#include "common/duration.h"

namespace ledgerq::server {
namespace {

constexpr uint64_t kMaxPayloadCeiling = 64ull << 20;  // gRPC messages beyond this are unwise

Status CheckPayloadLimit(uint64_t v, std::string_view field) {
  if (v == 0 || v > kMaxPayloadCeiling) {
    return Status::InvalidArgument(std::string(field) + ": must be between 1 and " +
                                   std::to_string(kMaxPayloadCeiling) + " bytes, got " +
                                   std::to_string(v));
  }
  return Status::Ok();
}

Status CheckMaxAttempts(int64_t v, std::string_view field) {
  if (v < 1 || v > 1000) {
    return Status::InvalidArgument(std::string(field) + ": must be between 1 and 1000, got " +
                                   std::to_string(v));
  }
  return Status::Ok();
}

Status CheckLogLevel(const std::string& v, std::string_view field) {
  for (const char* ok : {"trace", "debug", "info", "warn", "error", "off"}) {
    if (v == ok) return Status::Ok();
  }
  return Status::InvalidArgument(std::string(field) + ": must be one of trace, debug, info, "
                                 "warn, error, off; got \"" + v + "\"");
}

Status CheckDedupWindow(std::chrono::microseconds d, std::string_view field) {
  if (d < std::chrono::seconds(1)) {
    return Status::InvalidArgument(std::string(field) + ": must be at least 1s");
  }
  return Status::Ok();
}

}  // namespace

Result<storage::SyncMode> ParseSyncMode(std::string_view text) {
  if (text == "always") return storage::SyncMode::kAlways;
  if (text == "batch") return storage::SyncMode::kBatch;
  if (text == "none") return storage::SyncMode::kNone;
  return Status::InvalidArgument("sync: must be always, batch or none; got \"" +
                                 std::string(text) + "\"");
}

Result<Config> ParseConfigToml(std::string_view text, Config base) {
  toml::table doc;
  try {
    doc = toml::parse(text);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << "config: line " << e.source().begin.line << ": " << e.description();
    return Status::InvalidArgument(msg.str());
  }
  Config c = std::move(base);
  for (auto&& [key, node] : doc) {
    const std::string k(key.str());
    auto want_string = [&]() -> Result<std::string> {
      if (auto v = node.value<std::string>()) return *v;
      return Status::InvalidArgument("config: " + k + ": must be a string");
    };
    auto want_int = [&]() -> Result<int64_t> {
      if (node.is_integer()) return *node.value<int64_t>();
      return Status::InvalidArgument("config: " + k + ": must be an integer");
    };
    if (k == "data-dir") {
      auto v = want_string();
      if (!v.ok()) return v.status();
      c.data_dir = *v;
    } else if (k == "grpc-listen") {
      auto v = want_string();
      if (!v.ok()) return v.status();
      c.grpc_listen = *v;
    } else if (k == "http-listen") {
      auto v = want_string();
      if (!v.ok()) return v.status();
      c.http_listen = *v;
    } else if (k == "sync") {
      auto v = want_string();
      if (!v.ok()) return v.status();
      auto mode = ParseSyncMode(*v);
      if (!mode.ok()) return Status::InvalidArgument("config: " + mode.status().message());
      c.sync = *mode;
    } else if (k == "max-payload-bytes") {
      auto v = want_int();
      if (!v.ok()) return v.status();
      if (*v < 0) return Status::InvalidArgument("config: max-payload-bytes: must be positive");
      LEDGERQ_RETURN_IF_ERROR(CheckPayloadLimit(*v, "config: max-payload-bytes"));
      c.max_payload_bytes = static_cast<uint64_t>(*v);
    } else if (k == "dedup-window") {
      auto v = want_string();
      if (!v.ok()) return v.status();
      auto d = ParseDuration(*v, "config: dedup-window");
      if (!d.ok()) return d.status();
      LEDGERQ_RETURN_IF_ERROR(CheckDedupWindow(*d, "config: dedup-window"));
      c.dedup_window = *d;
    } else if (k == "default-max-attempts") {
      auto v = want_int();
      if (!v.ok()) return v.status();
      LEDGERQ_RETURN_IF_ERROR(CheckMaxAttempts(*v, "config: default-max-attempts"));
      c.default_max_attempts = static_cast<uint32_t>(*v);
    } else if (k == "log-level") {
      auto v = want_string();
      if (!v.ok()) return v.status();
      LEDGERQ_RETURN_IF_ERROR(CheckLogLevel(*v, "config: log-level"));
      c.log_level = *v;
    } else {
      return Status::InvalidArgument("config: unknown key \"" + k + "\"");
    }
  }
  return c;
}

Result<std::optional<Config>> ParseCommandLine(int argc, char** argv) {
  CLI::App app{"ledgerqd: a durable job-queue server"};
  app.set_version_flag("--version", std::string("ledgerqd ") + LEDGERQ_VERSION);
  std::string config_file, data_dir, grpc_listen, http_listen, sync, dedup_window, log_level;
  uint64_t max_payload = 0;
  int64_t max_attempts = 0;
  app.add_option("--config", config_file, "TOML file with the same keys as the long flags");
  app.add_option("--data-dir", data_dir, "Data directory (default ./ledgerq-data)");
  app.add_option("--grpc-listen", grpc_listen, "gRPC address (default 127.0.0.1:7400)");
  app.add_option("--http-listen", http_listen,
                 "HTTP address for /metrics, /healthz, /readyz (default 127.0.0.1:7401)");
  app.add_option("--sync", sync, "always | batch | none (default always)");
  app.add_option("--max-payload-bytes", max_payload, "Largest accepted payload (default 1048576)");
  app.add_option("--dedup-window", dedup_window,
                 "How long an idempotency key names its job (default 24h)");
  app.add_option("--default-max-attempts", max_attempts,
                 "Attempts for jobs that do not set max_attempts (default 5)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off (default info)");
  // A repeated flag takes its last value, so wrappers (containers, scripts) can override.
  for (CLI::Option* opt : app.get_options()) {
    if (opt->get_expected_max() == 1) opt->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return std::optional<Config>();
  } catch (const CLI::CallForVersion&) {
    std::cout << app.version() << "\n";
    return std::optional<Config>();
  } catch (const CLI::ParseError& e) {
    return Status::InvalidArgument(e.what());
  }

  Config c;
  if (!config_file.empty()) {
    std::ifstream in(config_file);
    if (!in) return Status::InvalidArgument("--config: cannot read " + config_file);
    std::stringstream buf;
    buf << in.rdbuf();
    auto parsed = ParseConfigToml(buf.str(), c);
    if (!parsed.ok()) {
      return Status::InvalidArgument(config_file + ": " + parsed.status().message());
    }
    c = std::move(parsed).value();
    c.config_file = config_file;
  }
  if (app.count("--data-dir")) c.data_dir = data_dir;
  if (app.count("--grpc-listen")) c.grpc_listen = grpc_listen;
  if (app.count("--http-listen")) c.http_listen = http_listen;
  if (app.count("--sync")) {
    auto mode = ParseSyncMode(sync);
    if (!mode.ok()) return Status::InvalidArgument("--" + mode.status().message());
    c.sync = *mode;
  }
  if (app.count("--max-payload-bytes")) {
    LEDGERQ_RETURN_IF_ERROR(CheckPayloadLimit(max_payload, "--max-payload-bytes"));
    c.max_payload_bytes = max_payload;
  }
  if (app.count("--dedup-window")) {
    auto d = ParseDuration(dedup_window, "--dedup-window");
    if (!d.ok()) return d.status();
    LEDGERQ_RETURN_IF_ERROR(CheckDedupWindow(*d, "--dedup-window"));
    c.dedup_window = *d;
  }
  if (app.count("--default-max-attempts")) {
    LEDGERQ_RETURN_IF_ERROR(CheckMaxAttempts(max_attempts, "--default-max-attempts"));
    c.default_max_attempts = static_cast<uint32_t>(max_attempts);
  }
  if (app.count("--log-level")) {
    LEDGERQ_RETURN_IF_ERROR(CheckLogLevel(log_level, "--log-level"));
    c.log_level = log_level;
  }
  if (c.data_dir.empty()) return Status::InvalidArgument("--data-dir: must not be empty");
  return std::optional<Config>(std::move(c));
}

}  // namespace ledgerq::server
