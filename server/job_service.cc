#include "server/job_service.h"

#include <memory>

namespace ledgerq::server {
namespace {

std::string_view MetadataValue(const grpc::CallbackServerContext* ctx, std::string_view key) {
  const auto& md = ctx->client_metadata();
  auto it = md.find(grpc::string_ref(key.data(), key.size()));
  if (it == md.end()) return {};
  return {it->second.data(), it->second.size()};
}

}  // namespace

JobServiceImpl::JobServiceImpl(storage::JobStore* store, metrics::Metrics* metrics, Clock* clock,
                               EnqueueLimits limits, JobObserver observer, const Authorizer* auth)
    : store_(store),
      metrics_(metrics),
      clock_(clock),
      limits_(limits),
      observer_(std::move(observer)),
      auth_(auth ? auth : NoAuth()) {}

void FinishCall(metrics::Metrics* metrics, grpc::ServerUnaryReactor* reactor, const char* method,
                const grpc::Status& st) {
  if (metrics) metrics->GrpcRequest(method, GrpcCodeName(st.error_code()));
  reactor->Finish(st);
}

namespace {

// The store's words for a job that is not there, for an idempotency reference or a GetJob.
std::string NotFoundText(const v1::IdempotencyRef& ref) {
  return "no job with idempotency_key \"" + ref.idempotency_key() + "\" in queue \"" + ref.queue() +
         "\"";
}
std::string NotFoundText(const v1::GetJobRequest& req) {
  return req.has_id() ? Authorizer::JobNotFound(req.id()) : NotFoundText(req.idempotency());
}

}  // namespace

void JobServiceImpl::Finish(grpc::ServerUnaryReactor* reactor, const char* method,
                            const grpc::Status& st) {
  FinishCall(metrics_, reactor, method, st);
}

// Authenticates a job read and refuses roles that may read no job at all; which job may be read
// is decided once it is found (CheckJobRead).
grpc::Status JobServiceImpl::AuthorizeRead(grpc::CallbackServerContext* ctx, const char* method,
                                           Caller* caller) {
  grpc::Status a = auth_->Authenticate(ctx, method, caller);
  if (!a.ok()) return a;
  if (caller->Allows(Permission::kReadJobs) || caller->Allows(Permission::kReadOwnJobs)) return a;
  return auth_->CheckQueue(*caller, Permission::kReadJobs, method, {});
}

// Lifecycle metrics and logs come from the store's durable events (server/lifecycle.h); this
// only tells the dispatcher about new jobs.
void JobServiceImpl::Record(const storage::EnqueueOutcome& o) {
  if (!o.status.ok() || o.deduplicated) return;
  if (observer_.created) observer_.created(o.job);
}

grpc::ServerUnaryReactor* JobServiceImpl::Enqueue(grpc::CallbackServerContext* ctx,
                                                  const v1::EnqueueRequest* req,
                                                  v1::EnqueueResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kEnqueue, "Enqueue", &caller, req->queue()); !a.ok()) {
    Finish(reactor, "Enqueue", a);
    return reactor;
  }
  const int64_t now = clock_->WallMicros();
  std::vector<storage::NewJob> items(1);
  Status st = ToNewJob(*req, limits_, now, MetadataValue(ctx, "traceparent"), &items[0],
                       MetadataValue(ctx, "tracestate"), caller.name);
  if (!st.ok()) {
    Finish(reactor, "Enqueue", ToGrpcStatus(st));
    return reactor;
  }
  const bool payloads = caller.payloads();
  store_->Enqueue(
      std::move(items), caller.name,
      [this, reactor, resp, payloads, caller](std::vector<storage::EnqueueOutcome> outcomes) {
        const auto& o = outcomes[0];
        if (o.status.ok()) {
          Record(o);
          *resp->mutable_job() = ToApiJob(o.job, clock_->WallMicros());
          if (!payloads) OmitPayload(resp->mutable_job());
          if (o.deduplicated && !caller.MayReadJob(o.job.queue(), o.job.submitted_by()))
            KeepOnlyIdentity(resp->mutable_job());
          resp->set_deduplicated(o.deduplicated);
        }
        Finish(reactor, "Enqueue", ToGrpcStatus(o.status));
      });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::EnqueueBatch(grpc::CallbackServerContext* ctx,
                                                       const v1::EnqueueBatchRequest* req,
                                                       v1::EnqueueBatchResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kEnqueue, "EnqueueBatch", &caller); !a.ok()) {
    Finish(reactor, "EnqueueBatch", a);
    return reactor;
  }
  const int n = req->items_size();
  if (n == 0 || n > static_cast<int>(kMaxBatchItems)) {
    Finish(reactor, "EnqueueBatch",
           grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "items: must hold 1 to 1000 items, got " + std::to_string(n)));
    return reactor;
  }
  const int64_t now = clock_->WallMicros();
  const std::string_view md_tp = MetadataValue(ctx, "traceparent");
  const std::string_view md_ts = MetadataValue(ctx, "tracestate");
  // Invalid items get their own error; the valid ones are written together in one batch.
  auto slot_of = std::make_shared<std::vector<int>>();  // index into `items` per valid request
  std::vector<storage::NewJob> items;
  items.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto* result = resp->add_results();
    storage::NewJob job;
    if (auto a =
            auth_->CheckQueue(caller, Permission::kEnqueue, "EnqueueBatch", req->items(i).queue());
        !a.ok()) {
      result->mutable_error()->set_code(static_cast<int>(a.error_code()));
      result->mutable_error()->set_message("items[" + std::to_string(i) +
                                           "].queue: " + a.error_message());
      continue;
    }
    Status st = ToNewJob(req->items(i), limits_, now, md_tp, &job, md_ts, caller.name);
    if (!st.ok()) {
      result->mutable_error()->set_code(static_cast<int>(ToGrpcCode(st.code())));
      result->mutable_error()->set_message("items[" + std::to_string(i) + "]." + st.message());
      continue;
    }
    slot_of->push_back(i);
    items.push_back(std::move(job));
  }
  if (items.empty()) {
    Finish(reactor, "EnqueueBatch", grpc::Status::OK);
    return reactor;
  }
  const bool payloads = caller.payloads();
  store_->Enqueue(
      std::move(items), caller.name,
      [this, reactor, resp, slot_of, payloads,
       caller](std::vector<storage::EnqueueOutcome> outcomes) {
        const int64_t now = clock_->WallMicros();
        for (size_t k = 0; k < outcomes.size(); ++k) {
          auto& o = outcomes[k];
          auto* result = resp->mutable_results((*slot_of)[k]);
          if (o.status.ok()) {
            Record(o);
            *result->mutable_ok()->mutable_job() = ToApiJob(o.job, now);
            if (!payloads) OmitPayload(result->mutable_ok()->mutable_job());
            if (o.deduplicated && !caller.MayReadJob(o.job.queue(), o.job.submitted_by()))
              KeepOnlyIdentity(result->mutable_ok()->mutable_job());
            result->mutable_ok()->set_deduplicated(o.deduplicated);
          } else {
            result->mutable_error()->set_code(static_cast<int>(ToGrpcCode(o.status.code())));
            result->mutable_error()->set_message(o.status.message());
          }
        }
        Finish(reactor, "EnqueueBatch", grpc::Status::OK);
      });
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* ctx,
                                                 const v1::GetJobRequest* req, v1::Job* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = AuthorizeRead(ctx, "GetJob", &caller); !a.ok()) {
    Finish(reactor, "GetJob", a);
    return reactor;
  }
  Result<storage::JobRecord> rec = Status::InvalidArgument("id or idempotency: give one");
  if (req->has_id()) {
    rec = req->id() == 0 ? Result<storage::JobRecord>(Status::InvalidArgument("id: must be > 0"))
                         : store_->GetJob(req->id());
  } else if (req->has_idempotency()) {
    const auto& ref = req->idempotency();
    Status st = CheckIdempotencyRef(ref);
    rec = st.ok() ? store_->GetJobByIdempotencyKey(ref.queue(), ref.idempotency_key())
                  : Result<storage::JobRecord>(st);
  }
  if (!rec.ok()) {
    Finish(reactor, "GetJob", ToGrpcStatus(rec.status()));
    return reactor;
  }
  if (auto a = auth_->CheckJobRead(caller, "GetJob", rec->queue(), rec->submitted_by()); !a.ok()) {
    Finish(reactor, "GetJob", Authorizer::HideJob(a, NotFoundText(*req)));
    return reactor;
  }
  *resp = ToApiJob(*rec, clock_->WallMicros());
  // Its children: jobs enqueued with it as their parent (the first kMaxChildIds).
  auto children = store_->ListChildren(rec->id(), kMaxChildIds);
  if (!children.ok()) {
    Finish(reactor, "GetJob", ToGrpcStatus(children.status()));
    return reactor;
  }
  for (uint64_t id : *children) resp->add_child_job_ids(id);
  if (!caller.payloads()) {
    OmitPayload(resp);  // not even read from storage
    Finish(reactor, "GetJob", grpc::Status::OK);
    return reactor;
  }
  auto payload = store_->GetPayload(rec->id());
  if (payload.ok()) {
    resp->set_payload(std::move(payload).value());
  } else if (payload.status().code() != Code::kNotFound) {
    Finish(reactor, "GetJob", ToGrpcStatus(payload.status()));
    return reactor;
  }
  if (rec->result_size() > 0 && !rec->payload_purged()) {  // purged: both gone, digests kept
    auto result = store_->GetResult(rec->id());
    if (!result.ok()) {
      Finish(reactor, "GetJob", ToGrpcStatus(result.status()));
      return reactor;
    }
    resp->set_result(std::move(result).value());
  }
  Finish(reactor, "GetJob", grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::GetJobHistory(grpc::CallbackServerContext* ctx,
                                                        const v1::GetJobHistoryRequest* req,
                                                        v1::GetJobHistoryResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = AuthorizeRead(ctx, "GetJobHistory", &caller); !a.ok()) {
    Finish(reactor, "GetJobHistory", a);
    return reactor;
  }
  std::vector<uint64_t> ids;
  Status st;
  if (req->has_id()) {
    if (req->id() == 0) st = Status::InvalidArgument("id: must be > 0");
    ids.push_back(req->id());
  } else if (req->has_idempotency()) {
    const auto& ref = req->idempotency();
    st = CheckIdempotencyRef(ref);
    if (st.ok()) {
      auto job = store_->GetJobByIdempotencyKey(ref.queue(), ref.idempotency_key());
      if (job.ok())
        ids.push_back(job->id());
      else
        st = job.status();
    }
  } else if (req->selector_case() == v1::GetJobHistoryRequest::kTraceId) {
    const std::string& t = req->trace_id();
    if (t.size() != 32 || t.find_first_not_of("0123456789abcdef") != std::string::npos) {
      st = Status::InvalidArgument("trace_id: must be 32 lowercase hex digits");
    } else {
      auto found = store_->JobsByTraceId(t);
      if (found.ok())
        ids = std::move(found).value();
      else
        st = found.status();
      if (st.ok() && ids.empty()) st = Status::NotFound("no job was submitted in trace " + t);
    }
  } else {
    st = Status::InvalidArgument("id, idempotency or trace_id: give one");
  }
  const int64_t now = clock_->WallMicros();
  const bool by_trace = req->selector_case() == v1::GetJobHistoryRequest::kTraceId;
  uint64_t first_denied = 0;
  for (uint64_t id : ids) {
    if (!st.ok()) break;
    auto job = store_->GetJob(id);
    if (!job.ok()) {
      st = job.status();
      break;
    }
    // A trace may span queues and producers: the caller sees the jobs it may read, and is
    // refused only when that is none of them.
    if (by_trace) {
      if (!caller.MayReadJob(job->queue(), job->submitted_by())) {
        if (first_denied == 0) first_denied = id;
        continue;
      }
    } else if (auto a =
                   auth_->CheckJobRead(caller, "GetJobHistory", job->queue(), job->submitted_by());
               !a.ok()) {
      Finish(reactor, "GetJobHistory",
             Authorizer::HideJob(a, req->has_id() ? Authorizer::JobNotFound(id)
                                                  : NotFoundText(req->idempotency())));
      return reactor;
    }
    auto events = store_->GetJobEvents(id);
    if (!events.ok()) {
      st = events.status();
      break;
    }
    auto* h = resp->add_jobs();
    *h->mutable_job() = ToApiJob(*job, now);
    for (const auto& ev : *events) {
      v1::JobEvent* out = h->add_events();
      *out = ToApiEvent(ev);
      // Events keep only the snapshot's digest; the job record keeps the snapshot itself.
      if (out->has_error() && out->error().payload_snapshot().empty()) {
        for (const auto& e : job->errors()) {
          if (e.attempt() == out->error().attempt() && e.at_us() == ev.error().at_us()) {
            out->mutable_error()->set_payload_snapshot(e.payload_snapshot());
            break;
          }
        }
      }
    }
    if (!caller.payloads()) {
      OmitPayload(h->mutable_job());
      for (auto& ev : *h->mutable_events()) OmitPayload(&ev);
    }
  }
  if (st.ok() && resp->jobs_size() == 0 && first_denied != 0) {
    auto job = store_->GetJob(first_denied);
    Finish(reactor, "GetJobHistory",
           Authorizer::HideJob(
               auth_->CheckJobRead(caller, "GetJobHistory", job.ok() ? job->queue() : "",
                                   job.ok() ? job->submitted_by() : ""),
               "no job was submitted in trace " + req->trace_id()));
    return reactor;
  }
  Finish(reactor, "GetJobHistory", ToGrpcStatus(st));
  return reactor;
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* ctx,
                                                    const v1::CancelJobRequest* req,
                                                    v1::Job* resp) {
  auto* reactor = ctx->DefaultReactor();
  Caller caller;
  if (auto a = auth_->Check(ctx, Permission::kCancel, "CancelJob", &caller); !a.ok()) {
    Finish(reactor, "CancelJob", a);
    return reactor;
  }
  if (req->id() == 0) {
    Finish(reactor, "CancelJob",
           grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id: must be > 0"));
    return reactor;
  }
  if (req->reason().size() > 1024) {
    Finish(reactor, "CancelJob",
           grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "reason: longer than 1024 bytes"));
    return reactor;
  }
  if (caller.principal != nullptr) {  // auth on: the job's queue must be one of the caller's
    auto job = store_->GetJob(req->id());
    if (!job.ok()) {
      Finish(reactor, "CancelJob", ToGrpcStatus(job.status()));
      return reactor;
    }
    if (auto a = auth_->CheckQueue(caller, Permission::kCancel, "CancelJob", job->queue());
        !a.ok()) {
      Finish(reactor, "CancelJob", Authorizer::HideJob(a, Authorizer::JobNotFound(req->id())));
      return reactor;
    }
  }
  const bool payloads = caller.payloads();
  store_->Cancel(req->id(), caller.name, req->reason(),
                 [this, reactor, resp, payloads](Result<storage::JobRecord> rec) {
                   if (rec.ok()) {
                     if (observer_.cancelled) observer_.cancelled(*rec);
                     *resp = ToApiJob(*rec, clock_->WallMicros());
                     if (!payloads) OmitPayload(resp);
                   }
                   Finish(reactor, "CancelJob", ToGrpcStatus(rec.status()));
                 });
  return reactor;
}

}  // namespace ledgerq::server
