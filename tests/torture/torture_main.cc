// ledgerq-torture: crash torture with a history checker.
//
// Producers enqueue with idempotency keys (and resubmit some), workers lease, heartbeat,
// complete, fail transiently and permanently, and sometimes complete late on purpose, while the
// main thread SIGKILLs ledgerqd at random moments and restarts it on the same data dir and
// ports. Every operation and its answer go into a history; after the last kill the queue is
// drained and the checker (history.h) compares the history with every job's state and event
// timeline, then `ledgerq audit verify` checks the hash chain. Prints a summary; exits 1 with
// the offending history entries on any violation.
//
//   ledgerq-torture --kills 25            (the short run CTest does)
//   ledgerq-torture --kills 300 --seed 7  (the long run)
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <queue>
#include <random>
#include <thread>

#include "ledgerq/v1/ledgerq.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/temp_dir.h"
#include "tests/torture/history.h"

namespace ledgerq::torture {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
  int kills = 25;
  uint64_t seed = 0;  // 0: from the clock
  int producers = 3;
  int workers = 4;
  int min_gap_ms = 150;  // between a restart and the next kill
  int max_gap_ms = 900;
  int drain_timeout_s = 180;
  std::string keep_dir;  // keep the data dir here instead of a temp dir
};

const char* const kQueue = "torture";

// What a worker does with a job; chosen by the producer and carried in the payload, so a
// resubmission carries the same behaviour.
enum class Behaviour : char {
  kOk = 'o',      // complete at once (sometimes twice, the repeat must change nothing)
  kFlaky = 'f',   // fail transiently on attempts 1 and 2, then complete
  kPoison = 'p',  // fail permanently: dead-lettered
  kLate = 'l',    // attempt 1 completes after its lease expired, on purpose
  kSlow = 's',    // heartbeats across three lease lengths, then completes
};

Behaviour PickBehaviour(std::mt19937_64& rng) {
  int r = static_cast<int>(rng() % 100);
  if (r < 60) return Behaviour::kOk;
  if (r < 78) return Behaviour::kFlaky;
  if (r < 88) return Behaviour::kPoison;
  if (r < 94) return Behaviour::kLate;
  return Behaviour::kSlow;
}

class Run {
 public:
  Run(Options o, std::string data_dir)
      : o_(std::move(o)), data_dir_(std::move(data_dir)), t0_(Clock::now()) {}

