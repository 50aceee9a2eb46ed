#include "server/listener_watchdog.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace ledgerq::server {
namespace {

constexpr int kFailuresToReport = 2;

// The client connection preface (RFC 9113 3.4) and an empty SETTINGS frame.
constexpr char kPreface[] =
    "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    "\x00\x00\x00\x04\x00\x00\x00\x00\x00";
constexpr size_t kPrefaceBytes = sizeof kPreface - 1;

std::string ProbeHost(const std::string& host) {
  std::string h = host;
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty() || h == "0.0.0.0") return "127.0.0.1";
  if (h == "::") return "::1";
  return h;
}

int Remaining(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() > 0 ? static_cast<int>(left.count()) : 0;
}

}  // namespace

bool ProbeListener(const std::string& host, int port, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string h = ProbeHost(host);
  if (::getaddrinfo(h.c_str(), std::to_string(port).c_str(), &hints, &res) != 0 || !res) {
    return false;
  }
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {  // out of descriptors ourselves: say nothing about the listener
    ::freeaddrinfo(res);
    return true;
  }
  bool answered = false;
  int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  ::freeaddrinfo(res);
  pollfd p{fd, POLLOUT, 0};
  if (rc != 0 && errno == EINPROGRESS) rc = ::poll(&p, 1, Remaining(deadline)) == 1 ? 0 : -1;
  int err = 0;
  socklen_t len = sizeof err;
  if (rc == 0 && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
    // Connected (the kernel completes it even for a listener that no longer accepts): ask.
    if (::send(fd, kPreface, kPrefaceBytes, MSG_NOSIGNAL) == static_cast<ssize_t>(kPrefaceBytes)) {
      p = pollfd{fd, POLLIN, 0};
      if (::poll(&p, 1, Remaining(deadline)) == 1) {
        char buf[64];
        ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        // Bytes, an orderly close or a reset: the server took the connection and answered.
        answered = n >= 0 || errno == ECONNRESET;
      }
    }
  }
  ::close(fd);
  return answered;
}

int OpenFileCount() {
  std::error_code ec;
  int n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return ec ? -1 : n;
}

ListenerWatchdog::ListenerWatchdog(WatchdogOptions options) : o_(std::move(options)) {}

ListenerWatchdog::~ListenerWatchdog() { Stop(); }

void ListenerWatchdog::Start() {
  thread_ = std::thread([this] { Run(); });
}

void ListenerWatchdog::Stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ListenerWatchdog::Run() {
  using Clock = std::chrono::steady_clock;
  bool dead = false;  // since dead_since
  int failures = 0;   // consecutive unanswered probes
  Clock::time_point dead_since{};
  bool reported_dead = false;
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    const bool ok = ProbeListener(o_.host, o_.port, o_.timeout);
    const int fds = OpenFileCount();
    lock.lock();
    if (stop_) break;
    const auto now = Clock::now();
    if (ok) {
      if (dead && failures >= kFailuresToReport) {
        spdlog::info("grpc listener accepts connections again");
      }
      dead = false;
      failures = 0;
      reported_dead = false;
    } else {
      ++failures;
      if (!dead) {
        dead = true;
        dead_since = now;
      }
    }
    // One unanswered probe can be a moment of load; two in a row are reported.
    const bool accepting = ok || failures < kFailuresToReport;
    accepting_.store(accepting, std::memory_order_relaxed);
    if (o_.report) o_.report(accepting, fds);
    if (!ok) {
      if (failures == kFailuresToReport) {
        spdlog::error(
            "grpc listener on port {} does not accept connections ({} files open); /healthz "
            "now fails",
            o_.port, fds);
      }
      const auto dead_for = std::chrono::duration_cast<std::chrono::milliseconds>(now - dead_since);
      if (o_.exit_after.count() > 0 && dead_for >= o_.exit_after && !reported_dead) {
        reported_dead = true;
        if (o_.on_dead) o_.on_dead(dead_for);
      }
    }
    cv_.wait_for(lock, o_.interval, [this] { return stop_; });
  }
}

}  // namespace ledgerq::server
