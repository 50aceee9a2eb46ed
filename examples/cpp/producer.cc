// A runnable ledgerq producer in C++: enqueues N "welcome" jobs to queue "emails", each with an
// idempotency key, so running it twice creates nothing new.
//   examples-cpp-producer [ADDRESS] [N]   (default $LEDGERQ_ADDRESS, else 127.0.0.1:7400; N 3)
#include <cstdlib>
#include <iostream>
#include <string>

#include "client/client.h"

int main(int argc, char** argv) {
  const char* env = std::getenv("LEDGERQ_ADDRESS");
  ledgerq::client::ClientOptions o;
  o.server = argc > 1 ? argv[1] : env ? env : "127.0.0.1:7400";
  const int n = argc > 2 ? std::atoi(argv[2]) : 3;
  if (auto st = ledgerq::client::LoadSecurity({}, &o); !st.ok()) {
    std::cerr << st.message() << "\n";
    return 2;
  }
  ledgerq::client::Client client(o);
  for (int i = 0; i < n; ++i) {
    ledgerq::v1::EnqueueRequest req;
    req.set_queue("emails");
    req.set_type("welcome");
    req.set_payload(R"({"to":"user-)" + std::to_string(i) + R"(@example.com"})");
    req.set_idempotency_key("signup-" + std::to_string(i));
    auto r = client.Enqueue(req);
    if (!r.ok()) {
      std::cerr << "enqueue: " << r.status().message() << "\n";  // names the field that is wrong
      return 1;
    }
    std::cout << "job " << r->job().id() << (r->deduplicated() ? " (deduplicated)" : " created")
              << "\n";
  }
  return 0;
}
