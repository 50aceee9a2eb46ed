#include "scheduler/transitions.h"

#include <random>

#include "common/duration.h"
#include "common/sha256.h"

namespace ledgerq::scheduler {
namespace {

namespace sv1 = storage::v1;
using storage::EventBody;
using storage::JobRecord;
using storage::TransitionWriter;

std::string StateText(sv1::State s) {
  std::string name = sv1::State_Name(s);
  return name.rfind("STATE_", 0) == 0 ? name.substr(6) : name;
}

// The fencing check: the token's attempt is the job's current lease.
Status CheckAttempt(const JobRecord& job, const Token& token) {
  if (job.state() == sv1::STATE_LEASED && job.attempts() == token.attempt) return Status::Ok();
  std::string now = job.state() == sv1::STATE_LEASED
                        ? "LEASED for attempt " + std::to_string(job.attempts())
                        : StateText(job.state());
  return Status::FailedPrecondition("lease token " + TokenText(token) +
                                    " is not the current lease: the job is " + now);
}

// The one check every worker call makes: the token names the job's current lease, with the
// nonce it was granted with, and `principal` is the one it was granted to. A lease granted
// before nonces existed (empty lease_nonce and lease_principal) is fenced by attempt alone.
Status CheckToken(const JobRecord& job, const Token& token, const std::string& principal) {
  LEDGERQ_RETURN_IF_ERROR(CheckAttempt(job, token));
  const bool legacy = job.lease_nonce().empty() && job.lease_principal().empty();
  if (legacy) return Status::Ok();
  if (!ConstantTimeEquals(job.lease_nonce(), token.nonce)) {
    return Status::FailedPrecondition("lease token " + TokenText(token) +
                                      " does not match the current lease (wrong nonce)");
  }
  if (job.lease_principal() != principal) {
    return Status::FailedPrecondition("lease token " + TokenText(token) +
                                      " was not granted to principal \"" + principal + "\"");
  }
  return Status::Ok();
}

void ClearLease(JobRecord& job) {
  job.clear_lease_nonce();
  job.clear_lease_principal();
  job.clear_lease_worker_id();
  job.clear_lease_started_us();
  job.clear_lease_granted_us();
  job.clear_lease_deadline_us();
}

EventBody Ev(sv1::EventType type, const JobRecord& job) {
  EventBody ev;
  ev.set_type(type);
  ev.set_attempt(job.attempts());
  ev.set_from_state(job.state());
  ev.set_traceparent(job.state() == sv1::STATE_LEASED && !job.attempt_traceparent().empty()
                         ? job.attempt_traceparent()
                         : job.traceparent());
  if (job.state() == sv1::STATE_LEASED) ev.set_attempt_started_us(job.lease_started_us());
  return ev;
}

// The job's trace id with a fresh span id: each attempt is its own span in the job's trace.
std::string AttemptTraceparent(const std::string& job_tp) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  if (job_tp.size() < 35) return job_tp;
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t v = rng() | 1;
  std::string span(16, '0');
  for (int i = 15; i >= 0; --i, v >>= 4) span[i] = kHex[v & 0xf];
  return job_tp.substr(0, 35) + "-" + span + "-01";
}

// After a failed attempt (reported, or an expired lease): retry after a backoff, or dead-letter.
void RetryOrBury(JobRecord& job, TransitionWriter& w, int64_t now, bool permanent,
                 const char* exhausted_reason, const RetryPolicy& policy, double draw,
                 std::optional<std::chrono::microseconds> retry_after) {
  const RetryPolicy p = EffectivePolicy(policy, job);
  const uint32_t used = AttemptsUsed(job);
  if (permanent || used >= job.max_attempts()) {
    EventBody ev = Ev(sv1::EVENT_DEAD_LETTERED, job);
    job.set_dead_reason(permanent ? "permanent_error" : exhausted_reason);
    job.set_state(sv1::STATE_DEAD);
    ev.set_to_state(job.state());
    ev.set_reason(job.dead_reason());
    w.Event(std::move(ev));
    return;
  }
  const auto delay = RetryDelay(p, used, draw, retry_after);
  EventBody ev = Ev(sv1::EVENT_RETRY_SCHEDULED, job);
  job.set_run_at_us(now + delay.count());
  job.set_state(sv1::STATE_SCHEDULED);
  ev.set_to_state(job.state());
  ev.set_run_at_us(job.run_at_us());
  ev.set_reason("retry in " + FormatDuration(delay));
  w.Event(std::move(ev));
}

sv1::AttemptErrorRecord RecordError(JobRecord& job, int64_t now, const AttemptFailure& f) {
  sv1::AttemptErrorRecord* e = job.add_errors();
  e->set_attempt(job.attempts());
  e->set_at_us(now);
  e->set_worker_id(job.lease_worker_id());
  e->set_kind(f.kind);
  e->set_code(f.code);
  e->set_message(f.message);
  e->set_details(f.details);
  e->set_worker_host(f.worker_host);
  e->set_lease_started_us(job.lease_started_us());
  e->set_lease_ended_us(now);
  e->set_payload_snapshot(f.payload_snapshot);
  if (!f.payload_snapshot.empty()) {
    e->set_payload_snapshot_sha256(std::string(AsBytes(Sha256(f.payload_snapshot))));
  }
  // The event's copy: the snapshot stays in the job record (where retention purges it); the
  // hashed event keeps only its digest, so no event ever holds payload-derived bytes.
  sv1::AttemptErrorRecord for_event = *e;
  for_event.clear_payload_snapshot();
  return for_event;
}

}  // namespace

