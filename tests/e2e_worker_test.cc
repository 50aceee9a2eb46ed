// End-to-end tests of the worker side: `ledgerq work` running real commands, dead letters and
// redrive over the CLI, leases that survive kill -9 of ledgerqd, fencing of stale tokens over the
// wire, long-polls, pause/resume and validation of the worker calls. Every TEST_CASE owns its
// TempDir and its Daemon (and any worker process it starts), so `ctest -j` is safe.
//
// Catch2 assertions are not thread-safe: helper threads record what they saw and the test thread
// asserts on it.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "common/status.h"
#include "storage/job_store.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

extern char** environ;

namespace {

using ledgerq::Code;
using ledgerq::client::Client;
using ledgerq::testing::Cli;
using ledgerq::testing::CliArgv;
using ledgerq::testing::CompleteReq;
using ledgerq::testing::Daemon;
using ledgerq::testing::ExitInfo;
using ledgerq::testing::LeaseReq;
using ledgerq::testing::LedgerqCliPath;
using ledgerq::testing::MakeClient;
using ledgerq::testing::NamesNumber;
using ledgerq::testing::Req;
using ledgerq::testing::RunCommand;
using ledgerq::testing::TempDir;
using ledgerq::testing::Terminate;
using ledgerq::testing::WaitFor;
using ledgerq::testing::WriteFile;
namespace v1 = ledgerq::v1;
namespace sv1 = ledgerq::storage::v1;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// Helpers

std::string TokenText(const v1::LeaseToken& t) {
  return "(job " + std::to_string(t.job_id()) + ", attempt " + std::to_string(t.attempt()) + ")";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Writes an executable script.
bool WriteScript(const std::string& path, const std::string& text) {
  return WriteFile(path, text) && ::chmod(path.c_str(), 0755) == 0;
}

double SecondsSince(SteadyClock::time_point t) {
  return std::chrono::duration<double>(SteadyClock::now() - t).count();
}

// A child process (the `ledgerq work` CLI) with stdout and stderr sent to files and stdin from
// /dev/null. SIGKILLed and reaped by the destructor if still running, so a failed REQUIRE never
// leaves a worker behind.
class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool Start(const std::vector<std::string>& args, const std::string& stdout_path,
             const std::string& stderr_path) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawn_file_actions_addopen(&fa, 2, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0644);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGTERM);
    sigaddset(&defaults, SIGPIPE);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) return false;
    pid_ = pid;
    return true;
  }

  void Signal(int sig) {
    if (pid_ > 0) ::kill(pid_, sig);
  }

  // Sends SIGTERM and reaps the child as Wait does.
  ExitInfo Stop(std::chrono::milliseconds limit, bool* timed_out) {
    Signal(SIGTERM);
    return Wait(limit, timed_out);
  }

  // Reaps the child, SIGKILLing it if it has not exited within `limit` (timed_out is then set).
  ExitInfo Wait(std::chrono::milliseconds limit, bool* timed_out) {
    *timed_out = false;
    if (pid_ <= 0) return {};
    int status = 0;
    const auto deadline = SteadyClock::now() + limit;
    for (;;) {
      pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (r < 0) {
        pid_ = -1;
        return {};
      }
      if (SteadyClock::now() >= deadline) {
        *timed_out = true;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(20ms);
    }
    pid_ = -1;
    if (WIFEXITED(status)) return {true, WEXITSTATUS(status)};
    if (WIFSIGNALED(status)) return {false, WTERMSIG(status)};
    return {};
  }

 private:
  pid_t pid_ = -1;
};

// `ledgerq work` stops on SIGTERM by draining and exiting 0.
bool StoppedBySigterm(const ExitInfo& e) { return e.exited && e.code == 0; }

// `ledgerq --output json queues`, parsed; the entry for `queue` (null when absent or on error,
// with the reason in *why).
nlohmann::json QueueJson(const std::string& server, const std::string& queue, std::string* why) {
  std::string out, err;
  ExitInfo e = Cli(server, {"--output", "json", "queues"}, &out, &err);
  if (!e.exited || e.code != 0) {
    *why = "ledgerq queues exited " + std::to_string(e.code) + ": " + err;
    return nullptr;
  }
  auto arr = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
  if (arr.is_discarded() || !arr.is_array()) {
    *why = "ledgerq queues printed no JSON array: " + out;
    return nullptr;
  }
  for (const auto& q : arr) {
    if (q.value("name", "") == queue) return q;
  }
  *why = "queue " + queue + " is not listed: " + out;
  return nullptr;
}

// The argv of `ledgerq work` against `server` taking jobs from `queue`, with `flags`, running
// `script` for each.
std::vector<std::string> WorkArgv(const std::string& server, const std::string& queue,
                                  const std::vector<std::string>& flags,
                                  const std::string& script) {
  std::vector<std::string> args = {"work", "--queue", queue};
  args.insert(args.end(), flags.begin(), flags.end());
  args.push_back("--");
  args.push_back(script);
  return CliArgv(server, args);
}

