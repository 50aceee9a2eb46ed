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
};

class Client {
 public:
  explicit Client(ClientOptions options);

  [[nodiscard]] Result<v1::EnqueueResponse> Enqueue(const v1::EnqueueRequest& req);
  [[nodiscard]] Result<v1::EnqueueBatchResponse> EnqueueBatch(const v1::EnqueueBatchRequest& req);
  [[nodiscard]] Result<v1::Job> GetJob(uint64_t id);
  [[nodiscard]] Result<v1::Job> GetJobByIdempotencyKey(const std::string& queue,
                                                       const std::string& key);
  [[nodiscard]] Result<v1::Job> CancelJob(uint64_t id, const std::string& reason);

  v1::JobService::Stub* jobs() { return jobs_.get(); }
  const std::shared_ptr<grpc::Channel>& channel() { return channel_; }
  const ClientOptions& options() const { return options_; }

 private:
  // One blocking call with the configured deadline, its status converted.
  template <typename Resp, typename Req>
  Result<Resp> Call(grpc::Status (v1::JobService::Stub::*method)(grpc::ClientContext*,
                                                                  const Req&, Resp*),
                    const Req& req);

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::JobService::Stub> jobs_;
};

// Maps a gRPC status to ours, keeping the server's message. `server` names the address in
// connection errors.
Status FromGrpc(const grpc::Status& st, const std::string& server);

}  // namespace ledgerq::client