std::string TokenText(const Token& t) {
  return "(job " + std::to_string(t.job_id) + ", attempt " + std::to_string(t.attempt) + ")";
}

std::string LeaseLostText(const Token& t) {
  return "lease " + TokenText(t) + " is lost: it expired or moved on";
}

RetryPolicy EffectivePolicy(const RetryPolicy& queue_policy, const JobRecord& job) {
  RetryPolicy p = queue_policy;
  p.max_attempts = job.max_attempts();
  if (job.has_retry()) {
    const auto& r = job.retry();
    if (r.backoff_base_us() > 0) p.backoff_base = std::chrono::microseconds(r.backoff_base_us());
    if (r.backoff_factor() > 0) p.backoff_factor = r.backoff_factor();
    if (r.backoff_cap_us() > 0) p.backoff_cap = std::chrono::microseconds(r.backoff_cap_us());
  }
  return p;
}

uint32_t AttemptsUsed(const JobRecord& job) {
  return job.attempts() - std::min(job.attempts(), job.attempt_budget_base());
}

storage::TransitionFn LeaseFn(LeaseGrant grant) {
  return [grant = std::move(grant)](JobRecord& job, TransitionWriter& w, int64_t now) -> Status {
    const bool due = job.state() == sv1::STATE_READY ||
                     (job.state() == sv1::STATE_SCHEDULED && job.run_at_us() <= now);
    if (!due) {
      return Status::FailedPrecondition("job " + std::to_string(job.id()) + " is " +
                                        StateText(job.state()) + ", not ready to lease");
    }
    std::string nonce = RandomBytes(kLeaseNonceBytes);
    if (nonce.size() != kLeaseNonceBytes) {
      return Status::Unavailable("cannot draw a lease nonce: OpenSSL RAND_bytes failed");
    }
    EventBody ev = Ev(sv1::EVENT_LEASED, job);
    job.set_attempts(job.attempts() + 1);
    job.set_lease_nonce(std::move(nonce));  // in the record only, never in the event
    job.set_lease_principal(grant.principal);
    job.set_state(sv1::STATE_LEASED);
    job.set_lease_worker_id(grant.worker_id);
    job.set_lease_started_us(now);
    job.set_lease_granted_us(now);
    job.set_lease_deadline_us(grant.deadline_us);
    job.set_attempt_traceparent(AttemptTraceparent(job.traceparent()));
    ev.set_traceparent(job.attempt_traceparent());
    ev.set_attempt(job.attempts());
    ev.set_to_state(job.state());
    ev.set_worker_id(grant.worker_id);
    ev.set_lease_deadline_us(grant.deadline_us);
    w.Event(std::move(ev));
    return Status::Ok();
  };
}

