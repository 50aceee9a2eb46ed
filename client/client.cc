#include "client/client.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace ledgerq::client {

Status FromGrpc(const grpc::Status& st, const std::string& server) {
  using grpc::StatusCode;
  switch (st.error_code()) {
    case StatusCode::OK:
      return Status::Ok();
    case StatusCode::INVALID_ARGUMENT:
      return Status::InvalidArgument(st.error_message());
    case StatusCode::NOT_FOUND:
      return Status::NotFound(st.error_message());
    case StatusCode::ALREADY_EXISTS:
      return Status::AlreadyExists(st.error_message());
    case StatusCode::FAILED_PRECONDITION:
      return Status::FailedPrecondition(st.error_message());
    case StatusCode::RESOURCE_EXHAUSTED:
      return Status::ResourceExhausted(st.error_message());
    case StatusCode::DATA_LOSS:
      return Status::Corruption(st.error_message());
    case StatusCode::PERMISSION_DENIED:
      return Status::PermissionDenied(st.error_message());
    case StatusCode::UNAUTHENTICATED:
      return Status::Unauthenticated(st.error_message());
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
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  if (options_.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.tls_ca_pem;
    ssl.pem_cert_chain = options_.tls_cert_pem;
    ssl.pem_private_key = options_.tls_key_pem;
    creds = grpc::SslCredentials(ssl);
  }
  channel_ = grpc::CreateCustomChannel(options_.server, creds, args);
  jobs_ = v1::JobService::NewStub(channel_);
  workers_ = v1::WorkerService::NewStub(channel_);
  admin_ = v1::AdminService::NewStub(channel_);
}

void Client::Authorize(grpc::ClientContext* ctx) const {
  if (!options_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options_.token);
}

namespace {

Result<std::string> ReadPem(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::InvalidArgument(what + ": cannot read " + path);
  std::stringstream buf;
  buf << in.rdbuf();
  if (buf.str().find("-----BEGIN ") == std::string::npos) {
    return Status::InvalidArgument(what + ": " + path + " holds no PEM block");
  }
  return buf.str();
}

// The flag's value, else the environment variable's; `what` names where it came from.
std::string FlagOrEnv(const std::string& flag_value, const char* flag, const char* env,
                      std::string* what) {
  *what = flag;
  if (!flag_value.empty()) return flag_value;
  const char* v = std::getenv(env);
  *what = env;
  return v ? v : "";
}

}  // namespace

Status LoadSecurity(const SecurityArgs& a, ClientOptions* o) {
  std::string what;
  o->token = FlagOrEnv(a.token, "--token", "LEDGERQ_TOKEN", &what);
  if (o->token.find_first_of(" \r\n\t") != std::string::npos) {
    return Status::InvalidArgument(what + ": a token has no spaces or line breaks");
  }
  const std::string ca = FlagOrEnv(a.tls_ca, "--tls-ca", "LEDGERQ_TLS_CA", &what);
  if (!ca.empty()) {
    auto pem = ReadPem(ca, what);
    if (!pem.ok()) return pem.status();
    o->tls_ca_pem = *pem;
    o->tls = true;
  }
  std::string cert_what, key_what;
  const std::string cert = FlagOrEnv(a.tls_cert, "--tls-cert", "LEDGERQ_TLS_CERT", &cert_what);
  const std::string key = FlagOrEnv(a.tls_key, "--tls-key", "LEDGERQ_TLS_KEY", &key_what);
  if (cert.empty() != key.empty()) {
    return Status::InvalidArgument(cert.empty() ? "--tls-cert: required with --tls-key"
                                                : "--tls-key: required with --tls-cert");
  }
  if (!cert.empty()) {
    auto c = ReadPem(cert, cert_what);
    if (!c.ok()) return c.status();
    auto k = ReadPem(key, key_what);
    if (!k.ok()) return k.status();
    o->tls_cert_pem = *c;
    o->tls_key_pem = *k;
    o->tls = true;
  }
  return Status::Ok();
}

template <typename Stub, typename Resp, typename Req>
Result<Resp> Client::Call(Stub* stub,
                          grpc::Status (Stub::*method)(grpc::ClientContext*, const Req&, Resp*),
                          const Req& req, std::chrono::milliseconds extra) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + options_.timeout + extra);
  Authorize(&ctx);
  Resp resp;
  Status st = FromGrpc((stub->*method)(&ctx, req, &resp), options_.server);
  if (!st.ok()) return st;
  return resp;
}

using JobStub = v1::JobService::Stub;
using WorkerStub = v1::WorkerService::Stub;
using AdminStub = v1::AdminService::Stub;

Result<v1::EnqueueResponse> Client::Enqueue(const v1::EnqueueRequest& req) {
  return Call(jobs_.get(), &JobStub::Enqueue, req);
}

Result<v1::EnqueueBatchResponse> Client::EnqueueBatch(const v1::EnqueueBatchRequest& req) {
  return Call(jobs_.get(), &JobStub::EnqueueBatch, req);
}

