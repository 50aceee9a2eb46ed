#include "server/config.h"

#include <toml++/toml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <sstream>

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
  return Status::InvalidArgument(std::string(field) +
                                 ": must be one of trace, debug, info, "
                                 "warn, error, off; got \"" +
                                 v + "\"");
}

Status CheckLogFormat(const std::string& v, std::string_view field) {
  if (v == "text" || v == "json") return Status::Ok();
  return Status::InvalidArgument(std::string(field) + ": must be text or json; got \"" + v + "\"");
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
  return Status::InvalidArgument("sync: must be always, batch or none; got \"" + std::string(text) +
                                 "\"");
}

namespace {

// Typed access to one TOML node; errors name the key as written in the file.
class Key {
 public:
  Key(std::string name, const toml::node& node) : name_(std::move(name)), node_(node) {}
  const std::string& name() const { return name_; }

  Result<std::string> String() const {
    if (auto v = node_.value<std::string>()) return *v;
    return Status::InvalidArgument("config: " + name_ + ": must be a string");
  }
  Result<int64_t> Int() const {
    if (node_.is_integer()) return *node_.value<int64_t>();
    return Status::InvalidArgument("config: " + name_ + ": must be an integer");
  }
  Result<double> Number() const {
    if (node_.is_number()) return *node_.value<double>();
    return Status::InvalidArgument("config: " + name_ + ": must be a number");
  }
  Result<std::chrono::microseconds> Duration() const {
    auto v = String();
    if (!v.ok()) return v.status();
    return ParseDuration(*v, "config: " + name_);
  }

