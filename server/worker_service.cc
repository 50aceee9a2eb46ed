#include "server/worker_service.h"

#include <google/protobuf/util/time_util.h>

#include <charconv>
#include <deque>
#include <limits>
#include <map>
#include <memory>
#include <tuple>

#include "server/job_mapping.h"
#include "server/job_service.h"
#include "server/payload_snapshot.h"
#include "server/remediation.h"
#include "server/schedules.h"

namespace ledgerq::server {
namespace {

using google::protobuf::util::TimeUtil;
using std::chrono::microseconds;

// Only for a duration within CheckDuration's bounds: TimeUtil's conversion overflows int64 (UB)
// on huge seconds.
microseconds Us(const google::protobuf::Duration& d) {
  return microseconds(TimeUtil::DurationToMicroseconds(d));
}

Status CheckToken(const v1::LeaseToken& t, const std::string& field) {
  if (t.job_id() == 0) return Status::InvalidArgument(field + ".job_id: must be > 0");
  if (t.attempt() == 0) return Status::InvalidArgument(field + ".attempt: must be > 0");
  if (!t.nonce().empty() && t.nonce().size() != scheduler::kLeaseNonceBytes) {
    return Status::InvalidArgument(
        field + ".nonce: must be the " + std::to_string(scheduler::kLeaseNonceBytes) +
        " bytes the lease gave, got " + std::to_string(t.nonce().size()));
  }
  return Status::Ok();
}

scheduler::Token ToToken(const v1::LeaseToken& t) { return {t.job_id(), t.attempt(), t.nonce()}; }

Status CheckDuration(const google::protobuf::Duration& d, microseconds max,
                     const std::string& field, const std::string& max_text) {
  // Bound the seconds before converting, so a huge value cannot overflow into a small one.
  const int64_t max_seconds = std::chrono::duration_cast<std::chrono::seconds>(max).count();
  if (d.seconds() < 0 || d.nanos() < 0 || d.nanos() > 999'999'999 || d.seconds() > max_seconds ||
      Us(d) > max) {
    return Status::InvalidArgument(field + ": must be between 0 and " + max_text);
  }
  return Status::Ok();
}

// A Lease call is a reactor parked in the dispatcher; OnCancel (client gone) unparks it.
class LeaseReactor final : public grpc::ServerUnaryReactor {
 public:
  LeaseReactor(scheduler::Dispatcher* d, metrics::Metrics* m, Clock* clock, v1::LeaseResponse* resp,
               bool payloads)
      : dispatcher_(d), metrics_(m), clock_(clock), resp_(resp), payloads_(payloads) {}

  void Start(scheduler::LeaseParams params) {
    id_ = dispatcher_->Lease(std::move(params),
                             [this](Result<std::vector<scheduler::LeasedJob>> r) { Answer(r); });
  }

  void OnCancel() override { dispatcher_->CancelLease(id_); }
  void OnDone() override { delete this; }

 private:
  void Answer(const Result<std::vector<scheduler::LeasedJob>>& r) {
    grpc::Status st = ToGrpcStatus(r.status());
    if (r.ok()) {
      const int64_t now = clock_->WallMicros();
      for (const auto& lj : *r) {
        auto* out = resp_->add_jobs();
        *out->mutable_job() = ToApiJob(lj.job, now);
        out->mutable_job()->set_payload(lj.payload);
        out->mutable_token()->set_job_id(lj.job.id());
        out->mutable_token()->set_attempt(lj.job.attempts());
        out->mutable_token()->set_nonce(lj.job.lease_nonce());
        *out->mutable_deadline() = TimestampFromMicros(lj.deadline_us);
        if (lj.checkpoint) out->set_checkpoint(*lj.checkpoint);
        out->set_tracestate(lj.job.tracestate());
        out->set_traceparent(lj.job.attempt_traceparent().empty() ? lj.job.traceparent()
                                                                  : lj.job.attempt_traceparent());
        if (!payloads_) OmitPayload(out->mutable_job());
      }
    }
    FinishCall(metrics_, this, "Lease", st);
  }