storage::TransitionFn HeartbeatFn(Token token, std::string principal, int64_t deadline_us,
                                  std::optional<std::string> checkpoint) {
  return [=](JobRecord& job, TransitionWriter& w, int64_t now) -> Status {
    LEDGERQ_RETURN_IF_ERROR(CheckToken(job, token, principal));
    job.set_lease_granted_us(now);
    job.set_lease_deadline_us(deadline_us);
    if (checkpoint) w.PutCheckpoint(*checkpoint);
    w.SaveJob();  // an extension is not a transition: no event
    return Status::Ok();
  };
}

storage::TransitionFn CompleteFn(Token token, std::string principal, std::string result) {
  return [token, principal = std::move(principal), result = std::move(result)](
             JobRecord& job, TransitionWriter& w, int64_t) -> Status {
    // (A job completed before nonces existed has neither, and is answered by attempt.)
    const bool legacy = job.completed_nonce().empty() && job.completed_principal().empty();
    if (job.state() == sv1::STATE_SUCCEEDED && job.completed_attempt() == token.attempt &&
        (legacy || (ConstantTimeEquals(job.completed_nonce(), token.nonce) &&
                    job.completed_principal() == principal))) {
      return Status::Ok();  // a repeated Complete gets the first answer and changes nothing
    }
    LEDGERQ_RETURN_IF_ERROR(CheckToken(job, token, principal));
    job.set_completed_nonce(job.lease_nonce());
    job.set_completed_principal(job.lease_principal());
    EventBody ev = Ev(sv1::EVENT_COMPLETED, job);
    ev.set_worker_id(job.lease_worker_id());
    ev.set_result_sha256(std::string(AsBytes(Sha256(result))));
    ev.set_result_size(result.size());
    job.set_state(sv1::STATE_SUCCEEDED);
    job.set_completed_attempt(token.attempt);
    ClearLease(job);
    ev.set_to_state(job.state());
    w.Event(std::move(ev));
    w.PutResult(result);
    return Status::Ok();
  };
}

storage::TransitionFn FailFn(Token token, std::string principal, AttemptFailure failure,
                             std::optional<std::chrono::microseconds> retry_after,
                             RetryPolicy queue_policy, std::function<double()> random) {
  return [=](JobRecord& job, TransitionWriter& w, int64_t now) -> Status {
    LEDGERQ_RETURN_IF_ERROR(CheckToken(job, token, principal));
    EventBody ev = Ev(sv1::EVENT_FAILED, job);
    ev.set_worker_id(job.lease_worker_id());
    *ev.mutable_error() = RecordError(job, now, failure);
    ClearLease(job);
    // FAILED keeps the job's state on record as it was decided; the next event moves it.
    ev.set_to_state(sv1::STATE_LEASED);
    w.Event(std::move(ev));
    RetryOrBury(job, w, now, failure.kind == kPermanent, "attempts_exhausted", queue_policy,
                random(), retry_after);
    return Status::Ok();
  };
}