// The script of the first test: fails twice (exit 3, a message on stderr), then succeeds and
// prints a JSON result made of what it was given. It counts its runs per job in its own
// directory (the test's TempDir).
constexpr char kFlakyScript[] = R"(#!/bin/bash
set -u
counter="$(dirname "$0")/runs-$LEDGERQ_JOB_ID"
n=0
if [ -f "$counter" ]; then n=$(cat "$counter"); fi
n=$((n + 1))
echo "$n" > "$counter"
payload=$(cat)
if [ "$n" -lt 3 ]; then
  echo "flaky: run $n of job $LEDGERQ_JOB_ID failed" >&2
  exit 3
fi
fmt='{"attempt":%s,"run":%s,"job_id":%s,"queue":"%s","type":"%s",'
fmt+='"payload":%s,"key":"%s","traceparent":"%s"}\n'
printf "$fmt" \
  "$LEDGERQ_ATTEMPT" "$n" "$LEDGERQ_JOB_ID" "$LEDGERQ_QUEUE" "$LEDGERQ_JOB_TYPE" "$payload" \
  "$LEDGERQ_IDEMPOTENCY_KEY" "$TRACEPARENT"
)";

constexpr char kPermanentScript[] = R"(#!/bin/bash
cat > /dev/null
echo "bad input: job $LEDGERQ_JOB_ID cannot be parsed" >&2
exit 65
)";

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("ledgerq work retries a failing command with backoff until it succeeds",
          "[e2e][worker]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  const std::string server = daemon.grpc_address();
  Client client = MakeClient(server);

  const std::string script = tmp.Sub("flaky.sh");
  REQUIRE(WriteScript(script, kFlakyScript));

  const std::string given_tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  struct Submitted {
    uint64_t id = 0;
    std::string payload, key, traceparent;
  };
  std::vector<Submitted> jobs;
  for (int i = 0; i < 3; ++i) {
    const std::string payload = R"({"n":)" + std::to_string(i) + R"(,"text":"hello"})";
    auto req = Req("q", "flaky.cmd", payload, i == 0 ? "flaky-key-0" : "");
    if (i == 1) req.set_traceparent(given_tp);
    auto r = client.Enqueue(req);
    REQUIRE(r.ok());
    jobs.push_back({r->job().id(), payload, req.idempotency_key(), r->job().traceparent()});
  }
  CHECK(jobs[1].traceparent == given_tp);
  CHECK_FALSE(jobs[0].traceparent.empty());  // the server made one up

  ChildProcess worker;
  const std::string worker_err = tmp.Sub("worker.stderr");
  REQUIRE(worker.Start(WorkArgv(server, "q", {"--concurrency", "2", "--lease", "5s"}, script),
                       tmp.Sub("worker.stdout"), worker_err));

  // Two failures each, with backoff drawn from [0, 1s) then [0, 2s): a few seconds.
  std::map<uint64_t, v1::Job> final_jobs;
  std::string poll_problem;
  const auto started = SteadyClock::now();
  bool done = WaitFor(
      [&] {
        for (const auto& s : jobs) {
          auto j = client.GetJob(s.id);
          if (!j.ok()) {
            poll_problem = "GetJob " + std::to_string(s.id) + ": " + j.status().ToString();
            return false;
          }
          final_jobs[s.id] = *j;
        }
        return std::all_of(jobs.begin(), jobs.end(), [&](const Submitted& s) {
          auto st = final_jobs[s.id].state();
          return st == v1::JOB_STATE_SUCCEEDED || st == v1::JOB_STATE_DEAD;
        });
      },
      30s, 100ms);
  const double took = SecondsSince(started);

  bool timed_out = false;
  ExitInfo exit = worker.Stop(15s, &timed_out);
  const std::string err_text = ReadFile(worker_err);
  INFO("worker stderr:\n" << err_text);
  INFO("poll: " << poll_problem << " (" << took << " s)");
  REQUIRE(done);
  CHECK_FALSE(timed_out);
  CHECK(StoppedBySigterm(exit));

  for (const auto& s : jobs) {
    const v1::Job& job = final_jobs[s.id];
    INFO("job " << s.id << ": " << job.ShortDebugString());
    CHECK(job.state() == v1::JOB_STATE_SUCCEEDED);
    CHECK(job.attempts() == 3);
    REQUIRE(job.errors_size() == 2);
    for (int a = 0; a < 2; ++a) {
      const auto& e = job.errors(a);
      CHECK(e.attempt() == static_cast<uint32_t>(a + 1));
      CHECK(e.kind() == v1::ERROR_KIND_TRANSIENT);
      CHECK(e.code() == "EXIT_3");
      CHECK(e.message() ==
            "flaky: run " + std::to_string(a + 1) + " of job " + std::to_string(s.id) + " failed");
      CHECK_FALSE(e.worker_id().empty());
    }
    auto result = nlohmann::json::parse(job.result(), nullptr, /*allow_exceptions=*/false);
    INFO("result: " << job.result());
    REQUIRE_FALSE(result.is_discarded());
    CHECK(result["attempt"] == 3);
    CHECK(result["run"] == 3);
    CHECK(result["job_id"] == s.id);
    CHECK(result["queue"] == "q");
    CHECK(result["type"] == "flaky.cmd");
    CHECK(result["payload"] == nlohmann::json::parse(s.payload));
    CHECK(result["key"] == s.key);
    // The attempt runs in the job's trace (same trace id) as a span of its own.
    const std::string tp = result["traceparent"].get<std::string>();
    REQUIRE(tp.size() == 55);
    CHECK(tp.substr(0, 36) == s.traceparent.substr(0, 36));
    CHECK(tp.substr(36, 16) != s.traceparent.substr(36, 16));
    CHECK(job.traceparent() == s.traceparent);
    CHECK_THAT(err_text, Catch::Contains("job " + std::to_string(s.id) + " attempt 3 completed"));
    CHECK_THAT(err_text, Catch::Contains("job " + std::to_string(s.id) +
                                         " attempt 1 failed (transient) EXIT_3"));
  }
  // The key reached its script (checked above), and names its job.
  auto by_key = client.GetJobByIdempotencyKey("q", "flaky-key-0");
  REQUIRE(by_key.ok());
  CHECK(by_key->id() == jobs[0].id);
}

