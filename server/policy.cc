#include "server/policy.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/duration.h"
#include "server/auth.h"  // QueueMatches: the same globs as the auth file
#include "server/payload_snapshot.h"

namespace ledgerq::server {

const char* JsonTypeName(JsonType t) {
  switch (t) {
    case JsonType::kString:
      return "string";
    case JsonType::kNumber:
      return "number";
    case JsonType::kInteger:
      return "integer";
    case JsonType::kBoolean:
      return "boolean";
    case JsonType::kObject:
      return "object";
    case JsonType::kArray:
      return "array";
  }
  return "?";
}

Result<JsonType> ParseJsonType(std::string_view text, std::string_view field) {
  for (JsonType t : {JsonType::kString, JsonType::kNumber, JsonType::kInteger, JsonType::kBoolean,
                     JsonType::kObject, JsonType::kArray}) {
    if (text == JsonTypeName(t)) return t;
  }
  return Status::InvalidArgument(std::string(field) +
                                 ": must be string, number, integer, boolean, object or array; "
                                 "got \"" +
                                 std::string(text) + "\"");
}

namespace {

template <typename T>
void Over(std::optional<T>& into, const std::optional<T>& from) {
  if (from) into = from;
}

// Applies the keys a declaration sets over `r`.
void Apply(const PolicyDecl& d, ResolvedPolicy& r, std::optional<std::vector<std::string>>& masks) {
  if (d.max_attempts) r.retry.max_attempts = *d.max_attempts;
  if (d.backoff_base) r.retry.backoff_base = *d.backoff_base;
  if (d.backoff_cap) r.retry.backoff_cap = *d.backoff_cap;
  if (d.backoff_factor) r.retry.backoff_factor = *d.backoff_factor;
  if (d.min_lease) r.min_lease = *d.min_lease;
  if (d.max_lease) r.max_lease = *d.max_lease;
  if (d.max_payload_bytes) r.max_payload_bytes = *d.max_payload_bytes;
  Over(masks, d.mask_fields);
  Over(r.submitters, d.submitters);
  r.required.insert(r.required.end(), d.required.begin(), d.required.end());
  if (d.purge_payloads_after) r.retention.payloads = *d.purge_payloads_after;
  if (d.remove_after) r.retention.records = *d.remove_after;
  if (d.dead_letters_keep) r.retention.dead = *d.dead_letters_keep;
  if (d.circuit_breaker) r.circuit.enabled = *d.circuit_breaker;
  if (d.circuit_threshold) r.circuit.threshold = *d.circuit_threshold;
  if (d.circuit_window) r.circuit.window = *d.circuit_window;
  if (d.circuit_min_attempts) r.circuit.min_attempts = *d.circuit_min_attempts;
  if (d.circuit_cooldown) r.circuit.cooldown = *d.circuit_cooldown;
  if (d.circuit_max_cooldown) r.circuit.max_cooldown = *d.circuit_max_cooldown;
  if (d.circuit_trials) r.circuit.trials = *d.circuit_trials;
}

bool HasType(const nlohmann::json& v, JsonType t) {
  switch (t) {
    case JsonType::kString:
      return v.is_string();
    case JsonType::kNumber:
      return v.is_number();
    case JsonType::kInteger:
      return v.is_number_integer();
    case JsonType::kBoolean:
      return v.is_boolean();
    case JsonType::kObject:
      return v.is_object();
    case JsonType::kArray:
      return v.is_array();
  }
  return false;
}

const char* TypeOf(const nlohmann::json& v) {
  if (v.is_null()) return "null";
  if (v.is_string()) return "string";
  if (v.is_boolean()) return "boolean";
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  if (v.is_object()) return "object";
  if (v.is_array()) return "array";
  return "?";
}

std::string Us(const std::optional<std::chrono::microseconds>& d) {
  return d ? FormatDuration(*d) : "";
}

nlohmann::json DeclJson(const PolicyDecl& d) {
  nlohmann::json j = nlohmann::json::object();
  if (d.max_attempts) j["max-attempts"] = *d.max_attempts;
  if (d.backoff_base) j["backoff-base"] = Us(d.backoff_base);
  if (d.backoff_cap) j["backoff-cap"] = Us(d.backoff_cap);
  if (d.backoff_factor) j["backoff-factor"] = *d.backoff_factor;
  if (d.min_lease) j["min-lease"] = Us(d.min_lease);
  if (d.max_lease) j["max-lease"] = Us(d.max_lease);
  if (d.max_payload_bytes) j["max-payload-bytes"] = *d.max_payload_bytes;
  if (d.mask_fields) j["mask-fields"] = *d.mask_fields;
  if (d.submitters) j["submitters"] = *d.submitters;
  if (!d.required.empty()) {
    nlohmann::json req = nlohmann::json::object();
    for (const auto& r : d.required) req[r.path] = JsonTypeName(r.type);
    j["required"] = req;
  }
  if (d.purge_payloads_after) j["purge-payloads-after"] = Us(d.purge_payloads_after);
  if (d.remove_after) j["remove-after"] = Us(d.remove_after);
  if (d.dead_letters_keep) j["dead-letters-keep"] = Us(d.dead_letters_keep);
  if (!d.queues.empty()) j["queues"] = d.queues;
  if (d.rate_limit) j["rate-limit"] = *d.rate_limit;
  if (d.rate_burst) j["rate-burst"] = *d.rate_burst;
  if (d.max_concurrency) j["max-concurrency"] = *d.max_concurrency;
  if (d.max_per_key) j["max-per-key"] = *d.max_per_key;
  if (d.circuit_breaker) j["circuit-breaker"] = *d.circuit_breaker;
  if (d.circuit_threshold) j["circuit-threshold"] = *d.circuit_threshold;
  if (d.circuit_window) j["circuit-window"] = Us(d.circuit_window);
  if (d.circuit_min_attempts) j["circuit-min-attempts"] = *d.circuit_min_attempts;
  if (d.circuit_cooldown) j["circuit-cooldown"] = Us(d.circuit_cooldown);
  if (d.circuit_max_cooldown) j["circuit-max-cooldown"] = Us(d.circuit_max_cooldown);
  if (d.circuit_trials) j["circuit-trials"] = *d.circuit_trials;
  if (d.on_dead_letter) {
    nlohmann::json o = {{"needs-attention", d.on_dead_letter->needs_attention}};
    if (d.on_dead_letter->compensates()) {
      o["queue"] = d.on_dead_letter->queue;
      o["type"] = d.on_dead_letter->type;
    }
    j["on-dead-letter"] = o;
  }
  return j;
}

}  // namespace

// The policy validator speaks API field names (backoff_base); the file spells them backoff-base.
Status ValidateRetryKeys(const scheduler::RetryPolicy& p, const std::string& prefix) {
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

ResolvedPolicy Policies::Resolve(const std::string& queue, const std::string& type) const {
  ResolvedPolicy r;
  r.retry = retry;
  r.max_payload_bytes = max_payload_bytes;
  std::optional<std::vector<std::string>> masks;
  if (auto q = queues.find(queue); q != queues.end()) Apply(q->second, r, masks);
  if (auto t = types.find(type); t != types.end()) {
    Apply(t->second, r, masks);
    r.type_declared = true;
    r.on_dead_letter = t->second.on_dead_letter;
  }
  r.mask_fields = masks ? std::move(*masks) : DefaultMaskFields();
  return r;
}

scheduler::QueueLimits Policies::LimitsOf(const std::string& queue) const {
  scheduler::QueueLimits l;
  auto q = queues.find(queue);
  if (q == queues.end()) return l;
  const PolicyDecl& d = q->second;
  l.rate_per_second = d.rate_limit.value_or(0);
  l.burst = d.rate_burst.value_or(0);
  l.max_concurrency = d.max_concurrency.value_or(0);
  l.max_per_key = d.max_per_key.value_or(0);
  return l;
}

Status Policies::Admit(const storage::NewJob& job, std::string_view principal) const {
  const auto t = types.find(job.type);
  if (t == types.end() && strict_types) {
    return Status::FailedPrecondition("type: \"" + job.type + "\" is not declared ([types." +
                                      job.type + "] in the config), and --strict-types refuses it");
  }
  if (t != types.end() && !t->second.queues.empty()) {
    const auto& qs = t->second.queues;
    if (std::none_of(qs.begin(), qs.end(),
                     [&](const std::string& p) { return QueueMatches(p, job.queue); })) {
      return Status::FailedPrecondition(
          "queue: type \"" + job.type + "\" may not be enqueued in \"" + job.queue +
          "\" (its policy allows queues " + nlohmann::json(qs).dump() + ")");
    }
  }
  const ResolvedPolicy r = Resolve(job.queue, job.type);
  if (r.submitters) {
    const auto& s = *r.submitters;
    if (std::find(s.begin(), s.end(), principal) == s.end()) {
      return Status::PermissionDenied("submit: principal \"" + std::string(principal) +
                                      "\" may not submit type \"" + job.type + "\" to queue \"" +
                                      job.queue + "\" (not among the policy's submitters)");
    }
  }
  if (job.payload.size() > r.max_payload_bytes) {
    return Status::InvalidArgument("payload: " + std::to_string(job.payload.size()) +
                                   " bytes exceeds the limit of " +
                                   std::to_string(r.max_payload_bytes) + " bytes for type \"" +
                                   job.type + "\" in queue \"" + job.queue + "\"");
  }
  if (r.required.empty()) return Status::Ok();
  nlohmann::json doc(nlohmann::json::value_t::discarded);
  if (!JsonNestedDeeperThan(job.payload, kMaxJsonDepth)) {
    doc = nlohmann::json::parse(job.payload, nullptr, /*allow_exceptions=*/false);
  }
  if (doc.is_discarded() || !doc.is_object()) {
    return Status::InvalidArgument("payload: must be a JSON object (type \"" + job.type +
                                   "\" declares required fields)");
  }
  for (const auto& rule : r.required) {
    const nlohmann::json* at = &doc;
    size_t start = 0;
    while (true) {
      const size_t dot = rule.path.find('.', start);
      const std::string part = rule.path.substr(start, dot - start);
      if (!at->is_object() || !at->contains(part)) {
        return Status::InvalidArgument("payload." + rule.path + ": required (" +
                                       JsonTypeName(rule.type) + ") but missing");
      }
      at = &(*at)[part];
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (!HasType(*at, rule.type)) {
      return Status::InvalidArgument("payload." + rule.path + ": must be " +
                                     JsonTypeName(rule.type) + ", got " + TypeOf(*at));
    }
  }
  return Status::Ok();
}

std::string Policies::Canonical() const {
  nlohmann::json j;
  j["defaults"] = {{"max-attempts", retry.max_attempts},
                   {"backoff-base", FormatDuration(retry.backoff_base)},
                   {"backoff-factor", retry.backoff_factor},
                   {"backoff-cap", FormatDuration(retry.backoff_cap)},
                   {"max-payload-bytes", max_payload_bytes},
                   {"strict-types", strict_types}};
  j["queues"] = nlohmann::json::object();
  for (const auto& [name, d] : queues) j["queues"][name] = DeclJson(d);
  j["types"] = nlohmann::json::object();
  for (const auto& [name, d] : types) j["types"][name] = DeclJson(d);
  return j.dump();  // objects keep their keys sorted: the text is deterministic
}

Status Policies::Validate() const {
  std::vector<std::string> problems;
  auto check = [&](const std::string& where, const ResolvedPolicy& r) {
    Status st = ValidateRetryKeys(r.retry, where);
    if (!st.ok()) problems.push_back(st.message());
    if (r.min_lease > r.max_lease) {
      problems.push_back(where + "min-lease: " + FormatDuration(r.min_lease) +
                         " is above max-lease " + FormatDuration(r.max_lease));
    }
    if (Status cs = scheduler::ValidateCircuit(r.circuit, where); !cs.ok()) {
      problems.push_back(cs.message());
    }
  };
  for (const auto& [name, d] : queues) {
    scheduler::QueueLimits l = LimitsOf(name);
    if (Status ls = scheduler::ValidateLimits(l, "config: queues." + name + "."); !ls.ok()) {
      // The file spells the fields rate-limit, rate-burst, max-concurrency, max-per-key.
      std::string msg = ls.message();
      for (auto [api, file] :
           {std::pair{"rate_per_second", "rate-limit"}, std::pair{"burst", "rate-burst"},
            std::pair{"max_concurrency", "max-concurrency"},
            std::pair{"max_per_key", "max-per-key"}}) {
        if (auto pos = msg.find(std::string(".") + api + ":"); pos != std::string::npos) {
          msg.replace(pos + 1, std::string(api).size(), file);
          break;
        }
      }
      problems.push_back(msg);
    }
  }
  for (const auto& [name, d] : queues) check("config: queues." + name + ".", Resolve(name, ""));
  for (const auto& [name, d] : types) check("config: types." + name + ".", Resolve("", name));
  // Compensation chains must end: a type whose compensations lead back to it would enqueue
  // compensations of compensations for as long as they keep dying.
  for (const auto& [name, d] : types) {
    std::vector<std::string> chain{name};
    for (auto at = types.find(name);
         at != types.end() && at->second.on_dead_letter && at->second.on_dead_letter->compensates();
         at = types.find(chain.back())) {
      const std::string& next = at->second.on_dead_letter->type;
      const bool loops = std::find(chain.begin(), chain.end(), next) != chain.end();
      chain.push_back(next);
      if (!loops) continue;
      if (next == name) {  // a loop further on is reported from a type on it
        std::string path;
        for (const auto& c : chain) path += (path.empty() ? "" : " -> ") + c;
        problems.push_back("config: types." + name +
                           ".on-dead-letter.type: the compensation chain loops back (" + path +
                           "), so compensations of compensations could go on forever");
      }
      break;
    }
  }
  if (problems.empty()) return Status::Ok();
  std::string msg;
  for (const auto& p : problems) msg += (msg.empty() ? "" : "\n") + p;
  return Status::InvalidArgument(msg);
}

}  // namespace ledgerq::server
