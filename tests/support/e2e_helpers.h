// Helpers shared by the end-to-end tests (tests/e2e_*_test.cc): a client for a test daemon, the
// request messages the tests send, a clean SIGTERM stop of a daemon, polling, the CLI, a plain
// HTTP GET, small file and text helpers, and finding an id in text a server or the CLI printed.
// Test-only code; no assertions in here.
#pragma once

#include <google/protobuf/duration.pb.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "client/client.h"
#include "tests/support/daemon.h"

namespace ledgerq::testing {

// A client for `address` with a per-call `timeout`.
client::Client MakeClient(const std::string& address,
                          std::chrono::milliseconds timeout = std::chrono::milliseconds(10'000));

// An EnqueueRequest with the given fields (an empty `key`: no idempotency key).
v1::EnqueueRequest Req(const std::string& queue, const std::string& type,
                       const std::string& payload, const std::string& key = "");

// A protobuf Duration of `s` seconds and `nanos` nanoseconds.
google::protobuf::Duration Seconds(int64_t s, int32_t nanos = 0);

// A LeaseRequest for up to `max_jobs` jobs of `queue`, held for `lease_seconds`, long-polling
// up to `wait_seconds`, as `worker_id`.
v1::LeaseRequest LeaseReq(const std::string& queue, uint32_t max_jobs, int64_t lease_seconds,
                          int64_t wait_seconds, const std::string& worker_id = "e2e-worker");

// A CompleteRequest for `token` with `result`.
v1::CompleteRequest CompleteReq(const v1::LeaseToken& token, const std::string& result);

// A FailRequest for `token` with an error of `kind`, `code` and `message`.
v1::FailRequest FailReq(const v1::LeaseToken& token, v1::ErrorKind kind, const std::string& code,
                        const std::string& message);
// The same with the message "failed with <code>".
v1::FailRequest FailReq(const v1::LeaseToken& token, v1::ErrorKind kind, const std::string& code);

// Polls `pred` until it holds or `limit` passes; returns whether it held.
bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds limit,
             std::chrono::milliseconds every = std::chrono::milliseconds(50));

// True when `text` holds `n` as a whole number (not as part of a longer run of digits).
bool NamesNumber(const std::string& text, uint64_t n);

// Sends SIGTERM and reaps the daemon.
ExitInfo Terminate(Daemon& d);

// The argv of the CLI against `server` with `args`.
std::vector<std::string> CliArgv(const std::string& server, const std::vector<std::string>& args);

// Runs the CLI against `server` with `args`; returns exit info, output in *out / *err.
ExitInfo Cli(const std::string& server, const std::vector<std::string>& args, std::string* out,
             std::string* err);

struct HttpReply {
  int status = 0;  // 0: no parsable answer
  std::string headers, body;
};

// A blocking TCP connection to 127.0.0.1:`port` with 5 s send/receive timeouts; -1 on failure.
int ConnectLoopback(int port);

// One HTTP/1.1 GET to 127.0.0.1:`port` over a plain POSIX socket, Connection: close, read to EOF.
HttpReply HttpGet(int port, const std::string& path);

// Writes `text` to `path` (replacing it); returns whether it was written.
bool WriteFile(const std::string& path, const std::string& text);

// `s` in lower case (ASCII).
std::string Lower(std::string s);

}  // namespace ledgerq::testing