TEST_CASE("a permanent exit code dead-letters at once and dlq list and redrive handle it",
          "[e2e][worker]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  const std::string server = daemon.grpc_address();
  Client client = MakeClient(server);

  const std::string script = tmp.Sub("permanent.sh");
  REQUIRE(WriteScript(script, kPermanentScript));
  auto enq = client.Enqueue(Req("q", "parse.doc", R"({"doc":"%%%"})"));
  REQUIRE(enq.ok());
  const uint64_t id = enq->job().id();

  v1::Job dead;
  {
    ChildProcess worker;
    const std::string worker_err = tmp.Sub("worker.stderr");
    REQUIRE(worker.Start(WorkArgv(server, "q", {"--lease", "5s"}, script), tmp.Sub("worker.stdout"),
                         worker_err));
    bool is_dead = WaitFor(
        [&] {
          auto j = client.GetJob(id);
          if (j.ok()) dead = *j;
          return j.ok() && dead.state() != v1::JOB_STATE_READY &&
                 dead.state() != v1::JOB_STATE_LEASED;
        },
        15s);
    // Stop the worker before the redrive, or it would take the job again.
    bool timed_out = false;
    ExitInfo exit = worker.Stop(15s, &timed_out);
    INFO("worker stderr:\n" << ReadFile(worker_err));
    INFO(dead.ShortDebugString());
    REQUIRE(is_dead);
    CHECK_FALSE(timed_out);
    CHECK(StoppedBySigterm(exit));
  }
  INFO(dead.ShortDebugString());
  REQUIRE(dead.state() == v1::JOB_STATE_DEAD);
  CHECK(dead.attempts() == 1);
  CHECK(dead.dead_reason() == "permanent_error");
  REQUIRE(dead.errors_size() == 1);
  CHECK(dead.errors(0).kind() == v1::ERROR_KIND_PERMANENT);
  CHECK(dead.errors(0).code() == "EXIT_65");
  CHECK(dead.errors(0).message() == "bad input: job " + std::to_string(id) + " cannot be parsed");

  std::string out, err;
  ExitInfo e = Cli(server, {"dlq", "list", "--queue", "q"}, &out, &err);
  INFO("dlq list stdout:\n" << out << "stderr:\n" << err);
  CHECK(e.exited);
  CHECK(e.code == 0);
  CHECK(NamesNumber(out, id));
  CHECK_THAT(out, Catch::Contains("permanent_error"));
  CHECK_THAT(out, Catch::Contains("EXIT_65"));

  std::string why;
  auto before = QueueJson(server, "q", &why);
  INFO(why);
  REQUIRE_FALSE(before.is_null());
  CHECK(before["dead"] == 1);

  std::string rout, rerr;
  e = Cli(server, {"dlq", "redrive", "--id", std::to_string(id)}, &rout, &rerr);
  INFO("dlq redrive stdout:\n" << rout << "stderr:\n" << rerr);
  CHECK(e.exited);
  CHECK(e.code == 0);
  CHECK(NamesNumber(rout, id));

  auto back = client.GetJob(id);
  REQUIRE(back.ok());
  INFO(back->ShortDebugString());
  CHECK(back->id() == id);
  CHECK(back->state() == v1::JOB_STATE_READY);
  CHECK(back->attempts() == 1);  // attempt numbers only grow; a redrive keeps them
  CHECK(back->dead_reason().empty());
  CHECK(back->errors_size() == 1);        // the history of the first attempt is kept
  CHECK(back->attempts_remaining() > 0);  // a fresh budget

  auto after = QueueJson(server, "q", &why);
  INFO(why);
  REQUIRE_FALSE(after.is_null());
  CHECK(after["dead"] == 0);
  CHECK(after["ready"] == 1);

  std::string lout, lerr;
  e = Cli(server, {"dlq", "list", "--queue", "q"}, &lout, &lerr);
  CHECK(e.code == 0);
  CHECK_FALSE(NamesNumber(lout, id));

  // The next lease is attempt 2, not 1 again: the old token can never name the new lease.
  auto leased = client.Lease(LeaseReq("q", 1, 30, 0));
  REQUIRE(leased.ok());
  REQUIRE(leased->jobs_size() == 1);
  CHECK(leased->jobs(0).job().id() == id);
  CHECK(leased->jobs(0).token().attempt() == 2);
  v1::LeaseToken old_token;
  old_token.set_job_id(id);
  old_token.set_attempt(1);
  auto stale = client.Complete(CompleteReq(old_token, "stale"));
  REQUIRE_FALSE(stale.ok());
  CHECK(stale.status().code() == Code::kFailedPrecondition);
  auto ok = client.Complete(CompleteReq(leased->jobs(0).token(), "fixed"));
  REQUIRE(ok.ok());
  CHECK(ok->job().state() == v1::JOB_STATE_SUCCEEDED);
}