  scheduler::Dispatcher* dispatcher_;
  metrics::Metrics* metrics_;
  Clock* clock_;
  v1::LeaseResponse* resp_;
  bool payloads_;
  uint64_t id_ = 0;
};

// One result per item of a Redrive or ResolveAttention call; returns how many succeeded.
// The results for `ids` in order: NOT_FOUND for the hidden ones (outside the caller's queues,
// worded as for a job that does not exist), the others from `visible` in turn.
std::vector<Result<storage::JobRecord>> WithHidden(
    const std::vector<uint64_t>& ids, const std::vector<bool>& hidden,
    std::vector<Result<storage::JobRecord>> visible) {
  std::vector<Result<storage::JobRecord>> out;
  out.reserve(ids.size());
  for (size_t i = 0, next = 0; i < ids.size(); ++i) {
    out.push_back(
        hidden[i] ? Result<storage::JobRecord>(Status::NotFound(Authorizer::JobNotFound(ids[i])))
                  : std::move(visible[next++]));
  }
  return out;
}

uint64_t AddResults(const std::vector<Result<storage::JobRecord>>& rs, int64_t now, bool payloads,
                    v1::RedriveResponse* resp) {
  uint64_t n = 0;
  for (const auto& r : rs) {
    auto* out = resp->add_results();
    if (r.ok()) {
      ++n;
      *out->mutable_ok()->mutable_job() = ToApiJob(*r, now);
      if (!payloads) OmitPayload(out->mutable_ok()->mutable_job());
    } else {
      out->mutable_error()->set_code(static_cast<int>(ToGrpcCode(r.status().code())));
      out->mutable_error()->set_message(r.status().message());
    }
  }
  return n;
}

v1::QueueInfo ToQueueInfo(const scheduler::QueueStats& s) {
  v1::QueueInfo q;
  q.set_name(s.name);
  q.set_paused(s.paused);
  q.set_scheduled(s.scheduled);
  q.set_ready(s.ready);
  q.set_leased(s.leased);
  q.set_succeeded(s.succeeded);
  q.set_dead(s.dead);
  q.set_cancelled(s.cancelled);
  *q.mutable_oldest_ready_age() = DurationFromMicros(s.oldest_ready_age.count());
  auto* l = q.mutable_limits();
  l->set_rate_per_second(s.limits.rate_per_second);
  l->set_burst(s.limits.burst);
  l->set_max_concurrency(s.limits.max_concurrency);
  l->set_max_per_key(s.limits.max_per_key);
  q.set_held_back(s.held_back);
  for (const auto& c : s.circuits) {
    auto* out = q.add_circuits();
    out->set_type(c.type);
    out->set_state(scheduler::CircuitStateName(c.state));
    out->set_forced(c.forced);
    out->set_window_attempts(c.window_attempts);
    out->set_window_failures(c.window_failures);
    out->set_failure_rate(c.failure_rate);
    out->set_threshold(c.policy.threshold);
    if (c.half_open_at_us) *out->mutable_half_open_at() = TimestampFromMicros(c.half_open_at_us);
    out->set_opens(c.opens);
    *out->mutable_cooldown() = DurationFromMicros(c.cooldown.count());
    out->set_held_back(c.held_back);
    out->set_min_attempts(c.policy.min_attempts);
    *out->mutable_window() = DurationFromMicros(c.policy.window.count());
    out->set_trials(c.policy.trials);
  }
  return q;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

WorkerServiceImpl::WorkerServiceImpl(scheduler::Dispatcher* dispatcher, storage::JobStore* store,
                                     metrics::Metrics* metrics, Clock* clock, MaskFieldsFn masks,
                                     const Authorizer* auth)
    : dispatcher_(dispatcher),
      store_(store),
      metrics_(metrics),
      clock_(clock),
      masks_(std::move(masks)),
      auth_(auth ? auth : NoAuth()) {}

void WorkerServiceImpl::Finish(grpc::ServerUnaryReactor* reactor, const char* method,
                               const grpc::Status& st) {
  FinishCall(metrics_, reactor, method, st);
}

scheduler::Dispatcher::JobCallback WorkerServiceImpl::Answer(grpc::ServerUnaryReactor* reactor,
                                                             const char* method,
                                                             v1::JobResponse* resp, bool payloads) {
  return [this, reactor, method, resp, payloads](Result<storage::JobRecord> r) {
    if (r.ok()) {
      *resp->mutable_job() = ToApiJob(*r, clock_->WallMicros());
      if (!payloads) OmitPayload(resp->mutable_job());
    }
    Finish(reactor, method, ToGrpcStatus(r.status()));
  };
}

// Which of `ids` name jobs outside the caller's queues for `perm`. Each denial is counted and
// logged; the call then answers those items exactly as it answers ids that name no job, so a
// batch tells nothing more about other queues than a single call does.
static std::vector<bool> OutOfScope(const Authorizer& auth, const storage::JobStore& store,
                                    const Caller& caller, Permission perm, const char* method,
                                    const std::vector<uint64_t>& ids) {
  std::vector<bool> hidden(ids.size(), false);
  if (caller.AllQueues()) return hidden;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto job = store.GetJob(ids[i]);
    hidden[i] = job.ok() && !auth.CheckQueue(caller, perm, method, job->queue()).ok();
  }
  return hidden;
}

grpc::Status WorkerServiceImpl::AuthorizeJobs(grpc::CallbackServerContext* ctx, const char* method,
                                              const std::vector<uint64_t>& job_ids,
                                              Caller* caller) {
  grpc::Status a = auth_->Check(ctx, Permission::kWork, method, caller);
  if (!a.ok()) return a;
  // A job that is not found is left to the dispatcher to refuse.
  const std::vector<bool> hidden =
      OutOfScope(*auth_, *store_, *caller, Permission::kWork, method, job_ids);
  for (size_t i = 0; i < job_ids.size(); ++i) {
    if (hidden[i])
      return grpc::Status(grpc::StatusCode::NOT_FOUND, Authorizer::JobNotFound(job_ids[i]));
  }
  return a;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Lease(grpc::CallbackServerContext* ctx,
                                                   const v1::LeaseRequest* req,
                                                   v1::LeaseResponse* resp) {
  Caller caller;
  grpc::Status a = auth_->Check(ctx, Permission::kWork, "Lease", &caller);
  for (int i = 0; a.ok() && i < req->queues_size(); ++i) {
    a = auth_->CheckQueue(caller, Permission::kWork, "Lease", req->queues(i));
  }
  if (!a.ok()) {
    auto* reactor = ctx->DefaultReactor();
    Finish(reactor, "Lease", a);
    return reactor;
  }
  scheduler::LeaseParams p;
  Status st;
  for (const auto& q : req->queues()) {
    st = ValidateName(q, "queues");
    if (!st.ok()) break;
    p.queues.push_back(q);
  }
  p.worker_id = req->worker_id();
  p.max_jobs = req->max_jobs() ? req->max_jobs() : 1;
  if (st.ok() && req->has_lease_duration()) {
    st = CheckDuration(req->lease_duration(), std::chrono::hours(12), "lease_duration", "12h");
    if (st.ok()) p.lease_duration = Us(req->lease_duration());
  }
  if (st.ok() && req->has_wait()) {
    st = CheckDuration(req->wait(), std::chrono::seconds(60), "wait", "60s");
    if (st.ok()) p.wait = Us(req->wait());
  }
  p.principal = caller.name;
  if (st.ok()) st = scheduler::ValidateLease(p, dispatcher_->options());
  if (!st.ok()) {
    auto* reactor = ctx->DefaultReactor();
    Finish(reactor, "Lease", ToGrpcStatus(st));
    return reactor;
  }
  auto* reactor = new LeaseReactor(dispatcher_, metrics_, clock_, resp, caller.payloads());
  reactor->Start(std::move(p));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(grpc::CallbackServerContext* ctx,
                                                       const v1::HeartbeatRequest* req,
                                                       v1::HeartbeatResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kWork, "Heartbeat", &caller); !a.ok()) {
    Finish(reactor, "Heartbeat", a);
    return reactor;
  }
  Status st;
  if (req->tokens_size() == 0 || req->tokens_size() > static_cast<int>(kMaxHeartbeatTokens)) {
    st = Status::InvalidArgument("tokens: give 1 to 1000 lease tokens");
  }
  std::vector<scheduler::Token> tokens;
  for (int i = 0; st.ok() && i < req->tokens_size(); ++i) {
    st = CheckToken(req->tokens(i), "tokens[" + std::to_string(i) + "]");
    tokens.push_back(ToToken(req->tokens(i)));
  }
  if (st.ok() && req->has_extend_by()) {
    st = CheckDuration(req->extend_by(), std::chrono::hours(12), "extend_by", "12h");
  }
  if (st.ok() && req->checkpoint().size() > kMaxCheckpointBytes) {
    st = Status::InvalidArgument("checkpoint: " + std::to_string(req->checkpoint().size()) +
                                 " bytes exceeds the limit of 65536 bytes");
  }
  if (!st.ok()) {
    Finish(reactor, "Heartbeat", ToGrpcStatus(st));
    return reactor;
  }
  std::optional<std::string> checkpoint;
  if (req->set_checkpoint() || !req->checkpoint().empty()) checkpoint = req->checkpoint();
  std::vector<uint64_t> ids;
  for (const auto& t : tokens) ids.push_back(t.job_id);
  // Tokens of jobs outside the caller's queues are lost leases, as for a job that is not there.
  auto hidden = std::make_shared<std::vector<bool>>(
      OutOfScope(*auth_, *store_, caller, Permission::kWork, "Heartbeat", ids));
  auto all = std::make_shared<std::vector<scheduler::Token>>(tokens);
  std::vector<scheduler::Token> visible;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!(*hidden)[i]) visible.push_back(std::move(tokens[i]));
  }
  auto answer = [this, reactor, resp, hidden,
                 all](Result<std::vector<scheduler::HeartbeatOutcome>> r) {
    if (r.ok()) {
      size_t next = 0;
      for (size_t i = 0; i < all->size(); ++i) {
        scheduler::HeartbeatOutcome o;
        if ((*hidden)[i]) {
          o.token = (*all)[i];
          o.lost = true;
          o.message = scheduler::LeaseLostText(o.token);
        } else {
          o = (*r)[next++];
        }
        auto* out = resp->add_results();
        out->mutable_token()->set_job_id(o.token.job_id);
        out->mutable_token()->set_attempt(o.token.attempt);
        out->mutable_token()->set_nonce(o.token.nonce);
        out->set_lease_lost(o.lost);
        if (!o.lost) *out->mutable_deadline() = TimestampFromMicros(o.deadline_us);
        out->set_message(o.message);
      }
    }
    Finish(reactor, "Heartbeat", ToGrpcStatus(r.status()));
  };
  if (visible.empty()) {
    answer(std::vector<scheduler::HeartbeatOutcome>{});
    return reactor;
  }
  dispatcher_->Heartbeat(std::move(visible),
                         req->has_extend_by() ? Us(req->extend_by()) : microseconds(0),
                         std::move(checkpoint), caller.name, std::move(answer));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Complete(grpc::CallbackServerContext* ctx,
                                                      const v1::CompleteRequest* req,
                                                      v1::JobResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = AuthorizeJobs(ctx, "Complete", {req->token().job_id()}, &caller); !a.ok()) {
    Finish(reactor, "Complete", a);
    return reactor;
  }
  Status st = CheckToken(req->token(), "token");
  if (st.ok() && req->result().size() > kMaxResultBytes) {
    st = Status::InvalidArgument("result: " + std::to_string(req->result().size()) +
                                 " bytes exceeds the limit of 1048576 bytes");
  }
  if (!st.ok()) {
    Finish(reactor, "Complete", ToGrpcStatus(st));
    return reactor;
  }
  dispatcher_->Complete(ToToken(req->token()), req->result(), caller.name,
                        Answer(reactor, "Complete", resp, caller.payloads()));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::CompleteBatch(grpc::CallbackServerContext* ctx,
                                                           const v1::CompleteBatchRequest* req,
                                                           v1::CompleteBatchResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kWork, "CompleteBatch", &caller); !a.ok()) {
    Finish(reactor, "CompleteBatch", a);
    return reactor;
  }
  Status st;
  if (req->items_size() == 0 || req->items_size() > 1000) {
    st = Status::InvalidArgument("items: must hold 1 to 1000 items, got " +
                                 std::to_string(req->items_size()));
  }
  std::vector<std::pair<scheduler::Token, std::string>> items;
  for (int i = 0; st.ok() && i < req->items_size(); ++i) {
    const auto& item = req->items(i);
    const std::string field = "items[" + std::to_string(i) + "]";
    st = CheckToken(item.token(), field + ".token");
    if (st.ok() && item.result().size() > kMaxResultBytes) {
      st = Status::InvalidArgument(field + ".result: exceeds the limit of 1048576 bytes");
    }
    items.emplace_back(ToToken(item.token()), item.result());
  }
  if (!st.ok()) {
    Finish(reactor, "CompleteBatch", ToGrpcStatus(st));
    return reactor;
  }
  // Items of jobs outside the caller's queues fail as items naming no job do.
  std::vector<uint64_t> ids;
  for (const auto& item : items) ids.push_back(item.first.job_id);
  auto hidden = std::make_shared<std::vector<bool>>(
      OutOfScope(*auth_, *store_, caller, Permission::kWork, "CompleteBatch", ids));
  std::vector<std::pair<scheduler::Token, std::string>> visible;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!(*hidden)[i]) visible.push_back(std::move(items[i]));
  }
  auto answer = [this, reactor, resp, hidden, ids,
                 payloads = caller.payloads()](std::vector<Result<storage::JobRecord>> visible_rs) {
    const int64_t now = clock_->WallMicros();
    const auto rs = WithHidden(ids, *hidden, std::move(visible_rs));
    for (const auto& r : rs) {
      auto* out = resp->add_results();
      if (r.ok()) {
        *out->mutable_job() = ToApiJob(*r, now);
        if (!payloads) OmitPayload(out->mutable_job());
      } else {
        out->mutable_error()->set_code(static_cast<int>(ToGrpcCode(r.status().code())));
        out->mutable_error()->set_message(r.status().message());
      }
    }
    Finish(reactor, "CompleteBatch", grpc::Status::OK);
  };
  if (visible.empty()) {
    answer({});
    return reactor;
  }
  dispatcher_->CompleteMany(std::move(visible), caller.name, std::move(answer));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Fail(grpc::CallbackServerContext* ctx,
                                                  const v1::FailRequest* req,
                                                  v1::JobResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = AuthorizeJobs(ctx, "Fail", {req->token().job_id()}, &caller); !a.ok()) {
    Finish(reactor, "Fail", a);
    return reactor;
  }
  Status st = CheckToken(req->token(), "token");
  const auto& e = req->error();
  if (st.ok() && e.kind() != v1::ERROR_KIND_TRANSIENT && e.kind() != v1::ERROR_KIND_PERMANENT) {
    st = Status::InvalidArgument("error.kind: must be TRANSIENT or PERMANENT");
  }
  if (st.ok() && e.code().size() > 128)
    st = Status::InvalidArgument("error.code: longer than 128 bytes");
  if (st.ok() && e.message().size() > kMaxErrorMessageBytes) {
    st = Status::InvalidArgument("error.message: longer than 4096 bytes");
  }
  if (st.ok() && e.details().size() > kMaxErrorDetailsBytes) {
    st = Status::InvalidArgument("error.details: longer than 16384 bytes");
  }
  std::optional<microseconds> retry_after;
  if (st.ok() && req->has_retry_after()) {
    st = CheckDuration(req->retry_after(), std::chrono::hours(24 * 7), "retry_after", "7d");
    if (st.ok()) retry_after = Us(req->retry_after());
  }
  if (!st.ok()) {
    Finish(reactor, "Fail", ToGrpcStatus(st));
    return reactor;
  }
  scheduler::AttemptFailure f;
  f.kind = e.kind();
  f.code = e.code();
  f.message = e.message();
  f.details = e.details();
  // Failure context: where the report came from, and what the payload looked like (masked).
  f.worker_host = ctx->peer();
  if (auto colon = f.worker_host.rfind(':'); colon != std::string::npos && colon > 5) {
    f.worker_host.resize(colon);  // "ipv4:10.0.0.7:53422" -> "ipv4:10.0.0.7"
  }
  if (auto job = store_->GetJob(req->token().job_id()); job.ok()) {
    auto payload = store_->GetPayload(job->id());
    if (payload.ok())
      f.payload_snapshot = PayloadSnapshot(*payload, masks_(job->queue(), job->type()));
  }
  dispatcher_->Fail(ToToken(req->token()), std::move(f), retry_after, caller.name,
                    Answer(reactor, "Fail", resp, caller.payloads()));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Release(grpc::CallbackServerContext* ctx,
                                                     const v1::ReleaseRequest* req,
                                                     v1::JobResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = AuthorizeJobs(ctx, "Release", {req->token().job_id()}, &caller); !a.ok()) {
    Finish(reactor, "Release", a);
    return reactor;
  }
  Status st = CheckToken(req->token(), "token");
  if (st.ok() && req->has_delay()) {
    st = CheckDuration(req->delay(), std::chrono::hours(24 * 366), "delay", "1 year");
  }
  if (!st.ok()) {
    Finish(reactor, "Release", ToGrpcStatus(st));
    return reactor;
  }
  dispatcher_->Release(ToToken(req->token()), req->has_delay() ? Us(req->delay()) : microseconds(0),
                       caller.name, Answer(reactor, "Release", resp, caller.payloads()));
  return reactor;
}

