// Worker- and operator-facing gRPC services. Both validate on the gRPC thread and hand every
// decision to the dispatcher, answering from its callbacks; neither holds queue state.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "ledgerq/v1/ledgerq.grpc.pb.h"
#include "metrics/metrics.h"
#include "scheduler/dispatcher.h"
#include "server/auth.h"
#include "storage/job_store.h"

namespace ledgerq::server {

class Schedules;

inline constexpr size_t kMaxCheckpointBytes = 64 * 1024;
inline constexpr size_t kMaxResultBytes = 1 << 20;
inline constexpr size_t kMaxErrorDetailsBytes = 16 * 1024;
inline constexpr size_t kMaxErrorMessageBytes = 4 * 1024;
inline constexpr size_t kMaxHeartbeatTokens = 1000;

// The words masked in the payload snapshots of a (queue, job type).
using MaskFieldsFn =
    std::function<std::vector<std::string>(const std::string& queue, const std::string& type)>;

class WorkerServiceImpl final : public v1::WorkerService::CallbackService {
 public:
  WorkerServiceImpl(scheduler::Dispatcher* dispatcher, storage::JobStore* store,
                    metrics::Metrics* metrics, Clock* clock, MaskFieldsFn masks,
                    const Authorizer* auth = nullptr);

  grpc::ServerUnaryReactor* Lease(grpc::CallbackServerContext* ctx, const v1::LeaseRequest* req,
                                  v1::LeaseResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* req,
                                      v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* Complete(grpc::CallbackServerContext* ctx,
                                     const v1::CompleteRequest* req,
                                     v1::JobResponse* resp) override;
  grpc::ServerUnaryReactor* CompleteBatch(grpc::CallbackServerContext* ctx,
                                          const v1::CompleteBatchRequest* req,
                                          v1::CompleteBatchResponse* resp) override;
  grpc::ServerUnaryReactor* Fail(grpc::CallbackServerContext* ctx, const v1::FailRequest* req,
                                 v1::JobResponse* resp) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx, const v1::ReleaseRequest* req,
                                    v1::JobResponse* resp) override;

 private:
  void Finish(grpc::ServerUnaryReactor* reactor, const char* method, const grpc::Status& st);
  scheduler::Dispatcher::JobCallback Answer(grpc::ServerUnaryReactor* reactor, const char* method,
                                            v1::JobResponse* resp, bool payloads);
  // Authenticates a call naming leased jobs and checks kWork on each job's queue.
  grpc::Status AuthorizeJobs(grpc::CallbackServerContext* ctx, const char* method,
                             const std::vector<uint64_t>& job_ids, Caller* caller);

  scheduler::Dispatcher* dispatcher_;
  storage::JobStore* store_;
  metrics::Metrics* metrics_;
  Clock* clock_;
  MaskFieldsFn masks_;
  const Authorizer* auth_;  // never null: NoAuth() when built without one
};

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  AdminServiceImpl(scheduler::Dispatcher* dispatcher, storage::JobStore* store,
                   metrics::Metrics* metrics, Clock* clock, const Authorizer* auth = nullptr);

  grpc::ServerUnaryReactor* ListQueues(grpc::CallbackServerContext* ctx,
                                       const v1::ListQueuesRequest* req,
                                       v1::ListQueuesResponse* resp) override;
  grpc::ServerUnaryReactor* PauseQueue(grpc::CallbackServerContext* ctx,
                                       const v1::QueueRequest* req, v1::QueueInfo* resp) override;
  grpc::ServerUnaryReactor* ResumeQueue(grpc::CallbackServerContext* ctx,
                                        const v1::QueueRequest* req, v1::QueueInfo* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx,
                                     const v1::ListJobsRequest* req,
                                     v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* ListDeadLetters(grpc::CallbackServerContext* ctx,
                                            const v1::ListJobsRequest* req,
                                            v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* Redrive(grpc::CallbackServerContext* ctx, const v1::RedriveRequest* req,
                                    v1::RedriveResponse* resp) override;
  // Clears needs_attention of dead jobs (server/remediation.h); one result per id.
  grpc::ServerUnaryReactor* ResolveAttention(grpc::CallbackServerContext* ctx,
                                             const v1::ResolveAttentionRequest* req,
                                             v1::RedriveResponse* resp) override;
  grpc::ServerUnaryReactor* ListFailures(grpc::CallbackServerContext* ctx,
                                         const v1::ListFailuresRequest* req,
                                         v1::ListFailuresResponse* resp) override;
  // Cron schedules (server/schedules.h); UNAVAILABLE until SetSchedules.
  grpc::ServerUnaryReactor* AddSchedule(grpc::CallbackServerContext* ctx,
                                        const v1::AddScheduleRequest* req,
                                        v1::Schedule* resp) override;
  grpc::ServerUnaryReactor* RemoveSchedule(grpc::CallbackServerContext* ctx,
                                           const v1::RemoveScheduleRequest* req,
                                           v1::Schedule* resp) override;
  grpc::ServerUnaryReactor* ListSchedules(grpc::CallbackServerContext* ctx,
                                          const v1::ListSchedulesRequest* req,
                                          v1::ListSchedulesResponse* resp) override;
  // The daemon's schedules (set once, before the server starts).
  void SetSchedules(Schedules* schedules) { schedules_ = schedules; }
  grpc::ServerUnaryReactor* SetQueueLimits(grpc::CallbackServerContext* ctx,
                                           const v1::SetQueueLimitsRequest* req,
                                           v1::QueueInfo* resp) override;
  grpc::ServerUnaryReactor* SetCircuit(grpc::CallbackServerContext* ctx,
                                       const v1::SetCircuitRequest* req,
                                       v1::QueueInfo* resp) override;

 private:
  void Finish(grpc::ServerUnaryReactor* reactor, const char* method, const grpc::Status& st);
  grpc::ServerUnaryReactor* SetPaused(grpc::CallbackServerContext* ctx, const v1::QueueRequest* req,
                                      v1::QueueInfo* resp, bool paused, const char* method);

  scheduler::Dispatcher* dispatcher_;
  storage::JobStore* store_;
  metrics::Metrics* metrics_;
  Clock* clock_;
  const Authorizer* auth_;  // never null: NoAuth() when built without one
  Schedules* schedules_ = nullptr;
};

}  // namespace ledgerq::server