// `ledgerq work` must block SIGTERM/SIGINT before any gRPC thread exists; once a gRPC thread
// kept them unblocked, the kernel handed the signal to it and the default action killed the
// worker, orphaning its running command.
TEST_CASE("SIGTERM makes ledgerq work drain its running command and exit 0", "[e2e][worker]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  const std::string server = daemon.grpc_address();
  Client client = MakeClient(server);

  const std::string script = tmp.Sub("slow.sh");
  REQUIRE(WriteScript(script, "#!/bin/bash\ncat > /dev/null\nsleep 1.5\necho '{\"slow\":true}'\n"));
  auto enq = client.Enqueue(Req("q", "slow.cmd", "{}"));
  REQUIRE(enq.ok());
  const uint64_t id = enq->job().id();

  ChildProcess worker;
  const std::string worker_err = tmp.Sub("worker.stderr");
  REQUIRE(worker.Start(WorkArgv(server, "q", {"--lease", "5s"}, script), tmp.Sub("worker.stdout"),
                       worker_err));
  // SIGTERM while the command runs.
  REQUIRE(WaitFor(
      [&] {
        auto j = client.GetJob(id);
        return j.ok() && j->state() == v1::JOB_STATE_LEASED;
      },
      10s, 20ms));
  std::this_thread::sleep_for(200ms);
  bool timed_out = false;
  ExitInfo exit = worker.Stop(10s, &timed_out);
  INFO("worker stderr:\n" << ReadFile(worker_err));
  CHECK_FALSE(timed_out);
  CHECK(exit.exited);
  CHECK(exit.code == 0);
  CHECK_THAT(ReadFile(worker_err), Catch::Contains("stopping"));

  // The drain let the running command finish and report: the job is done, on its first attempt.
  auto job = client.GetJob(id);
  REQUIRE(job.ok());
  INFO(job->ShortDebugString());
  CHECK(job->state() == v1::JOB_STATE_SUCCEEDED);
  CHECK(job->attempts() == 1);
  // Give an orphaned command (with the bug) time to end before the TempDir goes.
  if (job->state() != v1::JOB_STATE_SUCCEEDED) std::this_thread::sleep_for(1500ms);
}