  int Main() {
    if (!StartDaemon()) return 2;
    std::vector<std::thread> threads;
    for (int i = 0; i < o_.producers; ++i) threads.emplace_back([this, i] { Producer(i); });
    for (int i = 0; i < o_.workers; ++i) {
      threads.emplace_back([this, i] { Worker(o_.producers + i); });
    }
    std::mt19937_64 rng(o_.seed);
    bool started = true;
    for (int k = 1; k <= o_.kills && started; ++k) {
      std::this_thread::sleep_for(std::chrono::milliseconds(
          o_.min_gap_ms + static_cast<int>(rng() % (o_.max_gap_ms - o_.min_gap_ms + 1))));
      Op kill = NewOp(-1, OpKind::kKill, Now());
      daemon_.Signal(SIGKILL);
      daemon_.Wait();
      kill.end_us = Now();
      kill.outcome = Outcome::kOk;
      Record(-1, std::move(kill));
      if (rng() % 5 == 0) CrashDuringStartup(rng);
      started = StartDaemon();
      if (k % 25 == 0 || k == o_.kills) {
        std::fprintf(stderr, "torture: %d kills, %llu enqueues so far\n", k,
                     static_cast<unsigned long long>(enqueues_.load()));
      }
    }
    stop_producing_ = true;
    for (int i = 0; i < o_.producers; ++i) threads[i].join();
    bool drained = started && Drain();
    stop_working_ = true;
    for (size_t i = o_.producers; i < threads.size(); ++i) threads[i].join();
    if (!started) return 2;
    if (!drained) {
      std::fprintf(stderr, "torture: FAILED: the queue did not drain in %d s\n",
                   o_.drain_timeout_s);
    }
    Observed observed;
    if (!Collect(&observed)) return 2;
    daemon_.Signal(SIGTERM);
    auto exit = daemon_.Wait();

    std::vector<Op> history;
    for (auto& [thread, ops] : histories_) {
      history.insert(history.end(), ops.begin(), ops.end());
    }
    Summary summary = Check(history, observed);
    std::string out, err;
    auto audit = testing::RunCommand(
        {testing::LedgerqCliPath(), "audit", "verify", "--data-dir", data_dir_}, &out, &err);
    if (!exit.exited || exit.code != 0) {
      summary.violations.push_back("ledgerqd did not exit 0 on SIGTERM");
    }
    if (!audit.exited || audit.code != 0) {
      summary.violations.push_back("audit verify failed: " + out + err);
    }

    std::printf("torture summary (seed %llu, %.1f s)\n", static_cast<unsigned long long>(o_.seed),
                Now() / 1e6);
    for (const auto& [what, n] : summary.counts) {
      std::printf("  %-48s %llu\n", what.c_str(), static_cast<unsigned long long>(n));
    }
    std::printf("  %-48s %d\n", "kills during startup", startup_crashes_);
    std::printf("  %-48s %s", "audit verify", out.c_str());
    if (!drained) summary.violations.push_back("the queue did not drain");
    if (!summary.ok()) {
      std::printf("\nFAILED: %zu violation(s)\n", summary.violations.size());
      for (const auto& v : summary.violations) std::printf("\n%s", v.c_str());
      std::printf("\ndata dir: %s (seed %llu)\n", data_dir_.c_str(),
                  static_cast<unsigned long long>(o_.seed));
      return 1;
    }
    std::printf("OK: every check passed\n");
    return 0;
  }

