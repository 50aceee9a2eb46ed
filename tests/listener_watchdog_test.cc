// The gRPC listener watchdog (server/listener_watchdog.h) against plain loopback sockets: one
// that accepts and answers, one that listens but never accepts (what gRPC 1.51 leaves behind
// after EMFILE, CVE-2023-4785: the kernel still completes connections into the backlog), and a
// closed port.
#include "server/listener_watchdog.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

using namespace ledgerq::server;
using namespace std::chrono_literals;

namespace {

// A loopback listening socket on a free port; accepts nothing by itself.
struct Listener {
  int fd = -1;
  int port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 64) == 0);
    socklen_t len = sizeof a;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
  }
  ~Listener() {
    if (fd >= 0) ::close(fd);
  }
};

// Accepts connections and answers each with a few bytes, as an HTTP/2 server sends SETTINGS.
struct Answering {
  Listener l;
  std::atomic<bool> stop{false};
  std::thread t;
  Answering() {
    t = std::thread([this] {
      while (!stop) {
        int c = ::accept(l.fd, nullptr, nullptr);
        if (c < 0) return;
        (void)::send(c, "\0\0\0\4\0\0\0\0\0", 9, MSG_NOSIGNAL);
        ::close(c);
      }
    });
  }
  ~Answering() {
    stop = true;
    ::shutdown(l.fd, SHUT_RDWR);
    t.join();
  }
};

}  // namespace

TEST_CASE("the listener probe tells an accepting listener from a dead one", "[server][security]") {
  Answering live;
  CHECK(ProbeListener("127.0.0.1", live.l.port, 1s));
  CHECK(ProbeListener("0.0.0.0", live.l.port, 1s));  // a wildcard listener is probed on loopback

  Listener dead;  // listening, never accepting
  const auto start = std::chrono::steady_clock::now();
  CHECK_FALSE(ProbeListener("127.0.0.1", dead.port, 300ms));
  CHECK(std::chrono::steady_clock::now() - start < 2s);  // bounded by the timeout

  int closed_port = 0;
  {
    Listener gone;
    closed_port = gone.port;
  }
  CHECK_FALSE(ProbeListener("127.0.0.1", closed_port, 300ms));
  CHECK(OpenFileCount() > 2);
}

TEST_CASE("the watchdog reports after two failed probes and calls on_dead once",
          "[server][security]") {
  Listener dead;
  std::atomic<int> reports{0}, down_reports{0}, deaths{0};
  ListenerWatchdog w(WatchdogOptions{.host = "127.0.0.1",
                                     .port = dead.port,
                                     .interval = 20ms,
                                     .timeout = 50ms,
                                     .exit_after = 200ms,
                                     .report =
                                         [&](bool accepting, int) {
                                           ++reports;
                                           if (!accepting) ++down_reports;
                                         },
                                     .on_dead =
                                         [&](std::chrono::milliseconds dead_for) {
                                           CHECK(dead_for >= 200ms);
                                           ++deaths;
                                         }});
  CHECK(w.accepting());
  w.Start();
  const auto limit = std::chrono::steady_clock::now() + 10s;
  while (deaths == 0 && std::chrono::steady_clock::now() < limit) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(200ms);
  w.Stop();
  CHECK(deaths == 1);
  CHECK_FALSE(w.accepting());
  CHECK(down_reports >= 1);
  CHECK(down_reports < reports);  // the first failed probe alone is not reported as down
}
