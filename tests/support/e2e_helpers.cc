#include "tests/support/e2e_helpers.h"

#include <signal.h>

#include <cctype>

namespace ledgerq::testing {

client::Client MakeClient(const std::string& address, std::chrono::milliseconds timeout) {
  client::ClientOptions o;
  o.server = address;
  o.timeout = timeout;
  return client::Client(o);
}

v1::EnqueueRequest Req(const std::string& queue, const std::string& type,
                       const std::string& payload, const std::string& key) {
  v1::EnqueueRequest r;
  r.set_queue(queue);
  r.set_type(type);
  r.set_payload(payload);
  r.set_idempotency_key(key);
  return r;
}

bool NamesNumber(const std::string& text, uint64_t n) {
  const std::string digits = std::to_string(n);
  for (size_t p = text.find(digits); p != std::string::npos; p = text.find(digits, p + 1)) {
    bool left_ok = p == 0 || !std::isdigit(static_cast<unsigned char>(text[p - 1]));
    size_t end = p + digits.size();
    bool right_ok = end >= text.size() || !std::isdigit(static_cast<unsigned char>(text[end]));
    if (left_ok && right_ok) return true;
  }
  return false;
}

ExitInfo Terminate(Daemon& d) {
  d.Signal(SIGTERM);
  return d.Wait();
}

}  // namespace ledgerq::testing