 private:
  int64_t Now() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0_).count();
  }

  bool StartDaemon() {
    std::vector<std::string> args = {"--sync", "always", "--default-max-attempts", "10"};
    if (!grpc_address_.empty()) {
      args.insert(args.end(), {"--grpc-listen", grpc_address_});
    }
    for (int tries = 0; tries < 5; ++tries) {
      if (daemon_.Start(data_dir_, args)) {
        if (grpc_address_.empty()) grpc_address_ = daemon_.grpc_address();
        return true;
      }
      std::this_thread::sleep_for(200ms);
    }
    std::fprintf(stderr, "torture: ledgerqd did not start:\n%s\n", daemon_.stderr_text().c_str());
    return false;
  }

  // Starts ledgerqd and SIGKILLs it a few milliseconds later, mostly while RocksDB opens and
  // the dispatcher rebuilds its indexes: a crash during recovery must not hurt either.
  void CrashDuringStartup(std::mt19937_64& rng) {
    std::vector<std::string> args = {
        testing::LedgerqdPath(), "--data-dir",    data_dir_,    "--grpc-listen",
        grpc_address_,           "--http-listen", "127.0.0.1:0"};
    pid_t pid = ::fork();
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    if (pid < 0) return;
    std::this_thread::sleep_for(std::chrono::microseconds(rng() % 60'000));
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ++startup_crashes_;
  }

  // A channel that reconnects quickly after a restart (gRPC's default backoff grows to minutes).
  std::shared_ptr<grpc::Channel> Channel() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(grpc_address_, grpc::InsecureChannelCredentials(), args);
  }

  static Outcome Classify(const grpc::Status& st) {
    switch (st.error_code()) {
      case grpc::StatusCode::OK:
        return Outcome::kOk;
      case grpc::StatusCode::INVALID_ARGUMENT:
      case grpc::StatusCode::NOT_FOUND:
      case grpc::StatusCode::ALREADY_EXISTS:
      case grpc::StatusCode::FAILED_PRECONDITION:
        return Outcome::kRejected;
      default:  // UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED, INTERNAL, ...: unknown
        return Outcome::kUnknown;
    }
  }

  // Calls wait for the daemon to come back (up to the deadline) rather than fail at once, as
  // a patient client would; one that was in flight when it died still fails UNAVAILABLE.
  static void Deadline(grpc::ClientContext* ctx, std::chrono::milliseconds d) {
    ctx->set_deadline(std::chrono::system_clock::now() + d);
    ctx->set_wait_for_ready(true);
  }

  static Op NewOp(int thread, OpKind kind, int64_t start_us, int64_t end_us = 0) {
    Op op;
    op.thread = thread;
    op.kind = kind;
    op.start_us = start_us;
    op.end_us = end_us;
    return op;
  }

  void Record(int thread, Op op) {
    std::lock_guard<std::mutex> lock(mu_);
    histories_[thread].push_back(std::move(op));
  }

  static void Finish(Op* op, const grpc::Status& st) {
    op->outcome = Classify(st);
    op->code = st.error_code();
    if (!st.ok()) op->message = st.error_message();
  }

  // ---- producers ----

  struct Submitted {
    std::string key;
    std::string payload;
  };

  v1::EnqueueRequest MakeItem(int thread, std::mt19937_64& rng, uint64_t* n) {
    v1::EnqueueRequest r;
    r.set_queue(kQueue);
    r.set_type("torture");
    r.mutable_retry_policy()->mutable_backoff_base()->set_nanos(20'000'000);
    r.mutable_retry_policy()->set_backoff_factor(2);
    r.mutable_retry_policy()->mutable_backoff_cap()->set_nanos(200'000'000);
    int pick = static_cast<int>(rng() % 100);
    if (pick < 15) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!submitted_.empty()) {  // resubmit an earlier key, same payload
        const Submitted& s = submitted_[rng() % submitted_.size()];
        r.set_idempotency_key(s.key);
        r.set_payload(s.payload);
        return r;
      }
    }
    std::string payload(1, static_cast<char>(PickBehaviour(rng)));
    payload += ":p" + std::to_string(thread) + "-" + std::to_string((*n)++);
    r.set_payload(payload);
    if (pick >= 25) {  // 10% carry no key
      r.set_idempotency_key(payload.substr(2));
      std::lock_guard<std::mutex> lock(mu_);
      submitted_.push_back({r.idempotency_key(), payload});
    }
    return r;
  }

  void Producer(int thread) {
    std::mt19937_64 rng(o_.seed * 1000 + thread);
    auto stub = v1::JobService::NewStub(Channel());
    uint64_t n = 0;
    while (!stop_producing_) {
      size_t items = rng() % 5 == 0 ? 2 + rng() % 4 : 1;  // a fifth are batches of 2..5
      std::vector<v1::EnqueueRequest> reqs;
      for (size_t i = 0; i < items; ++i) reqs.push_back(MakeItem(thread, rng, &n));
      grpc::ClientContext ctx;
      Deadline(&ctx, 3s);
      int64_t start = Now();
      if (items == 1) {
        v1::EnqueueResponse resp;
        grpc::Status st = stub->Enqueue(&ctx, reqs[0], &resp);
        Op op = NewOp(thread, OpKind::kEnqueue, start, Now());
        op.key = reqs[0].idempotency_key();
        Finish(&op, st);
        if (st.ok()) {
          op.job_id = resp.job().id();
          op.deduplicated = resp.deduplicated();
        }
        Record(thread, std::move(op));
      } else {
        v1::EnqueueBatchRequest batch;
        for (auto& r : reqs) *batch.add_items() = r;
        v1::EnqueueBatchResponse resp;
        grpc::Status st = stub->EnqueueBatch(&ctx, batch, &resp);
        int64_t end = Now();
        for (size_t i = 0; i < items; ++i) {
          Op op = NewOp(thread, OpKind::kEnqueue, start, end);
          op.key = reqs[i].idempotency_key();
          Finish(&op, st);
          if (st.ok() && static_cast<int>(i) < resp.results_size()) {
            const auto& res = resp.results(static_cast<int>(i));
            if (res.has_ok()) {
              op.job_id = res.ok().job().id();
              op.deduplicated = res.ok().deduplicated();
            } else {
              op.outcome = Outcome::kRejected;
              op.code = res.error().code();
              op.message = res.error().message();
            }
          }
          Record(thread, std::move(op));
        }
      }
      enqueues_ += items;
      std::this_thread::sleep_for(std::chrono::milliseconds(4 + rng() % 12));
    }
  }

  // ---- workers ----

  struct Held {
    v1::LeaseToken token;
    Behaviour behaviour;
    Clock::time_point due;     // when to act next
    Clock::time_point finish;  // kSlow: when to complete
    bool late = false;
  };
  struct Later {
    bool operator()(const Held& a, const Held& b) const { return a.due > b.due; }
  };

  // One call carrying a lease token, recorded as `op` (its kind and flags set by the caller).
  template <typename Req, typename Resp>
  grpc::Status TokenCall(grpc::Status (v1::WorkerService::Stub::*method)(grpc::ClientContext*,
                                                                         const Req&, Resp*),
                         v1::WorkerService::Stub* stub, const Req& req, const v1::LeaseToken& token,
                         Op op) {
    grpc::ClientContext ctx;
    Deadline(&ctx, 3s);
    Resp resp;
    op.start_us = Now();
    grpc::Status st = (stub->*method)(&ctx, req, &resp);
    op.end_us = Now();
    op.job_id = token.job_id();
    op.attempt = token.attempt();
    Finish(&op, st);
    Record(op.thread, std::move(op));
    return st;
  }

  grpc::Status Complete(v1::WorkerService::Stub* stub, int thread, const v1::LeaseToken& token,
                        bool late, bool repeat) {
    v1::CompleteRequest req;
    *req.mutable_token() = token;
    req.set_result("done");
    Op op = NewOp(thread, OpKind::kComplete, 0);
    op.late = late;
    op.repeat = repeat;
    return TokenCall(&v1::WorkerService::Stub::Complete, stub, req, token, std::move(op));
  }

  void Fail(v1::WorkerService::Stub* stub, int thread, const v1::LeaseToken& token,
            bool permanent) {
    v1::FailRequest req;
    *req.mutable_token() = token;
    req.mutable_error()->set_kind(permanent ? v1::ERROR_KIND_PERMANENT : v1::ERROR_KIND_TRANSIENT);
    req.mutable_error()->set_code(permanent ? "POISON" : "FLAKY");
    req.mutable_error()->set_message("torture");
    Op op = NewOp(thread, OpKind::kFail, 0);
    op.permanent = permanent;
    (void)TokenCall(&v1::WorkerService::Stub::Fail, stub, req, token, std::move(op));
  }

  bool Heartbeat(v1::WorkerService::Stub* stub, int thread, const v1::LeaseToken& token) {
    v1::HeartbeatRequest req;
    *req.add_tokens() = token;
    return TokenCall(&v1::WorkerService::Stub::Heartbeat, stub, req, token,
                     NewOp(thread, OpKind::kHeartbeat, 0))
        .ok();
  }

  // Acts on a held job whose time has come; returns true when it stays held.
  bool Act(v1::WorkerService::Stub* stub, int thread, std::mt19937_64& rng, Held* h) {
    const auto& token = h->token;
    switch (h->behaviour) {
      case Behaviour::kFlaky:
        if (token.attempt() <= 2) {
          Fail(stub, thread, token, false);
          return false;
        }
        break;
      case Behaviour::kPoison:
        Fail(stub, thread, token, true);
        return false;
      case Behaviour::kSlow:
        if (Clock::now() < h->finish) {
          if (!Heartbeat(stub, thread, token)) return false;  // lost it: give up like a worker
          h->due = Clock::now() + 300ms;
          return true;
        }
        break;
      default:
        break;
    }
    grpc::Status st = Complete(stub, thread, token, h->late, false);
    if (st.ok() && rng() % 20 == 0) (void)Complete(stub, thread, token, h->late, true);
    return false;
  }

  void Worker(int thread) {
    std::mt19937_64 rng(o_.seed * 1000 + thread);
    auto stub = v1::WorkerService::NewStub(Channel());
    std::priority_queue<Held, std::vector<Held>, Later> held;
    const std::string worker_id = "w" + std::to_string(thread);
    while (!stop_working_) {
      while (!held.empty() && held.top().due <= Clock::now()) {
        Held h = held.top();
        held.pop();
        if (Act(stub.get(), thread, rng, &h)) held.push(h);
      }
      if (held.size() >= 8) {
        std::this_thread::sleep_for(20ms);
        continue;
      }
      v1::LeaseRequest req;
      req.add_queues(kQueue);
      req.set_worker_id(worker_id);
      req.set_max_jobs(1 + static_cast<uint32_t>(rng() % 3));
      req.mutable_lease_duration()->set_seconds(1);
      req.mutable_wait()->set_nanos(200'000'000);
      grpc::ClientContext ctx;
      Deadline(&ctx, 3s);
      v1::LeaseResponse resp;
      int64_t start = Now();
      grpc::Status st = stub->Lease(&ctx, req, &resp);
      int64_t end = Now();
      if (!st.ok()) {
        Op op = NewOp(thread, OpKind::kLease, start, end);
        Finish(&op, st);
        Record(thread, std::move(op));
        if (Classify(st) != Outcome::kOk) std::this_thread::sleep_for(20ms);
        continue;
      }
      for (const auto& lj : resp.jobs()) {
        Op op = NewOp(thread, OpKind::kLease, start, end);
        op.outcome = Outcome::kOk;
        op.job_id = lj.token().job_id();
        op.attempt = lj.token().attempt();
        Record(thread, std::move(op));
        if (rng() % 33 == 0) continue;  // the worker "crashes": the lease must expire
        Held h;
        h.token = lj.token();
        h.behaviour =
            static_cast<Behaviour>(lj.job().payload().empty() ? 'o' : lj.job().payload()[0]);
        h.due = Clock::now() + std::chrono::milliseconds(rng() % 10);
        if (h.behaviour == Behaviour::kLate && h.token.attempt() == 1) {
          h.late = true;
          h.due = Clock::now() + std::chrono::milliseconds(1300 + rng() % 500);
        } else if (h.behaviour == Behaviour::kSlow) {
          h.finish = Clock::now() + 2500ms;
          h.due = Clock::now() + 300ms;
        }
        held.push(h);
      }
    }
  }

  // ---- after the run ----

  // Waits until no job is READY, SCHEDULED or LEASED (workers keep going meanwhile).
  bool Drain() {
    auto admin = v1::AdminService::NewStub(Channel());
    const auto deadline = Clock::now() + std::chrono::seconds(o_.drain_timeout_s);
    while (Clock::now() < deadline) {
      bool pending = false;
      for (auto state : {v1::JOB_STATE_READY, v1::JOB_STATE_SCHEDULED, v1::JOB_STATE_LEASED}) {
        v1::ListJobsRequest req;
        req.set_queue(kQueue);
        req.set_state(state);
        req.set_page_size(1);
        grpc::ClientContext ctx;
        Deadline(&ctx, 10s);
        v1::ListJobsResponse resp;
        grpc::Status st = admin->ListJobs(&ctx, req, &resp);
        if (!st.ok() || resp.jobs_size() > 0) pending = true;
      }
      if (!pending) return true;
      std::this_thread::sleep_for(250ms);
    }
    return false;
  }

  bool Collect(Observed* observed) {
    auto ch = Channel();
    auto admin = v1::AdminService::NewStub(ch);
    auto jobs = v1::JobService::NewStub(ch);
    std::string token;
    do {
      v1::ListJobsRequest req;
      req.set_queue(kQueue);
      req.set_page_size(1000);
      req.set_page_token(token);
      grpc::ClientContext ctx;
      Deadline(&ctx, 30s);
      v1::ListJobsResponse resp;
      grpc::Status st = admin->ListJobs(&ctx, req, &resp);
      if (!st.ok()) {
        std::fprintf(stderr, "torture: ListJobs: %s\n", st.error_message().c_str());
        return false;
      }
      for (const auto& j : resp.jobs()) {
        v1::GetJobHistoryRequest hreq;
        hreq.set_id(j.id());
        grpc::ClientContext hctx;
        Deadline(&hctx, 10s);
        v1::GetJobHistoryResponse hresp;
        grpc::Status hst = jobs->GetJobHistory(&hctx, hreq, &hresp);
        if (!hst.ok() || hresp.jobs_size() != 1) {
          std::fprintf(stderr, "torture: GetJobHistory %llu: %s\n",
                       static_cast<unsigned long long>(j.id()), hst.error_message().c_str());
          return false;
        }
        observed->jobs[j.id()] = hresp.jobs(0);
      }
      token = resp.next_page_token();
    } while (!token.empty());
    return true;
  }

  Options o_;
  std::string data_dir_;
  Clock::time_point t0_;
  testing::Daemon daemon_;
  std::string grpc_address_;
  std::atomic<bool> stop_producing_{false}, stop_working_{false};
  std::atomic<uint64_t> enqueues_{0};
  int startup_crashes_ = 0;
  std::mutex mu_;
  std::map<int, std::vector<Op>> histories_;
  std::vector<Submitted> submitted_;
};

}  // namespace
}  // namespace ledgerq::torture

