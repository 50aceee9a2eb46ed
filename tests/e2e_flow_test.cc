// End-to-end: flow control in the real ledgerqd. Limits changed at runtime through the CLI, and
// the circuit-breaker demo: a flaky downstream (a local HTTP stub failing 80 % of requests during
// an outage) called by real workers, with the breaker on and off; the report counts the attempts
// wasted against the failing downstream in each case.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace {

using ledgerq::testing::Cli;
using ledgerq::testing::Daemon;
using ledgerq::testing::HttpGet;
using ledgerq::testing::LeaseReq;
using ledgerq::testing::MakeClient;
using ledgerq::testing::Req;
using ledgerq::testing::TempDir;
using ledgerq::testing::WaitFor;
using ledgerq::testing::WriteFile;
namespace v1 = ledgerq::v1;
using namespace std::chrono_literals;

// A downstream service on a loopback port. During an outage it answers 503 to four requests of
// every five (80 %), otherwise 200. Counts what it answered.
class FlakyStub {
 public:
  FlakyStub() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd_, 128) != 0) return;
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FlakyStub() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    if (thread_.joinable()) thread_.join();
  }
  int port() const { return port_; }
  void SetOutage(bool on) { outage_ = on; }
  uint64_t failed() const { return failed_; }
  uint64_t succeeded() const { return succeeded_; }

 private:
  void Serve() {
    while (!stop_) {
      int c = accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      char buf[2048];
      std::string req;
      while (req.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = read(c, buf, sizeof buf);
        if (n <= 0) break;
        req.append(buf, static_cast<size_t>(n));
      }
      const bool fail = outage_ && (++outage_requests_ % 5 != 0);
      (fail ? failed_ : succeeded_)++;
      const std::string body = fail ? "downstream unavailable" : "charged";
      const std::string reply =
          std::string(fail ? "HTTP/1.1 503 Service Unavailable" : "HTTP/1.1 200 OK") +
          "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
          body;
      (void)!write(c, reply.data(), reply.size());
      close(c);
    }
  }

  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false}, outage_{false};
  std::atomic<uint64_t> outage_requests_{0}, failed_{0}, succeeded_{0};
};

struct DemoResult {
  uint64_t jobs_succeeded = 0;
  uint64_t wasted = 0;  // attempts that hit the failing downstream and failed
  uint64_t downstream_ok = 0;
  double seconds = 0;
  std::string queues_text, audit_text, metrics_text;
};