// ---------------------------------------------------------------------------------------------

AdminServiceImpl::AdminServiceImpl(scheduler::Dispatcher* dispatcher, storage::JobStore* store,
                                   metrics::Metrics* metrics, Clock* clock, const Authorizer* auth)
    : dispatcher_(dispatcher),
      store_(store),
      metrics_(metrics),
      clock_(clock),
      auth_(auth ? auth : NoAuth()) {}

void AdminServiceImpl::Finish(grpc::ServerUnaryReactor* reactor, const char* method,
                              const grpc::Status& st) {
  FinishCall(metrics_, reactor, method, st);
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListQueues(grpc::CallbackServerContext* ctx,
                                                       const v1::ListQueuesRequest*,
                                                       v1::ListQueuesResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kList, "ListQueues", &caller); !a.ok()) {
    Finish(reactor, "ListQueues", a);
    return reactor;
  }
  dispatcher_->ListQueues([this, reactor, resp, caller](std::vector<scheduler::QueueStats> qs) {
    for (const auto& q : qs) {
      if (caller.AllowsQueue(q.name)) *resp->add_queues() = ToQueueInfo(q);
    }
    Finish(reactor, "ListQueues", grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::SetPaused(grpc::CallbackServerContext* ctx,
                                                      const v1::QueueRequest* req,
                                                      v1::QueueInfo* resp, bool paused,
                                                      const char* method) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kPause, method, &caller, req->queue()); !a.ok()) {
    Finish(reactor, method, a);
    return reactor;
  }
  Status st = ValidateName(req->queue(), "queue");
  if (!st.ok()) {
    Finish(reactor, method, ToGrpcStatus(st));
    return reactor;
  }
  dispatcher_->SetPaused(req->queue(), paused, caller.name,
                         [this, reactor, resp, method](Result<scheduler::QueueStats> r) {
                           if (r.ok()) *resp = ToQueueInfo(*r);
                           Finish(reactor, method, ToGrpcStatus(r.status()));
                         });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::SetQueueLimits(grpc::CallbackServerContext* ctx,
                                                           const v1::SetQueueLimitsRequest* req,
                                                           v1::QueueInfo* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kLimits, "SetQueueLimits", &caller, req->queue());
      !a.ok()) {
    Finish(reactor, "SetQueueLimits", a);
    return reactor;
  }
  Status st = ValidateName(req->queue(), "queue");
  if (st.ok() && !req->has_rate_per_second() && !req->has_burst() && !req->has_max_concurrency() &&
      !req->has_max_per_key()) {
    st = Status::InvalidArgument(
        "limits: give at least one of rate_per_second, burst, max_concurrency, max_per_key");
  }
  if (!st.ok()) {
    Finish(reactor, "SetQueueLimits", ToGrpcStatus(st));
    return reactor;
  }
  scheduler::LimitsUpdate u;
  if (req->has_rate_per_second()) u.rate_per_second = req->rate_per_second();
  if (req->has_burst()) u.burst = req->burst();
  if (req->has_max_concurrency()) u.max_concurrency = req->max_concurrency();
  if (req->has_max_per_key()) u.max_per_key = req->max_per_key();
  dispatcher_->SetLimits(req->queue(), u, caller.name,
                         [this, reactor, resp](Result<scheduler::QueueStats> r) {
                           if (r.ok()) *resp = ToQueueInfo(*r);
                           Finish(reactor, "SetQueueLimits", ToGrpcStatus(r.status()));
                         });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::SetCircuit(grpc::CallbackServerContext* ctx,
                                                       const v1::SetCircuitRequest* req,
                                                       v1::QueueInfo* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kLimits, "SetCircuit", &caller, req->queue());
      !a.ok()) {
    Finish(reactor, "SetCircuit", a);
    return reactor;
  }
  Status st = ValidateName(req->queue(), "queue");
  if (st.ok()) st = ValidateName(req->type(), "type");
  using Forced = scheduler::CircuitBreaker::Forced;
  Forced mode = Forced::kNone;
  if (st.ok()) {
    if (req->mode() == "open") {
      mode = Forced::kOpen;
    } else if (req->mode() == "closed") {
      mode = Forced::kClosed;
    } else if (req->mode() != "auto") {
      st = Status::InvalidArgument("mode: must be open, closed or auto, got \"" + req->mode() +
                                   "\"");
    }
  }
  if (!st.ok()) {
    Finish(reactor, "SetCircuit", ToGrpcStatus(st));
    return reactor;
  }
  dispatcher_->SetCircuit(req->queue(), req->type(), mode, caller.name,
                          [this, reactor, resp](Result<scheduler::QueueStats> r) {
                            if (r.ok()) *resp = ToQueueInfo(*r);
                            Finish(reactor, "SetCircuit", ToGrpcStatus(r.status()));
                          });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::PauseQueue(grpc::CallbackServerContext* ctx,
                                                       const v1::QueueRequest* req,
                                                       v1::QueueInfo* resp) {
  return SetPaused(ctx, req, resp, true, "PauseQueue");
}

