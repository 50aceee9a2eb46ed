// beanstalkd over its text protocol (doc/protocol.txt): put; reserve-with-timeout; delete.
// Durability is the server's: with -b DIR -f0 every binlog write is fsynced before the reply.
#include <cstdio>

#include "bench/net.h"
#include "bench/peer.h"

namespace ledgerq::bench {
namespace {

class BeanstalkSession final : public PeerSession {
 public:
  [[nodiscard]] bool Open(const std::string& address, std::string* error) {
    return conn_.Connect(address, error);
  }

  bool Enqueue(std::string_view payload, std::string* error) override {
    // put <pri> <delay> <ttr> <bytes>\r\n<data>\r\n  ->  INSERTED <id>\r\n
    char head[64];
    int n = std::snprintf(head, sizeof head, "put 1024 0 60 %zu\r\n", payload.size());
    out_.assign(head, static_cast<size_t>(n));
    out_.append(payload);
    out_.append("\r\n");
    if (!conn_.SendAll(out_, error) || !conn_.ReadLine(&line_, error)) return false;
    return Expect("INSERTED ", error);
  }

  bool Cycle(std::string_view payload, std::string* error) override {
    if (!Enqueue(payload, error)) return false;
    // reserve-with-timeout <s>\r\n  ->  RESERVED <id> <bytes>\r\n<data>\r\n | TIMED_OUT
    unsigned long long id = 0;
    for (int tries = 0;; ++tries) {
      if (tries == 10) {
        *error = "reserve: nothing to reserve after 10 waits";
        return false;
      }
      if (!conn_.SendAll("reserve-with-timeout 1\r\n", error) || !conn_.ReadLine(&line_, error)) {
        return false;
      }
      if (line_ == "TIMED_OUT" || line_ == "DEADLINE_SOON") continue;
      size_t bytes = 0;
      if (std::sscanf(line_.c_str(), "RESERVED %llu %zu", &id, &bytes) != 2) {
        *error = "reserve: " + line_;
        return false;
      }
      if (!conn_.ReadExact(bytes + 2, &data_, error)) return false;
      break;
    }
    // delete <id>\r\n  ->  DELETED\r\n
    char del[48];
    int n = std::snprintf(del, sizeof del, "delete %llu\r\n", id);
    if (!conn_.SendAll(std::string_view(del, static_cast<size_t>(n)), error) ||
        !conn_.ReadLine(&line_, error)) {
      return false;
    }
    return Expect("DELETED", error);
  }

 private:
  [[nodiscard]] bool Expect(std::string_view prefix, std::string* error) {
    if (line_.compare(0, prefix.size(), prefix) == 0) return true;
    *error = "beanstalkd answered: " + line_;
    return false;
  }

  TcpConn conn_;
  std::string out_, line_, data_;
};

class BeanstalkDriver final : public PeerDriver {
 public:
  explicit BeanstalkDriver(const PeerConfig& config) : config_(config) {}

  std::unique_ptr<PeerSession> Connect(std::string* error) override {
    auto s = std::make_unique<BeanstalkSession>();
    if (!s->Open(config_.address, error)) return nullptr;
    return s;
  }

 private:
  PeerConfig config_;
};

}  // namespace

std::unique_ptr<PeerDriver> MakeBeanstalkDriver(const PeerConfig& config) {
  return std::make_unique<BeanstalkDriver>(config);
}

}  // namespace ledgerq::bench
