// Redis with hiredis, the reliable-queue pattern: LPUSH to the queue; BLMOVE the oldest job to a
// processing list (so a crashed worker's job is not lost); LREM it from there on completion.
// Durability is the server's: --appendonly yes --appendfsync always fsyncs the AOF before the
// replies of each event-loop pass go out.
#include <hiredis/hiredis.h>

#include "bench/peer.h"

namespace ledgerq::bench {
namespace {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

[[nodiscard]] Context Open(const std::string& address, std::string* error) {
  const size_t colon = address.rfind(':');
  const std::string host = address.substr(0, colon);
  const int port = colon == std::string::npos ? 6379 : std::atoi(address.c_str() + colon + 1);
  Context c(redisConnect(host.c_str(), port));
  if (!c || c->err) {
    *error = "connect " + address + ": " + (c ? c->errstr : "out of memory");
    return nullptr;
  }
  return c;
}

class RedisSession final : public PeerSession {
 public:
  RedisSession(Context c, const std::string& queue)
      : c_(std::move(c)), queue_(queue), processing_(queue + ":processing") {}

  bool Enqueue(std::string_view payload, std::string* error) override {
    Reply r(Command(error, "LPUSH %b %b", queue_.data(), queue_.size(), payload.data(),
                    payload.size()));
    return r && Expect(r.get(), REDIS_REPLY_INTEGER, "LPUSH", error);
  }

  bool Cycle(std::string_view payload, std::string* error) override {
    if (!Enqueue(payload, error)) return false;
    Reply job;
    for (int tries = 0;; ++tries) {
      if (tries == 10) {
        *error = "BLMOVE: nothing to take after 10 waits";
        return false;
      }
      job.reset(Command(error, "BLMOVE %b %b RIGHT LEFT 1", queue_.data(), queue_.size(),
                        processing_.data(), processing_.size()));
      if (!job) return false;
      if (job->type == REDIS_REPLY_NIL) continue;
      if (!Expect(job.get(), REDIS_REPLY_STRING, "BLMOVE", error)) return false;
      break;
    }
    Reply done(
        Command(error, "LREM %b 1 %b", processing_.data(), processing_.size(), job->str, job->len));
    if (!done || !Expect(done.get(), REDIS_REPLY_INTEGER, "LREM", error)) return false;
    if (done->integer != 1) {
      *error = "LREM removed " + std::to_string(done->integer) + " jobs";
      return false;
    }
    return true;
  }

 private:
  template <typename... Args>
  [[nodiscard]] redisReply* Command(std::string* error, const char* format, Args... args) {
    auto* r = static_cast<redisReply*>(redisCommand(c_.get(), format, args...));
    if (!r) *error = std::string("redis: ") + c_->errstr;
    return r;
  }

  [[nodiscard]] static bool Expect(const redisReply* r, int type, const char* what,
                                   std::string* error) {
    if (r->type == type) return true;
    *error = std::string(what) + ": unexpected reply" +
             (r->type == REDIS_REPLY_ERROR ? std::string(": ") + r->str : std::string());
    return false;
  }

  Context c_;
  std::string queue_, processing_;
};

class RedisDriver final : public PeerDriver {
 public:
  explicit RedisDriver(const PeerConfig& config) : config_(config) {}

  bool Prepare(std::string* error) override {
    Context c = Open(config_.address, error);
    if (!c) return false;
    const std::string processing = config_.queue + ":processing";
    Reply r(static_cast<redisReply*>(redisCommand(c.get(), "DEL %b %b", config_.queue.data(),
                                                  config_.queue.size(), processing.data(),
                                                  processing.size())));
    if (!r || r->type == REDIS_REPLY_ERROR) {
      *error = std::string("DEL: ") + (r ? r->str : c->errstr);
      return false;
    }
    return true;
  }

  std::unique_ptr<PeerSession> Connect(std::string* error) override {
    Context c = Open(config_.address, error);
    if (!c) return nullptr;
    return std::make_unique<RedisSession>(std::move(c), config_.queue);
  }

 private:
  PeerConfig config_;
};

}  // namespace

std::unique_ptr<PeerDriver> MakeRedisDriver(const PeerConfig& config) {
  return std::make_unique<RedisDriver>(config);
}

}  // namespace ledgerq::bench