TEST_CASE("leases survive kill -9 of ledgerqd and each job is completed exactly once after restart",
          "[e2e][worker]") {
  TempDir tmp;
  const std::string data = tmp.Sub("data");
  Daemon daemon;
  REQUIRE(daemon.Start(data));
  constexpr int kJobs = 20;

  std::set<uint64_t> ids;
  {
    Client client = MakeClient(daemon.grpc_address());
    v1::EnqueueBatchRequest batch;
    for (int i = 0; i < kJobs; ++i) {
      *batch.add_items() = Req("crashq", "work.item", R"({"i":)" + std::to_string(i) + "}");
    }
    auto r = client.EnqueueBatch(batch);
    REQUIRE(r.ok());
    REQUIRE(r->results_size() == kJobs);
    for (const auto& res : r->results()) {
      REQUIRE(res.has_ok());
      ids.insert(res.ok().job().id());
    }
  }
  REQUIRE(ids.size() == static_cast<size_t>(kJobs));

  // Several raw Lease calls, as several workers would make, holding every token.
  std::vector<v1::LeaseToken> tokens;
  {
    Client client = MakeClient(daemon.grpc_address());
    for (int call = 0; call < 10 && tokens.size() < static_cast<size_t>(kJobs); ++call) {
      auto r = client.Lease(LeaseReq("crashq", 7, 30, 0, "worker-" + std::to_string(call)));
      REQUIRE(r.ok());
      for (const auto& lj : r->jobs()) {
        CHECK(lj.token().job_id() == lj.job().id());
        CHECK(lj.token().attempt() == 1);
        CHECK(lj.job().state() == v1::JOB_STATE_LEASED);
        tokens.push_back(lj.token());
      }
    }
  }
  REQUIRE(tokens.size() == static_cast<size_t>(kJobs));
  std::set<uint64_t> leased_ids;
  for (const auto& t : tokens) leased_ids.insert(t.job_id());
  REQUIRE(leased_ids == ids);

  daemon.Signal(SIGKILL);
  ExitInfo killed = daemon.Wait();
  CHECK_FALSE(killed.exited);
  CHECK(killed.code == SIGKILL);

  const std::string old_address = daemon.grpc_address();
  REQUIRE(daemon.Start(data));  // same data dir, new ports
  INFO("restarted at " << daemon.grpc_address() << " (was " << old_address << ")");
  // The client lives in this block: its connection is closed before the SIGTERM below (an
  // idle connection left open makes the drain wait ~5 s for it).
  {
    Client client = MakeClient(daemon.grpc_address());

    // Every lease is still held: one heartbeat for all of them loses none.
    v1::HeartbeatRequest hb;
    for (const auto& t : tokens) *hb.add_tokens() = t;
    auto beat = client.Heartbeat(hb);
    REQUIRE(beat.ok());
    REQUIRE(beat->results_size() == kJobs);
    const int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
    for (int i = 0; i < kJobs; ++i) {
      const auto& res = beat->results(i);
      INFO(TokenText(tokens[i]) << ": " << res.ShortDebugString());
      CHECK(res.token().job_id() == tokens[i].job_id());
      CHECK(res.token().attempt() == tokens[i].attempt());
      CHECK_FALSE(res.lease_lost());
      CHECK(res.deadline().seconds() > now_s);
    }

    // The queue's view after recovery: all 20 leased, none ready.
    auto qs = client.ListQueues();
    REQUIRE(qs.ok());
    bool listed = false;
    for (const auto& q : qs->queues()) {
      if (q.name() != "crashq") continue;
      listed = true;
      CHECK(q.leased() == static_cast<uint64_t>(kJobs));
      CHECK(q.ready() == 0);
    }
    CHECK(listed);

    // Each worker completes; a repeat (say, the answer was lost) gets the same answer.
    for (const auto& t : tokens) {
      INFO(TokenText(t));
      const std::string result = "done-" + std::to_string(t.job_id());
      auto first = client.Complete(CompleteReq(t, result));
      REQUIRE(first.ok());
      CHECK(first->job().id() == t.job_id());
      CHECK(first->job().state() == v1::JOB_STATE_SUCCEEDED);
      CHECK(first->job().attempts() == 1);
      auto again = client.Complete(CompleteReq(t, result));
      REQUIRE(again.ok());
      CHECK(again->job().id() == t.job_id());
      CHECK(again->job().state() == v1::JOB_STATE_SUCCEEDED);
      CHECK(again->job().attempts() == 1);
      CHECK(again->job().updated_at().seconds() == first->job().updated_at().seconds());
      CHECK(again->job().updated_at().nanos() == first->job().updated_at().nanos());
    }
    for (uint64_t id : ids) {
      INFO("job " << id);
      auto job = client.GetJob(id);
      REQUIRE(job.ok());
      CHECK(job->state() == v1::JOB_STATE_SUCCEEDED);
      CHECK(job->attempts() == 1);
      CHECK(job->errors_size() == 0);
      CHECK(job->result() == "done-" + std::to_string(id));
    }
  }

  ExitInfo stopped = Terminate(daemon);
  INFO(daemon.stderr_text());
  REQUIRE(stopped.exited);
  REQUIRE(stopped.code == 0);

  std::string out, err;
  ExitInfo audit =
      RunCommand({LedgerqCliPath(), "audit", "verify", "--data-dir", data}, &out, &err);
  INFO("audit stdout: " << out << "\nstderr: " << err);
  CHECK(audit.exited);
  CHECK(audit.code == 0);
  CHECK(out.rfind("ok ", 0) == 0);

  // Read the log offline: exactly one LEASED and one COMPLETED event per job, nothing expired.
  std::map<uint64_t, int> completed, leased_events, other;
  {
    ledgerq::storage::StoreOptions so;
    so.data_dir = data;
    auto store = ledgerq::storage::JobStore::Open(so);
    REQUIRE(store.ok());
    auto st = (*store)->ScanEvents(0, [&](const ledgerq::storage::EventBody& ev) {
      if (!ids.count(ev.job_id())) return true;
      switch (ev.type()) {
        case sv1::EVENT_COMPLETED:
          ++completed[ev.job_id()];
          break;
        case sv1::EVENT_LEASED:
          ++leased_events[ev.job_id()];
          break;
        case sv1::EVENT_SUBMITTED:
          break;
        default:
          ++other[ev.job_id()];
          break;
      }
      return true;
    });
    REQUIRE(st.ok());
    REQUIRE((*store)->Close().ok());
  }
  for (uint64_t id : ids) {
    INFO("job " << id);
    CHECK(completed[id] == 1);
    CHECK(leased_events[id] == 1);
    CHECK(other[id] == 0);
  }
}

