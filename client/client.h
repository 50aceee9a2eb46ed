// The C++ client library: a thin, blocking wrapper over the ledgerq.v1 gRPC API that turns
// transport and server errors into Status with the server's message intact. Used by the CLI,
// the benchmarks and the end-to-end tests. Depends only on proto/ and common/.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "ledgerq/v1/ledgerq.grpc.pb.h"

namespace ledgerq::client {

struct ClientOptions {
  std::string server = "127.0.0.1:7400";
  std::chrono::milliseconds timeout{10'000};
  // Sent as "authorization: Bearer <token>" on every call when not empty.
  std::string token;
  // TLS: on when `tls` is set; the CA bundle to trust (empty: the system's roots) and, for
  // mTLS, the client's certificate chain and key. PEM text, not file names (LoadSecurity).
  bool tls = false;
  std::string tls_ca_pem;
  std::string tls_cert_pem;
  std::string tls_key_pem;
};

// Where a client's credentials come from: files and a token given by flags, else the
// environment (LEDGERQ_TOKEN, LEDGERQ_TLS_CA, LEDGERQ_TLS_CERT, LEDGERQ_TLS_KEY).
struct SecurityArgs {
  std::string token;
  std::string tls_ca;    // file; implies TLS
  std::string tls_cert;  // file; with tls_key, a client certificate (mTLS); implies TLS
  std::string tls_key;
};

// Fills o's token and TLS fields from `args` (falling back to the environment), reading the
// PEM files. Errors name the flag (or variable) and the file.
[[nodiscard]] Status LoadSecurity(const SecurityArgs& args, ClientOptions* o);

class Client {
 public:
  explicit Client(ClientOptions options);

  [[nodiscard]] Result<v1::EnqueueResponse> Enqueue(const v1::EnqueueRequest& req);
  [[nodiscard]] Result<v1::EnqueueBatchResponse> EnqueueBatch(const v1::EnqueueBatchRequest& req);
  [[nodiscard]] Result<v1::Job> GetJob(uint64_t id);
  [[nodiscard]] Result<v1::Job> GetJobByIdempotencyKey(const std::string& queue,
                                                       const std::string& key);
  [[nodiscard]] Result<v1::Job> CancelJob(uint64_t id, const std::string& reason);
  [[nodiscard]] Result<v1::GetJobHistoryResponse> GetJobHistory(
      const v1::GetJobHistoryRequest& req);

  // Workers. Lease blocks up to the request's wait (plus the timeout).
  [[nodiscard]] Result<v1::LeaseResponse> Lease(const v1::LeaseRequest& req);
  [[nodiscard]] Result<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& req);
  [[nodiscard]] Result<v1::JobResponse> Complete(const v1::CompleteRequest& req);
  [[nodiscard]] Result<v1::CompleteBatchResponse> CompleteBatch(
      const v1::CompleteBatchRequest& req);
  [[nodiscard]] Result<v1::JobResponse> Fail(const v1::FailRequest& req);
  [[nodiscard]] Result<v1::JobResponse> Release(const v1::ReleaseRequest& req);

  // Operators.
  [[nodiscard]] Result<v1::ListQueuesResponse> ListQueues();
  [[nodiscard]] Result<v1::QueueInfo> PauseQueue(const std::string& queue);
  [[nodiscard]] Result<v1::QueueInfo> SetQueueLimits(const v1::SetQueueLimitsRequest& req);
  // mode: open | closed | auto
  [[nodiscard]] Result<v1::QueueInfo> SetCircuit(const std::string& queue, const std::string& type,
                                                 const std::string& mode);
  [[nodiscard]] Result<v1::QueueInfo> ResumeQueue(const std::string& queue);
  [[nodiscard]] Result<v1::ListJobsResponse> ListJobs(const v1::ListJobsRequest& req);
  [[nodiscard]] Result<v1::ListJobsResponse> ListDeadLetters(const v1::ListJobsRequest& req);
  [[nodiscard]] Result<v1::RedriveResponse> Redrive(const v1::RedriveRequest& req);
  [[nodiscard]] Result<v1::RedriveResponse> ResolveAttention(
      const v1::ResolveAttentionRequest& req);
  [[nodiscard]] Result<v1::ListFailuresResponse> ListFailures(const v1::ListFailuresRequest& req);
  [[nodiscard]] Result<v1::Schedule> AddSchedule(const v1::AddScheduleRequest& req);
  [[nodiscard]] Result<v1::Schedule> RemoveSchedule(const std::string& name);
  [[nodiscard]] Result<v1::ListSchedulesResponse> ListSchedules();

  v1::JobService::Stub* jobs() { return jobs_.get(); }
  v1::WorkerService::Stub* workers() { return workers_.get(); }
  v1::AdminService::Stub* admin() { return admin_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() { return channel_; }
  // Adds this client's credentials (the bearer token) to a context of a call made directly on
  // a stub; the channel carries the TLS part.
  void Authorize(grpc::ClientContext* ctx) const;
  const ClientOptions& options() const { return options_; }

 private:
  // One blocking call with the configured deadline (plus `extra`), its status converted.
  template <typename Stub, typename Resp, typename Req>
  Result<Resp> Call(Stub* stub,
                    grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                    const Req& req, std::chrono::milliseconds extra = {});

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

// Maps a gRPC status to ours, keeping the server's message. `server` names the address in
// connection errors.
Status FromGrpc(const grpc::Status& st, const std::string& server);

}  // namespace ledgerq::client
