// The lifecycle rules of DESIGN.md as storage transition functions. Each one runs on the storage
// committer against the job's authoritative state, checks the fencing token, and either changes
// the job with the events that explain it or refuses with a Status that names why. Keeping the
// rules here (and not in storage/) keeps storage generic and the rules testable in one place.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "scheduler/retry_policy.h"
#include "storage/job_store.h"

namespace ledgerq::scheduler {

struct Token {
  uint64_t job_id = 0;
  uint32_t attempt = 0;
};

std::string TokenText(const Token& t);

struct LeaseGrant {
  std::string worker_id;
  int64_t deadline_us = 0;  // wall image of the monotonic deadline
};

struct AttemptFailure {
  int32_t kind = 1;  // ledgerq.v1.ErrorKind: 1 transient, 2 permanent
  std::string code;
  std::string message;
  std::string details;
  std::string worker_host;       // the reporting worker's address
  std::string payload_snapshot;  // masked, see server/payload_snapshot.h
};

inline constexpr int32_t kTransient = 1;
inline constexpr int32_t kPermanent = 2;

// The policy in force for a job: the queue's, overridden by what the job carries.
RetryPolicy EffectivePolicy(const RetryPolicy& queue_policy, const storage::JobRecord& job);

// Attempts used since the job was (re)submitted.
uint32_t AttemptsUsed(const storage::JobRecord& job);

storage::TransitionFn LeaseFn(LeaseGrant grant);
storage::TransitionFn HeartbeatFn(Token token, int64_t deadline_us,
                                  std::optional<std::string> checkpoint);
storage::TransitionFn CompleteFn(Token token, std::string result);
// `random` draws the jitter in [0, 1).
storage::TransitionFn FailFn(Token token, AttemptFailure failure,
                             std::optional<std::chrono::microseconds> retry_after,
                             RetryPolicy queue_policy, std::function<double()> random);
storage::TransitionFn ReleaseFn(Token token, std::chrono::microseconds delay);
storage::TransitionFn ExpireFn(Token token, RetryPolicy queue_policy,
                               std::function<double()> random, std::string payload_snapshot = {});
storage::TransitionFn RedriveFn();
// Gives back a lease that was granted to a long-poll whose client vanished before it could be
// answered; the attempt is refunded.
storage::TransitionFn UnleaseFn(Token token);

}  // namespace ledgerq::scheduler
