// ledgerqd's lifecycle: open the store, bind HTTP, bind gRPC, serve until SIGTERM/SIGINT, then
// drain (stop accepting, finish in-flight calls), close the store and return. Any failure to
// start is one clear Status; the caller exits non-zero with it.
#pragma once

#include "common/status.h"
#include "server/config.h"

namespace ledgerq::server {

// Runs the daemon to completion. Returns OK after a clean shutdown.
[[nodiscard]] Status RunDaemon(const Config& config);

}  // namespace ledgerq::server
