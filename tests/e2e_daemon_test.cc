// End-to-end tests: the real ledgerqd and ledgerq binaries on free loopback ports, spoken to
// over gRPC, plain HTTP and the CLI exactly as users do. Every TEST_CASE owns its TempDir and
// its Daemon, so `ctest -j` is safe.
//
// Catch2 assertions are not thread-safe: worker threads collect problems as strings and the
// test thread asserts on them.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "common/sha256.h"
#include "common/status.h"
#include "storage/job_store.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace {

using ledgerq::Code;
using ledgerq::client::Client;
using ledgerq::testing::Daemon;
using ledgerq::testing::ExitInfo;
using ledgerq::testing::HttpGet;
using ledgerq::testing::LedgerqCliPath;
using ledgerq::testing::LedgerqdPath;
using ledgerq::testing::Lower;
using ledgerq::testing::MakeClient;
using ledgerq::testing::NamesNumber;
using ledgerq::testing::Req;
using ledgerq::testing::RunCommand;
using ledgerq::testing::TempDir;
using ledgerq::testing::Terminate;
namespace v1 = ledgerq::v1;
using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// Helpers

struct TimedRun {
  ExitInfo exit;
  bool timed_out = false;
  std::string out, err;
};

// Like RunCommand, but SIGKILLs the child after `limit`: for commands (ledgerqd) that would
// block forever if they unexpectedly succeeded.
TimedRun RunWithTimeout(const std::vector<std::string>& args, std::chrono::milliseconds limit) {
  TimedRun r;
  int o[2], e[2];
  if (::pipe2(o, O_CLOEXEC) != 0) return r;
  if (::pipe2(e, O_CLOEXEC) != 0) {
    ::close(o[0]);
    ::close(o[1]);
    return r;
  }
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(o[1], 1);
    ::dup2(e[1], 2);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(o[1]);
  ::close(e[1]);
  const auto deadline = std::chrono::steady_clock::now() + limit;
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= 0ms && !r.timed_out) {
      r.timed_out = true;
      ::kill(pid, SIGKILL);
    }
    pollfd fds[2] = {{out_open ? o[0] : -1, POLLIN, 0}, {err_open ? e[0] : -1, POLLIN, 0}};
    int timeout_ms = r.timed_out ? 1000 : static_cast<int>(std::max<int64_t>(left.count(), 1));
    int n = ::poll(fds, 2, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (r.timed_out) break;  // killed and still silent: stop reading
      continue;
    }
    char buf[4096];
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
      if (got > 0) {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(got));
      } else {
        (i == 0 ? out_open : err_open) = false;
      }
    }
  }
  ::close(o[0]);
  ::close(e[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (WIFEXITED(status)) r.exit = {true, WEXITSTATUS(status)};
  if (WIFSIGNALED(status)) r.exit = {false, WTERMSIG(status)};
  return r;
}

// A loopback port that refuses connections: bound (so nobody else takes it) but not listening.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
  }
  ~RefusingPort() {
    if (fd_ >= 0) ::close(fd_);
  }
  RefusingPort(const RefusingPort&) = delete;
  RefusingPort& operator=(const RefusingPort&) = delete;
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Crash durability

struct Ack {
  uint64_t id = 0;
  std::string queue, type, key, payload;
};

constexpr int kProducerThreads = 4;
constexpr char kCrashQueue[] = "crash-q";
constexpr char kCrashType[] = "crash.test";

struct ProduceResult {
  std::vector<Ack> acks;
  std::vector<std::string> problems;  // unexpected outcomes before the kill
  ExitInfo kill_exit;
  int failures_after_kill = 0;
};

