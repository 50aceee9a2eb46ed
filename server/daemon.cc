#include "server/daemon.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/impl/server_builder_option.h>
#include <grpcpp/impl/server_builder_plugin.h>
#include <grpcpp/resource_quota.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <future>
#include <iostream>
#include <thread>

#include "common/duration.h"
#include "metrics/metrics.h"
#include "scheduler/dispatcher.h"
#include "server/audit_service.h"
#include "server/auth.h"
#include "server/housekeeping.h"
#include "server/http_server.h"
#include "server/job_service.h"
#include "server/lifecycle.h"
#include "server/listener_watchdog.h"
#include "server/payload_snapshot.h"
#include "server/remediation.h"
#include "server/schedules.h"
#include "server/worker_service.h"

namespace ledgerq::server {

namespace {

// Removes gRPC's server reflection plugin from a builder (set with auth on).
class NoReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    std::erase_if(*plugins, [](const auto& p) {
      return p->name().find("reflection") != std::string::npos;  // "proto_server_reflection"
    });
  }
};

// Records policies in the log (a POLICY_CHANGED event when they differ from the last recorded
// ones); `done` gets the version in force, on the storage finisher thread.
void RecordPolicies(storage::JobStore* store, const Policies& p, const std::string& source,
                    std::string_view why, std::function<void(Result<uint64_t>)> done) {
  std::string text = p.Canonical();
  const std::string digest = ToHex(Sha256(text));
  store->RecordPolicy(
      std::move(text), std::string(why) + ": " + source, "ledgerqd",
      [done = std::move(done), digest, source](Result<storage::PolicyVersion> v) {
        if (!v.ok()) {
          done(Status(v.status().code(), "recording the policy: " + v.status().message()));
          return;
        }
        if (v->changed) {
          spdlog::info("policy version {} (sha256 {}) from {}", v->version, digest, source);
        } else {
          spdlog::info("policy version {} unchanged (sha256 {})", v->version, digest);
        }
        done(v->version);
      });
}

// SIGHUP: re-reads the config file's [queues.*] and [types.*] tables and strict-types (other
// keys take effect at the next start). An invalid file keeps the policy in force; a valid one is
// recorded (POLICY_CHANGED when it differs) and takes effect once durable.
void ReloadPolicies(const Config& config, storage::JobStore* store, LivePolicies* live,
                    std::atomic<bool>* busy, std::function<void()> applied) {
  if (config.config_file.empty()) return;
  auto fresh = LoadConfigFile(config.config_file, Config{}, "--config");
  const uint64_t in_force = live->Get()->version;
  if (!fresh.ok()) {
    spdlog::error("SIGHUP: keeping policy version {}: {}", in_force, fresh.status().message());
    return;
  }
  if (busy->exchange(true)) {
    spdlog::warn("SIGHUP: a policy reload is still being recorded; send SIGHUP again later");
    return;
  }
  Config next = config;  // defaults and flags as started
  next.queue_decls = fresh->queue_decls;
  next.type_decls = fresh->type_decls;
  next.strict_types = fresh->strict_types || config.strict_types_flag;
  Policies p = next.MakePolicies();
  RecordPolicies(store, p, config.config_file, "SIGHUP",
                 [live, busy, p, in_force, applied](Result<uint64_t> v) mutable {
                   if (v.ok()) {
                     live->Set(std::move(p), *v);
                     if (applied) applied();  // limits and circuit breakers re-read it
                   } else {
                     spdlog::error("SIGHUP: keeping policy version {}: {}", in_force,
                                   v.status().message());
                   }
                   busy->store(false);
                 });
}

}  // namespace