grpc::ServerUnaryReactor* AdminServiceImpl::ResumeQueue(grpc::CallbackServerContext* ctx,
                                                        const v1::QueueRequest* req,
                                                        v1::QueueInfo* resp) {
  return SetPaused(ctx, req, resp, false, "ResumeQueue");
}

namespace {

struct Page {
  uint32_t size = 100;
  uint64_t after = 0;
};

Result<Page> ParsePage(const v1::ListJobsRequest& req, bool queue_optional = false) {
  Page p;
  if (!queue_optional || !req.queue().empty()) {
    LEDGERQ_RETURN_IF_ERROR(ValidateName(req.queue(), "queue"));
  }
  if (!req.type().empty()) LEDGERQ_RETURN_IF_ERROR(ValidateName(req.type(), "type"));
  if (req.page_size() > 1000) {
    return Status::InvalidArgument("page_size: at most 1000, got " +
                                   std::to_string(req.page_size()));
  }
  if (req.page_size()) p.size = req.page_size();
  if (!req.page_token().empty()) {
    const std::string& t = req.page_token();
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), p.after);
    if (ec != std::errc() || end != t.data() + t.size() ||
        p.after == std::numeric_limits<uint64_t>::max()) {
      return Status::InvalidArgument("page_token: not a token this server gave out");
    }
  }
  return p;
}

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::ListJobs(grpc::CallbackServerContext* ctx,
                                                     const v1::ListJobsRequest* req,
                                                     v1::ListJobsResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kList, "ListJobs", &caller, req->queue()); !a.ok()) {
    Finish(reactor, "ListJobs", a);
    return reactor;
  }
  auto page = ParsePage(*req);
  if (!page.ok()) {
    Finish(reactor, "ListJobs", ToGrpcStatus(page.status()));
    return reactor;
  }
  // A scan of the jobs family from the page token, bounded per call so one request never holds
  // a gRPC thread for long: a page may come back short with a token to go on from.
  constexpr size_t kMaxScanned = 200'000;
  size_t scanned = 0;
  uint64_t last = page->after;
  const int64_t now = clock_->WallMicros();
  bool more = false;
  Status st = store_->ScanJobs(
      [&](const storage::JobRecord& rec) {
        last = rec.id();
        if (++scanned > kMaxScanned || resp->jobs_size() >= static_cast<int>(page->size)) {
          more = true;
          return false;
        }
        if (rec.queue() != req->queue()) return true;
        if (!req->type().empty() && rec.type() != req->type()) return true;
        v1::Job job = ToApiJob(rec, now);
        if (req->state() != v1::JOB_STATE_UNSPECIFIED && job.state() != req->state()) return true;
        if (!caller.payloads()) OmitPayload(&job);
        *resp->add_jobs() = std::move(job);
        return true;
      },
      page->after + 1);
  if (more) resp->set_next_page_token(std::to_string(last - 1));
  Finish(reactor, "ListJobs", ToGrpcStatus(st));
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListDeadLetters(grpc::CallbackServerContext* ctx,
                                                            const v1::ListJobsRequest* req,
                                                            v1::ListJobsResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kList, "ListDeadLetters", &caller, req->queue());
      !a.ok()) {
    Finish(reactor, "ListDeadLetters", a);
    return reactor;
  }
  // needs_attention: from the store's small index of those jobs, across the caller's queues when
  // no queue is given.
  auto page = ParsePage(*req, /*queue_optional=*/req->needs_attention());
  if (!page.ok()) {
    Finish(reactor, "ListDeadLetters", ToGrpcStatus(page.status()));
    return reactor;
  }
  const uint32_t size = page->size;
  if (req->needs_attention()) {
    constexpr size_t kChunk = 256;
    const int64_t now = clock_->WallMicros();
    uint64_t after = page->after;
    bool more = false;
    while (!more) {
      auto ids = store_->ListNeedsAttention(req->queue(), after, kChunk);
      if (!ids.ok()) {
        Finish(reactor, "ListDeadLetters", ToGrpcStatus(ids.status()));
        return reactor;
      }
      for (uint64_t id : *ids) {
        auto rec = store_->GetJob(id);
        if (!rec.ok() || !caller.AllowsQueue(rec->queue())) continue;
        if (!req->type().empty() && rec->type() != req->type()) continue;
        if (resp->jobs_size() >= static_cast<int>(size)) {
          more = true;
          break;
        }
        after = id;
        auto* job = resp->add_jobs();
        *job = ToApiJob(*rec, now);
        if (!caller.payloads()) OmitPayload(job);
      }
      if (ids->size() < kChunk) break;
      if (!more) after = ids->back();
    }
    if (more) resp->set_next_page_token(std::to_string(resp->jobs(resp->jobs_size() - 1).id()));
    Finish(reactor, "ListDeadLetters", grpc::Status::OK);
    return reactor;
  }
  dispatcher_->ListDeadIds(
      req->queue(), page->after, size + 1,
      [this, reactor, resp, size, payloads = caller.payloads()](std::vector<uint64_t> ids) {
        const int64_t now = clock_->WallMicros();
        for (size_t i = 0; i < ids.size() && i < size; ++i) {
          auto rec = store_->GetJob(ids[i]);
          if (!rec.ok()) continue;
          auto* job = resp->add_jobs();
          *job = ToApiJob(*rec, now);
          if (!payloads) OmitPayload(job);
        }
        if (ids.size() > size) resp->set_next_page_token(std::to_string(ids[size - 1]));
        Finish(reactor, "ListDeadLetters", grpc::Status::OK);
      });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::Redrive(grpc::CallbackServerContext* ctx,
                                                    const v1::RedriveRequest* req,
                                                    v1::RedriveResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  grpc::Status a = auth_->Check(ctx, Permission::kRedrive, "Redrive", &caller, req->queue());
  if (!a.ok()) {
    Finish(reactor, "Redrive", a);
    return reactor;
  }
  Status st;
  if (req->ids_size() > 0 && !req->queue().empty()) {
    st = Status::InvalidArgument("ids, queue: give one or the other, not both");
  } else if (req->ids_size() == 0 && req->queue().empty()) {
    st = Status::InvalidArgument("ids, queue: give job ids or a queue");
  } else if (req->ids_size() > 1000) {
    st = Status::InvalidArgument("ids: at most 1000 per call; redrive a queue for more");
  } else if (!req->queue().empty()) {
    st = ValidateName(req->queue(), "queue");
  }
  for (int i = 0; st.ok() && i < req->ids_size(); ++i) {
    if (req->ids(i) == 0)
      st = Status::InvalidArgument("ids[" + std::to_string(i) + "]: must be > 0");
  }
  if (!st.ok()) {
    Finish(reactor, "Redrive", ToGrpcStatus(st));
    return reactor;
  }
  if (!req->queue().empty()) {
    dispatcher_->RedriveQueue(req->queue(), req->limit(), caller.name,
                              [this, reactor, resp](Result<uint64_t> n) {
                                if (n.ok()) resp->set_redriven(*n);
                                Finish(reactor, "Redrive", ToGrpcStatus(n.status()));
                              });
    return reactor;
  }
  std::vector<uint64_t> ids(req->ids().begin(), req->ids().end());
  // Ids of jobs outside the caller's queues fail as ids naming no job do.
  const std::vector<bool> hidden =
      OutOfScope(*auth_, *store_, caller, Permission::kRedrive, "Redrive", ids);
  std::vector<uint64_t> visible;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!hidden[i]) visible.push_back(ids[i]);
  }
  auto answer = [this, reactor, resp, ids, hidden,
                 payloads = caller.payloads()](std::vector<Result<storage::JobRecord>> rs) {
    const uint64_t n =
        AddResults(WithHidden(ids, hidden, std::move(rs)), clock_->WallMicros(), payloads, resp);
    resp->set_redriven(n);
    Finish(reactor, "Redrive", grpc::Status::OK);
  };
  if (visible.empty()) {
    answer({});
    return reactor;
  }
  dispatcher_->Redrive(std::move(visible), caller.name, std::move(answer));
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ResolveAttention(grpc::CallbackServerContext* ctx,
                                                             const v1::ResolveAttentionRequest* req,
                                                             v1::RedriveResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  grpc::Status a = auth_->Check(ctx, Permission::kRedrive, "ResolveAttention", &caller);
  if (!a.ok()) {
    Finish(reactor, "ResolveAttention", a);
    return reactor;
  }
  Status st;
  if (req->ids_size() == 0) {
    st = Status::InvalidArgument("ids: give at least one dead job id");
  } else if (req->ids_size() > 1000) {
    st = Status::InvalidArgument("ids: at most 1000 per call, got " +
                                 std::to_string(req->ids_size()));
  } else if (req->note().size() > 1024) {
    st = Status::InvalidArgument("note: longer than 1024 bytes (" +
                                 std::to_string(req->note().size()) + ")");
  }
  for (int i = 0; st.ok() && i < req->ids_size(); ++i) {
    if (req->ids(i) == 0) {
      st = Status::InvalidArgument("ids[" + std::to_string(i) + "]: must be > 0");
    }
  }
  if (!st.ok()) {
    Finish(reactor, "ResolveAttention", ToGrpcStatus(st));
    return reactor;
  }
  std::vector<uint64_t> ids(req->ids().begin(), req->ids().end());
  // Ids of jobs outside the caller's queues fail as ids naming no job do.
  const std::vector<bool> hidden =
      OutOfScope(*auth_, *store_, caller, Permission::kRedrive, "ResolveAttention", ids);
  std::vector<storage::TransitionItem> items;
  items.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (!hidden[i]) items.push_back({ids[i], ResolveAttentionFn(req->note())});
  }
  auto answer = [this, reactor, resp, ids, hidden,
                 payloads = caller.payloads()](std::vector<Result<storage::JobRecord>> rs) {
    const uint64_t n =
        AddResults(WithHidden(ids, hidden, std::move(rs)), clock_->WallMicros(), payloads, resp);
    resp->set_redriven(n);  // here: how many were resolved
    Finish(reactor, "ResolveAttention", grpc::Status::OK);
  };
  if (items.empty()) {
    answer({});
    return reactor;
  }
  store_->Transition(std::move(items), caller.name, std::move(answer));
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListFailures(grpc::CallbackServerContext* ctx,
                                                         const v1::ListFailuresRequest* req,
                                                         v1::ListFailuresResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kList, "ListFailures", &caller, req->queue());
      !a.ok()) {
    Finish(reactor, "ListFailures", a);
    return reactor;
  }
  Status st;
  if (!req->queue().empty()) st = ValidateName(req->queue(), "queue");
  if (st.ok() && !req->type().empty()) st = ValidateName(req->type(), "type");
  microseconds since = std::chrono::hours(1);
  if (st.ok() && req->has_since()) {
    st = CheckDuration(req->since(), std::chrono::hours(24 * 30), "since", "30d");
    if (st.ok()) since = Us(req->since());
  }
  if (!st.ok()) {
    Finish(reactor, "ListFailures", ToGrpcStatus(st));
    return reactor;
  }
  struct Group {
    v1::FailureGroup g;
    std::deque<uint64_t> samples;
  };
  std::map<std::tuple<std::string, std::string, std::string>, Group> groups;
  st = store_->ScanFailures(clock_->WallMicros() - since.count(),
                            [&](int64_t at, const storage::FailureRecord& f) {
                              if (!req->queue().empty() && f.queue() != req->queue()) return;
                              if (!caller.AllowsQueue(f.queue())) return;
                              if (!req->type().empty() && f.job_type() != req->type()) return;
                              auto& grp = groups[{f.queue(), f.job_type(), f.code()}];
                              if (grp.g.count() == 0) {
                                grp.g.set_queue(f.queue());
                                grp.g.set_type(f.job_type());
                                grp.g.set_code(f.code());
                                *grp.g.mutable_first_seen() = TimestampFromMicros(at);
                              }
                              grp.g.set_count(grp.g.count() + 1);
                              grp.g.set_kind(static_cast<v1::ErrorKind>(f.kind()));
                              *grp.g.mutable_last_seen() = TimestampFromMicros(at);
                              grp.samples.push_front(f.job_id());
                              if (grp.samples.size() > 5) grp.samples.pop_back();
                            });
  std::vector<v1::FailureGroup> out;
  for (auto& [key, grp] : groups) {
    for (uint64_t id : grp.samples) grp.g.add_sample_job_ids(id);
    out.push_back(std::move(grp.g));
  }
  std::stable_sort(out.begin(), out.end(),
                   [](const auto& a, const auto& b) { return a.count() > b.count(); });
  for (auto& g : out) *resp->add_groups() = std::move(g);
  Finish(reactor, "ListFailures", ToGrpcStatus(st));
  return reactor;
}

