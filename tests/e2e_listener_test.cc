// End-to-end test of issue 14's finding 3: Debian 12's gRPC 1.51 (CVE-2023-4785) stops
// accepting for good once accept4 fails with EMFILE, while /healthz and /readyz still answered
// ok. The test lowers a running ledgerqd's open-files limit to 256 (prlimit on its pid), opens
// 400 connections that send only the HTTP/2 preface, closes them all, and then expects the
// daemon's listener watchdog to notice: /healthz answers 503 and the daemon exits with status 70
// (after the default --grpc-watchdog of 30s) so that a supervisor restarts it. A second case checks
// that a healthy daemon's watchdog says so and that SIGTERM's drain is not mistaken for a dead
// listener.
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace {

using ledgerq::testing::ConnectLoopback;
using ledgerq::testing::Daemon;
using ledgerq::testing::ExitInfo;
using ledgerq::testing::HttpGet;
using ledgerq::testing::TempDir;
using ledgerq::testing::WaitFor;
using namespace std::chrono_literals;

int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

// Whether the process has exited, without reaping it (Daemon::Wait does that).
bool Exited(pid_t pid) {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
         info.si_pid == pid;
}

}  // namespace

TEST_CASE(
    "security: finding 3: a connection flood at the open-files limit is caught by the "
    "listener watchdog",
    "[e2e][security]") {
  TempDir dir;
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data")));  // the default --grpc-watchdog, 30s
  REQUIRE(HttpGet(d.http_port(), "/healthz").status == 200);
  const rlimit low{256, 256};
  REQUIRE(::prlimit(d.pid(), RLIMIT_NOFILE, &low, nullptr) == 0);

  // 400 connections that send the preface and nothing more: more than the daemon can hold.
  const int grpc_port = PortOf(d.grpc_address());
  static constexpr char kPreface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  std::vector<int> fds;
  for (int i = 0; i < 400; ++i) {
    int fd = ConnectLoopback(grpc_port);
    if (fd < 0) continue;
    (void)::send(fd, kPreface, sizeof kPreface - 1, MSG_NOSIGNAL);
    fds.push_back(fd);
  }
  INFO("connections opened: " << fds.size());
  REQUIRE(fds.size() > 256);
  // Let the daemon's accept loop run into the limit: wait until it holds (nearly) all of its 256
  // descriptors, however slow it is (a sanitizer build under load takes a while), then a moment.
  auto open_fds = [pid = d.pid()] {
    std::error_code ec;
    int n = 0;
    for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      ++n;
    }
    return n;
  };
  REQUIRE(WaitFor([&] { return open_fds() >= 250; }, 30s, 50ms));
  std::this_thread::sleep_for(500ms);
  for (int fd : fds) ::close(fd);

  // Every socket is closed now, and gRPC 1.51's listener stays dead: a call gets no answer.
  {
    ledgerq::client::ClientOptions o;
    o.server = d.grpc_address();
    o.timeout = 2s;
    ledgerq::client::Client c(o);
    CHECK_FALSE(c.ListQueues().ok());
  }
  // The watchdog must say so on
  // /healthz within a few probes (before the fix it said ok for good) ...
  CHECK(WaitFor([&] { return HttpGet(d.http_port(), "/healthz").status == 503; }, 15s, 200ms));
  // ... and end the process with status 70 once the listener has been dead for 30 s.
  CHECK(WaitFor([&] { return Exited(d.pid()); }, 45s, 200ms));
  if (!Exited(d.pid())) d.Signal(SIGKILL);
  ExitInfo e = d.Wait();
  CHECK(e.exited);
  CHECK(e.code == 70);
  CHECK_THAT(d.stderr_text(), Catch::Contains("grpc listener has not accepted connections"));
}

TEST_CASE(
    "security: finding 3: the watchdog reports a healthy listener and stands aside while "
    "draining",
    "[e2e][security]") {
  TempDir dir;
  Daemon d;
  REQUIRE(d.Start(dir.Sub("data"), {"--grpc-watchdog", "5s"}));
  // A few probes' worth: still healthy, and the gauge says the listener is up.
  std::this_thread::sleep_for(3s);
  CHECK(HttpGet(d.http_port(), "/healthz").status == 200);
  auto metrics = HttpGet(d.http_port(), "/metrics");
  CHECK_THAT(metrics.body, Catch::Contains("ledgerq_grpc_listener_up 1"));
  CHECK_THAT(metrics.body, Catch::Contains("ledgerq_open_fds"));
  d.Signal(SIGTERM);
  ExitInfo e = d.Wait();
  CHECK(e.exited);
  CHECK(e.code == 0);
}

TEST_CASE("security: finding 3: the watchdog flag refuses values below 5s and names itself",
          "[e2e][security]") {
  TempDir dir;
  Daemon d;
  CHECK_FALSE(d.Start(dir.Sub("data"), {"--grpc-watchdog", "1s"}));
  CHECK_THAT(d.stderr_text(), Catch::Contains("--grpc-watchdog: 1s is below the minimum of 5s"));
}
