// libFuzzer target: the daemon's config file. The bytes are written to a file and loaded the way
// ledgerqd loads it (ParseCommandLine with --config FILE), then the listen addresses of an
// accepted config are parsed as RunDaemon parses them.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "scheduler/retry_policy.h"
#include "server/config.h"
#include "server/http_server.h"

namespace {

std::string* config_path = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/ledgerq-fuzz-config-XXXXXX";
  int fd = mkstemp(tmpl.data());
  if (fd < 0) std::abort();
  close(fd);
  config_path = new std::string(tmpl);
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove(*config_path, ec);
    delete config_path;
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream out(*config_path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  std::string prog = "ledgerqd", flag = "--config";
  char* argv[] = {prog.data(), flag.data(), config_path->data(), nullptr};
  auto parsed = ledgerq::server::ParseCommandLine(3, argv);
  if (!parsed.ok()) {
    if (parsed.status().message().empty()) std::abort();  // every error says what is wrong
    return 0;
  }
  if (!parsed->has_value()) std::abort();  // only --help and --version print and stop
  const ledgerq::server::Config& c = **parsed;
  (void)ledgerq::server::ParseEndpoint(c.grpc_listen, "--grpc-listen");
  (void)ledgerq::server::ParseEndpoint(c.http_listen, "--http-listen");
  // What the daemon relies on once a config is accepted: every policy is within bounds, so the
  // dispatcher's backoff arithmetic stays finite.
  if (!ledgerq::scheduler::ValidateRetryPolicy(c.retry, "").ok()) std::abort();
  for (const auto& [name, policy] : c.queues) {
    if (!ledgerq::scheduler::ValidateRetryPolicy(policy, "").ok()) std::abort();
    (void)ledgerq::scheduler::BackoffCeiling(policy, policy.max_attempts);
  }
  if (c.max_payload_bytes == 0 || c.data_dir.empty()) std::abort();
  return 0;
}