// ---------------------------------------------------------------------------------------------
// Schedules

namespace {

v1::Schedule ScheduleAnswer(const ScheduleView& v, bool payloads) {
  v1::Schedule out = ToApiSchedule(v.rec, payloads);
  if (v.next_fire_us != 0) *out.mutable_next_fire() = TimestampFromMicros(v.next_fire_us);
  return out;
}

const grpc::Status kNoSchedules(grpc::StatusCode::UNAVAILABLE, "schedules are not running");

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::AddSchedule(grpc::CallbackServerContext* ctx,
                                                        const v1::AddScheduleRequest* req,
                                                        v1::Schedule* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  const v1::Schedule& in = req->schedule();
  grpc::Status a = auth_->Check(ctx, Permission::kSchedule, "AddSchedule", &caller, in.queue());
  if (a.ok() && req->replace() && !caller.AllQueues()) {
    // Replacing moves the schedule off its old queue: that queue must be the caller's too.
    auto old = store_->GetSchedule(in.name());
    if (old.ok()) a = auth_->CheckQueue(caller, Permission::kSchedule, "AddSchedule", old->queue());
  }
  if (!a.ok()) {
    Finish(reactor, "AddSchedule", a);
    return reactor;
  }
  if (!schedules_) {
    Finish(reactor, "AddSchedule", kNoSchedules);
    return reactor;
  }
  storage::ScheduleRecord rec;
  rec.set_name(in.name());
  rec.set_cron(in.cron());
  rec.set_queue(in.queue());
  rec.set_type(in.type());
  rec.set_payload(in.payload());
  rec.set_priority(in.priority());
  rec.set_max_attempts(in.max_attempts());
  rec.set_missed(in.missed());
  for (const auto& [k, v] : in.labels()) (*rec.mutable_labels())[k] = v;
  schedules_->Add(std::move(rec), req->replace(), caller.name,
                  [this, reactor, resp, payloads = caller.payloads()](Result<ScheduleView> v) {
                    if (v.ok()) *resp = ScheduleAnswer(*v, payloads);
                    Finish(reactor, "AddSchedule", ToGrpcStatus(v.status()));
                  });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::RemoveSchedule(grpc::CallbackServerContext* ctx,
                                                           const v1::RemoveScheduleRequest* req,
                                                           v1::Schedule* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  grpc::Status a = auth_->Check(ctx, Permission::kSchedule, "RemoveSchedule", &caller);
  if (a.ok() && !caller.AllQueues()) {  // the schedule's queue must be one of the caller's
    auto rec = store_->GetSchedule(req->name());
    if (rec.ok()) {
      a = auth_->CheckQueue(caller, Permission::kSchedule, "RemoveSchedule", rec->queue());
    }
  }
  if (!a.ok()) {
    Finish(reactor, "RemoveSchedule", a);
    return reactor;
  }
  if (!schedules_) {
    Finish(reactor, "RemoveSchedule", kNoSchedules);
    return reactor;
  }
  schedules_->Remove(
      req->name(), caller.name,
      [this, reactor, resp, payloads = caller.payloads()](Result<storage::ScheduleRecord> r) {
        if (r.ok()) *resp = ToApiSchedule(*r, payloads);
        Finish(reactor, "RemoveSchedule", ToGrpcStatus(r.status()));
      });
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListSchedules(grpc::CallbackServerContext* ctx,
                                                          const v1::ListSchedulesRequest*,
                                                          v1::ListSchedulesResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kList, "ListSchedules", &caller); !a.ok()) {
    Finish(reactor, "ListSchedules", a);
    return reactor;
  }
  if (!schedules_) {
    Finish(reactor, "ListSchedules", kNoSchedules);
    return reactor;
  }
  auto views = schedules_->List();
  if (views.ok()) {
    for (const auto& v : *views) {
      if (caller.AllowsQueue(v.rec.queue())) {
        *resp->add_schedules() = ScheduleAnswer(v, caller.payloads());
      }
    }
  }
  Finish(reactor, "ListSchedules", ToGrpcStatus(views.status()));
  return reactor;
}

}  // namespace ledgerq::server
