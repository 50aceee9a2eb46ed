// Queue and job-type policies: what the config file declares about a queue ([queues.NAME]) and a
// job type ([types.NAME]), resolved per (queue, type), the admission checks a submission must
// pass, and a canonical text whose digest versions the policy in the audit log.
//
// Resolution: the server defaults, overridden by the queue's keys, overridden by the type's.
// Required payload fields of the queue and of the type both apply.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "scheduler/flow_control.h"
#include "scheduler/retry_policy.h"
#include "storage/job_store.h"

namespace ledgerq::server {

enum class JsonType { kString, kNumber, kInteger, kBoolean, kObject, kArray };
const char* JsonTypeName(JsonType t);
[[nodiscard]] Result<JsonType> ParseJsonType(std::string_view text, std::string_view field);

// A payload field that must be present with a JSON type; `path` is dot-separated ("a.b").
struct FieldRule {
  std::string path;
  JsonType type = JsonType::kString;
};

// A job type's `on-dead-letter`: what happens when one of its jobs dies (server/remediation.h).
struct OnDeadLetter {
  std::string queue;  // a compensation job of `type` in `queue` (both empty: none)
  std::string type;
  bool needs_attention = false;  // listed by `ledgerq dlq list --needs-attention` until resolved

  bool compensates() const { return !queue.empty() && !type.empty(); }
  bool operator==(const OnDeadLetter&) const = default;
};

// The keys one [queues.NAME] or [types.NAME] table may set; unset keys inherit.
struct PolicyDecl {
  std::optional<uint32_t> max_attempts;
  std::optional<std::chrono::microseconds> backoff_base, backoff_cap;
  std::optional<double> backoff_factor;
  std::optional<std::chrono::microseconds> min_lease, max_lease;
  std::optional<uint64_t> max_payload_bytes;
  std::optional<std::vector<std::string>> mask_fields;
  std::optional<std::vector<std::string>> submitters;  // principals allowed to submit
  std::vector<FieldRule> required;
  std::optional<std::chrono::microseconds> purge_payloads_after, remove_after, dead_letters_keep;
  std::vector<std::string> queues;  // [types.NAME] only: queue globs it may go to; empty: any
  std::optional<OnDeadLetter> on_dead_letter;  // [types.NAME] only
  // Flow control, [queues.NAME] only (docs: README "Flow control").
  std::optional<double> rate_limit;
  std::optional<uint32_t> rate_burst, max_concurrency, max_per_key;
  // Circuit breaker of each (queue, type): queue and type keys, the type's win.
  std::optional<bool> circuit_breaker;
  std::optional<double> circuit_threshold;
  std::optional<std::chrono::microseconds> circuit_window, circuit_cooldown, circuit_max_cooldown;
  std::optional<uint32_t> circuit_min_attempts, circuit_trials;
};

// Everything in force for one (queue, type).
struct ResolvedPolicy {
  scheduler::RetryPolicy retry;
  std::chrono::microseconds min_lease{std::chrono::seconds(1)};
  std::chrono::microseconds max_lease{std::chrono::hours(12)};
  uint64_t max_payload_bytes = 1 << 20;
  std::vector<std::string> mask_fields;
  std::optional<std::vector<std::string>> submitters;  // nullopt: anyone allowed to enqueue
  std::vector<FieldRule> required;
  storage::RetentionPolicy retention;
  bool type_declared = false;
  std::optional<OnDeadLetter> on_dead_letter;  // the type's
  scheduler::CircuitPolicy circuit;
};

struct Policies {
  scheduler::RetryPolicy retry;  // the server defaults (Config::retry)
  uint64_t max_payload_bytes = 1 << 20;
  // Enqueueing a type without a [types.NAME] table is refused (FAILED_PRECONDITION).
  bool strict_types = false;
  std::map<std::string, PolicyDecl> queues;
  std::map<std::string, PolicyDecl> types;

  [[nodiscard]] ResolvedPolicy Resolve(const std::string& queue, const std::string& type) const;
  // The flow-control limits [queues.NAME] declares (unlimited when it declares none).
  scheduler::QueueLimits LimitsOf(const std::string& queue) const;

  // The admission checks of one submission, in order: a declared type (with strict_types), the
  // type's queues, the principal among the submitters, payload size, required JSON fields.
  // Errors name the field: FAILED_PRECONDITION for an undeclared type, PERMISSION_DENIED for a
  // principal not among the submitters, INVALID_ARGUMENT for the payload.
  [[nodiscard]] Status Admit(const storage::NewJob& job, std::string_view principal) const;

  // A deterministic JSON text of every declaration and default; its SHA-256 is the policy's
  // digest, so an unchanged file (even reformatted) keeps its version.
  std::string Canonical() const;

  // Errors of the declarations taken together (each resolved retry policy valid, lease bounds
  // ordered); every problem listed, one per line.
  [[nodiscard]] Status Validate() const;
};

// ValidateRetryPolicy with the errors naming the config file's keys (backoff-base, not
// backoff_base) after `prefix`.
[[nodiscard]] Status ValidateRetryKeys(const scheduler::RetryPolicy& p, const std::string& prefix);

// The policy in force, swapped whole on reload and read lock-free from any thread.
class LivePolicies {
 public:
  explicit LivePolicies(Policies p, uint64_t version = 0)
      : current_(std::make_shared<const Entry>(Entry{std::move(p), version})) {}

  struct Entry {
    Policies policies;
    uint64_t version = 0;
  };
  std::shared_ptr<const Entry> Get() const { return current_.load(std::memory_order_acquire); }
  void Set(Policies p, uint64_t version) {
    current_.store(std::make_shared<const Entry>(Entry{std::move(p), version}),
                   std::memory_order_release);
  }

 private:
  std::atomic<std::shared_ptr<const Entry>> current_;
};

}  // namespace ledgerq::server
