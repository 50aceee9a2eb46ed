#include "server/config.h"

#include <toml++/toml.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/duration.h"
#include "common/sha256.h"
#include "server/job_mapping.h"
#include "server/schedules.h"

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

}  // namespace

namespace {

Result<std::vector<std::string>> StringArray(const toml::node& node, const std::string& field) {
  const toml::array* arr = node.as_array();
  std::vector<std::string> out;
  bool ok = arr != nullptr;
  if (arr) {
    for (auto&& el : *arr) {
      auto w = el.value<std::string>();
      if (!w || w->empty())
        ok = false;
      else
        out.push_back(*w);
    }
  }
  if (!ok)
    return Status::InvalidArgument("config: " + field + ": must be an array of non-empty strings");
  return out;
}

// Reads a type's `on-dead-letter = { queue = "Q", type = "T", needs-attention = true }`; every
// problem goes to `errors`, naming the key.
void ParseOnDeadLetter(const toml::node& node, const std::string& field,
                       std::optional<OnDeadLetter>* out, std::vector<std::string>* errors) {
  const toml::table* t = node.as_table();
  if (!t) {
    errors->push_back("config: " + field +
                      ": must be a table, e.g. { queue = \"refunds\", type = "
                      "\"charge.compensate\", needs-attention = true }");
    return;
  }
  OnDeadLetter o;
  bool ok = true;
  for (auto&& [key, v] : *t) {
    const std::string k(key.str());
    const std::string f = field + "." + k;
    if (k == "queue" || k == "type") {
      auto s = Key(f, v).String();
      Status st = s.ok() ? ValidateName(*s, "config: " + f) : s.status();
      if (!st.ok()) {
        errors->push_back(st.message());
        ok = false;
      } else {
        (k == "queue" ? o.queue : o.type) = *s;
      }
    } else if (k == "needs-attention") {
      if (!v.is_boolean()) {
        errors->push_back("config: " + f + ": must be true or false");
        ok = false;
      } else {
        o.needs_attention = *v.value<bool>();
      }
    } else {
      errors->push_back("config: unknown key \"" + f + "\" (queue, type, needs-attention)");
      ok = false;
    }
  }
  if (!ok) return;
  if (o.queue.empty() != o.type.empty()) {
    errors->push_back("config: " + field + "." + (o.queue.empty() ? "queue" : "type") +
                      ": a compensation job needs both queue and type");
    return;
  }
  if (!o.compensates() && !o.needs_attention) {
    errors->push_back("config: " + field +
                      ": asks for nothing; set queue and type (a compensation job), "
                      "needs-attention = true, or both");
    return;
  }
  *out = o;
}

// Reads one [queues.NAME] or [types.NAME] table into `d`; every problem goes to `errors`.
void ParseDecl(const toml::table& table, const std::string& prefix, bool is_type, PolicyDecl* d,
               std::vector<std::string>* errors) {
  for (auto&& [key, node] : table) {
    const std::string k(key.str());
    const std::string field = prefix + k;
    const Key v(field, node);
    Status st;
    auto duration = [&](std::optional<std::chrono::microseconds>* out) {
      auto x = v.Duration();
      if (!x.ok()) return x.status();
      if (x->count() < 0)
        return Status::InvalidArgument("config: " + field + ": must not be negative");
      *out = *x;
      return Status::Ok();
    };
    if (k == "max-attempts") {
      auto n = v.Int();
      st = n.ok() ? CheckMaxAttempts(*n, "config: " + field) : n.status();
      if (st.ok()) d->max_attempts = static_cast<uint32_t>(*n);
    } else if (k == "backoff-base") {
      st = duration(&d->backoff_base);
    } else if (k == "backoff-cap") {
      st = duration(&d->backoff_cap);
    } else if (k == "backoff-factor") {
      auto n = v.Number();
      st = n.status();
      if (n.ok()) d->backoff_factor = *n;
    } else if (k == "min-lease" || k == "max-lease") {
      std::optional<std::chrono::microseconds> x;
      st = duration(&x);
      if (st.ok() && (*x < std::chrono::seconds(1) || *x > std::chrono::hours(12))) {
        st = Status::InvalidArgument("config: " + field + ": must be between 1s and 12h");
      }
      if (st.ok()) (k == "min-lease" ? d->min_lease : d->max_lease) = x;
    } else if (k == "max-payload-bytes") {
      auto n = v.Int();
      st = n.ok() ? (*n < 0 ? Status::InvalidArgument("config: " + field + ": must be positive")
                            : CheckPayloadLimit(static_cast<uint64_t>(*n), "config: " + field))
                  : n.status();
      if (st.ok()) d->max_payload_bytes = static_cast<uint64_t>(*n);
    } else if (k == "mask-fields" || k == "submitters" || (is_type && k == "queues")) {
      auto words = StringArray(node, field);
      st = words.status();
      if (words.ok()) {
        if (k == "mask-fields")
          d->mask_fields = *words;
        else if (k == "submitters")
          d->submitters = *words;
        else
          d->queues = *words;
      }
    } else if (k == "required") {
      const toml::table* req = node.as_table();
      if (!req) {
        st = Status::InvalidArgument("config: " + field +
                                     ": must be a table of field path = JSON type, e.g. "
                                     "{ to = \"string\", \"order.id\" = \"integer\" }");
      } else {
        for (auto&& [path, tnode] : *req) {
          const std::string p(path.str());
          const std::string rf = field + "." + p;
          auto t = Key(rf, tnode).String();
          Status rs = t.status();
          if (rs.ok() && (p.empty() || p.front() == '.' || p.back() == '.' ||
                          p.find("..") != std::string::npos)) {
            rs = Status::InvalidArgument("config: " + rf + ": not a field path (a.b.c)");
          }
          if (rs.ok()) {
            auto jt = ParseJsonType(*t, "config: " + rf);
            rs = jt.status();
            if (jt.ok()) d->required.push_back({p, *jt});
          }
          if (!rs.ok()) errors->push_back(rs.message());
        }
      }
    } else if (k == "purge-payloads-after") {
      st = duration(&d->purge_payloads_after);
    } else if (k == "remove-after") {
      st = duration(&d->remove_after);
    } else if (k == "dead-letters-keep") {
      st = duration(&d->dead_letters_keep);
    } else if (!is_type && k == "rate-limit") {
      auto n = v.Number();
      st = n.status();
      if (n.ok() && !(*n >= 0)) {
        st = Status::InvalidArgument("config: " + field + ": must be 0 (unlimited) or more");
      }
      if (st.ok()) d->rate_limit = *n;
    } else if (!is_type && (k == "rate-burst" || k == "max-concurrency" || k == "max-per-key")) {
      auto n = v.Int();
      st = n.status();
      if (n.ok() && (*n < 0 || *n > 10'000'000)) {
        st = Status::InvalidArgument("config: " + field + ": must be between 0 and 10000000");
      }
      if (st.ok()) {
        const auto u = static_cast<uint32_t>(*n);
        (k == "rate-burst"        ? d->rate_burst
         : k == "max-concurrency" ? d->max_concurrency
                                  : d->max_per_key) = u;
      }
    } else if (k == "circuit-breaker") {
      if (auto b = node.value<bool>(); b && node.is_boolean()) {
        d->circuit_breaker = *b;
      } else {
        st = Status::InvalidArgument("config: " + field + ": must be true or false");
      }
    } else if (k == "circuit-threshold") {
      auto n = v.Number();
      st = n.status();
      if (st.ok()) d->circuit_threshold = *n;
    } else if (k == "circuit-window") {
      st = duration(&d->circuit_window);
    } else if (k == "circuit-cooldown") {
      st = duration(&d->circuit_cooldown);
    } else if (k == "circuit-max-cooldown") {
      st = duration(&d->circuit_max_cooldown);
    } else if (k == "circuit-min-attempts" || k == "circuit-trials") {
      auto n = v.Int();
      st = n.status();
      if (n.ok() && (*n < 1 || *n > 1'000'000)) {
        st = Status::InvalidArgument("config: " + field + ": must be between 1 and 1000000");
      }
      if (st.ok()) {
        (k == "circuit-trials" ? d->circuit_trials : d->circuit_min_attempts) =
            static_cast<uint32_t>(*n);
      }
    } else if (is_type && (k == "rate-limit" || k == "rate-burst" || k == "max-concurrency" ||
                           k == "max-per-key")) {
      st = Status::InvalidArgument("config: " + field +
                                   ": flow-control limits are per queue; set it in [queues.NAME]");
    } else if (is_type && k == "on-dead-letter") {
      ParseOnDeadLetter(node, field, &d->on_dead_letter, errors);
    } else {
      st = Status::InvalidArgument("config: unknown key \"" + field + "\"");
    }
    if (!st.ok()) errors->push_back(st.message());
  }
}

void ParseDecls(const toml::node& node, const std::string& section, bool is_type,
                std::map<std::string, PolicyDecl>* out, std::vector<std::string>* errors) {
  const toml::table* tables = node.as_table();
  if (!tables) {
    errors->push_back("config: " + section + ": must be a table");
    return;
  }
  for (auto&& [name_key, tnode] : *tables) {
    const std::string name(name_key.str());
    const std::string prefix = section + "." + name + ".";
    Status st = ValidateName(name, "config: " + section + "." + name);
    if (!st.ok()) {
      errors->push_back(st.message());
      continue;
    }
    const toml::table* t = tnode.as_table();
    if (!t) {
      errors->push_back("config: " + section + "." + name + ": must be a table");
      continue;
    }
    ParseDecl(*t, prefix, is_type, &(*out)[name], errors);
  }
}

// Reads the [schedules.NAME] tables; every problem goes to `errors`, naming the key. The values
// are checked together once the whole file is read (ValidateSchedules).
void ParseSchedules(const toml::node& node, std::map<std::string, storage::ScheduleRecord>* out,
                    std::vector<std::string>* errors) {
  const toml::table* tables = node.as_table();
  if (!tables) {
    errors->push_back("config: schedules: must be a table");
    return;
  }
  for (auto&& [name_key, tnode] : *tables) {
    const std::string name(name_key.str());
    const std::string prefix = "schedules." + name + ".";
    Status st = ValidateName(name, "config: schedules." + name);
    const toml::table* t = tnode.as_table();
    if (st.ok() && !t) {
      st = Status::InvalidArgument("config: schedules." + name + ": must be a table");
    }
    if (!st.ok()) {
      errors->push_back(st.message());
      continue;
    }
    storage::ScheduleRecord rec;
    rec.set_name(name);
    rec.set_payload("{}");
    for (auto&& [key, v] : *t) {
      const std::string k(key.str());
      const Key value(prefix + k, v);
      Status kst;
      auto string_into = [&](auto set) {
        auto x = value.String();
        if (x.ok()) set(*x);
        return x.status();
      };
      if (k == "cron") {
        kst = string_into([&](const std::string& x) { rec.set_cron(x); });
      } else if (k == "queue") {
        kst = string_into([&](const std::string& x) { rec.set_queue(x); });
      } else if (k == "type") {
        kst = string_into([&](const std::string& x) { rec.set_type(x); });
      } else if (k == "payload") {
        kst = string_into([&](const std::string& x) { rec.set_payload(x); });
      } else if (k == "missed") {
        kst = string_into([&](const std::string& x) { rec.set_missed(x); });
      } else if (k == "priority") {
        auto n = value.Int();
        kst = n.status();
        if (n.ok() && (*n < INT32_MIN || *n > INT32_MAX)) {
          kst = Status::InvalidArgument("config: " + prefix + k + ": out of the 32-bit range");
        }
        if (kst.ok()) rec.set_priority(static_cast<int32_t>(*n));
      } else if (k == "max-attempts") {
        auto n = value.Int();
        kst = n.ok() ? CheckMaxAttempts(*n, "config: " + prefix + k) : n.status();
        if (kst.ok()) rec.set_max_attempts(static_cast<uint32_t>(*n));
      } else if (k == "labels") {
        const toml::table* labels = v.as_table();
        if (!labels) {
          kst = Status::InvalidArgument("config: " + prefix + k +
                                        ": must be a table of strings, e.g. "
                                        "{ team = \"billing\" }");
        } else {
          for (auto&& [lk, lv] : *labels) {
            auto x = Key(prefix + k + "." + std::string(lk.str()), lv).String();
            if (!x.ok()) {
              errors->push_back(x.status().message());
            } else {
              (*rec.mutable_labels())[std::string(lk.str())] = *x;
            }
          }
        }
      } else {
        kst = Status::InvalidArgument("config: unknown key \"" + prefix + k +
                                      "\" (cron, queue, type, payload, priority, max-attempts, "
                                      "missed, labels)");
      }
      if (!kst.ok()) errors->push_back(kst.message());
    }
    for (const char* required : {"cron", "queue", "type"}) {
      if (!t->contains(required)) {
        errors->push_back("config: schedules." + name + "." + required + ": missing (required)");
      }
    }
    (*out)[name] = std::move(rec);
  }
}

// Each schedule's values and, with `admit` (the policies are sound), that the jobs it enqueues
// pass the file's own policies.
void ValidateSchedules(Config* c, bool admit, std::vector<std::string>* errors) {
  LivePolicies live(c->MakePolicies());
  const EnqueueLimits limits{c->max_payload_bytes, c->retry.max_attempts, &live};
  for (auto& [name, rec] : c->schedule_decls) {
    const std::string prefix = "config: schedules." + name + ".";
    Status st = ValidateSchedule(&rec, limits, prefix, /*dashed=*/true);
    if (st.ok() && admit) {
      storage::NewJob probe;
      st = ScheduleJob(rec, 0, limits, 0, &probe);
      if (!st.ok()) {
        st = Status::InvalidArgument("config: schedules." + name +
                                     ": the jobs it would enqueue are refused: " + st.message());
      }
    }
    rec.set_source(kScheduleSourceConfig);
    if (!st.ok()) errors->push_back(st.message());
  }
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
  std::vector<std::string> errors;  // every problem, so --check-config lists them all
  for (auto&& entry : doc) {
    // Not a structured binding: clang 14 (the fuzz build) cannot capture one in a lambda.
    const std::string k(entry.first.str());
    const toml::node& node = entry.second;
    const Key v(k, node);
    auto set_string = [&](std::string* out) -> Status {
      auto s = v.String();
      if (!s.ok()) return s.status();
      *out = *s;
      return Status::Ok();
    };
    auto one = [&]() -> Status {
      if (k == "data-dir") return set_string(&c.data_dir);
      if (k == "archive-dir") return set_string(&c.archive_dir);
      if (k == "archive-after") {
        auto d = v.Duration();
        if (!d.ok()) return d.status();
        if (d->count() <= 0) return Status::InvalidArgument("config: archive-after: must be > 0");
        c.archive_after = *d;
        return Status::Ok();
      }
      if (k == "grpc-listen") return set_string(&c.grpc_listen);
      if (k == "http-listen") return set_string(&c.http_listen);
      if (k == "auth-file") return set_string(&c.auth_file);
      if (k == "tls-cert") return set_string(&c.tls_cert);
      if (k == "tls-key") return set_string(&c.tls_key);
      if (k == "tls-client-ca") return set_string(&c.tls_client_ca);
      if (k == "insecure-allow-plaintext") {
        if (!node.is_boolean()) {
          return Status::InvalidArgument("config: insecure-allow-plaintext: must be true or false");
        }
        c.insecure_allow_plaintext = *node.value<bool>();
        return Status::Ok();
      }
      if (k == "insecure-allow-remote") {
        if (!node.is_boolean()) {
          return Status::InvalidArgument("config: insecure-allow-remote: must be true or false");
        }
        c.insecure_allow_remote = *node.value<bool>();
        return Status::Ok();
      }
      if (k == "sync") {
        auto s = v.String();
        if (!s.ok()) return s.status();
        auto mode = ParseSyncMode(*s);
        if (!mode.ok()) return Status::InvalidArgument("config: " + mode.status().message());
        c.sync = *mode;
        return Status::Ok();
      }
      if (k == "max-payload-bytes") {
        auto n = v.Int();
        if (!n.ok()) return n.status();
        if (*n < 0) return Status::InvalidArgument("config: max-payload-bytes: must be positive");
        LEDGERQ_RETURN_IF_ERROR(CheckPayloadLimit(*n, "config: max-payload-bytes"));
        c.max_payload_bytes = static_cast<uint64_t>(*n);
        return Status::Ok();
      }
      if (k == "dedup-window") {
        auto d = v.Duration();
        if (!d.ok()) return d.status();
        LEDGERQ_RETURN_IF_ERROR(CheckDedupWindow(*d, "config: dedup-window"));
        c.dedup_window = *d;
        return Status::Ok();
      }
      if (k == "default-max-attempts") {
        auto n = v.Int();
        if (!n.ok()) return n.status();
        LEDGERQ_RETURN_IF_ERROR(CheckMaxAttempts(*n, "config: default-max-attempts"));
        c.retry.max_attempts = static_cast<uint32_t>(*n);
        return Status::Ok();
      }
      if (k == "log-level") {
        LEDGERQ_RETURN_IF_ERROR(set_string(&c.log_level));
        return CheckLogLevel(c.log_level, "config: log-level");
      }
      if (k == "log-format") {
        LEDGERQ_RETURN_IF_ERROR(set_string(&c.log_format));
        return CheckLogFormat(c.log_format, "config: log-format");
      }
      if (k == "redrive-rate") {
        auto n = v.Number();
        if (!n.ok()) return n.status();
        if (!(*n >= 1 && *n <= 1e6)) {
          return Status::InvalidArgument("config: redrive-rate: must be between 1 and 1000000");
        }
        c.redrive_rate = *n;
        return Status::Ok();
      }
      if (k == "strict-types") {
        if (!node.is_boolean())
          return Status::InvalidArgument("config: strict-types: must be true or false");
        c.strict_types = *node.value<bool>();
        return Status::Ok();
      }
      if (k == "queues") {
        ParseDecls(node, "queues", /*is_type=*/false, &c.queue_decls, &errors);
        return Status::Ok();
      }
      if (k == "types") {
        ParseDecls(node, "types", /*is_type=*/true, &c.type_decls, &errors);
        return Status::Ok();
      }
      if (k == "schedules") {
        ParseSchedules(node, &c.schedule_decls, &errors);
        return Status::Ok();
      }
      auto applied = ApplyRetryKey(v, k, &c.retry);
      if (!applied.ok()) return applied.status();
      if (!*applied) return Status::InvalidArgument("config: unknown key \"" + k + "\"");
      return Status::Ok();
    };
    Status st = one();
    if (!st.ok()) errors.push_back(st.message());
  }
  if (errors.empty()) {
    Status st = ValidateRetryKeys(c.retry, "config: ");
    if (!st.ok()) errors.push_back(st.message());
  }
  if (errors.empty()) {
    Status st = c.MakePolicies().Validate();
    if (!st.ok()) errors.push_back(st.message());
  }
  ValidateSchedules(&c, /*admit=*/errors.empty(), &errors);
  if (errors.empty()) return c;
  std::string msg;
  for (const auto& e : errors) msg += (msg.empty() ? "" : "\n") + e;
  return Status::InvalidArgument(msg);
}

Result<Config> LoadConfigFile(const std::string& path, Config base, std::string_view flag) {
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument(std::string(flag) + ": cannot read " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  auto parsed = ParseConfigToml(buf.str(), std::move(base));
  if (!parsed.ok()) {
    const std::string& m = parsed.status().message();
    // Several errors: one per line under the file's name.
    return Status::InvalidArgument(path + ":" + (m.find('\n') == std::string::npos ? " " : "\n") +
                                   m);
  }
  parsed->config_file = path;
  return parsed;
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
  std::string auth_file, tls_cert, tls_key, tls_client_ca;
  bool insecure_allow_remote = false;
  app.add_option("--auth-file", auth_file,
                 "TOML file of principals, roles, queues and token digests (README, Security); "
                 "reloaded on SIGHUP");
  app.add_option("--tls-cert", tls_cert, "PEM certificate chain: serve gRPC and HTTP over TLS");
  app.add_option("--tls-key", tls_key, "PEM private key of --tls-cert");
  app.add_option("--tls-client-ca", tls_client_ca,
                 "PEM CA bundle: require client certificates (mTLS); needs --auth-file");
  app.add_flag("--insecure-allow-remote", insecure_allow_remote,
               "Allow non-loopback listen addresses without --auth-file (logs a warning)");
  bool insecure_allow_plaintext = false;
  app.add_flag("--insecure-allow-plaintext", insecure_allow_plaintext,
               "With --auth-file, allow non-loopback listen addresses without TLS: tokens cross "
               "the network in clear (logs a warning)");
  std::string grpc_watchdog;
  app.add_option("--grpc-watchdog", grpc_watchdog,
                 "Exit (status 70) once the gRPC listener has not accepted for this long, so a "
                 "supervisor restarts the daemon (default 30s; 0 only reports it in /healthz)");
  std::string check_config;
  bool strict_types = false;
  app.add_flag("--strict-types", strict_types,
               "Refuse jobs of types without a [types.NAME] policy (FAILED_PRECONDITION)");
  app.add_option("--check-config", check_config,
                 "Validate a config file, list every error and exit (non-zero when invalid)");
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

  if (!check_config.empty()) {
    auto parsed = LoadConfigFile(check_config, Config{}, "--check-config");
    if (!parsed.ok()) return parsed.status();
    const Policies p = parsed->MakePolicies();
    std::cout << "ok: " << check_config << ": " << p.queues.size() << " queue and "
              << p.types.size() << " type policies, policy sha256 " << ToHex(Sha256(p.Canonical()))
              << ", " << parsed->schedule_decls.size() << " schedules\n";
    return std::optional<Config>();
  }

  Config c;
  if (!config_file.empty()) {
    auto parsed = LoadConfigFile(config_file, c, "--config");
    if (!parsed.ok()) return parsed.status();
    c = std::move(parsed).value();
  }
  if (strict_types) c.strict_types = c.strict_types_flag = true;
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
  if (app.count("--auth-file")) c.auth_file = auth_file;
  if (app.count("--tls-cert")) c.tls_cert = tls_cert;
  if (app.count("--tls-key")) c.tls_key = tls_key;
  if (app.count("--tls-client-ca")) c.tls_client_ca = tls_client_ca;
  if (insecure_allow_remote) c.insecure_allow_remote = true;
  if (insecure_allow_plaintext) c.insecure_allow_plaintext = true;
  if (app.count("--grpc-watchdog")) {
    auto d = ParseDuration(grpc_watchdog, "--grpc-watchdog");
    if (!d.ok()) return d.status();
    if (d->count() != 0 && *d < std::chrono::seconds(5)) {
      return Status::InvalidArgument("--grpc-watchdog: " + grpc_watchdog +
                                     " is below the minimum of 5s (or 0 to never exit)");
    }
    c.grpc_watchdog = std::chrono::duration_cast<std::chrono::milliseconds>(*d);
  }
  if (c.data_dir.empty()) return Status::InvalidArgument("--data-dir: must not be empty");
  return std::optional<Config>(std::move(c));
}

}  // namespace ledgerq::server