storage::TransitionFn ReleaseFn(Token token, std::string principal,
                                std::chrono::microseconds delay) {
  return [=](JobRecord& job, TransitionWriter& w, int64_t now) -> Status {
    LEDGERQ_RETURN_IF_ERROR(CheckToken(job, token, principal));
    EventBody ev = Ev(sv1::EVENT_RELEASED, job);
    ev.set_worker_id(job.lease_worker_id());
    ClearLease(job);
    if (AttemptsUsed(job) >= job.max_attempts()) {
      ev.set_to_state(sv1::STATE_LEASED);
      w.Event(std::move(ev));
      RetryOrBury(job, w, now, false, "attempts_exhausted", RetryPolicy{}, 0, std::nullopt);
      return Status::Ok();
    }
    job.set_run_at_us(now + delay.count());
    job.set_state(delay.count() > 0 ? sv1::STATE_SCHEDULED : sv1::STATE_READY);
    ev.set_to_state(job.state());
    ev.set_run_at_us(job.run_at_us());
    w.Event(std::move(ev));
    return Status::Ok();
  };
}

storage::TransitionFn ExpireFn(Token token, RetryPolicy queue_policy,
                               std::function<double()> random, std::string payload_snapshot) {
  return [=](JobRecord& job, TransitionWriter& w, int64_t now) -> Status {
    LEDGERQ_RETURN_IF_ERROR(CheckAttempt(job, token));
    AttemptFailure f;
    f.kind = kTransient;
    f.code = "LEASE_EXPIRED";
    f.message = "no heartbeat before the lease deadline";
    f.payload_snapshot = payload_snapshot;
    EventBody ev = Ev(sv1::EVENT_LEASE_EXPIRED, job);
    ev.set_worker_id(job.lease_worker_id());
    *ev.mutable_error() = RecordError(job, now, f);
    ClearLease(job);
    ev.set_to_state(sv1::STATE_LEASED);
    w.Event(std::move(ev));
    RetryOrBury(job, w, now, false, "lease_expired", queue_policy, random(), std::nullopt);
    return Status::Ok();
  };
}

storage::TransitionFn RedriveFn() {
  return [](JobRecord& job, TransitionWriter& w, int64_t now) -> Status {
    if (job.state() != sv1::STATE_DEAD) {
      return Status::FailedPrecondition("job " + std::to_string(job.id()) + " is " +
                                        StateText(job.state()) +
                                        "; only DEAD jobs can be redriven");
    }
    if (job.payload_purged()) {
      return Status::FailedPrecondition("job " + std::to_string(job.id()) +
                                        ": its payload was purged by retention; it cannot run "
                                        "again (enqueue a new job instead)");
    }
    if (job.compensation_pending()) {
      // Its death owes a compensation job: that comes first, so a compensation never runs for
      // a job that was redriven (and may since have succeeded), and each death gets its own.
      return Status::FailedPrecondition(
          "job " + std::to_string(job.id()) +
          ": its on-dead-letter compensation job is not enqueued yet; redrive it once "
          "`ledgerq job " +
          std::to_string(job.id()) + "` shows compensated_by");
    }
    EventBody ev = Ev(sv1::EVENT_REDRIVEN, job);
    ev.set_reason(job.dead_reason());
    job.set_attempt_budget_base(job.attempts());  // a fresh budget; attempt numbers keep growing
    job.clear_dead_reason();
    job.set_run_at_us(now);
    job.set_state(sv1::STATE_READY);
    ev.set_to_state(job.state());
    w.Event(std::move(ev));
    return Status::Ok();
  };
}

storage::TransitionFn UnleaseFn(Token token) {
  return [=](JobRecord& job, TransitionWriter& w, int64_t now) -> Status {
    LEDGERQ_RETURN_IF_ERROR(CheckAttempt(job, token));
    EventBody ev = Ev(sv1::EVENT_RELEASED, job);
    ev.set_worker_id(job.lease_worker_id());
    ev.set_reason("client_gone");
    ClearLease(job);
    job.set_attempt_budget_base(job.attempt_budget_base() + 1);
    job.set_run_at_us(now);
    job.set_state(sv1::STATE_READY);
    ev.set_to_state(job.state());
    w.Event(std::move(ev));
    return Status::Ok();
  };
}

}  // namespace ledgerq::scheduler
