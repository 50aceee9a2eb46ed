// ledgerqd: parse the Config once, run the daemon, exit non-zero with one clear line on failure.
#include <iostream>

#include "server/config.h"
#include "server/daemon.h"
#include "server/logging.h"

int main(int argc, char** argv) {
  auto config = ledgerq::server::ParseCommandLine(argc, argv);
  if (!config.ok()) {
    std::cerr << "ledgerqd: " << config.status().message() << "\n";
    return 2;
  }
  if (!config->has_value()) return 0;  // --help or --version
  const auto& c = **config;
  ledgerq::server::SetUpLogging(c);
  ledgerq::Status st = ledgerq::server::RunDaemon(c);
  ledgerq::server::ShutDownLogging();
  if (!st.ok()) {
    std::cerr << "ledgerqd: " << st.message() << "\n";
    return 1;
  }
  return 0;
}
