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

// A lease token as a worker presents it. `attempt` is the fencing counter; `nonce` is the
// lease's secret, decided at grant (LeaseFn) and kept in the job record, so it survives restarts
// and is the same on every replica.
struct Token {
  uint64_t job_id = 0;
  uint32_t attempt = 0;
  std::string nonce;
};

// "(job 5, attempt 2)": never the nonce.
std::string TokenText(const Token& t);
// What a heartbeat says of a lease it does not know (expired, moved on, or not the caller's to
// see: the server answers those alike).
std::string LeaseLostText(const Token& t);

inline constexpr size_t kLeaseNonceBytes = 16;

struct LeaseGrant {
  std::string worker_id;
  int64_t deadline_us = 0;  // wall image of the monotonic deadline
  std::string principal;    // who took the lease: only it may use the token
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
// Worker calls: `principal` presents `token`. Each is refused (FAILED_PRECONDITION) unless the
// token names the job's current lease, with its nonce, and the lease was granted to `principal`.
storage::TransitionFn HeartbeatFn(Token token, std::string principal, int64_t deadline_us,
                                  std::optional<std::string> checkpoint);
// A repeated Complete gets the first answer, but only from the principal and token it came from.
storage::TransitionFn CompleteFn(Token token, std::string principal, std::string result);
// `random` draws the jitter in [0, 1).
storage::TransitionFn FailFn(Token token, std::string principal, AttemptFailure failure,
                             std::optional<std::chrono::microseconds> retry_after,
                             RetryPolicy queue_policy, std::function<double()> random);
storage::TransitionFn ReleaseFn(Token token, std::string principal,
                                std::chrono::microseconds delay);
// The daemon's own calls (ExpireFn, UnleaseFn) fence on the attempt alone: they hold no nonce.
storage::TransitionFn ExpireFn(Token token, RetryPolicy queue_policy,
                               std::function<double()> random, std::string payload_snapshot = {});
storage::TransitionFn RedriveFn();
// Gives back a lease that was granted to a long-poll whose client vanished before it could be
// answered; the attempt is refunded.
storage::TransitionFn UnleaseFn(Token token);

}  // namespace ledgerq::scheduler
