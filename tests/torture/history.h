// The torture run's history and its checker. Every client operation is recorded with its
// real-time interval and its answer; after the run the checker compares that history with what
// the daemon reports (each job's state and its event timeline) against the contract of
// DESIGN.md. It is a pure function of the recorded data, so it is unit-testable on hand-made
// histories.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ledgerq/v1/ledgerq.pb.h"

namespace ledgerq::torture {

enum class OpKind { kEnqueue, kLease, kHeartbeat, kComplete, kFail, kKill };
enum class Outcome {
  kOk,        // the daemon answered OK
  kRejected,  // a definite refusal (FAILED_PRECONDITION, NOT_FOUND, ...): nothing changed
  kUnknown,   // UNAVAILABLE, DEADLINE_EXCEEDED...: may or may not have happened
};

struct Op {
  int thread = 0;
  OpKind kind = OpKind::kEnqueue;
  int64_t start_us = 0;  // steady clock, relative to the start of the run
  int64_t end_us = 0;
  Outcome outcome = Outcome::kUnknown;
  int code = 0;  // grpc status code
  std::string message;

  // kEnqueue
  std::string key;  // idempotency key; empty for none
  bool deduplicated = false;
  // kEnqueue (answer), kLease (one op per granted job), kHeartbeat, kComplete, kFail
  uint64_t job_id = 0;
  uint32_t attempt = 0;    // the lease token's attempt
  bool late = false;       // kComplete sent after the lease's deadline on purpose
  bool permanent = false;  // kFail
  bool repeat = false;     // kComplete repeated with the same token
};

std::string Describe(const Op& op);

// What the daemon reports after the run: every job in the queue with its events.
struct Observed {
  std::map<uint64_t, v1::JobHistory> jobs;  // by id
};

struct Summary {
  std::map<std::string, uint64_t> counts;  // printable tallies, e.g. "enqueue ok"
  std::vector<std::string> violations;     // each with the offending history entries
  bool ok() const { return violations.empty(); }
};

// Jobs that no answer announced are allowed only as the result of enqueues whose outcome was
// unknown: one with their idempotency key, or at most one per unknown unkeyed enqueue.
Summary Check(const std::vector<Op>& history, const Observed& observed);

}  // namespace ledgerq::torture
