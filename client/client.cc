#include "client/client.h"

namespace ledgerq::client {

Status FromGrpc(const grpc::Status& st, const std::string& server) {
  using grpc::StatusCode;
  switch (st.error_code()) {
    case StatusCode::OK: return Status::Ok();
    case StatusCode::INVALID_ARGUMENT: return Status::InvalidArgument(st.error_message());
    case StatusCode::NOT_FOUND: return Status::NotFound(st.error_message());
    case StatusCode::ALREADY_EXISTS: return Status::AlreadyExists(st.error_message());
    case StatusCode::FAILED_PRECONDITION: return Status::FailedPrecondition(st.error_message());
    case StatusCode::RESOURCE_EXHAUSTED: return Status::ResourceExhausted(st.error_message());
    case StatusCode::DATA_LOSS: return Status::Corruption(st.error_message());
    case StatusCode::UNAVAILABLE:
      return Status::Unavailable("server " + server + " unavailable: " + st.error_message());
    case StatusCode::DEADLINE_EXCEEDED:
      return Status::Unavailable("server " + server + " did not answer in time");
    default:
      return Status::Internal("gRPC status " + std::to_string(st.error_code()) + ": " +
                              st.error_message());
  }
}

Client::Client(ClientOptions options) : options_(std::move(options)) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  channel_ = grpc::CreateCustomChannel(options_.server, grpc::InsecureChannelCredentials(), args);
  jobs_ = v1::JobService::NewStub(channel_);
}

template <typename Resp, typename Req>
Result<Resp> Client::Call(grpc::Status (v1::JobService::Stub::*method)(grpc::ClientContext*,
                                                                      const Req&, Resp*),
                          const Req& req) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.timeout);
  Resp resp;
  Status st = FromGrpc((jobs_.get()->*method)(&ctx, req, &resp), options_.server);
  if (!st.ok()) return st;
  return resp;
}

Result<v1::EnqueueResponse> Client::Enqueue(const v1::EnqueueRequest& req) {
  return Call(&v1::JobService::Stub::Enqueue, req);
}

Result<v1::EnqueueBatchResponse> Client::EnqueueBatch(const v1::EnqueueBatchRequest& req) {
  return Call(&v1::JobService::Stub::EnqueueBatch, req);
}

Result<v1::Job> Client::GetJob(uint64_t id) {
  v1::GetJobRequest req;
  req.set_id(id);
  return Call(&v1::JobService::Stub::GetJob, req);
}

Result<v1::Job> Client::GetJobByIdempotencyKey(const std::string& queue, const std::string& key) {
  v1::GetJobRequest req;
  req.mutable_idempotency()->set_queue(queue);
  req.mutable_idempotency()->set_idempotency_key(key);
  return Call(&v1::JobService::Stub::GetJob, req);
}

Result<v1::Job> Client::CancelJob(uint64_t id, const std::string& reason) {
  v1::CancelJobRequest req;
  req.set_id(id);
  req.set_reason(reason);
  return Call(&v1::JobService::Stub::CancelJob, req);
}

}  // namespace ledgerq::client