 private:
  std::string name_;
  const toml::node& node_;
};

// Applies one retry-policy key; returns false if `key` is not one.
Result<bool> ApplyRetryKey(const Key& key, const std::string& k, scheduler::RetryPolicy* p) {
  if (k == "backoff-base" || k == "backoff-cap") {
    auto d = key.Duration();
    if (!d.ok()) return d.status();
    (k == "backoff-base" ? p->backoff_base : p->backoff_cap) = *d;
    return true;
  }
  if (k == "backoff-factor") {
    auto v = key.Number();
    if (!v.ok()) return v.status();
    p->backoff_factor = *v;
    return true;
  }
  return false;
}

// The policy validator speaks API field names (backoff_base); the file spells them backoff-base.
Status ValidatePolicyKeys(const scheduler::RetryPolicy& p, const std::string& prefix) {
  Status st = scheduler::ValidateRetryPolicy(p, prefix);
  if (st.ok()) return st;
  std::string msg = st.message();
  for (const char* field : {"max_attempts", "backoff_base", "backoff_factor", "backoff_cap"}) {
    const std::string api(field);
    std::string file = api;
    std::replace(file.begin(), file.end(), '_', '-');
    if (auto pos = msg.find(prefix + api); pos != std::string::npos) {
      msg.replace(pos + prefix.size(), api.size(), file);
    }
  }
  return Status::InvalidArgument(msg);
}

}  // namespace

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
  // Per-queue overrides, applied over the defaults once those are all read.
  std::map<std::string, std::vector<std::pair<std::string, const toml::node*>>> queue_keys;
  for (auto&& [key, node] : doc) {
    const std::string k(key.str());
    const Key v(k, node);
    auto set_string = [&](std::string* out) -> Status {
      auto s = v.String();
      if (!s.ok()) return s.status();
      *out = *s;
      return Status::Ok();
    };
    if (k == "data-dir") {
      LEDGERQ_RETURN_IF_ERROR(set_string(&c.data_dir));
    } else if (k == "grpc-listen") {
      LEDGERQ_RETURN_IF_ERROR(set_string(&c.grpc_listen));
    } else if (k == "http-listen") {
      LEDGERQ_RETURN_IF_ERROR(set_string(&c.http_listen));
    } else if (k == "sync") {
      auto s = v.String();
      if (!s.ok()) return s.status();
      auto mode = ParseSyncMode(*s);
      if (!mode.ok()) return Status::InvalidArgument("config: " + mode.status().message());
      c.sync = *mode;
    } else if (k == "max-payload-bytes") {
      auto n = v.Int();
      if (!n.ok()) return n.status();
      if (*n < 0) return Status::InvalidArgument("config: max-payload-bytes: must be positive");
      LEDGERQ_RETURN_IF_ERROR(CheckPayloadLimit(*n, "config: max-payload-bytes"));
      c.max_payload_bytes = static_cast<uint64_t>(*n);
    } else if (k == "dedup-window") {
      auto d = v.Duration();
      if (!d.ok()) return d.status();
      LEDGERQ_RETURN_IF_ERROR(CheckDedupWindow(*d, "config: dedup-window"));
      c.dedup_window = *d;
    } else if (k == "default-max-attempts") {
      auto n = v.Int();
      if (!n.ok()) return n.status();
      LEDGERQ_RETURN_IF_ERROR(CheckMaxAttempts(*n, "config: default-max-attempts"));
      c.retry.max_attempts = static_cast<uint32_t>(*n);
    } else if (k == "log-level") {
      LEDGERQ_RETURN_IF_ERROR(set_string(&c.log_level));
      LEDGERQ_RETURN_IF_ERROR(CheckLogLevel(c.log_level, "config: log-level"));
    } else if (k == "log-format") {
      LEDGERQ_RETURN_IF_ERROR(set_string(&c.log_format));
      LEDGERQ_RETURN_IF_ERROR(CheckLogFormat(c.log_format, "config: log-format"));
    } else if (k == "redrive-rate") {
      auto n = v.Number();
      if (!n.ok()) return n.status();
      if (!(*n >= 1 && *n <= 1e6)) {
        return Status::InvalidArgument("config: redrive-rate: must be between 1 and 1000000");
      }
      c.redrive_rate = *n;
    } else if (k == "queues") {
      const toml::table* queues = node.as_table();
      if (!queues) return Status::InvalidArgument("config: queues: must be a table");
      for (auto&& [qname, qnode] : *queues) {
        const std::string name(qname.str());
        const toml::table* qt = qnode.as_table();
        if (!qt) return Status::InvalidArgument("config: queues." + name + ": must be a table");
        auto& keys = queue_keys[name];
        for (auto&& [qk, qv] : *qt) keys.emplace_back(std::string(qk.str()), &qv);
      }
    } else {
      auto applied = ApplyRetryKey(v, k, &c.retry);
      if (!applied.ok()) return applied.status();
      if (!*applied) return Status::InvalidArgument("config: unknown key \"" + k + "\"");
    }
  }
  LEDGERQ_RETURN_IF_ERROR(ValidatePolicyKeys(c.retry, "config: "));
  for (auto& [name, keys] : queue_keys) {
    scheduler::RetryPolicy p = c.retry;
    const std::string prefix = "queues." + name + ".";
    for (auto& [k, node] : keys) {
      const Key v(prefix + k, *node);
      if (k == "mask-fields") {
        const toml::array* arr = node->as_array();
        std::vector<std::string> words;
        bool ok = arr != nullptr;
        if (arr) {
          for (auto&& el : *arr) {
            auto w = el.value<std::string>();
            if (!w || w->empty())
              ok = false;
            else
              words.push_back(*w);
          }
        }
        if (!ok) {
          return Status::InvalidArgument("config: " + prefix + k +
                                         ": must be an array of non-empty strings");
        }
        c.queue_masks[name] = std::move(words);
        continue;
      }
      if (k == "max-attempts") {
        auto n = v.Int();
        if (!n.ok()) return n.status();
        LEDGERQ_RETURN_IF_ERROR(CheckMaxAttempts(*n, "config: " + prefix + k));
        p.max_attempts = static_cast<uint32_t>(*n);
        continue;
      }
      auto applied = ApplyRetryKey(v, k, &p);
      if (!applied.ok()) return applied.status();
      if (!*applied) {
        return Status::InvalidArgument("config: unknown key \"" + prefix + k + "\"");
      }
    }
    LEDGERQ_RETURN_IF_ERROR(ValidatePolicyKeys(p, "config: " + prefix));
    c.queues[name] = p;
  }
  return c;
}

Result<std::optional<Config>> ParseCommandLine(int argc, char** argv) {
  CLI::App app{"ledgerqd: a durable job-queue server"};
  app.set_version_flag("--version", std::string("ledgerqd ") + LEDGERQ_VERSION);
  std::string config_file, data_dir, grpc_listen, http_listen, sync, dedup_window, log_level,
      log_format;
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
  bool no_lifecycle = false;
  app.add_flag("--no-lifecycle-events", no_lifecycle,
               "Skip lifecycle metrics and log lines (only to measure their cost)");
  app.add_option("--log-format", log_format,
                 "text or json: one line per lifecycle event, on stderr (default text)");
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
    c.retry.max_attempts = static_cast<uint32_t>(max_attempts);
  }
  if (no_lifecycle) c.lifecycle_events = false;
  if (app.count("--log-format")) {
    LEDGERQ_RETURN_IF_ERROR(CheckLogFormat(log_format, "--log-format"));
    c.log_format = log_format;
  }
  if (app.count("--log-level")) {
    LEDGERQ_RETURN_IF_ERROR(CheckLogLevel(log_level, "--log-level"));
    c.log_level = log_level;
  }
  if (c.data_dir.empty()) return Status::InvalidArgument("--data-dir: must not be empty");
  return std::optional<Config>(std::move(c));
}

}  // namespace ledgerq::server
