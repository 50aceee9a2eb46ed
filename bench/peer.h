// The comparison with the queues users would pick instead of ledgerq (bench/peers/run.sh).
// Each system gets a native C++ driver; every driver runs the same closed loop: `concurrency`
// clients, each with exactly one operation in flight, issuing the next as soon as the previous
// one is answered. Socket protocols (beanstalkd, Redis, PostgreSQL) get a thread and a
// connection per client, blocking; gRPC clients use the callback API and issue the next call
// from the completion (as bench_main.cc does), sharing a few connections, so no thread waits
// per client.
//   enqueue: put one job and wait for the durable acknowledgement.
//   cycle:   put one job, take one job (any: the oldest available), complete it; the cycle's
//            latency is the three round trips.
// Built only with -DLEDGERQ_BENCH_PEERS=ON when libpq and hiredis are found.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace ledgerq::bench {

struct PeerConfig {
  std::string address;  // host:port of the system under test
  std::string queue = "peers";
};

// One client connection, used by one thread.
class PeerSession {
 public:
  virtual ~PeerSession() = default;
  // Puts one job; true once the system acknowledged it.
  [[nodiscard]] virtual bool Enqueue(std::string_view payload, std::string* error) = 0;
  // Puts one job, takes the next available one and completes (deletes / acknowledges) it.
  [[nodiscard]] virtual bool Cycle(std::string_view payload, std::string* error) = 0;
};

using PeerDone = std::function<void(bool ok, const std::string& error)>;

// A client whose operations complete through a callback (on the library's threads).
class AsyncPeerSession {
 public:
  virtual ~AsyncPeerSession() = default;
  // As PeerSession's, answering through `done`; the payload is copied before this returns.
  virtual void StartEnqueue(std::string_view payload, PeerDone done) = 0;
  virtual void StartCycle(std::string_view payload, PeerDone done) = 0;
};

// A driver implements Connect (blocking clients) or ConnectAsync (callback clients).
class PeerDriver {
 public:
  virtual ~PeerDriver() = default;
  // Once, before any session connects: create tables, empty the queue.
  [[nodiscard]] virtual bool Prepare(std::string* error) {
    (void)error;
    return true;
  }
  [[nodiscard]] virtual bool IsAsync() const { return false; }
  [[nodiscard]] virtual std::unique_ptr<PeerSession> Connect(std::string* error) {
    *error = "this driver has only callback clients";
    return nullptr;
  }
  [[nodiscard]] virtual std::unique_ptr<AsyncPeerSession> ConnectAsync(std::string* error) {
    *error = "this driver has only blocking clients";
    return nullptr;
  }
};

// Each returns nullptr for a system name it does not own.
[[nodiscard]] std::unique_ptr<PeerDriver> MakeGrpcDriver(std::string_view system,
                                                         const PeerConfig& config);
[[nodiscard]] std::unique_ptr<PeerDriver> MakeBeanstalkDriver(const PeerConfig& config);
[[nodiscard]] std::unique_ptr<PeerDriver> MakeRedisDriver(const PeerConfig& config);
[[nodiscard]] std::unique_ptr<PeerDriver> MakePostgresDriver(const PeerConfig& config);

// Serves bench/echo.proto until SIGINT or SIGTERM; prints "listening HOST:PORT".
[[nodiscard]] int RunEchoServer(const std::string& listen);

// Registers `peer`, `echo-server` and `peer-table` on the app.
void AddPeerCommands(CLI::App& app);
// Runs whichever of them was parsed; false when none was.
[[nodiscard]] bool RunPeerCommands(const CLI::App& app, int* exit_code);

}  // namespace ledgerq::bench