int main(int argc, char** argv) {
  using namespace ledgerq::torture;
  Options o;
  CLI::App app{"ledgerq-torture: SIGKILL ledgerqd at random moments and check the history"};
  app.add_option("--kills", o.kills, "SIGKILL + restart cycles")->check(CLI::Range(0, 100000));
  app.add_option("--seed", o.seed, "Random seed (0: from the clock)");
  app.add_option("--producers", o.producers, "Producer threads")->check(CLI::Range(1, 64));
  app.add_option("--workers", o.workers, "Worker threads")->check(CLI::Range(1, 64));
  app.add_option("--min-gap-ms", o.min_gap_ms, "Least time between a restart and the next kill")
      ->check(CLI::Range(10, 600000));
  app.add_option("--max-gap-ms", o.max_gap_ms, "Most time between a restart and the next kill")
      ->check(CLI::Range(10, 600000));
  app.add_option("--drain-timeout", o.drain_timeout_s, "Seconds to wait for the queue to drain");
  app.add_option("--keep-dir", o.keep_dir, "Use (and keep) this data dir");
  CLI11_PARSE(app, argc, argv);
  if (o.max_gap_ms < o.min_gap_ms) {
    std::fprintf(stderr, "--max-gap-ms must be at least --min-gap-ms\n");
    return 2;
  }
  if (o.seed == 0) o.seed = std::random_device{}() | 1;
  // Many channels and restarts: make sure descriptors are not the limit.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    (void)::setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (!o.keep_dir.empty()) {
    std::filesystem::create_directories(o.keep_dir);
    return Run(o, o.keep_dir + "/data").Main();
  }
  ledgerq::testing::TempDir dir;
  int rc = Run(o, dir.path() + "/data").Main();
  if (rc != 0) dir.Keep();
  return rc;
}
