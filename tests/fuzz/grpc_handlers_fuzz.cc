// libFuzzer target: every gRPC request type of the three services, fed arbitrary bytes as its
// serialized request through a real in-process gRPC server (so protobuf parses the bytes and the
// handler runs exactly as in ledgerqd). The first input byte picks the method; the rest is the
// request message. Store, dispatcher and services are built as server/daemon.cc builds them, over
// a temporary data directory with --sync=none, once per process: state carries over between
// inputs (jobs enqueued by one input are leased, completed or redriven by later ones).
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <memory>
#include <string>
#include <thread>

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
  std::unique_ptr<server::JobServiceImpl> jobs;
  std::unique_ptr<server::WorkerServiceImpl> workers;
  std::unique_ptr<server::AdminServiceImpl> admin;
  std::unique_ptr<grpc::Server> server;
  std::unique_ptr<grpc::GenericStub> stub;

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

    server::EnqueueLimits limits{1 << 20, 5, {{"fuzz", 2}}};
    jobs = std::make_unique<server::JobServiceImpl>(
        store.get(), &metrics, SystemClock::Instance(), limits,
        server::JobObserver{
            .created = [this](const auto& job) { dispatcher->OnCreated(job); },
            .cancelled = [this](const auto& job) { dispatcher->OnCancelled(job); },
        });
    auto masks = [](const std::string&) -> const std::vector<std::string>& {
      return server::DefaultMaskFields();
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

  // Sends one raw request; returns the status code (the response itself is not inspected).
  grpc::StatusCode Call(const Method& m, const uint8_t* data, size_t size) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     (m.long_poll
                          ? std::chrono::duration_cast<std::chrono::milliseconds>(kLongPollDeadline)
                          : std::chrono::duration_cast<std::chrono::milliseconds>(kCallDeadline)));
    grpc::Slice slice(data, size);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    std::promise<grpc::Status> done;
    stub->UnaryCall(&ctx, m.path, grpc::StubOptions(), &request, &response,
                    [&done](grpc::Status st) { done.set_value(std::move(st)); });
    grpc::Status st = done.get_future().get();
    return st.error_code();
  }
};

World* world = nullptr;

// A few jobs leased at start, so seeds that heartbeat, complete, fail or release tokens
// {job_id 1..8, attempt 1} reach the accepting paths instead of only the stale-token ones.
void Prime() {
  ledgerq::v1::EnqueueBatchRequest batch;
  for (int i = 0; i < 16; ++i) {
    auto* item = batch.add_items();
    item->set_queue("primed");
    item->set_type("seed");
    item->set_payload(R"({"password":"hunter2","n":)" + std::to_string(i) + "}");
  }
  std::string bytes = batch.SerializeAsString();
  world->Call(kMethods[fuzz::kEnqueueBatch], reinterpret_cast<const uint8_t*>(bytes.data()),
              bytes.size());
  ledgerq::v1::LeaseRequest lease;
  lease.add_queues("primed");
  lease.set_worker_id("fuzz-primer");
  lease.set_max_jobs(8);
  lease.mutable_lease_duration()->set_seconds(12 * 3600);
  bytes = lease.SerializeAsString();
  world->Call(kMethods[fuzz::kLease], reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
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
  const Method& m = kMethods[data[0] % kNumMethods];
  grpc::StatusCode code = world->Call(m, data + 1, size - 1);
  if (code == grpc::StatusCode::DEADLINE_EXCEEDED && !m.long_poll) {
    std::fprintf(stderr, "%s was never answered\n", m.path);
    std::abort();
  }
  return 0;
}
