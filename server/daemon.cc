#include "server/daemon.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <iostream>
#include <thread>

#include "metrics/metrics.h"
#include "server/http_server.h"
#include "server/job_service.h"

namespace ledgerq::server {

Status RunDaemon(const Config& config) {
  auto grpc_ep = ParseEndpoint(config.grpc_listen, "--grpc-listen");
  if (!grpc_ep.ok()) return grpc_ep.status();
  auto http_ep = ParseEndpoint(config.http_listen, "--http-listen");
  if (!http_ep.ok()) return http_ep.status();

  metrics::Metrics metrics(LEDGERQ_VERSION);
  storage::StoreOptions so;
  so.data_dir = config.data_dir;
  so.sync = config.sync;
  so.dedup_window = config.dedup_window;
  so.on_group_commit = [&metrics](size_t ops, double secs) { metrics.GroupCommitted(ops, secs); };
  auto store_or = storage::JobStore::Open(so);
  if (!store_or.ok()) return store_or.status();
  std::unique_ptr<storage::JobStore> store = std::move(store_or).value();
  auto head = store->Head();
  spdlog::info("opened {} (events={}, next job id={}, sync={})", config.data_dir, head.seq,
               head.next_job_id, storage::SyncModeName(config.sync));

  std::atomic<bool> draining{false};
  boost::asio::io_context ioc(1);
  // Installed before anything is announced, so a SIGTERM sent the moment the daemon says it
  // listens still drains instead of killing it.
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  HttpServer http(ioc, HttpRoutes{
                           .metrics = [&metrics] { return metrics.Expose(); },
                           .alive = [] { return true; },
                           .not_ready_reason = [&draining]() -> std::string {
                             return draining ? "draining" : "";
                           },
                       });
  LEDGERQ_RETURN_IF_ERROR(http.Listen(*http_ep));

  JobServiceImpl jobs(store.get(), &metrics, SystemClock::Instance(),
                      EnqueueLimits{config.max_payload_bytes, config.default_max_attempts});
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int grpc_port = 0;
  // Without this, gRPC sets SO_REUSEPORT and a second daemon would silently share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(config.grpc_listen, grpc::InsecureServerCredentials(), &grpc_port);
  // A batch of 1000 items can carry far more than one payload; allow headroom above the limit.
  const uint64_t max_msg = std::max<uint64_t>(16ull << 20, 2 * config.max_payload_bytes + (1 << 20));
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<uint64_t>(max_msg, INT32_MAX)));
  builder.RegisterService(&jobs);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    http.Stop();
    return Status::Unavailable("--grpc-listen: cannot listen on " + config.grpc_listen +
                               " (address in use or not available)");
  }
  server->GetHealthCheckService()->SetServingStatus(true);

  auto host_of = [](const std::string& listen) { return listen.substr(0, listen.rfind(':')); };
  std::cout << "ledgerqd " << LEDGERQ_VERSION << " listening grpc=" << host_of(config.grpc_listen)
            << ":" << grpc_port << " http=" << host_of(config.http_listen) << ":" << http.port()
            << " data-dir=" << config.data_dir << " sync=" << storage::SyncModeName(config.sync)
            << std::endl;

  std::thread drainer;
  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("received signal {}: draining", signo);
    draining = true;
    server->GetHealthCheckService()->SetServingStatus(false);
    // Shutdown blocks until in-flight calls finish; keep the HTTP loop answering meanwhile.
    drainer = std::thread([&] {
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
      boost::asio::post(ioc, [&] {
        http.Stop();
        ioc.stop();
      });
    });
  });
  ioc.run();
  if (drainer.joinable()) drainer.join();
  server->Wait();
  Status st = store->Close();
  if (st.ok()) spdlog::info("closed {} cleanly", config.data_dir);
  return st;
}

}  // namespace ledgerq::server
