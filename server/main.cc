// ledgerqd: parse the Config once, run the daemon, exit non-zero with one clear line on failure.
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <iostream>

#include "server/config.h"
#include "server/daemon.h"
#include "server/logging.h"

namespace {

// Every client connection costs a descriptor, and an accept that fails for want of one makes
// gRPC 1.51 stop accepting on its port for good (CVE-2023-4785; the process must be
// restarted). So run with the hard limit rather than the usual soft default of 1024.
void RaiseOpenFilesLimit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  const rlim_t before = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) rl.rlim_cur = before;
  }
  constexpr rlim_t kEnough = 8192;
  if (rl.rlim_cur < kEnough) {
    spdlog::warn(
        "open files limit is {} (hard limit {}): too few for thousands of client connections; "
        "raise the hard limit (LimitNOFILE=, ulimit -Hn, the container runtime's nofile)",
        rl.rlim_cur, rl.rlim_max);
  } else if (rl.rlim_cur != before) {
    spdlog::info("open files limit raised from {} to {} (the hard limit)", before, rl.rlim_cur);
  }
}

}  // namespace

int main(int argc, char** argv) {
  auto config = ledgerq::server::ParseCommandLine(argc, argv);
  if (!config.ok()) {
    std::cerr << "ledgerqd: " << config.status().message() << "\n";
    return 2;
  }
  if (!config->has_value()) return 0;  // --help or --version
  const auto& c = **config;
  ledgerq::server::SetUpLogging(c);
  RaiseOpenFilesLimit();
  ledgerq::Status st = ledgerq::server::RunDaemon(c);
  ledgerq::server::ShutDownLogging();
  if (!st.ok()) {
    std::cerr << "ledgerqd: " << st.message() << "\n";
    return 1;
  }
  return 0;
}