TEST_CASE("a repeated Complete is not counted twice in the queue's succeeded count",
          "[e2e][worker]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());
  REQUIRE(client.Enqueue(Req("countq", "t", "{}")).ok());
  auto leased = client.Lease(LeaseReq("countq", 1, 30, 0));
  REQUIRE(leased.ok());
  REQUIRE(leased->jobs_size() == 1);
  const auto token = leased->jobs(0).token();
  for (int i = 0; i < 3; ++i) {
    auto r = client.Complete(CompleteReq(token, "r"));
    REQUIRE(r.ok());
    CHECK(r->job().state() == v1::JOB_STATE_SUCCEEDED);
  }
  auto qs = client.ListQueues();
  REQUIRE(qs.ok());
  REQUIRE(qs->queues_size() == 1);
  INFO(qs->queues(0).ShortDebugString());
  CHECK(qs->queues(0).succeeded() == 1);
  CHECK(qs->queues(0).leased() == 0);
}

TEST_CASE("a stale lease token is refused over the wire after the lease expired and moved on",
          "[e2e][worker]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());
  auto enq = client.Enqueue(Req("q", "slow.job", R"({"x":1})"));
  REQUIRE(enq.ok());
  const uint64_t id = enq->job().id();

  auto first = client.Lease(LeaseReq("q", 1, /*lease=*/1, /*wait=*/0, "sleepy-worker"));
  REQUIRE(first.ok());
  REQUIRE(first->jobs_size() == 1);
  const v1::LeaseToken old_token = first->jobs(0).token();
  CHECK(old_token.job_id() == id);
  CHECK(old_token.attempt() == 1);

  // No heartbeat: the lease expires after 1 s, the retry comes after a backoff of under 1 s.
  v1::LeasedJob second;
  const auto started = SteadyClock::now();
  bool got = false;
  std::string problem;
  while (!got && SteadyClock::now() < started + 10s) {
    auto r = client.Lease(LeaseReq("q", 1, 30, /*wait=*/2, "second-worker"));
    if (!r.ok()) {
      problem = r.status().ToString();
      break;
    }
    if (r->jobs_size() > 0) {
      second = r->jobs(0);
      got = true;
    }
  }
  INFO(problem);
  REQUIRE(got);
  CHECK(second.job().id() == id);
  CHECK(second.token().attempt() == 2);
  REQUIRE(second.job().errors_size() == 1);
  CHECK(second.job().errors(0).code() == "LEASE_EXPIRED");
  CHECK(second.job().errors(0).attempt() == 1);
  CHECK(second.job().errors(0).worker_id() == "sleepy-worker");

  auto stale = client.Complete(CompleteReq(old_token, "late result"));
  REQUIRE_FALSE(stale.ok());
  INFO(stale.status().ToString());
  CHECK(stale.status().code() == Code::kFailedPrecondition);
  auto mid = client.GetJob(id);
  REQUIRE(mid.ok());
  CHECK(mid->state() == v1::JOB_STATE_LEASED);
  CHECK(mid->attempts() == 2);
  CHECK(mid->lease_worker_id() == "second-worker");
  CHECK(mid->result().empty());

  v1::FailRequest stale_fail;
  *stale_fail.mutable_token() = old_token;
  stale_fail.mutable_error()->set_kind(v1::ERROR_KIND_PERMANENT);
  stale_fail.mutable_error()->set_code("LATE");
  auto sf = client.Fail(stale_fail);
  REQUIRE_FALSE(sf.ok());
  CHECK(sf.status().code() == Code::kFailedPrecondition);

  v1::HeartbeatRequest hb;
  *hb.add_tokens() = old_token;
  *hb.add_tokens() = second.token();
  auto beat = client.Heartbeat(hb);
  REQUIRE(beat.ok());
  REQUIRE(beat->results_size() == 2);
  CHECK(beat->results(0).lease_lost());
  CHECK_FALSE(beat->results(0).message().empty());
  CHECK_FALSE(beat->results(1).lease_lost());

  auto done = client.Complete(CompleteReq(second.token(), "right result"));
  REQUIRE(done.ok());
  CHECK(done->job().state() == v1::JOB_STATE_SUCCEEDED);
  CHECK(done->job().attempts() == 2);

  // Still refused once the job is finished, and the result is the current lease's.
  auto stale2 = client.Complete(CompleteReq(old_token, "late result"));
  REQUIRE_FALSE(stale2.ok());
  CHECK(stale2.status().code() == Code::kFailedPrecondition);
  auto final_job = client.GetJob(id);
  REQUIRE(final_job.ok());
  CHECK(final_job->result() == "right result");
  CHECK(final_job->errors_size() == 1);
}

