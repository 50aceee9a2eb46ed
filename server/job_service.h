// The producer-facing gRPC service: Enqueue, EnqueueBatch, GetJob, CancelJob. It validates,
// hands transitions to storage and answers from storage's callback once the write is durable;
// it holds no queue state and never blocks a gRPC thread on I/O.
#pragma once

#include <functional>

#include "common/clock.h"
#include "ledgerq/v1/ledgerq.grpc.pb.h"
#include "metrics/metrics.h"
#include "server/auth.h"
#include "server/job_mapping.h"
#include "storage/job_store.h"

namespace ledgerq::server {

// Told about every durable change the service made, so the dispatcher can index it.
struct JobObserver {
  std::function<void(const storage::JobRecord&)> created;
  std::function<void(const storage::JobRecord&)> cancelled;
};

class JobServiceImpl final : public v1::JobService::CallbackService {
 public:
  JobServiceImpl(storage::JobStore* store, metrics::Metrics* metrics, Clock* clock,
                 EnqueueLimits limits, JobObserver observer = {}, const Authorizer* auth = nullptr);

  grpc::ServerUnaryReactor* Enqueue(grpc::CallbackServerContext* ctx, const v1::EnqueueRequest* req,
                                    v1::EnqueueResponse* resp) override;
  grpc::ServerUnaryReactor* EnqueueBatch(grpc::CallbackServerContext* ctx,
                                         const v1::EnqueueBatchRequest* req,
                                         v1::EnqueueBatchResponse* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const v1::GetJobRequest* req,
                                   v1::Job* resp) override;
  grpc::ServerUnaryReactor* GetJobHistory(grpc::CallbackServerContext* ctx,
                                          const v1::GetJobHistoryRequest* req,
                                          v1::GetJobHistoryResponse* resp) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx,
                                      const v1::CancelJobRequest* req, v1::Job* resp) override;

 private:
  void Finish(grpc::ServerUnaryReactor* reactor, const char* method, const grpc::Status& st);
  void Record(const storage::EnqueueOutcome& outcome);
  grpc::Status AuthorizeRead(grpc::CallbackServerContext* ctx, const char* method, Caller* caller);

  storage::JobStore* store_;
  metrics::Metrics* metrics_;
  Clock* clock_;
  EnqueueLimits limits_;
  JobObserver observer_;
  const Authorizer* auth_;  // never null: NoAuth() when built without one
};

// Finishes a unary call and counts it in ledgerq_grpc_requests_total (metrics may be null).
void FinishCall(metrics::Metrics* metrics, grpc::ServerUnaryReactor* reactor, const char* method,
                const grpc::Status& st);

// GetJob lists at most this many of a job's children (the lowest ids).
inline constexpr size_t kMaxChildIds = 1000;

// The principal every request acts as when ledgerqd runs without an auth file.
inline constexpr char kAnonymous[] = "anonymous";

}  // namespace ledgerq::server
