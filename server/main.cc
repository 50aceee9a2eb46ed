// ledgerqd: parse the Config once, run the daemon, exit non-zero with one clear line on failure.
#include <spdlog/cfg/helpers.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "server/config.h"
#include "server/daemon.h"

int main(int argc, char** argv) {
  auto config = ledgerq::server::ParseCommandLine(argc, argv);
  if (!config.ok()) {
    std::cerr << "ledgerqd: " << config.status().message() << "\n";
    return 2;
  }
  if (!config->has_value()) return 0;  // --help or --version
  const auto& c = **config;
  auto daemon_log = spdlog::stderr_logger_mt("ledgerqd");
  auto lifecycle_log = spdlog::stderr_logger_mt("lifecycle");
  if (c.log_format == "json") {
    // Lifecycle lines are complete JSON objects of their own; daemon messages are wrapped.
    daemon_log->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":"%v"})",
                            spdlog::pattern_time_type::utc);
    lifecycle_log->set_pattern("%v");
  } else {
    lifecycle_log->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  }
  spdlog::set_default_logger(daemon_log);
  spdlog::set_level(spdlog::level::from_str(c.log_level));
  ledgerq::Status st = ledgerq::server::RunDaemon(c);
  if (!st.ok()) {
    std::cerr << "ledgerqd: " << st.message() << "\n";
    return 1;
  }
  return 0;
}
