// `ledgerq work -- CMD ARGS...`: the worker SDK running one command per job.
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <thread>

#include "client/cli_common.h"
#include "client/process.h"
#include "client/worker.h"

namespace ledgerq::cli {
namespace {

constexpr size_t kMaxResult = 1 << 20;
constexpr size_t kStderrTail = 4096;

client::Worker* g_worker = nullptr;

client::Outcome RunOne(const WorkArgs& a, client::JobContext& job) {
  const auto& j = job.job();
  std::map<std::string, std::string> env = {
      {"LEDGERQ_JOB_ID", std::to_string(j.id())},
      {"LEDGERQ_ATTEMPT", std::to_string(job.attempt())},
      {"LEDGERQ_QUEUE", j.queue()},
      {"LEDGERQ_JOB_TYPE", j.type()},
      {"LEDGERQ_IDEMPOTENCY_KEY", j.idempotency_key()},
      {"TRACEPARENT", job.traceparent()},
  };
  if (!job.leased().tracestate().empty()) env["TRACESTATE"] = job.leased().tracestate();
  auto r = client::RunProcess(a.command, env, job.payload(), kMaxResult, kStderrTail);
  if (!r.started) return client::Outcome::Permanent("CANNOT_START", r.start_error);
  std::string tail = r.err_tail;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == '\r')) tail.pop_back();
  if (!r.exited) {
    return client::Outcome::Transient(
        "SIGNAL_" + std::to_string(r.code),
        "command killed by signal " + std::to_string(r.code) + (tail.empty() ? "" : ": " + tail),
        r.err_tail);
  }
  if (r.code == 0) {
    if (r.out_truncated) {
      return client::Outcome::Permanent("RESULT_TOO_LARGE",
                                        "stdout exceeded 1 MiB, the limit of a result");
    }
    return client::Outcome::Complete(std::move(r.out));
  }
  const std::string code = "EXIT_" + std::to_string(r.code);
  const std::string message = tail.empty() ? "command exited with " + std::to_string(r.code) : tail;
  if (std::find(a.permanent_exit_codes.begin(), a.permanent_exit_codes.end(), r.code) !=
      a.permanent_exit_codes.end()) {
    return client::Outcome::Permanent(code, message, r.err_tail);
  }
  return client::Outcome::Transient(code, message, r.err_tail);
}

const char* KindText(client::Outcome::Kind k) {
  switch (k) {
    case client::Outcome::Kind::kComplete:
      return "completed";
    case client::Outcome::Kind::kFailTransient:
      return "failed (transient)";
    case client::Outcome::Kind::kFailPermanent:
      return "failed (permanent)";
    case client::Outcome::Kind::kRelease:
      return "released";
  }
  return "?";
}

}  // namespace

int RunWork(const Globals& g, const WorkArgs& a) {
  if (a.command.empty()) {
    return Fail(Status::InvalidArgument("give the command to run after --, e.g. -- ./handle.sh"));
  }
  auto lease = ParseDuration(a.lease, "--lease");
  if (!lease.ok()) return Fail(lease.status());
  // Block SIGTERM/SIGINT before any thread exists (the gRPC channel starts some), so every
  // thread inherits the mask and only the waiter below receives them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  client::WorkerOptions o;
  o.server = g.server;
  if (Status st = client::LoadSecurity(g.security, &o.security); !st.ok()) return Fail(st);
  o.queues = a.queues;
  o.concurrency = a.concurrency;
  o.lease = std::chrono::duration_cast<std::chrono::milliseconds>(*lease);
  o.worker_id = a.worker_id;
  o.on_done = [](const v1::LeasedJob& j, const client::Outcome& out, const Status& st) {
    std::cerr << "ledgerq work: job " << j.job().id() << " attempt " << j.token().attempt() << " "
              << KindText(out.kind);
    if (!out.code.empty()) std::cerr << " " << out.code;
    if (!st.ok()) std::cerr << " (server said " << st.ToString() << ")";
    std::cerr << "\n";
  };
  client::Worker worker(o);
  worker.HandleAny([&a](client::JobContext& job) { return RunOne(a, job); });

  // SIGTERM/SIGINT: stop leasing, let running commands finish. A thread waits for the signal
  // so no work happens in a signal handler.
  g_worker = &worker;
  std::thread waiter([set] {
    int sig = 0;
    sigwait(&set, &sig);
    if (sig == SIGTERM || sig == SIGINT) {
      std::cerr << "ledgerq work: stopping; waiting for running jobs\n";
      if (g_worker) g_worker->Stop();
    }
  });
  std::cerr << "ledgerq work: " << worker.worker_id() << " leasing from";
  for (const auto& q : a.queues) std::cerr << " " << q;
  std::cerr << " with concurrency " << a.concurrency << "\n";
  Status st = worker.Run();
  // Wake the signal thread if Run ended for another reason.
  if (!worker.stopping()) {
    worker.Stop();
  }
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  g_worker = nullptr;
  if (!st.ok()) return Fail(st);
  return 0;
}

}  // namespace ledgerq::cli