// 100 jobs, 4 workers, 3 s of outage, then the downstream recovers; runs until every job has
// succeeded.
DemoResult RunDemo(bool breaker) {
  TempDir dir;
  const std::string cfg = dir.path() + "/ledgerq.toml";
  std::string text = R"(
[queues.calls]
max-attempts = 1000
backoff-base = "50ms"
backoff-factor = 2.0
backoff-cap = "200ms"
)";
  if (breaker) {
    text += R"(
[types."charge.v1"]
circuit-breaker = true
circuit-threshold = 0.5
circuit-window = "10s"
circuit-min-attempts = 10
circuit-cooldown = "500ms"
circuit-max-cooldown = "1s"
circuit-trials = 2
)";
  }
  REQUIRE(WriteFile(cfg, text));
  Daemon d;
  REQUIRE(d.Start(dir.path() + "/data", {"--config", cfg}));
  FlakyStub stub;
  REQUIRE(stub.port() > 0);
  stub.SetOutage(true);

  constexpr int kJobs = 100;
  auto producer = MakeClient(d.grpc_address());
  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < kJobs; ++i) {
    *batch.add_items() = Req("calls", "charge.v1", R"({"amount":)" + std::to_string(i) + "}");
  }
  REQUIRE(producer.EnqueueBatch(batch).ok());

  std::atomic<uint64_t> done{0};
  std::atomic<bool> stop{false};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      auto c = MakeClient(d.grpc_address());
      while (!stop) {
        auto r = c.Lease(LeaseReq("calls", 1, 10, 1, "demo-" + std::to_string(w)));
        if (!r.ok()) continue;
        for (const auto& lj : r->jobs()) {
          auto reply = HttpGet(stub.port(), "/charge");
          if (reply.status == 200) {
            if (c.Complete(ledgerq::testing::CompleteReq(lj.token(), reply.body)).ok()) ++done;
          } else {
            (void)c.Fail(ledgerq::testing::FailReq(lj.token(), v1::ERROR_KIND_TRANSIENT,
                                                   "UPSTREAM_" + std::to_string(reply.status)));
          }
        }
      }
    });
  }
  std::this_thread::sleep_for(3s);
  DemoResult out;
  std::string err;
  (void)Cli(d.grpc_address(), {"queues"}, &out.queues_text, &err);  // during the outage
  stub.SetOutage(false);
  const bool finished = WaitFor([&] { return done.load() >= kJobs; }, 60s);
  stop = true;
  for (auto& t : workers) t.join();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  CHECK(finished);
  out.jobs_succeeded = done;
  out.wasted = stub.failed();
  out.downstream_ok = stub.succeeded();
  (void)Cli(d.grpc_address(), {"audit", "export"}, &out.audit_text, &err);
  out.metrics_text = HttpGet(d.http_port(), "/metrics").body;
  return out;
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("demo: a circuit breaker saves a flaky downstream from wasted attempts", "[e2e][flow]") {
  const DemoResult off = RunDemo(false);
  const DemoResult on = RunDemo(true);
  std::printf(
      "circuit breaker demo: 100 jobs, 4 workers, 3 s outage failing 80 %% of calls\n"
      "  breaker off: %llu attempts wasted on the failing downstream, %llu calls ok, %.1f s\n"
      "  breaker on:  %llu attempts wasted on the failing downstream, %llu calls ok, %.1f s\n",
      static_cast<unsigned long long>(off.wasted),
      static_cast<unsigned long long>(off.downstream_ok), off.seconds,
      static_cast<unsigned long long>(on.wasted), static_cast<unsigned long long>(on.downstream_ok),
      on.seconds);
  CHECK(off.jobs_succeeded == 100);
  CHECK(on.jobs_succeeded == 100);
  // The breaker holds back while the downstream fails: several times fewer wasted calls.
  CHECK(on.wasted * 3 < off.wasted);
  // Visible to operators: the state line during the outage, the events, the metric.
  INFO(on.queues_text);
  CHECK(on.queues_text.find("calls/charge.v1: circuit") != std::string::npos);
  CHECK(off.queues_text.find("circuit") == std::string::npos);
  CHECK(Count(on.audit_text, "CIRCUIT_OPENED") >= 1);
  CHECK(Count(on.audit_text, "CIRCUIT_HALF_OPEN") >= 1);
  CHECK(Count(on.audit_text, "CIRCUIT_CLOSED") >= 1);
  CHECK(Count(off.audit_text, "CIRCUIT_") == 0);
  CHECK(on.metrics_text.find("ledgerq_circuit_transitions_total{") != std::string::npos);
  CHECK(on.metrics_text.find("ledgerq_circuit_state{") != std::string::npos);
}

