// libFuzzer target: every gRPC request type of the three services, fed arbitrary bytes as its
// serialized request through a real in-process gRPC server (so protobuf parses the bytes and the
// handler runs exactly as in ledgerqd). The first input byte picks the method (its low seven
// bits; the top bit asks for ids to be rewritten, see Rewrite below); the rest is the request
// message. Store, dispatcher and services are built as server/daemon.cc builds them, over a
// temporary data directory with --sync=none, once per process: state carries over between inputs
// (jobs enqueued by one input are leased, completed or redriven by later ones).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "ledgerq/v1/ledgerq.pb.h"
#include "metrics/metrics.h"
#include "scheduler/dispatcher.h"
#include "server/job_service.h"
#include "server/lifecycle.h"
#include "server/payload_snapshot.h"
#include "server/worker_service.h"
#include "tests/fuzz/grpc_methods.h"
#include "tests/fuzz/quiet_protobuf.h"

namespace {

using namespace ledgerq;

using fuzz::kMethods;
using fuzz::kNumMethods;
using fuzz::Method;

// A Lease that parks is cut off by its client after this long, which also exercises the
// cancellation path (OnCancel -> Dispatcher::CancelLease).
constexpr auto kLongPollDeadline = std::chrono::milliseconds(50);
// Any other call must be answered: a handler that never finishes its reactor is a bug.
constexpr auto kCallDeadline = std::chrono::seconds(60);

std::string TempDir() {
  const char* t = std::getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

struct World {
  std::string dir;
  metrics::Metrics metrics{"fuzz"};
  server::Lifecycle lifecycle{&metrics, nullptr, server::LogFormat::kText};
  std::unique_ptr<storage::JobStore> store;
  boost::asio::io_context ioc{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{ioc.get_executor()};
  std::thread ioc_thread;
  std::unique_ptr<scheduler::Dispatcher> dispatcher;
  // A queue and a type with policies, so admission checks are fuzzed too.
  server::LivePolicies policies{FuzzPolicies(), 1};
  std::unique_ptr<server::JobServiceImpl> jobs;
  std::unique_ptr<server::WorkerServiceImpl> workers;
  std::unique_ptr<server::AdminServiceImpl> admin;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<grpc::GenericStub> stub;

  static server::Policies FuzzPolicies() {
    server::Policies p;
    p.queues["fuzz"].max_attempts = 2;
    server::PolicyDecl& t = p.types["checked"];
    t.required = {{"to", server::JsonType::kString}, {"order.id", server::JsonType::kInteger}};
    t.max_payload_bytes = 4096;
    t.queues = {"fuzz*"};
    return p;
  }

  // The same wiring as RunDaemon, minus the listeners and signals.
  void Start() {
    std::string tmpl = TempDir() + "/ledgerq-fuzz-grpc-XXXXXX";
    if (!mkdtemp(tmpl.data())) std::abort();
    dir = tmpl;
    storage::StoreOptions so;
    so.data_dir = dir;
    so.sync = storage::SyncMode::kNone;
    so.on_durable = [this](const std::vector<storage::ObservedEvent>& events) {
      lifecycle.OnDurable(events);
    };
    so.on_group_written = [this](size_t ops) { metrics.GroupWritten(ops); };
    auto store_or = storage::JobStore::Open(so);
    if (!store_or.ok()) {
      std::fprintf(stderr, "cannot open store: %s\n", store_or.status().message().c_str());
      std::abort();
    }
    store = std::move(store_or).value();

    scheduler::DispatcherOptions dopts;
    storage::JobStore* store_ptr = store.get();
    dopts.payload_snapshot = [store_ptr](uint64_t id) -> std::string {
      auto job = store_ptr->GetJob(id);
      auto payload = store_ptr->GetPayload(id);
      if (!job.ok() || !payload.ok()) return "";
      return server::PayloadSnapshot(*payload, server::DefaultMaskFields());
    };
    dispatcher = std::make_unique<scheduler::Dispatcher>(store.get(), ioc, dopts);
    if (!dispatcher->Recover().ok()) std::abort();
    ioc_thread = std::thread([this] { ioc.run(); });

    server::EnqueueLimits limits{1 << 20, 5, &policies};
    jobs = std::make_unique<server::JobServiceImpl>(
        store.get(), &metrics, SystemClock::Instance(), limits,
        server::JobObserver{
            .created = [this](const auto& job) { dispatcher->OnCreated(job); },
            .cancelled = [this](const auto& job) { dispatcher->OnCancelled(job); },
        });
    auto masks = [this](const std::string& queue, const std::string& type) {
      return policies.Get()->policies.Resolve(queue, type).mask_fields;
    };
    workers = std::make_unique<server::WorkerServiceImpl>(dispatcher.get(), store.get(), &metrics,
                                                          SystemClock::Instance(), masks);
    admin = std::make_unique<server::AdminServiceImpl>(dispatcher.get(), store.get(), &metrics,
                                                       SystemClock::Instance());
    grpc::ServerBuilder builder;
    builder.SetMaxReceiveMessageSize(16 << 20);
    builder.RegisterService(jobs.get());
    builder.RegisterService(workers.get());
    builder.RegisterService(admin.get());
    server = builder.BuildAndStart();
    if (!server) std::abort();
    stub = std::make_unique<grpc::GenericStub>(server->InProcessChannel(grpc::ChannelArguments()));
  }

  // Orderly shutdown at exit, so no thread runs while the libraries' statics are destroyed.
  void Stop() {
    dispatcher->Stop();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    server->Wait();
    work.reset();
    ioc.stop();
    ioc_thread.join();
    stub.reset();
    server.reset();
    admin.reset();
    workers.reset();
    jobs.reset();
    dispatcher.reset();
    (void)store->Close();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  // Sends one raw request; returns the status and the raw response.
  grpc::StatusCode Call(const Method& m, std::string_view bytes, std::string* reply = nullptr) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     (m.long_poll
                          ? std::chrono::duration_cast<std::chrono::milliseconds>(kLongPollDeadline)
                          : std::chrono::duration_cast<std::chrono::milliseconds>(kCallDeadline)));
    grpc::Slice slice(bytes.data(), bytes.size());
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    std::promise<grpc::Status> done;
    stub->UnaryCall(&ctx, m.path, grpc::StubOptions(), &request, &response,
                    [&done](grpc::Status st) { done.set_value(std::move(st)); });
    grpc::Status st = done.get_future().get();
    if (reply && st.ok()) {
      std::vector<grpc::Slice> slices;
      if (response.Dump(&slices).ok()) {
        for (const auto& sl : slices)
          reply->append(reinterpret_cast<const char*>(sl.begin()), sl.size());
      }
    }
    return st.error_code();
  }
};

World* world = nullptr;

// What earlier calls were answered with, newest first: the tokens of granted leases and the ids
// of created jobs. An input whose first byte has its top bit set has the small ids in its request
// (1..16) replaced by these, so Heartbeat, Complete, Fail, Release, Redrive, GetJob and CancelJob
// reach their accepting paths (live leases, dead jobs) and not only the unknown-job ones. The
// request must parse for that; one that does not is sent as it is.
constexpr size_t kRemembered = 16;
std::deque<v1::LeaseToken> recent_tokens;
std::deque<uint64_t> recent_ids;

void Remember(size_t method, const std::string& reply) {
  auto id = [](uint64_t v) {
    recent_ids.push_front(v);
    if (recent_ids.size() > kRemembered) recent_ids.pop_back();
  };
  if (method == fuzz::kLease) {
    v1::LeaseResponse r;
    if (!r.ParseFromString(reply)) return;
    for (const auto& j : r.jobs()) {
      recent_tokens.push_front(j.token());
      if (recent_tokens.size() > kRemembered) recent_tokens.pop_back();
      id(j.token().job_id());
    }
  } else if (method == fuzz::kEnqueue) {
    v1::EnqueueResponse r;
    if (r.ParseFromString(reply)) id(r.job().id());
  } else if (method == fuzz::kEnqueueBatch) {
    v1::EnqueueBatchResponse r;
    if (!r.ParseFromString(reply)) return;
    for (const auto& item : r.results()) {
      if (item.has_ok()) id(item.ok().job().id());
    }
  }
}

void RewriteToken(v1::LeaseToken* t) {
  if (t->job_id() < 1 || t->job_id() > recent_tokens.size()) return;
  const v1::LeaseToken& live = recent_tokens[t->job_id() - 1];
  t->set_job_id(live.job_id());
  if (t->attempt() == 1) {  // any other attempt stays stale
    t->set_attempt(live.attempt());
    t->set_nonce(live.nonce());
  }
}

uint64_t RewriteId(uint64_t v) { return v >= 1 && v <= recent_ids.size() ? recent_ids[v - 1] : v; }

template <typename Msg, typename Fn>
std::optional<std::string> Rewritten(std::string_view raw, Fn&& fn) {
  Msg msg;
  if (!msg.ParseFromArray(raw.data(), static_cast<int>(raw.size()))) return std::nullopt;
  fn(msg);
  return msg.SerializeAsString();
}

std::optional<std::string> Rewrite(size_t method, std::string_view raw) {
  switch (method) {
    case fuzz::kGetJob:
      return Rewritten<v1::GetJobRequest>(raw, [](auto& r) {
        if (r.has_id()) r.set_id(RewriteId(r.id()));
      });
    case fuzz::kCancelJob:
      return Rewritten<v1::CancelJobRequest>(raw, [](auto& r) { r.set_id(RewriteId(r.id())); });
    case fuzz::kGetJobHistory:
      return Rewritten<v1::GetJobHistoryRequest>(raw, [](auto& r) {
        if (r.has_id()) r.set_id(RewriteId(r.id()));
      });
    case fuzz::kHeartbeat:
      return Rewritten<v1::HeartbeatRequest>(raw, [](auto& r) {
        for (auto& t : *r.mutable_tokens()) RewriteToken(&t);
      });
    case fuzz::kComplete:
      return Rewritten<v1::CompleteRequest>(raw, [](auto& r) { RewriteToken(r.mutable_token()); });
    case fuzz::kCompleteBatch:
      return Rewritten<v1::CompleteBatchRequest>(raw, [](auto& r) {
        for (auto& item : *r.mutable_items()) RewriteToken(item.mutable_token());
      });
    case fuzz::kFail:
      return Rewritten<v1::FailRequest>(raw, [](auto& r) { RewriteToken(r.mutable_token()); });
    case fuzz::kRelease:
      return Rewritten<v1::ReleaseRequest>(raw, [](auto& r) { RewriteToken(r.mutable_token()); });
    case fuzz::kRedrive:
      return Rewritten<v1::RedriveRequest>(raw, [](auto& r) {
        for (auto& id : *r.mutable_ids()) id = RewriteId(id);
      });
    default:
      return std::nullopt;
  }
}

// One call as the fuzzer's input asks for it; aborts if the server never answers.
void Send(size_t method, std::string_view request) {
  const Method& m = kMethods[method];
  std::string reply;
  grpc::StatusCode code = world->Call(m, request, &reply);
  if (code == grpc::StatusCode::DEADLINE_EXCEEDED && !m.long_poll) {
    std::fprintf(stderr, "%s was never answered\n", m.path);
    std::abort();
  }
  if (code == grpc::StatusCode::OK) Remember(method, reply);
}

// A few jobs leased at start, so that seeds naming tokens {job_id 1..8, attempt 1} reach the
// accepting paths from the first run on.
void Prime() {
  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < 16; ++i) {
    auto* item = batch.add_items();
    item->set_queue("primed");
    item->set_type("seed");
    item->set_payload(R"({"password":"hunter2","n":)" + std::to_string(i) + "}");
  }
  Send(fuzz::kEnqueueBatch, batch.SerializeAsString());
  v1::LeaseRequest lease;
  lease.add_queues("primed");
  lease.set_worker_id("fuzz-primer");
  lease.set_max_jobs(8);
  lease.mutable_lease_duration()->set_seconds(12 * 3600);
  Send(fuzz::kLease, lease.SerializeAsString());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::QuietProtobufLogs();
  world = new World;
  world->Start();
  Prime();
  std::atexit([] {
    world->Stop();
    delete world;
    world = nullptr;
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t method = (data[0] & 0x7f) % kNumMethods;
  const std::string_view raw(reinterpret_cast<const char*>(data + 1), size - 1);
  std::optional<std::string> rewritten;
  if (data[0] & 0x80) rewritten = Rewrite(method, raw);
  Send(method, rewritten ? std::string_view(*rewritten) : raw);
  return 0;
}
