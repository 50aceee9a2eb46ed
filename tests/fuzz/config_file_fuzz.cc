// libFuzzer target: the daemon's config file. The bytes are written to an in-memory file and loaded
// the way ledgerqd loads it (ParseCommandLine with --config FILE), then the listen addresses of an
// accepted config are parsed as RunDaemon parses them.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "scheduler/retry_policy.h"
#include "server/config.h"
#include "server/http_server.h"

namespace {

// The "file" is a memfd named by its /proc path: the loader opens and reads it like any file,
// and rewriting it costs no disk I/O (truncating a real file per input dominated the run).
int config_fd = -1;
std::string* config_path = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  config_fd = memfd_create("ledgerq-fuzz-config", 0);
  if (config_fd < 0) std::abort();
  config_path = new std::string("/proc/self/fd/" + std::to_string(config_fd));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (ftruncate(config_fd, 0) != 0) std::abort();
  if (size > 0 && pwrite(config_fd, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
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
  const ledgerq::server::Policies policies = c.MakePolicies();
  auto check = [](const ledgerq::server::ResolvedPolicy& p) {
    if (!ledgerq::scheduler::ValidateRetryPolicy(p.retry, "").ok()) std::abort();
    if (p.min_lease > p.max_lease) std::abort();
    (void)ledgerq::scheduler::BackoffCeiling(p.retry, p.retry.max_attempts);
  };
  for (const auto& [name, decl] : c.queue_decls) check(policies.Resolve(name, ""));
  for (const auto& [name, decl] : c.type_decls) {
    check(policies.Resolve("", name));
    for (const auto& [q, qdecl] : c.queue_decls) check(policies.Resolve(q, name));
  }
  (void)policies.Canonical();
  if (c.max_payload_bytes == 0 || c.data_dir.empty()) std::abort();
  return 0;
}