TEST_CASE("queue set and queue circuit change a running daemon, recorded with the principal",
          "[e2e][flow]") {
  TempDir dir;
  Daemon d;
  REQUIRE(d.Start(dir.path() + "/data"));
  auto c = MakeClient(d.grpc_address());
  for (int i = 0; i < 6; ++i) {
    auto req = Req("mail", "send.v1", "{}");
    req.set_concurrency_key(i < 4 ? "tenant-a" : "tenant-b");
    REQUIRE(c.Enqueue(req).ok());
  }
  std::string out, err;
  auto set = Cli(d.grpc_address(), {"queue", "set", "mail", "--concurrency", "3", "--per-key", "1"},
                 &out, &err);
  REQUIRE(set.code == 0);
  CHECK(out.find("concurrency 3, per key 1") != std::string::npos);
  // One job per tenant, though three may run.
  auto leased = c.Lease(LeaseReq("mail", 10, 30, 0));
  REQUIRE(leased.ok());
  REQUIRE(leased->jobs_size() == 2);
  CHECK(leased->jobs(0).job().concurrency_key() != leased->jobs(1).job().concurrency_key());
  // Bad input is refused, naming the field, and changes nothing.
  auto bad = Cli(d.grpc_address(), {"queue", "set", "mail"}, &out, &err);
  CHECK(bad.code == 2);
  CHECK(err.find("--rate") != std::string::npos);
  v1::SetQueueLimitsRequest neg;
  neg.set_queue("mail");
  neg.set_rate_per_second(-5);
  auto refused = c.SetQueueLimits(neg);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().message().find("rate_per_second") != std::string::npos);
  v1::SetQueueLimitsRequest empty;
  empty.set_queue("mail");
  CHECK_FALSE(c.SetQueueLimits(empty).ok());
  auto bad_mode = c.SetCircuit("mail", "send.v1", "sideways");
  REQUIRE_FALSE(bad_mode.ok());
  CHECK(bad_mode.status().message().find("mode") != std::string::npos);
  // Forcing the circuit open stops the type; auto gives it back.
  REQUIRE(Cli(d.grpc_address(), {"queue", "circuit", "mail", "send.v1", "open"}, &out, &err).code ==
          0);
  CHECK(out.find("OPEN (forced open)") != std::string::npos);
  for (const auto& lj : leased->jobs()) {
    REQUIRE(c.Complete(ledgerq::testing::CompleteReq(lj.token(), "ok")).ok());
  }
  auto none = c.Lease(LeaseReq("mail", 10, 30, 0));
  REQUIRE(none.ok());
  CHECK(none->jobs_size() == 0);
  REQUIRE(Cli(d.grpc_address(), {"queues"}, &out, &err).code == 0);
  CHECK(out.find("mail/send.v1: circuit OPEN (forced open)") != std::string::npos);
  CHECK(out.find("holding back 4") != std::string::npos);
  REQUIRE(Cli(d.grpc_address(), {"queue", "circuit", "mail", "send.v1", "auto"}, &out, &err).code ==
          0);
  auto again = c.Lease(LeaseReq("mail", 10, 30, 0));
  REQUIRE(again.ok());
  CHECK(again->jobs_size() == 2);
  // Every change is in the log with who made it.
  REQUIRE(Cli(d.grpc_address(), {"audit", "export"}, &out, &err).code == 0);
  CHECK(Count(out, "QUEUE_LIMITS_CHANGED") == 1);
  CHECK(Count(out, "CIRCUIT_OPENED") == 1);
  CHECK(Count(out, "CIRCUIT_CLOSED") == 1);
  // The job shows its key.
  REQUIRE(Cli(d.grpc_address(), {"job", "1"}, &out, &err).code == 0);
  CHECK(out.find("concurrency_key") != std::string::npos);
}

TEST_CASE("config limits take effect at start and on SIGHUP", "[e2e][flow]") {
  TempDir dir;
  const std::string cfg = dir.path() + "/ledgerq.toml";
  REQUIRE(WriteFile(cfg, "[queues.jobs]\nmax-concurrency = 1\n"));
  Daemon d;
  REQUIRE(d.Start(dir.path() + "/data", {"--config", cfg}));
  auto c = MakeClient(d.grpc_address());
  for (int i = 0; i < 5; ++i) REQUIRE(c.Enqueue(Req("jobs", "t", "{}")).ok());
  auto first = c.Lease(LeaseReq("jobs", 10, 30, 0));
  REQUIRE(first.ok());
  CHECK(first->jobs_size() == 1);
  REQUIRE(WriteFile(cfg, "[queues.jobs]\nmax-concurrency = 3\n"));
  d.Signal(SIGHUP);
  // The reload is recorded (POLICY_CHANGED) before it applies; a long-poll then gets 2 more.
  std::vector<uint64_t> got;
  REQUIRE(WaitFor(
      [&] {
        auto r = c.Lease(LeaseReq("jobs", 10, 30, 0));
        if (r.ok()) {
          for (const auto& lj : r->jobs()) got.push_back(lj.job().id());
        }
        return got.size() >= 2;
      },
      10s, 100ms));
  CHECK(got.size() == 2);
}
