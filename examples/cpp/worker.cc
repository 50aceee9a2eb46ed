// A runnable ledgerq worker in C++: completes "welcome" jobs of queue "emails", fails those
// without a recipient for good, and drains on SIGTERM or SIGINT.
//   examples-cpp-worker [ADDRESS]   (default $LEDGERQ_ADDRESS, else 127.0.0.1:7400;
//                                    token and TLS from LEDGERQ_TOKEN, LEDGERQ_TLS_*)
#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "client/worker.h"

using ledgerq::client::JobContext;
using ledgerq::client::Outcome;

int main(int argc, char** argv) {
  const char* env = std::getenv("LEDGERQ_ADDRESS");
  ledgerq::client::WorkerOptions o;
  o.server = argc > 1 ? argv[1] : env ? env : "127.0.0.1:7400";
  o.queues = {"emails"};
  if (auto st = ledgerq::client::LoadSecurity({}, &o.security); !st.ok()) {
    std::cerr << st.message() << "\n";
    return 2;
  }
  ledgerq::client::Worker worker(o);
  worker.Handle("welcome", [](JobContext& job) {
    auto payload = nlohmann::json::parse(job.payload(), nullptr, false);
    if (payload.is_discarded() || !payload.contains("to")) {
      return Outcome::Permanent("NO_RECIPIENT", "no \"to\" in the payload");  // dead letter
    }
    std::cout << "welcome mail to " << payload["to"].dump() << " (job " << job.job().id()
              << ", attempt " << job.attempt() << ")" << std::endl;
    return Outcome::Complete(R"({"sent":true})");  // any Transient(...) is retried with backoff
  });

  // SIGTERM/SIGINT: stop leasing, let running handlers finish, return from Run().
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::thread([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    worker.Stop();
  }).detach();

  auto st = worker.Run();
  if (!st.ok()) {
    std::cerr << st.message() << "\n";
    return 1;
  }
  return 0;
}