// kProducerThreads threads enqueue jobs with unique keys; once `target` jobs are acknowledged
// the daemon gets `sig` (SIGKILL by default) while the threads keep sending. Every OK answer is an
// acknowledgement: a dead process answers nothing.
ProduceResult ProduceThenKill(Daemon& daemon, int round, size_t target, int sig = SIGKILL) {
  ProduceResult result;
  std::mutex mu;
  std::atomic<size_t> acked{0};
  std::atomic<bool> killed{false}, reaped{false}, stop{false};
  std::atomic<int> threads_failed_after_kill{0};
  std::atomic<int> failures_after_kill{0};
  const std::string address = daemon.grpc_address();

  std::vector<std::thread> threads;
  for (int t = 0; t < kProducerThreads; ++t) {
    threads.emplace_back([&, t] {
      Client client = MakeClient(address, 3000ms);
      bool saw_failure_after_kill = false;
      for (int n = 0; !stop.load(); ++n) {
        Ack a;
        a.queue = kCrashQueue;
        a.type = kCrashType;
        a.key = "r" + std::to_string(round) + "-t" + std::to_string(t) + "-" + std::to_string(n);
        a.payload = R"({"round":)" + std::to_string(round) + R"(,"thread":)" + std::to_string(t) +
                    R"(,"n":)" + std::to_string(n) + "}";
        const bool sent_after_death = reaped.load();
        auto r = client.Enqueue(Req(a.queue, a.type, a.payload, a.key));
        if (r.ok()) {
          std::lock_guard lock(mu);
          if (r->deduplicated()) {
            result.problems.push_back("fresh key " + a.key + " came back deduplicated");
          }
          if (sent_after_death) {
            result.problems.push_back("a request sent after the daemon died was acknowledged: " +
                                      a.key);
          }
          a.id = r->job().id();
          result.acks.push_back(std::move(a));
          acked.fetch_add(1);
        } else if (killed.load()) {
          failures_after_kill.fetch_add(1);
          if (!saw_failure_after_kill) {
            saw_failure_after_kill = true;
            threads_failed_after_kill.fetch_add(1);
          }
        } else {
          std::lock_guard lock(mu);
          result.problems.push_back("enqueue " + a.key +
                                    " failed before the kill: " + r.status().ToString());
          stop = true;
        }
      }
    });
  }

  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (acked.load() < target && !stop.load() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  killed = true;
  daemon.Signal(sig);
  result.kill_exit = daemon.Wait();
  reaped = true;
  // Keep sending into the dead daemon until every thread has seen it fail (bounded).
  const auto after = std::chrono::steady_clock::now() + 10s;
  while (threads_failed_after_kill.load() < kProducerThreads &&
         std::chrono::steady_clock::now() < after) {
    std::this_thread::sleep_for(1ms);
  }
  stop = true;
  for (auto& th : threads) th.join();
  result.failures_after_kill = failures_after_kill.load();
  if (acked.load() < target) {
    result.problems.push_back("only " + std::to_string(acked.load()) + " of " +
                              std::to_string(target) + " jobs were acknowledged in 30 s");
  }
  return result;
}

// Checks every acknowledged job against a restarted daemon, from several threads. Returns the
// problems found (empty when all is well).
std::vector<std::string> VerifyAcks(const std::string& address, const std::vector<Ack>& acks) {
  std::mutex mu;
  std::vector<std::string> problems;
  auto problem = [&](std::string p) {
    std::lock_guard lock(mu);
    problems.push_back(std::move(p));
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kProducerThreads; ++t) {
    threads.emplace_back([&, t] {
      Client client = MakeClient(address);
      for (size_t i = static_cast<size_t>(t); i < acks.size(); i += kProducerThreads) {
        const Ack& a = acks[i];
        const std::string what = "job " + std::to_string(a.id) + " (key " + a.key + ")";
        auto job = client.GetJob(a.id);
        if (!job.ok()) {
          problem(what + ": GetJob: " + job.status().ToString());
          continue;
        }
        if (job->queue() != a.queue || job->type() != a.type || job->idempotency_key() != a.key ||
            job->payload() != a.payload) {
          problem(what + ": GetJob returned queue=" + job->queue() + " type=" + job->type() +
                  " key=" + job->idempotency_key() + " payload=" + job->payload());
        }
        if (job->state() != v1::JOB_STATE_READY) {
          problem(what + ": state " + v1::JobState_Name(job->state()) + ", want READY");
        }
        auto by_key = client.GetJobByIdempotencyKey(a.queue, a.key);
        if (!by_key.ok()) {
          problem(what + ": GetJobByIdempotencyKey: " + by_key.status().ToString());
        } else if (by_key->id() != a.id) {
          problem(what + ": GetJobByIdempotencyKey names job " + std::to_string(by_key->id()));
        }
        auto again = client.Enqueue(Req(a.queue, a.type, a.payload, a.key));
        if (!again.ok()) {
          problem(what + ": resubmission: " + again.status().ToString());
        } else if (again->job().id() != a.id || !again->deduplicated()) {
          problem(what + ": resubmission returned job " + std::to_string(again->job().id()) +
                  (again->deduplicated() ? " (deduplicated)" : " (not deduplicated)"));
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  return problems;
}

std::string FirstFew(const std::vector<std::string>& lines, size_t n = 10) {
  std::string out;
  for (size_t i = 0; i < lines.size() && i < n; ++i) out += lines[i] + "\n";
  if (lines.size() > n) out += "... and " + std::to_string(lines.size() - n) + " more\n";
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------

TEST_CASE("acknowledged enqueues survive kill -9 mid-stream twice and the chain verifies",
          "[e2e]") {
  TempDir tmp;
  REQUIRE_FALSE(tmp.path().empty());
  const std::string data = tmp.Sub("data");
  constexpr size_t kTarget = 300;
  constexpr int kRounds = 2;

  Daemon daemon;
  REQUIRE(daemon.Start(data));
  std::vector<Ack> all;
  uint64_t min_events = 0;  // SUBMITTED + DEDUPLICATED events this test knows were written

  for (int round = 0; round < kRounds; ++round) {
    INFO("round " << round);
    ProduceResult produced = ProduceThenKill(daemon, round, kTarget);
    INFO(FirstFew(produced.problems));
    REQUIRE(produced.problems.empty());
    CHECK_FALSE(produced.kill_exit.exited);
    CHECK(produced.kill_exit.code == SIGKILL);
    CHECK(produced.failures_after_kill > 0);
    REQUIRE(produced.acks.size() >= kTarget);
    min_events += produced.acks.size();
    all.insert(all.end(), produced.acks.begin(), produced.acks.end());

    // Ids are unique across every acknowledgement, over both crashes.
    std::set<uint64_t> ids;
    uint64_t max_id = 0;
    for (const auto& a : all) {
      ids.insert(a.id);
      max_id = std::max(max_id, a.id);
    }
    REQUIRE(ids.size() == all.size());
    REQUIRE_FALSE(ids.count(0));

    const std::string old_address = daemon.grpc_address();
    REQUIRE(daemon.Start(data));  // same data dir, new ports
    INFO("restarted at " << daemon.grpc_address() << " (was " << old_address << ")");

    auto problems = VerifyAcks(daemon.grpc_address(), all);
    INFO(FirstFew(problems));
    REQUIRE(problems.empty());
    min_events += all.size();  // one DEDUPLICATED event per resubmission

    Client client = MakeClient(daemon.grpc_address());
    auto fresh = client.Enqueue(
        Req(kCrashQueue, kCrashType, "{}", "fresh-after-restart-" + std::to_string(round)));
    REQUIRE(fresh.ok());
    CHECK_FALSE(fresh->deduplicated());
    CHECK(fresh->job().id() > max_id);
    min_events += 1;
  }

  ExitInfo stopped = Terminate(daemon);
  INFO(daemon.stderr_text());
  REQUIRE(stopped.exited);
  REQUIRE(stopped.code == 0);

  std::string out, err;
  ExitInfo audit =
      RunCommand({LedgerqCliPath(), "audit", "verify", "--data-dir", data}, &out, &err);
  INFO("stdout: " << out << "\nstderr: " << err);
  CHECK(audit.exited);
  CHECK(audit.code == 0);
  REQUIRE(out.rfind("ok ", 0) == 0);
  // "ok <events> <head hash>": the chain holds at least every event this test caused.
  std::istringstream words(out.substr(3));
  uint64_t events = 0;
  std::string head;
  words >> events >> head;
  CHECK(events >= min_events);
  CHECK(head.size() == 64);

  // The library's offline audit agrees with the CLI.
  auto report = ledgerq::storage::VerifyChain(data);
  REQUIRE(report.ok());
  CHECK(report->ok);
  CHECK(report->events == events);
  CHECK(ledgerq::ToHex(report->head) == head);
}

TEST_CASE("an idempotency key reused with a different payload is ALREADY_EXISTS naming the job",
          "[e2e]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());

  auto first = client.Enqueue(Req("orders", "send.email", R"({"to":"a"})", "order-17"));
  REQUIRE(first.ok());
  CHECK_FALSE(first->deduplicated());
  const uint64_t id = first->job().id();

  SECTION("a different payload conflicts") {
    auto conflict = client.Enqueue(Req("orders", "send.email", R"({"to":"b"})", "order-17"));
    REQUIRE_FALSE(conflict.ok());
    CHECK(conflict.status().code() == Code::kAlreadyExists);
    INFO(conflict.status().message());
    CHECK(NamesNumber(conflict.status().message(), id));
  }
  SECTION("a different type with the same payload conflicts") {
    auto conflict = client.Enqueue(Req("orders", "send.sms", R"({"to":"a"})", "order-17"));
    REQUIRE_FALSE(conflict.ok());
    CHECK(conflict.status().code() == Code::kAlreadyExists);
    INFO(conflict.status().message());
    CHECK(NamesNumber(conflict.status().message(), id));
  }
  SECTION("the same submission is deduplicated to the original") {
    auto again = client.Enqueue(Req("orders", "send.email", R"({"to":"a"})", "order-17"));
    REQUIRE(again.ok());
    CHECK(again->deduplicated());
    CHECK(again->job().id() == id);
  }
  SECTION("the same key in another queue is a new job") {
    auto other = client.Enqueue(Req("invoices", "send.email", R"({"to":"b"})", "order-17"));
    REQUIRE(other.ok());
    CHECK_FALSE(other->deduplicated());
    CHECK(other->job().id() != id);
    CHECK(other->job().queue() == "invoices");
    auto by_key = client.GetJobByIdempotencyKey("invoices", "order-17");
    REQUIRE(by_key.ok());
    CHECK(by_key->id() == other->job().id());
  }
  // Whatever happened above, the key in the original queue still names the original job.
  auto original = client.GetJobByIdempotencyKey("orders", "order-17");
  REQUIRE(original.ok());
  CHECK(original->id() == id);
  CHECK(original->payload() == R"({"to":"a"})");
}

TEST_CASE("EnqueueBatch keeps item order with per-item errors and size limits and in-batch dedup",
          "[e2e]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());

  SECTION("100 items get 100 results with ids increasing in item order") {
    v1::EnqueueBatchRequest batch;
    for (int i = 0; i < 100; ++i) {
      *batch.add_items() = Req("bulk", "import.row", R"({"row":)" + std::to_string(i) + "}",
                               "row-" + std::to_string(i));
    }
    auto r = client.EnqueueBatch(batch);
    REQUIRE(r.ok());
    REQUIRE(r->results_size() == 100);
    uint64_t prev = 0;
    for (int i = 0; i < 100; ++i) {
      INFO("item " << i);
      const auto& res = r->results(i);
      REQUIRE(res.has_ok());
      CHECK_FALSE(res.ok().deduplicated());
      CHECK(res.ok().job().id() > prev);
      CHECK(res.ok().job().idempotency_key() == "row-" + std::to_string(i));
      prev = res.ok().job().id();
    }
    // Stored as answered.
    auto job = client.GetJob(r->results(42).ok().job().id());
    REQUIRE(job.ok());
    CHECK(job->payload() == R"({"row":42})");
  }

  SECTION("one invalid item fails alone; the others are created") {
    v1::EnqueueBatchRequest batch;
    *batch.add_items() = Req("bulk", "import.row", "{}", "a");
    *batch.add_items() = Req("bulk", "import.row", "{}", "b");
    *batch.add_items() = Req("bad queue", "import.row", "{}", "c");
    *batch.add_items() = Req("bulk", "import.row", "{}", "d");
    auto r = client.EnqueueBatch(batch);
    REQUIRE(r.ok());
    REQUIRE(r->results_size() == 4);
    REQUIRE(r->results(2).has_error());
    CHECK(r->results(2).error().code() == static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
    CHECK_THAT(r->results(2).error().message(), Catch::Contains("queue"));
    for (int i : {0, 1, 3}) {
      INFO("item " << i);
      REQUIRE(r->results(i).has_ok());
      auto job = client.GetJob(r->results(i).ok().job().id());
      REQUIRE(job.ok());
      CHECK(job->queue() == "bulk");
    }
    CHECK(r->results(0).ok().job().id() < r->results(1).ok().job().id());
    CHECK(r->results(1).ok().job().id() < r->results(3).ok().job().id());
    auto missing = client.GetJobByIdempotencyKey("bulk", "c");
    CHECK(missing.status().code() == Code::kNotFound);
  }

  SECTION("an empty batch and a 1001-item batch are INVALID_ARGUMENT") {
    v1::EnqueueBatchRequest empty;
    auto r = client.EnqueueBatch(empty);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::kInvalidArgument);

    v1::EnqueueBatchRequest big;
    for (int i = 0; i < 1001; ++i) *big.add_items() = Req("bulk", "import.row", "{}");
    auto r2 = client.EnqueueBatch(big);
    REQUIRE_FALSE(r2.ok());
    CHECK(r2.status().code() == Code::kInvalidArgument);
    CHECK_THAT(r2.status().message(), Catch::Contains("items"));

    // Neither wrote anything: the next job takes the very first id.
    auto next = client.Enqueue(Req("bulk", "import.row", "{}"));
    REQUIRE(next.ok());
    CHECK(next->job().id() == 1);
  }

  SECTION("a key repeated inside one batch is deduplicated to the first item") {
    v1::EnqueueBatchRequest batch;
    *batch.add_items() = Req("bulk", "import.row", R"({"x":1})", "dup");
    *batch.add_items() = Req("bulk", "import.row", R"({"x":1})", "dup");
    *batch.add_items() = Req("bulk", "import.row", R"({"x":2})", "other");
    auto r = client.EnqueueBatch(batch);
    REQUIRE(r.ok());
    REQUIRE(r->results_size() == 3);
    REQUIRE(r->results(0).has_ok());
    REQUIRE(r->results(1).has_ok());
    REQUIRE(r->results(2).has_ok());
    CHECK_FALSE(r->results(0).ok().deduplicated());
    CHECK(r->results(1).ok().deduplicated());
    CHECK(r->results(1).ok().job().id() == r->results(0).ok().job().id());
    CHECK_FALSE(r->results(2).ok().deduplicated());
    CHECK(r->results(2).ok().job().id() > r->results(0).ok().job().id());
  }
}

TEST_CASE("invalid requests are INVALID_ARGUMENT naming the field and write nothing", "[e2e]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data"), {"--max-payload-bytes", "1024"}));
  Client client = MakeClient(daemon.grpc_address());

  auto before = client.Enqueue(Req("valid", "ok.type", "{}"));
  REQUIRE(before.ok());
  const uint64_t first_id = before->job().id();

  struct Bad {
    std::string name;
    v1::EnqueueRequest req;
    std::vector<std::string> fields;  // each must appear in the message
  };
  const int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  std::vector<Bad> bad;
  auto base = [] { return Req("valid", "ok.type", "{}"); };
  {
    Bad b{"empty queue", base(), {"queue"}};
    b.req.set_queue("");
    bad.push_back(b);
  }
  {
    Bad b{"queue with a space", base(), {"queue"}};
    b.req.set_queue("my queue");
    bad.push_back(b);
  }
  {
    Bad b{"129-byte queue", base(), {"queue"}};
    b.req.set_queue(std::string(129, 'q'));
    bad.push_back(b);
  }
  {
    Bad b{"bad type", base(), {"type"}};
    b.req.set_type("send/email");
    bad.push_back(b);
  }
  {
    Bad b{"payload over --max-payload-bytes", base(), {"payload"}};
    b.req.set_payload(std::string(1025, 'p'));
    bad.push_back(b);
  }
  {
    Bad b{"65 labels", base(), {"labels"}};
    for (int i = 0; i < 65; ++i) (*b.req.mutable_labels())["k" + std::to_string(i)] = "v";
    bad.push_back(b);
  }
  {
    Bad b{"257-byte label value", base(), {"labels"}};
    (*b.req.mutable_labels())["big"] = std::string(257, 'v');
    bad.push_back(b);
  }
  {
    Bad b{"run_at 2 years ahead", base(), {"run_at"}};
    b.req.mutable_run_at()->set_seconds(now_s + 2 * 365 * 24 * 3600);
    bad.push_back(b);
  }
  {
    Bad b{"both run_at and delay", base(), {"run_at", "delay"}};
    b.req.mutable_run_at()->set_seconds(now_s + 60);
    b.req.mutable_delay()->set_seconds(60);
    bad.push_back(b);
  }
  {
    Bad b{"negative delay", base(), {"delay"}};
    b.req.mutable_delay()->set_seconds(-5);
    bad.push_back(b);
  }
  {
    Bad b{"malformed traceparent", base(), {"traceparent"}};
    b.req.set_traceparent("00-not-a-trace-context-01");
    bad.push_back(b);
  }
  {
    Bad b{"max_attempts 1001", base(), {"max_attempts"}};
    b.req.set_max_attempts(1001);
    bad.push_back(b);
  }

  for (const auto& b : bad) {
    INFO(b.name);
    auto r = client.Enqueue(b.req);
    REQUIRE_FALSE(r.ok());
    INFO(r.status().ToString());
    CHECK(r.status().code() == Code::kInvalidArgument);
    for (const auto& field : b.fields) CHECK_THAT(r.status().message(), Catch::Contains(field));
  }

  // Nothing above allocated an id or wrote a job.
  auto after = client.Enqueue(Req("valid", "ok.type", "{}"));
  REQUIRE(after.ok());
  CHECK(after->job().id() == first_id + 1);

  // The limit itself is accepted.
  auto at_limit = client.Enqueue(Req("valid", "ok.type", std::string(1024, 'p')));
  CHECK(at_limit.ok());

  SECTION("GetJob: id 0 is INVALID_ARGUMENT, an unknown id NOT_FOUND") {
    auto zero = client.GetJob(0);
    REQUIRE_FALSE(zero.ok());
    CHECK(zero.status().code() == Code::kInvalidArgument);
    CHECK_THAT(zero.status().message(), Catch::Contains("id"));
    auto unknown = client.GetJob(987654321);
    REQUIRE_FALSE(unknown.ok());
    CHECK(unknown.status().code() == Code::kNotFound);
  }

  SECTION("CancelJob cancels a READY job once; again is FAILED_PRECONDITION naming the state") {
    REQUIRE(after->job().state() == v1::JOB_STATE_READY);
    auto cancelled = client.CancelJob(after->job().id(), "no longer needed");
    REQUIRE(cancelled.ok());
    CHECK(cancelled->id() == after->job().id());
    CHECK(cancelled->state() == v1::JOB_STATE_CANCELLED);
    CHECK(cancelled->cancel_reason() == "no longer needed");
    auto stored = client.GetJob(after->job().id());
    REQUIRE(stored.ok());
    CHECK(stored->state() == v1::JOB_STATE_CANCELLED);

    auto again = client.CancelJob(after->job().id(), "again");
    REQUIRE_FALSE(again.ok());
    CHECK(again.status().code() == Code::kFailedPrecondition);
    CHECK_THAT(again.status().message(), Catch::Contains("CANCELLED"));
  }
}

TEST_CASE("a delayed job is SCHEDULED and an immediate one READY", "[e2e]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());

  auto delayed_req = Req("timers", "remind", "{}");
  delayed_req.mutable_delay()->set_seconds(3600);
  auto delayed = client.Enqueue(delayed_req);
  REQUIRE(delayed.ok());
  CHECK(delayed->job().state() == v1::JOB_STATE_SCHEDULED);
  auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
  CHECK(delayed->job().run_at().seconds() > now_s + 3500);
  auto stored = client.GetJob(delayed->job().id());
  REQUIRE(stored.ok());
  CHECK(stored->state() == v1::JOB_STATE_SCHEDULED);

  auto now = client.Enqueue(Req("timers", "remind", "{}"));
  REQUIRE(now.ok());
  CHECK(now->job().state() == v1::JOB_STATE_READY);
  auto stored_now = client.GetJob(now->job().id());
  REQUIRE(stored_now.ok());
  CHECK(stored_now->state() == v1::JOB_STATE_READY);
}

TEST_CASE("a second ledgerqd on a data dir in use exits non-zero saying it is locked", "[e2e]") {
  TempDir tmp;
  const std::string data = tmp.Sub("data");
  Daemon first;
  REQUIRE(first.Start(data));

  auto second = RunWithTimeout({LedgerqdPath(), "--data-dir", data, "--grpc-listen", "127.0.0.1:0",
                                "--http-listen", "127.0.0.1:0"},
                               15s);
  INFO("stdout: " << second.out << "\nstderr: " << second.err);
  REQUIRE_FALSE(second.timed_out);
  CHECK(second.exit.exited);
  CHECK(second.exit.code != 0);
  CHECK_THAT(second.err, Catch::Contains("locked"));

  // The first daemon is unharmed.
  Client client = MakeClient(first.grpc_address());
  auto r = client.Enqueue(Req("still", "works", "{}"));
  CHECK(r.ok());
}

TEST_CASE("ledgerqd refuses a gRPC port another daemon holds and names --grpc-listen", "[e2e]") {
  TempDir tmp;
  Daemon first;
  REQUIRE(first.Start(tmp.Sub("first")));

  // Run ledgerqd directly with one explicit --grpc-listen rather than through Daemon::Start
  // (which passes --grpc-listen 127.0.0.1:0 first, and whether a repeated flag is an error or
  // takes the last value has changed between versions): this also sees the exit code, and a
  // daemon that wrongly starts is killed by the timeout instead of blocking the test.
  auto second = RunWithTimeout({LedgerqdPath(), "--data-dir", tmp.Sub("second"), "--grpc-listen",
                                first.grpc_address(), "--http-listen", "127.0.0.1:0"},
                               15s);
  INFO("stdout: " << second.out << "\nstderr: " << second.err);
  REQUIRE_FALSE(second.timed_out);
  CHECK(second.exit.exited);
  CHECK(second.exit.code != 0);
  CHECK_THAT(second.err, Catch::Contains("--grpc-listen"));
  CHECK(second.out.find("listening") == std::string::npos);

  Client client = MakeClient(first.grpc_address());
  auto r = client.Enqueue(Req("still", "works", "{}"));
  CHECK(r.ok());
}

TEST_CASE("invalid ledgerqd flag values exit 2 naming the flag", "[e2e]") {
  TempDir tmp;
  struct Case {
    std::vector<std::string> flags;
    std::string name;
  };
  const std::vector<Case> cases = {
      {{"--sync", "sometimes"}, "--sync"},
      {{"--dedup-window", "5"}, "--dedup-window"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {LedgerqdPath(),  "--data-dir",  tmp.Sub("data"),
                                     "--grpc-listen", "127.0.0.1:0", "--http-listen",
                                     "127.0.0.1:0"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    auto run = RunWithTimeout(args, 15s);
    INFO(c.name << "\nstdout: " << run.out << "\nstderr: " << run.err);
    REQUIRE_FALSE(run.timed_out);
    CHECK(run.exit.exited);
    CHECK(run.exit.code == 2);
    CHECK_THAT(run.err, Catch::Contains(c.name));
  }
}

TEST_CASE("SIGTERM drains and exits 0 after closing the store", "[e2e]") {
  TempDir tmp;
  const std::string data = tmp.Sub("data");
  Daemon daemon;
  REQUIRE(daemon.Start(data));
  uint64_t id = 0;
  {
    Client client = MakeClient(daemon.grpc_address());
    auto r = client.Enqueue(Req("drain", "t", R"({"k":1})", "drain-key"));
    REQUIRE(r.ok());
    id = r->job().id();
  }
  ExitInfo exit = Terminate(daemon);
  INFO(daemon.stderr_text());
  CHECK(exit.exited);
  CHECK(exit.code == 0);
  CHECK_THAT(daemon.stderr_text(), Catch::Contains("closed"));

  // A clean stop leaves a store that opens again with the job in it.
  REQUIRE(daemon.Start(data));
  Client client = MakeClient(daemon.grpc_address());
  auto job = client.GetJob(id);
  REQUIRE(job.ok());
  CHECK(job->idempotency_key() == "drain-key");

  SECTION("under load: SIGTERM mid-stream still exits 0 and keeps every acknowledgement") {
    ProduceResult produced = ProduceThenKill(daemon, /*round=*/0, /*target=*/100, SIGTERM);
    INFO(FirstFew(produced.problems));
    REQUIRE(produced.problems.empty());
    CHECK(produced.kill_exit.exited);
    CHECK(produced.kill_exit.code == 0);
    REQUIRE(produced.acks.size() >= 100);

    REQUIRE(daemon.Start(data));
    auto problems = VerifyAcks(daemon.grpc_address(), produced.acks);
    INFO(FirstFew(problems));
    CHECK(problems.empty());
  }
}

TEST_CASE("HTTP serves /metrics and /readyz and 404 for unknown paths", "[e2e]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  Client client = MakeClient(daemon.grpc_address());
  REQUIRE(client.Enqueue(Req("metered", "m.type", "{}")).ok());

  auto metrics = HttpGet(daemon.http_port(), "/metrics");
  INFO(metrics.headers);
  CHECK(metrics.status == 200);
  CHECK_THAT(metrics.body, Catch::Contains("ledgerq_jobs_enqueued_total"));
  CHECK_THAT(metrics.body, Catch::Contains("ledgerq_build_info"));
  CHECK_THAT(metrics.body, Catch::Contains("metered"));
  // Payloads and idempotency keys never appear in metrics, but queue names do (as labels).

  auto ready = HttpGet(daemon.http_port(), "/readyz");
  CHECK(ready.status == 200);
  auto healthy = HttpGet(daemon.http_port(), "/healthz");
  CHECK(healthy.status == 200);
  auto nope = HttpGet(daemon.http_port(), "/nope");
  CHECK(nope.status == 404);
}

TEST_CASE("the ledgerq CLI enqueues and deduplicates and shows jobs as JSON and reports errors",
          "[e2e]") {
  TempDir tmp;
  Daemon daemon;
  REQUIRE(daemon.Start(tmp.Sub("data")));
  const std::string server = daemon.grpc_address();
  const std::string cli = LedgerqCliPath();

  std::string out, err;
  ExitInfo e = RunCommand({cli, "--server", server, "enqueue", "--queue", "q", "--type", "t",
                           "--payload", R"({"a":1})", "--idempotency-key", "k"},
                          &out, &err);
  INFO("stdout: " << out << "\nstderr: " << err);
  REQUIRE(e.exited);
  REQUIRE(e.code == 0);
  std::istringstream first_line(out);
  uint64_t id = 0;
  std::string word;
  first_line >> id >> word;
  REQUIRE(id > 0);
  CHECK(word == "created");

  std::string out2, err2;
  e = RunCommand({cli, "--server", server, "enqueue", "--queue", "q", "--type", "t", "--payload",
                  R"({"a":1})", "--idempotency-key", "k"},
                 &out2, &err2);
  INFO("stdout: " << out2 << "\nstderr: " << err2);
  REQUIRE(e.exited);
  CHECK(e.code == 0);
  std::istringstream second_line(out2);
  uint64_t id2 = 0;
  second_line >> id2 >> word;
  CHECK(id2 == id);
  CHECK(word == "deduplicated");

  std::string json_out, json_err;
  e = RunCommand({cli, "--server", server, "job", std::to_string(id), "--output", "json"},
                 &json_out, &json_err);
  INFO("stdout: " << json_out << "\nstderr: " << json_err);
  REQUIRE(e.exited);
  REQUIRE(e.code == 0);
  auto j = nlohmann::json::parse(json_out, nullptr, /*allow_exceptions=*/false);
  REQUIRE_FALSE(j.is_discarded());
  CHECK(j["id"] == id);
  CHECK(j["payload"] == nlohmann::json::parse(R"({"a":1})"));
  CHECK(j["queue"] == "q");
  CHECK(j["type"] == "t");
  CHECK(j["idempotency_key"] == "k");

  std::string bad_out, bad_err;
  e = RunCommand(
      {cli, "--server", server, "enqueue", "--queue", "q", "--type", "t", "--payload", "{not json"},
      &bad_out, &bad_err);
  INFO("stdout: " << bad_out << "\nstderr: " << bad_err);
  CHECK(e.exited);
  CHECK(e.code == 2);
  CHECK_THAT(bad_err, Catch::Contains("--payload"));

  RefusingPort refusing;
  std::string down_out, down_err;
  e = RunCommand({cli, "--server", refusing.address(), "--timeout", "5s", "enqueue", "--queue", "q",
                  "--type", "t"},
                 &down_out, &down_err);
  INFO("stdout: " << down_out << "\nstderr: " << down_err);
  CHECK(e.exited);
  CHECK(e.code == 1);
  CHECK_THAT(Lower(down_err), Catch::Contains("unavailable"));
}

// A supervisor may stop a daemon the moment it reports that it listens: the SIGTERM handler must
// already be installed then (it once was not, and such a stop killed the daemon uncleanly).
TEST_CASE("SIGTERM immediately after the listening line still exits 0", "[e2e]") {
  TempDir tmp;
  int unclean = 0;
  for (int i = 0; i < 20; ++i) {
    Daemon daemon;
    REQUIRE(daemon.Start(tmp.Sub("data")));
    daemon.Signal(SIGTERM);
    ExitInfo exit = daemon.Wait();
    if (!exit.exited || exit.code != 0) ++unclean;
  }
  CHECK(unclean == 0);
}
