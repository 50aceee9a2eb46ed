#include "server/logging.h"

#include <spdlog/async.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <mutex>
#include <string>

#include "server/lifecycle.h"

namespace ledgerq::server {
namespace {

// The one buffer in front of file descriptor 2.
class StderrBuffer {
 public:
  void Append(const char* data, size_t n) {
    std::lock_guard lock(mu_);
    buf_.append(data, n);
    if (buf_.size() >= kLimit) FlushLocked();
  }
  void Flush() {
    std::lock_guard lock(mu_);
    FlushLocked();
  }

 private:
  static constexpr size_t kLimit = 64 * 1024;
  void FlushLocked() {
    size_t done = 0;
    while (done < buf_.size()) {
      ssize_t w = ::write(2, buf_.data() + done, buf_.size() - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) break;  // stderr gone: drop rather than block the daemon
      done += static_cast<size_t>(w);
    }
    buf_.clear();
  }
  std::mutex mu_;
  std::string buf_;
};

// A sink with its own formatter writing into the shared buffer.
class BufferSink final : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  explicit BufferSink(std::shared_ptr<StderrBuffer> out) : out_(std::move(out)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    out_->Append(formatted.data(), formatted.size());
  }
  void flush_() override { out_->Flush(); }

 private:
  std::shared_ptr<StderrBuffer> out_;
};

// %* : the message as a JSON string literal.
class JsonMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    std::string s;
    AppendJsonString(s, std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(s.data(), s.data() + s.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonMessageFlag>();
  }
};

}  // namespace

void SetUpLogging(const Config& config) {
  auto out = std::make_shared<StderrBuffer>();
  auto daemon_sink = std::make_shared<BufferSink>(out);
  auto lifecycle_sink = std::make_shared<BufferSink>(out);
  const bool json = config.log_format == "json";
  if (json) {
    auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    f->add_flag<JsonMessageFlag>('*').set_pattern(
        R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":%*})");
    daemon_sink->set_formatter(std::move(f));
  } else {
    daemon_sink->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%l] %v");
  }
  // Lifecycle lines arrive fully formatted (server/lifecycle.cc) and carry their own time.
  lifecycle_sink->set_pattern(json ? "%v" : "[%Y-%m-%d %H:%M:%S.%e] [%l] %v");

  auto daemon_log = std::make_shared<spdlog::logger>("ledgerqd", daemon_sink);
  daemon_log->flush_on(spdlog::level::trace);  // rare, and worth seeing at once
  spdlog::init_thread_pool(16384, 1);
  auto lifecycle_log = std::make_shared<spdlog::async_logger>(
      "lifecycle", lifecycle_sink, spdlog::thread_pool(), spdlog::async_overflow_policy::block);
  spdlog::register_logger(lifecycle_log);
  spdlog::set_default_logger(daemon_log);
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::flush_every(std::chrono::seconds(1));
}

void ShutDownLogging() { spdlog::shutdown(); }

}  // namespace ledgerq::server