Status RunDaemon(const Config& config) {
  auto grpc_ep = ParseEndpoint(config.grpc_listen, "--grpc-listen");
  if (!grpc_ep.ok()) return grpc_ep.status();
  auto http_ep = ParseEndpoint(config.http_listen, "--http-listen");
  if (!http_ep.ok()) return http_ep.status();
  bool remote_unauthenticated = false, remote_plaintext = false;
  LEDGERQ_RETURN_IF_ERROR(CheckTransport(config, &remote_unauthenticated, &remote_plaintext));
  if (remote_plaintext) {
    spdlog::warn(
        "--insecure-allow-plaintext: listening beyond loopback without TLS; bearer tokens cross "
        "the network in clear at grpc={} http={}",
        config.grpc_listen, config.http_listen);
  }
  if (remote_unauthenticated) {
    spdlog::warn(
        "--insecure-allow-remote: listening beyond loopback without --auth-file; every caller "
        "that reaches grpc={} http={} acts as admin",
        config.grpc_listen, config.http_listen);
  }
  auto grpc_creds = GrpcServerCredentials(config);
  if (!grpc_creds.ok()) return grpc_creds.status();

  metrics::Metrics metrics(LEDGERQ_VERSION);
  Authorizer auth(config.auth_file, &metrics);
  LEDGERQ_RETURN_IF_ERROR(auth.Load());
  if (auth.enabled()) {
    spdlog::info("auth file {}: {} principals", config.auth_file,
                 auth.table()->principals().size());
  }
  Lifecycle lifecycle(&metrics, spdlog::get("lifecycle"),
                      config.log_format == "json" ? LogFormat::kJson : LogFormat::kText);
  // Retention policies come from the live policies, which exist once the store is open; until
  // then (no job can finish before the services start) nothing is retained specially.
  std::atomic<const LivePolicies*> live_policies{nullptr};
  storage::StoreOptions so;
  so.retention = [&live_policies](const std::string& queue, const std::string& type) {
    const LivePolicies* live = live_policies.load();
    return live ? live->Get()->policies.Resolve(queue, type).retention : storage::RetentionPolicy{};
  };
  // Dead-letter remediation: the type's on-dead-letter marks, written with the death itself.
  so.dead_letter_marks = [&live_policies](const storage::JobRecord& job) {
    const LivePolicies* live = live_policies.load();
    return live ? DeadLetterMarksFor(live->Get()->policies, job) : storage::DeadLetterMarks{};
  };
  // Retention removes finished records in the store; the dispatcher's counts follow once it
  // exists (nothing is removed before the housekeeper starts, after recovery).
  std::atomic<scheduler::Dispatcher*> counts{nullptr};
  so.on_durable = [&lifecycle, &counts, lifecycle_on = config.lifecycle_events](
                      const std::vector<storage::ObservedEvent>& events) {
    if (lifecycle_on) lifecycle.OnDurable(events);
    scheduler::Dispatcher* d = counts.load();
    if (!d) return;
    for (const auto& e : events) {
      if (e.event.type() == storage::v1::EVENT_RECORD_REMOVED) {
        d->OnRemoved(e.event.job_id(), e.event.queue(), e.event.from_state());
      }
    }
  };
  so.data_dir = config.data_dir;
  so.sync = config.sync;
  so.dedup_window = config.dedup_window;
  so.on_group_written = [&metrics](size_t ops) { metrics.GroupWritten(ops); };
  so.on_wal_sync = [&metrics](double secs) { metrics.WalSynced(secs); };
  so.on_rocksdb_log = [](bool error, std::string_view line) {
    if (error) {
      spdlog::error("rocksdb: {}", line);
    } else {
      spdlog::warn("rocksdb: {}", line);
    }
  };
  auto store_or = storage::JobStore::Open(so);
  if (!store_or.ok()) return store_or.status();
  std::unique_ptr<storage::JobStore> store = std::move(store_or).value();
  auto head = store->Head();
  spdlog::info("opened {} (events={}, next job id={}, sync={})", config.data_dir, head.seq,
               head.next_job_id, storage::SyncModeName(config.sync));
  // The queue and job-type policies, versioned in the log before any job is admitted under them.
  LivePolicies policies(config.MakePolicies());
  const std::string policy_source = config.config_file.empty() ? "flags" : config.config_file;
  {
    std::promise<Result<uint64_t>> recorded;
    RecordPolicies(store.get(), config.MakePolicies(), policy_source, "start",
                   [&recorded](Result<uint64_t> v) { recorded.set_value(std::move(v)); });
    auto version = recorded.get_future().get();
    if (!version.ok()) return version.status();
    policies.Set(config.MakePolicies(), *version);
  }
  live_policies.store(&policies);
  std::shared_ptr<void> forget_policies(nullptr,
                                        [&live_policies](void*) { live_policies.store(nullptr); });

  std::atomic<bool> draining{false};
  boost::asio::io_context ioc(1);
  // Installed before anything is announced, so a SIGTERM sent the moment the daemon says it
  // listens still drains instead of killing it.
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  boost::asio::signal_set hangups(ioc, SIGHUP);  // reloads, below
  // The gRPC listener watchdog's last word (server/listener_watchdog.h): /healthz follows it.
  std::atomic<bool> grpc_accepting{true};
  HttpAuthorizeFn authorize_metrics;  // null: /metrics is open
  if (auth.enabled()) {
    authorize_metrics = [&auth](std::string_view authorization, std::string_view cn,
                                std::string_view subject) {
      switch (auth.AuthorizeMetrics(authorization, cn, subject)) {
        case Authorizer::Access::kAllowed:
          return HttpAccess::kAllowed;
        case Authorizer::Access::kForbidden:
          return HttpAccess::kForbidden;
        case Authorizer::Access::kUnauthenticated:
          break;
      }
      return HttpAccess::kUnauthenticated;
    };
  }
  HttpServer http(ioc, HttpRoutes{
                           .metrics = [&metrics] { return metrics.Expose(); },
                           .alive = [&grpc_accepting] { return grpc_accepting.load(); },
                           .not_ready_reason = [&draining, &store]() -> std::string {
                             if (draining) return "draining";
                             Status health = store->Health();
                             return health.ok() ? "" : "writes refused: " + health.message();
                           },
                           .authorize_metrics = authorize_metrics,
                       });
  if (!config.tls_cert.empty()) {
    LEDGERQ_RETURN_IF_ERROR(
        http.UseTls(TlsFiles{config.tls_cert, config.tls_key, config.tls_client_ca}));
  }
  LEDGERQ_RETURN_IF_ERROR(http.Listen(*http_ep));

  scheduler::DispatcherOptions dopts;
  dopts.default_policy = config.retry;
  dopts.policy_of = [&policies](const std::string& queue, const std::string& type) {
    ResolvedPolicy r = policies.Get()->policies.Resolve(queue, type);
    return scheduler::JobPolicy{r.retry, r.min_lease, r.max_lease, r.circuit};
  };
  dopts.limits_of = [&policies](const std::string& queue) {
    return policies.Get()->policies.LimitsOf(queue);
  };
  dopts.on_circuit = [&metrics](const std::string& queue, const std::string& type,
                                const scheduler::CircuitChange& c) {
    metrics.CircuitChanged(queue, type, scheduler::CircuitStateName(c.to));
    spdlog::warn("circuit {}/{}: {} -> {} ({}; {} of {} attempts failed in the window{})", queue,
                 type, scheduler::CircuitStateName(c.from), scheduler::CircuitStateName(c.to),
                 c.cause, c.window_failures, c.window_attempts,
                 c.cooldown.count() ? ", cooldown " + FormatDuration(c.cooldown) : "");
  };
  dopts.redrive_per_second = config.redrive_rate;
  auto masks_of = [&policies](const std::string& queue, const std::string& type) {
    return policies.Get()->policies.Resolve(queue, type).mask_fields;
  };
  storage::JobStore* store_ptr = store.get();
  dopts.payload_snapshot = [store_ptr, masks_of](uint64_t id) -> std::string {
    auto job = store_ptr->GetJob(id);
    auto payload = store_ptr->GetPayload(id);
    if (!job.ok() || !payload.ok()) return "";
    return PayloadSnapshot(*payload, masks_of(job->queue(), job->type()));
  };
  // Compensations of jobs that die from now on; the remediation exists once recovery is done
  // (no job dies before), and its first pass finishes what a crash left pending.
  std::atomic<Remediation*> remediation_ptr{nullptr};
  dopts.on_dead = [&remediation_ptr](const storage::JobRecord& job) {
    if (Remediation* r = remediation_ptr.load()) r->OnDead(job);
  };
  scheduler::Dispatcher dispatcher(store.get(), ioc, dopts);
  counts.store(&dispatcher);
  // On an early return the store closes after the dispatcher is gone: stop pointing at it first.
  std::shared_ptr<void> forget_dispatcher(nullptr, [&counts](void*) { counts.store(nullptr); });
  {
    const auto start = std::chrono::steady_clock::now();
    LEDGERQ_RETURN_IF_ERROR(dispatcher.Recover());
    auto stats = dispatcher.Stats();
    spdlog::info("recovered indexes in {:.3f}s ({} live leases)",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                 stats.active_leases);
  }
  // Retention sweeps and automatic archiving, on their own thread (after recovery, so the
  // dispatcher never indexes a record a sweep is removing). Stopped before the store closes.
  Housekeeper housekeeper(store.get(), &metrics, SystemClock::Instance(),
                          HousekeepingOptions{.archive_dir = config.archive_dir,
                                              .archive_after = config.archive_after});
  housekeeper.Start();
  Remediation remediation(
      store.get(), &policies, [&dispatcher](const auto& job) { dispatcher.OnCreated(job); },
      &metrics);
  remediation_ptr.store(&remediation);
  std::shared_ptr<void> forget_remediation(
      nullptr, [&remediation_ptr](void*) { remediation_ptr.store(nullptr); });
  remediation.Start();

  EnqueueLimits limits{config.max_payload_bytes, config.retry.max_attempts, &policies};
  JobServiceImpl jobs(
      store.get(), &metrics, SystemClock::Instance(), limits,
      JobObserver{
          .created = [&dispatcher](const auto& job) { dispatcher.OnCreated(job); },
          .cancelled = [&dispatcher](const auto& job) { dispatcher.OnCancelled(job); },
      },
      &auth);
  WorkerServiceImpl workers(&dispatcher, store.get(), &metrics, SystemClock::Instance(), masks_of,
                            &auth);
  AdminServiceImpl admin(&dispatcher, store.get(), &metrics, SystemClock::Instance(), &auth);
  // Cron schedules: the config file's brought into the store, then fired on their own thread
  // (after recovery, so the dispatcher indexes every job a firing creates), each job through
  // Enqueue's own validation and admission. Stopped before the store closes.
  Schedules schedules(
      store.get(), SystemClock::Instance(),
      SchedulesOptions{
          .limits = limits,
          .created = [&dispatcher](const storage::JobRecord& job) { dispatcher.OnCreated(job); },
          .grace = std::chrono::seconds(60),
          .tick = std::chrono::seconds(1)});
  LEDGERQ_RETURN_IF_ERROR(schedules.Load(config.schedule_decls));
  schedules.Start();
  admin.SetSchedules(&schedules);
  AuditServiceImpl audit(&dispatcher, store.get(), &metrics, SystemClock::Instance(), &auth);
  grpc::EnableDefaultHealthCheckService(true);
  // Reflection would hand the whole API schema to anyone, before any credential is checked:
  // only without an auth file (loopback only). Health stays open for probes. (Linking
  // grpc++_reflection registers its plugin for every builder; NoReflection takes it out.)
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  if (auth.enabled()) builder.SetOption(std::make_unique<NoReflection>());
  int grpc_port = 0;
  // Without this, gRPC sets SO_REUSEPORT and a second daemon would silently share the port.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Broken and hostile clients (README, "Limits and timeouts"). Constants: they bound what a
  // misbehaving peer can hold, and no well-behaved client comes near them.
  // A connection must finish the HTTP/2 handshake (send its preface and SETTINGS) within 10 s
  // of being accepted, instead of gRPC's 120 s; real clients do it in their first packet.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 10'000);
  // A connection with no call for 5 minutes gets a GOAWAY and is closed; clients reconnect on
  // their next call. Workers always have a Lease in flight, so they are never idle.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS, 5 * 60'000);
  // While calls are open (a parked Lease), a silent connection is pinged after 1 minute and
  // dropped if the ping is not answered within 20 s: a worker whose machine vanished without
  // closing its connection has its calls cancelled, not held.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 60'000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  // Request metadata up to 8 KiB (gRPC's default, stated here: traceparent and friends need
  // far less); more is RESOURCE_EXHAUSTED.
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, 8 << 10);
  // Calls open at once on one connection. A worker process uses one per slot (at most 1024
  // for `ledgerq work`) plus heartbeats; more wait on the client side.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 4096);
  // gRPC's own buffers (reads, writes, HTTP/2 state) stay within this quota: under pressure
  // it shrinks read buffers and closes idle connections before it grows further.
  constexpr size_t kGrpcMemoryQuotaBytes = size_t{256} << 20;
  grpc::ResourceQuota quota("ledgerqd-grpc");
  quota.Resize(kGrpcMemoryQuotaBytes);
  builder.SetResourceQuota(quota);