TEST_CASE("a long-poll Lease wakes on enqueue and times out empty and forgets cancelled callers",
          "[e2e][worker]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());

  SECTION("a parked Lease gets a job enqueued meanwhile at once") {
    struct Seen {
      bool ok = false;
      std::string status;
      std::vector<uint64_t> ids;
      double seconds = 0;
    } seen;
    std::thread poller([&] {
      Client c = MakeClient(daemon.grpc_address());
      const auto t0 = SteadyClock::now();
      auto r = c.Lease(LeaseReq("lp", 1, 30, /*wait=*/10));
      seen.seconds = SecondsSince(t0);
      seen.ok = r.ok();
      if (!r.ok()) {
        seen.status = r.status().ToString();
      } else {
        for (const auto& lj : r->jobs()) seen.ids.push_back(lj.job().id());
      }
    });
    std::this_thread::sleep_for(300ms);  // let it park
    auto enq = client.Enqueue(Req("lp", "t", "{}"));
    poller.join();
    REQUIRE(enq.ok());
    INFO(seen.status << " after " << seen.seconds << " s");
    REQUIRE(seen.ok);
    REQUIRE(seen.ids.size() == 1);
    CHECK(seen.ids[0] == enq->job().id());
    CHECK(seen.seconds < 3.0);
    auto job = client.GetJob(enq->job().id());
    REQUIRE(job.ok());
    CHECK(job->state() == v1::JOB_STATE_LEASED);
  }

  SECTION("a Lease with wait 1s on an empty queue returns empty after about 1 s") {
    const auto t0 = SteadyClock::now();
    auto r = client.Lease(LeaseReq("empty", 1, 30, /*wait=*/1));
    const double took = SecondsSince(t0);
    REQUIRE(r.ok());
    CHECK(r->jobs_size() == 0);
    INFO(took << " s");
    CHECK(took >= 0.9);
    CHECK(took < 3.0);
  }

  SECTION("a Lease the client gave up on takes nothing enqueued afterwards") {
    v1::LeaseRequest req = LeaseReq("gone", 1, 30, /*wait=*/10);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 500ms);
    v1::LeaseResponse resp;
    const auto t0 = SteadyClock::now();
    grpc::Status st = client.workers()->Lease(&ctx, req, &resp);
    const double took = SecondsSince(t0);
    INFO("status " << st.error_code() << " " << st.error_message() << " after " << took << " s");
    CHECK(st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
    CHECK(resp.jobs_size() == 0);
    CHECK(took < 2.0);

    // The server learns of the deadline on its own clock, a hair after the client does: give it
    // a moment, far less than the 10 s the caller asked to wait.
    std::this_thread::sleep_for(100ms);
    auto enq = client.Enqueue(Req("gone", "t", "{}"));
    REQUIRE(enq.ok());
    const uint64_t id = enq->job().id();
    std::string bad;
    const auto until = SteadyClock::now() + 1s;
    while (SteadyClock::now() < until && bad.empty()) {
      auto job = client.GetJob(id);
      if (!job.ok()) {
        bad = job.status().ToString();
      } else if (job->state() != v1::JOB_STATE_READY || job->attempts() != 0) {
        bad = job->ShortDebugString();
      }
      std::this_thread::sleep_for(50ms);
    }
    INFO(bad);
    CHECK(bad.empty());

    // And a live caller gets it.
    auto r = client.Lease(LeaseReq("gone", 1, 30, 0));
    REQUIRE(r.ok());
    REQUIRE(r->jobs_size() == 1);
    CHECK(r->jobs(0).job().id() == id);
    CHECK(r->jobs(0).token().attempt() == 1);
  }
}

TEST_CASE("ledgerq pause stops leasing from a queue and resume restarts it", "[e2e][worker]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  const std::string server = daemon.grpc_address();
  Client client = MakeClient(server);
  auto enq = client.Enqueue(Req("q", "t", R"({"p":1})"));
  REQUIRE(enq.ok());
  const uint64_t id = enq->job().id();

  std::string out, err;
  ExitInfo e = Cli(server, {"pause", "q"}, &out, &err);
  INFO("pause stdout: " << out << "\nstderr: " << err);
  REQUIRE(e.exited);
  REQUIRE(e.code == 0);

  std::string why;
  auto paused = QueueJson(server, "q", &why);
  INFO(why);
  REQUIRE_FALSE(paused.is_null());
  CHECK(paused["paused"] == true);
  CHECK(paused["ready"] == 1);

  auto nothing = client.Lease(LeaseReq("q", 1, 30, 0));
  REQUIRE(nothing.ok());
  CHECK(nothing->jobs_size() == 0);
  auto still = client.GetJob(id);
  REQUIRE(still.ok());
  CHECK(still->state() == v1::JOB_STATE_READY);

  e = Cli(server, {"resume", "q"}, &out, &err);
  INFO("resume stdout: " << out << "\nstderr: " << err);
  REQUIRE(e.exited);
  REQUIRE(e.code == 0);

  auto resumed = QueueJson(server, "q", &why);
  INFO(why);
  REQUIRE_FALSE(resumed.is_null());
  CHECK(resumed["paused"] == false);

  auto got = client.Lease(LeaseReq("q", 1, 30, 0));
  REQUIRE(got.ok());
  REQUIRE(got->jobs_size() == 1);
  CHECK(got->jobs(0).job().id() == id);
  CHECK(got->jobs(0).job().payload() == R"({"p":1})");
}