Result<v1::Job> Client::GetJob(uint64_t id) {
  v1::GetJobRequest req;
  req.set_id(id);
  return Call(jobs_.get(), &JobStub::GetJob, req);
}

Result<v1::Job> Client::GetJobByIdempotencyKey(const std::string& queue, const std::string& key) {
  v1::GetJobRequest req;
  req.mutable_idempotency()->set_queue(queue);
  req.mutable_idempotency()->set_idempotency_key(key);
  return Call(jobs_.get(), &JobStub::GetJob, req);
}

Result<v1::Job> Client::CancelJob(uint64_t id, const std::string& reason) {
  v1::CancelJobRequest req;
  req.set_id(id);
  req.set_reason(reason);
  return Call(jobs_.get(), &JobStub::CancelJob, req);
}

Result<v1::GetJobHistoryResponse> Client::GetJobHistory(const v1::GetJobHistoryRequest& req) {
  return Call(jobs_.get(), &JobStub::GetJobHistory, req);
}

Result<v1::LeaseResponse> Client::Lease(const v1::LeaseRequest& req) {
  auto wait = std::chrono::milliseconds(req.wait().seconds() * 1000 + req.wait().nanos() / 1000000);
  return Call(workers_.get(), &WorkerStub::Lease, req, wait);
}

Result<v1::HeartbeatResponse> Client::Heartbeat(const v1::HeartbeatRequest& req) {
  return Call(workers_.get(), &WorkerStub::Heartbeat, req);
}

Result<v1::JobResponse> Client::Complete(const v1::CompleteRequest& req) {
  return Call(workers_.get(), &WorkerStub::Complete, req);
}

Result<v1::CompleteBatchResponse> Client::CompleteBatch(const v1::CompleteBatchRequest& req) {
  return Call(workers_.get(), &WorkerStub::CompleteBatch, req);
}

Result<v1::JobResponse> Client::Fail(const v1::FailRequest& req) {
  return Call(workers_.get(), &WorkerStub::Fail, req);
}

Result<v1::JobResponse> Client::Release(const v1::ReleaseRequest& req) {
  return Call(workers_.get(), &WorkerStub::Release, req);
}

Result<v1::ListQueuesResponse> Client::ListQueues() {
  return Call(admin_.get(), &AdminStub::ListQueues, v1::ListQueuesRequest());
}

Result<v1::QueueInfo> Client::SetQueueLimits(const v1::SetQueueLimitsRequest& req) {
  return Call(admin_.get(), &AdminStub::SetQueueLimits, req);
}

Result<v1::QueueInfo> Client::SetCircuit(const std::string& queue, const std::string& type,
                                         const std::string& mode) {
  v1::SetCircuitRequest req;
  req.set_queue(queue);
  req.set_type(type);
  req.set_mode(mode);
  return Call(admin_.get(), &AdminStub::SetCircuit, req);
}

Result<v1::QueueInfo> Client::PauseQueue(const std::string& queue) {
  v1::QueueRequest req;
  req.set_queue(queue);
  return Call(admin_.get(), &AdminStub::PauseQueue, req);
}

Result<v1::QueueInfo> Client::ResumeQueue(const std::string& queue) {
  v1::QueueRequest req;
  req.set_queue(queue);
  return Call(admin_.get(), &AdminStub::ResumeQueue, req);
}

Result<v1::ListJobsResponse> Client::ListJobs(const v1::ListJobsRequest& req) {
  return Call(admin_.get(), &AdminStub::ListJobs, req);
}

Result<v1::ListJobsResponse> Client::ListDeadLetters(const v1::ListJobsRequest& req) {
  return Call(admin_.get(), &AdminStub::ListDeadLetters, req);
}

Result<v1::RedriveResponse> Client::Redrive(const v1::RedriveRequest& req) {
  return Call(admin_.get(), &AdminStub::Redrive, req);
}

Result<v1::RedriveResponse> Client::ResolveAttention(const v1::ResolveAttentionRequest& req) {
  return Call(admin_.get(), &AdminStub::ResolveAttention, req);
}

Result<v1::ListFailuresResponse> Client::ListFailures(const v1::ListFailuresRequest& req) {
  return Call(admin_.get(), &AdminStub::ListFailures, req);
}

Result<v1::Schedule> Client::AddSchedule(const v1::AddScheduleRequest& req) {
  return Call(admin_.get(), &AdminStub::AddSchedule, req);
}

Result<v1::Schedule> Client::RemoveSchedule(const std::string& name) {
  v1::RemoveScheduleRequest req;
  req.set_name(name);
  return Call(admin_.get(), &AdminStub::RemoveSchedule, req);
}

Result<v1::ListSchedulesResponse> Client::ListSchedules() {
  return Call(admin_.get(), &AdminStub::ListSchedules, v1::ListSchedulesRequest());
}

}  // namespace ledgerq::client
