// Helpers shared by the end-to-end tests (tests/e2e_daemon_test.cc, tests/e2e_worker_test.cc):
// a client for a test daemon, enqueue requests, a clean SIGTERM stop of a daemon, and finding an
// id in text a server or the CLI printed. Test-only code; no assertions in here.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "client/client.h"
#include "tests/support/daemon.h"

namespace ledgerq::testing {

// A client for `address` with a per-call `timeout`.
client::Client MakeClient(const std::string& address,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(10'000));

// An EnqueueRequest with the given fields (an empty `key`: no idempotency key).
v1::EnqueueRequest Req(const std::string& queue, const std::string& type,
                       const std::string& payload, const std::string& key = "");

// True when `text` holds `n` as a whole number (not as part of a longer run of digits).
bool NamesNumber(const std::string& text, uint64_t n);

// Sends SIGTERM and reaps the daemon.
ExitInfo Terminate(Daemon& d);

}  // namespace ledgerq::testing
