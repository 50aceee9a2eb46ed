// gRPC drivers: ledgerqd itself (unary Enqueue, Lease of one job with a long poll, Complete) and
// a bare echo service that makes the same round trips with the same message sizes and does
// nothing else (the ceiling gRPC and this machine put on any gRPC server).
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <iostream>

#include "bench/peer.h"
#include "echo.grpc.pb.h"
#include "ledgerq/v1/ledgerq.grpc.pb.h"

namespace ledgerq::bench {
namespace {

namespace v1 = ledgerq::v1;
namespace echo = ledgerq::benchecho::v1;

constexpr int kChannels = 4;
constexpr uint32_t kSmallReply = 16;  // about an id or a lease token

[[nodiscard]] std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() + std::chrono::seconds(30);
}

// Channels shared by the sessions, round robin; distinct args keep gRPC from collapsing them
// into one connection (as bench_main.cc does).
class Channels {
 public:
  explicit Channels(const std::string& address) {
    grpc::ChannelArguments args;
    for (int i = 0; i < kChannels; ++i) {
      args.SetInt("ledgerq.bench.channel", i);
      channels_.push_back(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
    }
  }
  [[nodiscard]] std::shared_ptr<grpc::Channel> Next() {
    return channels_[next_++ % channels_.size()];
  }

 private:
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
  size_t next_ = 0;
};

[[nodiscard]] std::string Describe(const grpc::Status& st) {
  return "gRPC " + std::to_string(st.error_code()) + ": " + st.error_message();
}

// One operation in flight; each step's completion starts the next step.
class LedgerqSession final : public AsyncPeerSession {
 public:
  LedgerqSession(std::shared_ptr<grpc::Channel> ch, const std::string& queue, int n)
      : jobs_(v1::JobService::NewStub(ch)), workers_(v1::WorkerService::NewStub(ch)) {
    enqueue_.set_queue(queue);
    enqueue_.set_type("bench");
    lease_.add_queues(queue);
    lease_.set_worker_id("peer-bench-" + std::to_string(n));
    lease_.set_max_jobs(1);
    lease_.mutable_wait()->set_seconds(1);
  }

  void StartEnqueue(std::string_view payload, PeerDone done) override {
    Start(payload, false, std::move(done));
  }
  void StartCycle(std::string_view payload, PeerDone done) override {
    Start(payload, true, std::move(done));
  }

 private:
  void Start(std::string_view payload, bool cycle, PeerDone done) {
    cycle_ = cycle;
    done_ = std::move(done);
    enqueue_.set_payload(payload.data(), payload.size());
    NewContext();
    jobs_->async()->Enqueue(ctx_.get(), &enqueue_, &enqueued_, [this](grpc::Status st) {
      if (!st.ok()) return Finish(false, Describe(st));
      if (!cycle_) return Finish(true, "");
      lease_tries_ = 0;
      Lease();
    });
  }

  void Lease() {
    NewContext();
    leased_.Clear();
    workers_->async()->Lease(ctx_.get(), &lease_, &leased_, [this](grpc::Status st) {
      if (!st.ok()) return Finish(false, Describe(st));
      if (leased_.jobs_size() == 0) {
        if (++lease_tries_ == 10) return Finish(false, "Lease: nothing to lease after 10 waits");
        return Lease();
      }
      Complete();
    });
  }

  void Complete() {
    NewContext();
    *complete_.mutable_token() = leased_.jobs(0).token();
    workers_->async()->Complete(ctx_.get(), &complete_, &completed_, [this](grpc::Status st) {
      Finish(st.ok(), st.ok() ? "" : Describe(st));
    });
  }

  void NewContext() {
    ctx_ = std::make_unique<grpc::ClientContext>();
    ctx_->set_deadline(Deadline());
  }

  void Finish(bool ok, const std::string& error) {
    PeerDone done = std::move(done_);  // may start the next operation at once
    done(ok, error);
  }