TEST_CASE("invalid worker calls are INVALID_ARGUMENT naming the field", "[e2e][worker]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());
  auto enq = client.Enqueue(Req("q", "t", "{}"));
  REQUIRE(enq.ok());

  auto expect_invalid = [](const ledgerq::Status& st, const std::string& what,
                           const std::vector<std::string>& fields) {
    INFO(what << ": " << st.ToString());
    CHECK(st.code() == Code::kInvalidArgument);
    for (const auto& f : fields) CHECK_THAT(st.message(), Catch::Contains(f));
  };

  struct BadLease {
    std::string name;
    v1::LeaseRequest req;
    std::string field;
  };
  std::vector<BadLease> leases;
  {
    BadLease b{"no queues", LeaseReq("q", 1, 30, 0), "queues"};
    b.req.clear_queues();
    leases.push_back(b);
  }
  leases.push_back({"max_jobs 300", LeaseReq("q", 300, 30, 0), "max_jobs"});
  leases.push_back({"lease_duration 13h", LeaseReq("q", 1, 13 * 3600, 0), "lease_duration"});
  leases.push_back({"wait 61s", LeaseReq("q", 1, 30, 61), "wait"});
  leases.push_back({"empty worker_id", LeaseReq("q", 1, 30, 0, ""), "worker_id"});
  for (const auto& b : leases) {
    auto r = client.Lease(b.req);
    REQUIRE_FALSE(r.ok());
    expect_invalid(r.status(), "Lease with " + b.name, {b.field});
  }
  // None of them leased the job.
  auto job = client.GetJob(enq->job().id());
  REQUIRE(job.ok());
  CHECK(job->state() == v1::JOB_STATE_READY);
  CHECK(job->attempts() == 0);

  {
    v1::LeaseToken zero;
    zero.set_job_id(0);
    zero.set_attempt(1);
    auto r = client.Complete(CompleteReq(zero, ""));
    REQUIRE_FALSE(r.ok());
    expect_invalid(r.status(), "Complete with job_id 0", {"job_id"});
  }
  {
    v1::FailRequest f;
    f.mutable_token()->set_job_id(enq->job().id());
    f.mutable_token()->set_attempt(1);
    f.mutable_error()->set_code("X");
    auto r = client.Fail(f);
    REQUIRE_FALSE(r.ok());
    expect_invalid(r.status(), "Fail with error.kind unspecified", {"error.kind"});
  }
  {
    v1::HeartbeatRequest hb;
    auto r = client.Heartbeat(hb);
    REQUIRE_FALSE(r.ok());
    expect_invalid(r.status(), "Heartbeat with no tokens", {"tokens"});
  }

  // A real lease, so that checkpoint size is the only thing wrong.
  auto leased = client.Lease(LeaseReq("q", 1, 30, 0));
  REQUIRE(leased.ok());
  REQUIRE(leased->jobs_size() == 1);
  const auto token = leased->jobs(0).token();
  for (size_t size : {size_t{64 * 1024 + 1}, size_t{65 * 1024 + 1}}) {
    v1::HeartbeatRequest hb;
    *hb.add_tokens() = token;
    hb.set_checkpoint(std::string(size, 'c'));
    hb.set_set_checkpoint(true);
    auto r = client.Heartbeat(hb);
    REQUIRE_FALSE(r.ok());
    expect_invalid(r.status(), "Heartbeat checkpoint of " + std::to_string(size) + " bytes",
                   {"checkpoint"});
  }
  {
    // The limit itself is accepted, and the next attempt would see it.
    v1::HeartbeatRequest hb;
    *hb.add_tokens() = token;
    hb.set_checkpoint(std::string(64 * 1024, 'c'));
    hb.set_set_checkpoint(true);
    auto r = client.Heartbeat(hb);
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    REQUIRE(r->results_size() == 1);
    CHECK_FALSE(r->results(0).lease_lost());
  }
  {
    v1::RedriveRequest rd;
    rd.add_ids(enq->job().id());
    rd.set_queue("q");
    auto r = client.Redrive(rd);
    REQUIRE_FALSE(r.ok());
    expect_invalid(r.status(), "Redrive with both ids and queue", {"ids", "queue"});
  }
  {
    // A duration whose microseconds would overflow int64 must not slip through as a small one.
    v1::ReleaseRequest rel;
    *rel.mutable_token() = token;
    rel.mutable_delay()->set_seconds(9'223'372'036'855);
    auto r = client.Release(rel);
    REQUIRE_FALSE(r.ok());
    expect_invalid(r.status(), "Release with an overflowing delay", {"delay"});
  }
  for (const char* bad : {"99999999999999999999", "18446744073709551615", "12x", "-1"}) {
    v1::ListJobsRequest lj;
    lj.set_queue("q");
    lj.set_page_token(bad);
    auto r = client.ListJobs(lj);
    REQUIRE_FALSE(r.ok());
    expect_invalid(r.status(), std::string("ListJobs with page_token ") + bad, {"page_token"});
  }
  // The invalid calls changed nothing: the lease still stands.
  auto after = client.GetJob(enq->job().id());
  REQUIRE(after.ok());
  CHECK(after->state() == v1::JOB_STATE_LEASED);
  CHECK(after->attempts() == 1);
}
