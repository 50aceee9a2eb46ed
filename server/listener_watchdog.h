// The gRPC listener watchdog. Debian 12's gRPC 1.51 has CVE-2023-4785: when accept4 fails
// with EMFILE (a flood of connections at the open-files limit), the listener stops accepting
// for good, while the process, its HTTP probes and its open calls go on as if healthy. This
// probes the gRPC port from inside the daemon, the way a client would reach it, and makes the
// outcome visible: /healthz fails while the listener does not accept (so an orchestrator's
// liveness probe restarts the pod), ledgerq_grpc_listener_up says it, and after `exit_after` of
// consecutive failures the daemon exits with kExitListenerDead so a supervisor restarts it.
// It owns one thread and never touches the gRPC server or its connections.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace ledgerq::server {

// EX_SOFTWARE: the exit status when the listener stayed dead for `exit_after`.
inline constexpr int kExitListenerDead = 70;

// One probe: a TCP connection to host:port, the HTTP/2 client preface and an empty SETTINGS
// frame, then any answer within `timeout` (a SETTINGS frame, a TLS alert, even a close) shows
// that the listener accepted the connection. A listener that no longer accepts leaves the
// connection in the kernel's backlog, unanswered: that, or a refused connection, is false. No
// credentials are needed, so it works with TLS and mTLS too.
bool ProbeListener(const std::string& host, int port, std::chrono::milliseconds timeout);

// The number of open file descriptors of this process (/proc/self/fd), or -1.
int OpenFileCount();

struct WatchdogOptions {
  std::string host;  // the listen host; 0.0.0.0 and [::] are probed on loopback
  int port = 0;
  std::chrono::milliseconds interval{2'000};
  std::chrono::milliseconds timeout{1'000};
  std::chrono::milliseconds exit_after{30'000};  // 0: never exit, only report
  // Each probe's outcome and the open-file count (metrics). May be null.
  std::function<void(bool accepting, int open_fds)> report;
  // Called once the listener has been dead for exit_after; the daemon's default exits.
  std::function<void(std::chrono::milliseconds dead_for)> on_dead;
};

class ListenerWatchdog {
 public:
  explicit ListenerWatchdog(WatchdogOptions options);
  ~ListenerWatchdog();
  ListenerWatchdog(const ListenerWatchdog&) = delete;
  ListenerWatchdog& operator=(const ListenerWatchdog&) = delete;

  void Start();
  void Stop();
  // The last probe's outcome (true before the first one).
  bool accepting() const { return accepting_.load(std::memory_order_relaxed); }

 private:
  void Run();

  WatchdogOptions o_;
  std::atomic<bool> accepting_{true};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace ledgerq::server