  std::unique_ptr<v1::JobService::Stub> jobs_;
  std::unique_ptr<v1::WorkerService::Stub> workers_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  v1::EnqueueRequest enqueue_;
  v1::EnqueueResponse enqueued_;
  v1::LeaseRequest lease_;
  v1::LeaseResponse leased_;
  v1::CompleteRequest complete_;
  v1::JobResponse completed_;
  bool cycle_ = false;
  int lease_tries_ = 0;
  PeerDone done_;
};

// The same round trips with the same message sizes, and nothing else.
class EchoSession final : public AsyncPeerSession {
 public:
  explicit EchoSession(std::shared_ptr<grpc::Channel> ch) : stub_(echo::Echo::NewStub(ch)) {}

  // Enqueue's shape: the payload goes out, an id comes back.
  void StartEnqueue(std::string_view payload, PeerDone done) override {
    done_ = std::move(done);
    steps_ = {{std::string(payload), kSmallReply}};
    Step(0);
  }

  // The cycle's shape: the payload out and an id back (enqueue); a small request and the
  // payload back (lease); a token out and a small answer back (complete).
  void StartCycle(std::string_view payload, PeerDone done) override {
    done_ = std::move(done);
    steps_ = {{std::string(payload), kSmallReply},
              {"lease-request", static_cast<uint32_t>(payload.size())},
              {"token:12345678", kSmallReply}};
    Step(0);
  }

 private:
  void Step(size_t k) {
    ctx_ = std::make_unique<grpc::ClientContext>();
    ctx_->set_deadline(Deadline());
    req_.set_payload(steps_[k].first);
    req_.set_reply_bytes(steps_[k].second);
    stub_->async()->Echo(ctx_.get(), &req_, &resp_, [this, k](grpc::Status st) {
      if (!st.ok()) return Finish(false, Describe(st));
      if (k + 1 < steps_.size()) return Step(k + 1);
      Finish(true, "");
    });
  }

  void Finish(bool ok, const std::string& error) {
    PeerDone done = std::move(done_);
    done(ok, error);
  }

  std::unique_ptr<echo::Echo::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> ctx_;
  echo::EchoRequest req_;
  echo::EchoResponse resp_;
  std::vector<std::pair<std::string, uint32_t>> steps_;
  PeerDone done_;
};

class GrpcDriver final : public PeerDriver {
 public:
  GrpcDriver(bool echo, const PeerConfig& config)
      : echo_(echo), config_(config), channels_(config.address) {}

  bool Prepare(std::string* error) override {
    // Wait for the server, so connection setup is not measured.
    for (int i = 0; i < kChannels; ++i) {
      auto ch = channels_.Next();
      if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
        *error = "cannot connect to " + config_.address;
        return false;
      }
    }
    return true;
  }

  bool IsAsync() const override { return true; }

  std::unique_ptr<AsyncPeerSession> ConnectAsync(std::string* error) override {
    (void)error;
    if (echo_) return std::make_unique<EchoSession>(channels_.Next());
    return std::make_unique<LedgerqSession>(channels_.Next(), config_.queue, sessions_++);
  }

 private:
  bool echo_;
  PeerConfig config_;
  Channels channels_;
  int sessions_ = 0;
};

class EchoService final : public echo::Echo::CallbackService {
 public:
  EchoService() : reply_(1 << 20, 'r') {}

  grpc::ServerUnaryReactor* Echo(grpc::CallbackServerContext* ctx, const echo::EchoRequest* req,
                                 echo::EchoResponse* resp) override {
    resp->set_payload(reply_.data(), std::min<size_t>(req->reply_bytes(), reply_.size()));
    auto* reactor = ctx->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

 private:
  std::string reply_;
};

}  // namespace

std::unique_ptr<PeerDriver> MakeGrpcDriver(std::string_view system, const PeerConfig& config) {
  if (system == "ledgerq") return std::make_unique<GrpcDriver>(false, config);
  if (system == "grpc-echo") return std::make_unique<GrpcDriver>(true, config);
  return nullptr;
}

int RunEchoServer(const std::string& listen) {
  // Block the stop signals before gRPC starts its threads, then wait for one here.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  EchoService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::cerr << "echo-server: cannot listen on " << listen << "\n";
    return 1;
  }
  std::cout << "listening " << listen.substr(0, listen.rfind(':')) << ":" << port << std::endl;
  int sig = 0;
  sigwait(&stop, &sig);
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return 0;
}

}  // namespace ledgerq::bench