#ifdef GRPC_ARG_MAX_ALLOWED_INCOMING_CONNECTIONS
  // gRPC >= 1.55: refuse connections before the process runs out of descriptors (the cause of
  // CVE-2023-4785), keeping a tenth of the limit (at least 64) for files, RocksDB and probes.
  if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    const rlim_t reserve = std::max<rlim_t>(64, rl.rlim_cur / 10);
    if (rl.rlim_cur > 2 * reserve) {
      builder.AddChannelArgument(
          GRPC_ARG_MAX_ALLOWED_INCOMING_CONNECTIONS,
          static_cast<int>(std::min<rlim_t>(rl.rlim_cur - reserve, INT32_MAX)));
    }
  }
#endif
  builder.AddListeningPort(config.grpc_listen, *grpc_creds, &grpc_port);
  // A batch of 1000 items can carry far more than one payload; allow headroom above the limit.
  const uint64_t max_msg =
      std::max<uint64_t>(16ull << 20, 2 * config.max_payload_bytes + (1 << 20));
  builder.SetMaxReceiveMessageSize(static_cast<int>(std::min<uint64_t>(max_msg, INT32_MAX)));
  builder.RegisterService(&jobs);
  builder.RegisterService(&workers);
  builder.RegisterService(&admin);
  builder.RegisterService(&audit);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || grpc_port == 0) {
    http.Stop();
    return Status::Unavailable("--grpc-listen: cannot listen on " + config.grpc_listen +
                               " (address in use or not available)");
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  ListenerWatchdog watchdog(WatchdogOptions{
      .host = config.grpc_listen.substr(0, config.grpc_listen.rfind(':')),
      .port = grpc_port,
      .exit_after = config.grpc_watchdog,
      .report =
          [&metrics, &grpc_accepting](bool accepting, int fds) {
            grpc_accepting.store(accepting);
            metrics.SetListener(accepting, fds);
          },
      .on_dead =
          [](std::chrono::milliseconds dead_for) {
            spdlog::critical(
                "grpc listener has not accepted connections for {} ms (--grpc-watchdog): "
                "exiting with status {} so that the supervisor restarts ledgerqd; every "
                "acknowledged write is durable",
                dead_for.count(), kExitListenerDead);
            spdlog::default_logger()->flush();
            std::_Exit(kExitListenerDead);
          },
  });
  watchdog.Start();

  auto host_of = [](const std::string& listen) { return listen.substr(0, listen.rfind(':')); };
  std::cout << "ledgerqd " << LEDGERQ_VERSION << " listening grpc=" << host_of(config.grpc_listen)
            << ":" << grpc_port << " http=" << host_of(config.http_listen) << ":" << http.port()
            << " data-dir=" << config.data_dir << " sync=" << storage::SyncModeName(config.sync)
            << std::endl;

  // Point-in-time gauges (jobs by state, oldest READY age, leases, polls, disk) once a second.
  boost::asio::steady_timer gauges(ioc);
  bool store_healthy = true;  // logged when it changes
  std::function<void()> refresh = [&] {
    auto st = dispatcher.Stats();
    metrics.SetDispatcher(static_cast<double>(st.active_leases),
                          static_cast<double>(st.parked_polls));
    auto disk = store->Disk();
    Status health = store->Health();
    metrics.SetStorage(static_cast<double>(disk.live_sst_bytes),
                       static_cast<double>(disk.pending_compaction_bytes), !health.ok());
    if (health.ok() != store_healthy) {
      store_healthy = health.ok();
      if (store_healthy) {
        spdlog::info("storage accepts writes again");
      } else {
        spdlog::error("storage refuses writes (reads still served): {}", health.message());
      }
    }
    dispatcher.ListQueues([&metrics](std::vector<scheduler::QueueStats> qs) {
      std::vector<metrics::QueueGauges> out;
      for (const auto& q : qs) {
        out.push_back({q.name,
                       q.paused,
                       double(q.scheduled),
                       double(q.ready),
                       double(q.leased),
                       double(q.succeeded),
                       double(q.dead),
                       double(q.cancelled),
                       std::chrono::duration<double>(q.oldest_ready_age).count(),
                       double(q.held_back),
                       {}});
        for (const auto& c : q.circuits) {
          out.back().circuits.push_back({c.type, scheduler::CircuitStateName(c.state)});
        }
      }
      metrics.SetQueues(out);
    });
    gauges.expires_after(std::chrono::seconds(1));
    gauges.async_wait([&](const boost::system::error_code& ec) {
      if (!ec && !draining) refresh();
    });
  };
  refresh();

  std::thread drainer;
  // SIGHUP re-reads what may change while running; each part validates first and keeps what
  // it had on error (logging why). Policies can join the auth file here.
  std::atomic<bool> reloading_policies{false};
  auto reload = [&] {
    spdlog::info("received SIGHUP: reloading");
    (void)auth.Reload();  // logs the outcome itself
    ReloadPolicies(config, store.get(), &policies, &reloading_policies,
                   [&dispatcher] { dispatcher.RefreshPolicies(); });
  };
  std::function<void()> await_hangup = [&] {
    hangups.async_wait([&](const boost::system::error_code& ec, int) {
      if (ec || draining) return;
      reload();
      await_hangup();
    });
  };
  await_hangup();

  signals.async_wait([&](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    spdlog::info("received signal {}: draining", signo);
    hangups.cancel();
    draining = true;
    watchdog.Stop();  // the listener closes on purpose now (Stop joins at most one probe)
    server->GetHealthCheckService()->SetServingStatus(false);
    dispatcher.Stop();  // parked long-polls answer now, with no jobs
    // Shutdown blocks until in-flight calls finish; keep the HTTP loop answering meanwhile.
    drainer = std::thread([&] {
      server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
      boost::asio::post(ioc, [&] {
        http.Stop();
        gauges.cancel();
        ioc.stop();
      });
    });
  });
  ioc.run();
  if (drainer.joinable()) drainer.join();
  server->Wait();
  remediation_ptr.store(nullptr);
  remediation.Stop();
  schedules.Stop();
  housekeeper.Stop();
  Status st = store->Close();
  if (st.ok()) spdlog::info("closed {} cleanly", config.data_dir);
  return st;
}

}  // namespace ledgerq::server
