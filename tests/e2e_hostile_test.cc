// End-to-end tests of ledgerqd against malformed and hostile clients: oversized gRPC messages
// and metadata, thousands of idle connections on both ports, slowloris on the HTTP port, Lease
// long-polls whose client vanishes (connection reset or silently frozen), and garbage bytes on
// the gRPC port. Each TEST_CASE owns its TempDir and its Daemon, so `ctest -j` is safe.
//
// The bounds asserted are liveness and memory bounds with generous margins (an answer within
// 5-10 s, RSS growth under 200 MiB), never speed. Catch2 assertions are not thread-safe: helper
// threads record what they saw and the test thread asserts on it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client/client.h"
#include "tests/support/daemon.h"
#include "tests/support/e2e_helpers.h"
#include "tests/support/temp_dir.h"

namespace {

using ledgerq::client::Client;
using ledgerq::testing::CompleteReq;
using ledgerq::testing::ConnectLoopback;
using ledgerq::testing::Daemon;
using ledgerq::testing::ExitInfo;
using ledgerq::testing::HttpGet;
using ledgerq::testing::HttpReply;
using ledgerq::testing::LeaseReq;
using ledgerq::testing::MakeClient;
using ledgerq::testing::Req;
using ledgerq::testing::TempDir;
using ledgerq::testing::Terminate;
using ledgerq::testing::WaitFor;
namespace v1 = ledgerq::v1;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

// What the daemon promises (server/http_server.cc, server/daemon.cc); the tests allow slack.
constexpr auto kHttpRequestTimeout = 10s;    // idle keep-alive or a request still arriving
constexpr auto kGrpcHandshakeTimeout = 10s;  // TCP accept to the client's HTTP/2 SETTINGS
#if defined(__SANITIZE_ADDRESS__)
// AddressSanitizer keeps freed memory in quarantine and pads every allocation: its daemon
// grows about three times as much for the same connections.
constexpr long kRssGrowthBoundKiB = 600 * 1024;
#else
constexpr long kRssGrowthBoundKiB = 200 * 1024;
#endif

double SecondsSince(SteadyClock::time_point t) {
  return std::chrono::duration<double>(SteadyClock::now() - t).count();
}

// ---------------------------------------------------------------------------------------------
// The daemon's process, seen from /proc

long RssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

long OpenFds(pid_t pid) {
  std::error_code ec;
  long n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return ec ? -1 : n;
}

// The soft "Max open files" of `pid` (-1 when unreadable; LONG_MAX when unlimited).
long SoftNoFile(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Max open files", 0) != 0) continue;
    std::istringstream fields(line.substr(std::string("Max open files").size()));
    std::string soft;
    fields >> soft;
    return soft == "unlimited" ? LONG_MAX : std::atol(soft.c_str());
  }
  return -1;
}

bool Alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

// One sample of a gauge without labels from /metrics (nullopt when absent or unreadable).
std::optional<double> Gauge(int http_port, const std::string& name) {
  HttpReply r = HttpGet(http_port, "/metrics");
  if (r.status != 200) return std::nullopt;
  std::istringstream in(r.body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) return std::atof(line.c_str() + name.size() + 1);
  }
  return std::nullopt;
}

bool GaugeIs(int http_port, const std::string& name, double want) {
  auto v = Gauge(http_port, name);
  return v && *v == want;
}

// ---------------------------------------------------------------------------------------------
// Raw sockets

// Raises this process's soft RLIMIT_NOFILE towards `want` (bounded by the hard limit); returns
// the soft limit now in force.
rlim_t RaiseNoFile(rlim_t want) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = std::min(want, rl.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &rl);
    ::getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

int PortOf(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

// Sends all of `data` unless the peer goes away first; returns whether all of it went.
bool SendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

// True when the peer has closed (or reset) the connection; unread data is skipped.
bool PeerClosed(int fd) {
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return true;
    if (n > 0) continue;
    return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
  }
}

// Polls `fds` until every one is closed by the peer or `limit` passes. Returns how many are
// still open; each fd's close time (seconds since `t0`) goes to *closed_after when given.
size_t WaitAllClosed(const std::vector<int>& fds, std::chrono::milliseconds limit,
                     SteadyClock::time_point t0, std::vector<double>* closed_after = nullptr) {
  std::vector<bool> closed(fds.size(), false);
  size_t open = fds.size();
  const auto deadline = SteadyClock::now() + limit;
  for (;;) {
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!closed[i] && PeerClosed(fds[i])) {
        closed[i] = true;
        --open;
        if (closed_after) closed_after->push_back(SecondsSince(t0));
      }
    }
    if (open == 0 || SteadyClock::now() >= deadline) return open;
    std::this_thread::sleep_for(100ms);
  }
}

// Owns a set of sockets; closes them all on destruction.
struct Sockets {
  std::vector<int> fds;
  ~Sockets() {
    for (int fd : fds) ::close(fd);
  }
};

// ---------------------------------------------------------------------------------------------
// HTTP/2 by hand: just enough to speak to the gRPC port the way a broken or hostile client would.

const std::string kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

std::string H2Frame(uint8_t type, uint8_t flags, uint32_t stream, const std::string& payload) {
  std::string f;
  const uint32_t len = static_cast<uint32_t>(payload.size());
  f.push_back(static_cast<char>((len >> 16) & 0xff));
  f.push_back(static_cast<char>((len >> 8) & 0xff));
  f.push_back(static_cast<char>(len & 0xff));
  f.push_back(static_cast<char>(type));
  f.push_back(static_cast<char>(flags));
  f.push_back(static_cast<char>((stream >> 24) & 0x7f));
  f.push_back(static_cast<char>((stream >> 16) & 0xff));
  f.push_back(static_cast<char>((stream >> 8) & 0xff));
  f.push_back(static_cast<char>(stream & 0xff));
  return f + payload;
}

constexpr uint8_t kH2Headers = 1, kH2Settings = 4, kH2Continuation = 9;
constexpr uint8_t kH2EndStream = 1, kH2EndHeaders = 4;

// HPACK integer with an N-bit prefix (RFC 7541 5.1); `first` holds the pattern bits above it.
void HpackInt(std::string& out, uint8_t first, int prefix_bits, uint64_t v) {
  const uint64_t max = (1u << prefix_bits) - 1;
  if (v < max) {
    out.push_back(static_cast<char>(first | v));
    return;
  }
  out.push_back(static_cast<char>(first | max));
  v -= max;
  while (v >= 128) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

// A literal header field without indexing, new name, no Huffman coding.
void HpackLiteral(std::string& out, const std::string& name, const std::string& value) {
  out.push_back(0);
  HpackInt(out, 0, 7, name.size());
  out += name;
  HpackInt(out, 0, 7, value.size());
  out += value;
}

// The request headers of a unary gRPC call to `path` on stream 1, plus `extra` headers, split
// into a HEADERS frame and CONTINUATION frames of at most 16 KiB (the default max frame size),
// with the stream ended (no request message).
std::string H2RequestHeaders(const std::string& path,
                             const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string block;
  HpackLiteral(block, ":method", "POST");
  HpackLiteral(block, ":scheme", "http");
  HpackLiteral(block, ":path", path);
  HpackLiteral(block, ":authority", "127.0.0.1");
  HpackLiteral(block, "content-type", "application/grpc");
  HpackLiteral(block, "te", "trailers");
  for (const auto& [k, v] : extra) HpackLiteral(block, k, v);
  constexpr size_t kMaxFrame = 16384;
  std::string out;
  for (size_t off = 0; off < block.size(); off += kMaxFrame) {
    const bool first = off == 0;
    const bool last = off + kMaxFrame >= block.size();
    // END_STREAM on HEADERS: a complete request with no message, so the server must answer.
    out += H2Frame(first ? kH2Headers : kH2Continuation,
                   static_cast<uint8_t>((last ? kH2EndHeaders : 0) | (first ? kH2EndStream : 0)), 1,
                   block.substr(off, kMaxFrame));
  }
  return out;
}

// Reads HTTP/2 frames from `fd` for up to `limit` and names how the server dealt with stream 1:
// "headers" (a response or trailers-only status on stream 1), "rst_stream", "goaway", "closed",
// or "" if none of those came in time.
std::string H2Outcome(int fd, std::chrono::milliseconds limit) {
  std::string buf;
  const auto deadline = SteadyClock::now() + limit;
  while (SteadyClock::now() < deadline) {
    while (buf.size() >= 9) {
      const size_t len = (static_cast<uint8_t>(buf[0]) << 16) |
                         (static_cast<uint8_t>(buf[1]) << 8) | static_cast<uint8_t>(buf[2]);
      if (buf.size() < 9 + len) break;
      const uint8_t type = static_cast<uint8_t>(buf[3]);
      const uint32_t stream = ((static_cast<uint8_t>(buf[5]) & 0x7f) << 24) |
                              (static_cast<uint8_t>(buf[6]) << 16) |
                              (static_cast<uint8_t>(buf[7]) << 8) | static_cast<uint8_t>(buf[8]);
      buf.erase(0, 9 + len);
      if (type == kH2Headers && stream == 1) return "headers";
      if (type == 3 && stream == 1) return "rst_stream";
      if (type == 7) return "goaway";
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char chunk[16384];
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return "closed";
    buf.append(chunk, static_cast<size_t>(n));
  }
  return "";
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy between a test client and the daemon that can make the client vanish: Cut()
// closes both sides (with a RST, as when a machine's process dies with unread data, or a FIN),
// Freeze() stops moving bytes but keeps the sockets open, as when a machine drops off the
// network without a word.

class Proxy {
 public:
  explicit Proxy(int target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = 0;
    ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    socklen_t len = sizeof addr;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        ::listen(listen_fd_, 16) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Pump(); });
  }
  ~Proxy() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (auto [a, b] : pairs_) {
      ::close(a);
      ::close(b);
    }
    if (listen_fd_ >= 0) ::close(listen_fd_);
  }
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void Freeze() { frozen_ = true; }
  // Closes every proxied connection; `reset`: with a RST instead of a FIN. Waits until done.
  void Cut(bool reset) {
    cut_reset_ = reset;
    cut_ = true;
    while (cut_ && thread_.joinable()) std::this_thread::sleep_for(5ms);
  }
  size_t connections() const { return connections_; }

 private:
  void Pump() {
    char buf[65536];
    while (!stop_) {
      if (cut_) {
        for (auto [a, b] : pairs_) {
          if (cut_reset_) {
            linger lg{1, 0};
            ::setsockopt(a, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            ::setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
          }
          ::close(a);
          ::close(b);
        }
        pairs_.clear();
        cut_ = false;
      }
      std::vector<pollfd> pfds{{listen_fd_, POLLIN, 0}};
      if (!frozen_) {
        for (auto [a, b] : pairs_) {
          pfds.push_back({a, POLLIN, 0});
          pfds.push_back({b, POLLIN, 0});
        }
      }
      if (::poll(pfds.data(), pfds.size(), 20) <= 0) continue;
      if (pfds[0].revents & POLLIN) {
        int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        int server = client >= 0 ? ConnectLoopback(target_port_) : -1;
        if (server >= 0) {
          int one = 1;
          ::setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          ::setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          pairs_.emplace_back(client, server);
          ++connections_;
        } else if (client >= 0) {
          ::close(client);
        }
      }
      for (size_t i = 1; i < pfds.size(); ++i) {
        if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        auto [a, b] = pairs_[(i - 1) / 2];
        const int from = pfds[i].fd, to = from == a ? b : a;
        ssize_t n = ::recv(from, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
          ::send(to, buf, static_cast<size_t>(n), MSG_NOSIGNAL);  // blocking; loopback is fast
        } else if (n == 0) {
          ::shutdown(to, SHUT_WR);
        }
      }
    }
  }

  int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::vector<std::pair<int, int>> pairs_;  // owned by the pump thread
  std::atomic<bool> stop_{false}, frozen_{false}, cut_{false}, cut_reset_{false};
  std::atomic<size_t> connections_{0};
};

// Leases and completes jobs of `queue` as one well-behaved worker until `want` distinct jobs
// are completed or `limit` passes. Returns the completed ids; attempts above 1 are counted.
std::set<uint64_t> WorkUntil(Client& client, const std::string& queue, size_t want,
                             std::chrono::milliseconds limit, size_t* retried, std::string* why) {
  std::set<uint64_t> done;
  const auto deadline = SteadyClock::now() + limit;
  while (done.size() < want && SteadyClock::now() < deadline) {
    auto r = client.Lease(LeaseReq(queue, 64, 30, /*wait=*/1, "survivor"));
    if (!r.ok()) {
      *why = "Lease: " + r.status().ToString();
      return done;
    }
    for (const auto& lj : r->jobs()) {
      if (lj.token().attempt() > 1) ++*retried;
      auto c = client.Complete(CompleteReq(lj.token(), "ok"));
      if (!c.ok()) {
        *why = "Complete: " + c.status().ToString();
        return done;
      }
      done.insert(lj.job().id());
    }
  }
  return done;
}

// The daemon answers a gRPC call and GET /healthz within 10 s. A call may fail UNAVAILABLE
// once when the connection it went out on was just closed by the server (after a protocol
// violation on a connection the test's clients share); a client retries that.
void RequireResponsive(Daemon& d, const std::string& queue) {
  Client c = MakeClient(d.grpc_address(), 5000ms);
  std::string last;
  int attempts = 0;
  const bool answered = WaitFor(
      [&] {
        ++attempts;
        auto e = c.Enqueue(Req(queue, "t", "{}"));
        last = e.ok() ? "ok" : e.status().ToString();
        return e.ok();
      },
      10s, 200ms);
  INFO("Enqueue after " << attempts << " attempt(s): " << last);
  REQUIRE(answered);
  HttpReply h = HttpGet(d.http_port(), "/healthz");
  INFO("/healthz: " << h.status << " " << h.body);
  REQUIRE(h.status == 200);
}

// ---------------------------------------------------------------------------------------------

TEST_CASE("oversized gRPC messages and metadata get a clean error and the daemon carries on",
          "[e2e][hostile]") {
  TempDir tmp;
  Daemon d;
  // --max-payload-bytes 1024: the server's receive limit is then its 16 MiB floor.
  REQUIRE(d.Start(tmp.Sub("data"), {"--max-payload-bytes", "1024"}));
  Client client = MakeClient(d.grpc_address());
  RequireResponsive(d, "warm");
  const long rss_before = RssKiB(d.pid());

  SECTION("a message over the receive limit is RESOURCE_EXHAUSTED") {
    for (size_t mib : {17, 40}) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 10s);
      v1::EnqueueResponse resp;
      auto st = client.jobs()->Enqueue(&ctx, Req("big", "t", std::string(mib << 20, 'x')), &resp);
      INFO(mib << " MiB: " << st.error_code() << " " << st.error_message());
      CHECK(st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    }
    // A batch whose items are each small but whose sum is over the limit.
    v1::EnqueueBatchRequest batch;
    for (int i = 0; i < 1000; ++i) *batch.add_items() = Req("big", "t", std::string(20000, 'y'));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 10s);
    v1::EnqueueBatchResponse bresp;
    auto st = client.jobs()->EnqueueBatch(&ctx, batch, &bresp);
    INFO("batch: " << st.error_code() << " " << st.error_message());
    CHECK(st.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED);
    // Nothing was written.
    auto r = client.Lease(LeaseReq("big", 10, 30, 0));
    REQUIRE(r.ok());
    CHECK(r->jobs_size() == 0);
  }

  SECTION("a payload under the message limit but over --max-payload-bytes is INVALID_ARGUMENT") {
    grpc::ClientContext ctx;
    v1::EnqueueResponse resp;
    auto st = client.jobs()->Enqueue(&ctx, Req("big", "t", std::string(1 << 20, 'x')), &resp);
    INFO(st.error_code() << " " << st.error_message());
    CHECK(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  }

  SECTION("huge metadata from the C++ client is refused, not served") {
    for (size_t kib : {64, 1024}) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 10s);
      ctx.AddMetadata("x-hostile", std::string(kib << 10, 'a'));
      v1::EnqueueResponse resp;
      auto st = client.jobs()->Enqueue(&ctx, Req("meta", "t", "{}"), &resp);
      INFO(kib << " KiB: " << st.error_code() << " " << st.error_message());
      CHECK_FALSE(st.ok());
      CHECK(st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED);
    }
  }

  SECTION("huge header blocks sent raw (CONTINUATION frames) get a stream or connection error") {
    // The C++ client may refuse to send what the server's SETTINGS forbid; a hostile client
    // does not ask. 20 connections, each a 1 MiB header block. (gRPC 1.51's HPACK parser costs
    // time quadratic in a header block's size, CVE-2023-33953: 1 MiB is a fraction of a second,
    // 8 MiB about 2 s of CPU; README, "Exposure".)
    std::vector<std::string> outcomes;
    for (int i = 0; i < 20; ++i) {
      Sockets s;
      int fd = ConnectLoopback(PortOf(d.grpc_address()));
      REQUIRE(fd >= 0);
      s.fds.push_back(fd);
      std::string hello = kH2Preface + H2Frame(kH2Settings, 0, 0, "");
      SendAll(fd, hello);
      SendAll(fd, H2RequestHeaders("/ledgerq.v1.JobService/Enqueue",
                                   {{"x-hostile", std::string(1 << 20, 'a')}}));
      outcomes.push_back(H2Outcome(fd, 10s));
    }
    for (const auto& o : outcomes) {
      INFO("outcome: '" << o << "'");
      CHECK_FALSE(o.empty());
    }
  }

  // Whatever came before, the daemon is alive, serves the next call and kept its memory.
  REQUIRE(Alive(d.pid()));
  RequireResponsive(d, "after");
  const long rss_after = RssKiB(d.pid());
  std::cout << "hostile: oversized messages: RSS " << rss_before / 1024 << " MiB -> "
            << rss_after / 1024 << " MiB" << std::endl;
  CHECK(rss_after - rss_before < kRssGrowthBoundKiB);
  ExitInfo e = Terminate(d);
  CHECK(e.exited);
  CHECK(e.code == 0);
}

TEST_CASE("thousands of idle connections on both ports leave the daemon responsive and bounded",
          "[e2e][hostile]") {
  // The daemon must raise its own open-files limit: start it with a soft limit of 1024 (when
  // this process may lower and raise it again), then give this process room for its sockets.
  size_t per_port = 2000;
  rlimit original{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &original) == 0);
  const rlim_t hard = original.rlim_max;
  if (hard != RLIM_INFINITY && hard < 2 * per_port + 512) {
    per_port = hard > 1024 ? (hard - 512) / 2 : 256;
    WARN("RLIMIT_NOFILE hard limit " << hard << ": " << per_port << " connections per port");
  }
  TempDir tmp;
  Daemon d;
  {
    rlimit low = original;
    low.rlim_cur = std::min<rlim_t>(1024, original.rlim_cur);
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
    const bool started = d.Start(tmp.Sub("data"));
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &original) == 0);
    REQUIRE(started);
  }
  const rlim_t mine = RaiseNoFile(2 * per_port + 512);
  REQUIRE(mine >= 2 * per_port + 256);
  const long daemon_limit = SoftNoFile(d.pid());
  INFO("daemon's soft open-files limit: " << daemon_limit << ", hard " << hard);
  REQUIRE(daemon_limit >= static_cast<long>(std::min<rlim_t>(hard, 2 * per_port + 256)));

  RequireResponsive(d, "warm");
  const long rss_before = RssKiB(d.pid());
  const long fds_before = OpenFds(d.pid());

  const int grpc_port = PortOf(d.grpc_address());
  const int http_port = d.http_port();
  Sockets grpc_silent, grpc_h2, http_idle;
  const auto t0 = SteadyClock::now();
  // Half the gRPC connections never say a word; half send the HTTP/2 preface and SETTINGS and
  // then idle with no call, as an abandoned channel would.
  const std::string hello = kH2Preface + H2Frame(kH2Settings, 0, 0, "");
  for (size_t i = 0; i < per_port; ++i) {
    int g = ConnectLoopback(grpc_port);
    REQUIRE(g >= 0);
    if (i % 2 == 0) {
      grpc_silent.fds.push_back(g);
    } else {
      grpc_h2.fds.push_back(g);
      REQUIRE(SendAll(g, hello));
    }
    int h = ConnectLoopback(http_port);
    REQUIRE(h >= 0);
    http_idle.fds.push_back(h);
  }
  const double connect_secs = SecondsSince(t0);
  // The daemon accepted (not just left in its backlog) every gRPC connection, and holds at
  // most 512 HTTP sessions: at that cap a new connection closes the one waiting longest.
  const long slack = 32;
  const long fds_min =
      fds_before + static_cast<long>(per_port) + std::min<long>(per_port, 512) - slack;
  const long fds_max = fds_before + static_cast<long>(per_port) + 512 + slack;
  long fds_held = 0;
  const bool settled = WaitFor(
      [&] {
        fds_held = OpenFds(d.pid());
        return fds_held >= fds_min && fds_held <= fds_max;
      },
      10s);
  INFO("daemon fds: " << fds_before << " before, " << fds_held << " with the idle connections ("
                      << fds_min << ".." << fds_max << " expected)");
  CHECK(settled);

  // Responsive meanwhile, and a parked long-poll still wakes.
  RequireResponsive(d, "busy");
  {
    Client c = MakeClient(d.grpc_address(), 10'000ms);
    std::atomic<int> got{-1};
    std::thread poller([&] {
      Client p = MakeClient(d.grpc_address(), 10'000ms);
      auto r = p.Lease(LeaseReq("wake", 1, 30, /*wait=*/8));
      got = r.ok() ? r->jobs_size() : -2;
    });
    std::this_thread::sleep_for(200ms);
    auto e = c.Enqueue(Req("wake", "t", "{}"));
    poller.join();
    REQUIRE(e.ok());
    CHECK(got == 1);
  }
  const long rss_held = RssKiB(d.pid());
  std::cout << "hostile: " << per_port << " idle connections per port (opened in " << connect_secs
            << " s): daemon fds " << fds_before << " -> " << fds_held << ", RSS "
            << rss_before / 1024 << " MiB -> " << rss_held / 1024 << " MiB" << std::endl;
  CHECK(rss_held - rss_before < kRssGrowthBoundKiB);

  // The server closes idle HTTP connections after its request timeout, and gRPC connections
  // that never finished the HTTP/2 handshake after its handshake timeout.
  std::vector<double> http_closed, grpc_closed;
  const size_t http_open =
      WaitAllClosed(http_idle.fds, kHttpRequestTimeout + 10s, t0, &http_closed);
  const size_t grpc_open =
      WaitAllClosed(grpc_silent.fds, kGrpcHandshakeTimeout + 10s, t0, &grpc_closed);
  auto last = [](const std::vector<double>& v) {
    return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
  };
  std::cout << "hostile: idle HTTP connections all closed by " << last(http_closed)
            << " s, silent gRPC connections by " << last(grpc_closed) << " s" << std::endl;
  CHECK(http_open == 0);
  CHECK(grpc_open == 0);
  RequireResponsive(d, "after");
  CHECK(RssKiB(d.pid()) - rss_before < kRssGrowthBoundKiB);
  ExitInfo e = Terminate(d);
  CHECK(e.exited);
  CHECK(e.code == 0);
}

TEST_CASE(
    "slowloris on the HTTP port: trickling requests are cut off while /healthz keeps answering",
    "[e2e][hostile]") {
  TempDir tmp;
  Daemon d;
  REQUIRE(d.Start(tmp.Sub("data")));
  RaiseNoFile(1024);
  const int port = d.http_port();
  RequireResponsive(d, "warm");

  // 300 connections, one byte a second each: two thirds trickle an endless header, one third a
  // body they promised 4000 bytes of.
  constexpr int kConns = 300;
  Sockets s;
  std::vector<bool> closed(kConns, false);
  std::vector<double> closed_after;
  const auto t0 = SteadyClock::now();
  for (int i = 0; i < kConns; ++i) {
    int fd = ConnectLoopback(port);
    REQUIRE(fd >= 0);
    s.fds.push_back(fd);
    const std::string start =
        i % 3 == 2 ? "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n"
                   : "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    REQUIRE(SendAll(fd, start));
  }
  int healthz_ok = 0, healthz_failed = 0, rounds = 0;
  size_t open = kConns;
  const auto deadline = t0 + kHttpRequestTimeout + 15s;
  while (open > 0 && SteadyClock::now() < deadline) {
    for (int i = 0; i < kConns; ++i) {
      if (closed[i]) continue;
      if (PeerClosed(s.fds[i]) || ::send(s.fds[i], "a", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
        closed[i] = true;
        --open;
        closed_after.push_back(SecondsSince(t0));
      }
    }
    HttpReply h = HttpGet(port, "/healthz");
    (h.status == 200 ? healthz_ok : healthz_failed) += 1;
    ++rounds;
    std::this_thread::sleep_until(t0 + (rounds + 0) * 1s);
  }
  std::sort(closed_after.begin(), closed_after.end());
  std::cout << "hostile: slowloris: " << kConns - open << "/" << kConns
            << " closed by the server, first after "
            << (closed_after.empty() ? -1 : closed_after.front()) << " s, last after "
            << (closed_after.empty() ? -1 : closed_after.back()) << " s; /healthz answered "
            << healthz_ok << "/" << healthz_ok + healthz_failed << std::endl;
  CHECK(open == 0);
  CHECK(healthz_failed == 0);
  CHECK(healthz_ok > 0);

  // Oversized headers and bodies are refused at once.
  {
    Sockets big;
    const auto t1 = SteadyClock::now();
    int a = ConnectLoopback(port);
    int b = ConnectLoopback(port);
    REQUIRE(a >= 0);
    REQUIRE(b >= 0);
    big.fds = {a, b};
    SendAll(a, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(64 << 10, 'a'));
    SendAll(b, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n" +
                   std::string(64 << 10, 'b'));
    CHECK(WaitAllClosed(big.fds, 5s, t1) == 0);
  }
  RequireResponsive(d, "after");
  ExitInfo e = Terminate(d);
  CHECK(e.exited);
  CHECK(e.code == 0);
}

enum class Vanish { kReset, kFin, kFrozen };

// K long-polls through a Proxy, each for up to 5 jobs held 2 s; the client vanishes (`how`)
// around the arrival of a batch of jobs, so some may be handed to the dead polls. Another worker
// must then get every job (those given back at once, those whose 2 s lease expires), and nothing
// may stay parked or leased.
void VanishingLongPolls(Vanish how) {
  const std::string queue = how == Vanish::kReset ? "reset"
                            : how == Vanish::kFin ? "fin"
                                                  : "frozen";
  INFO("the client vanishes by: " << queue);
  TempDir tmp;
  Daemon d;
  REQUIRE(d.Start(tmp.Sub("data")));
  const int http_port = d.http_port();
  Client direct = MakeClient(d.grpc_address());
  Proxy proxy(PortOf(d.grpc_address()));
  REQUIRE(proxy.port() > 0);

  constexpr int kPolls = 20;
  constexpr int kJobs = 100;
  // A frozen client's polls end on the server when their wait does (or get the jobs first).
  const int wait_s = how == Vanish::kFrozen ? 3 : 30;
  // The client gives up 2 s after the wait (a frozen connection answers nothing).
  Client vanishing = MakeClient(proxy.address(), 2000ms);
  std::vector<std::thread> polls;
  std::mutex mu;
  std::vector<std::string> poll_outcomes;
  for (int i = 0; i < kPolls; ++i) {
    polls.emplace_back([&] {
      auto r = vanishing.Lease(LeaseReq(queue, 5, /*lease=*/2, wait_s, "vanishing"));
      std::lock_guard<std::mutex> lock(mu);
      poll_outcomes.push_back(r.ok() ? std::to_string(r->jobs_size()) + " jobs"
                                     : r.status().ToString());
    });
  }
  REQUIRE(
      WaitFor([&] { return GaugeIs(http_port, "ledgerq_parked_long_polls", kPolls); }, 10s, 100ms));

  v1::EnqueueBatchRequest batch;
  for (int i = 0; i < kJobs; ++i) *batch.add_items() = Req(queue, "t", "{}");
  if (how == Vanish::kReset) {
    // Reset while the jobs arrive: polls are unparked, or their leases given back, or answered
    // into a dead connection, depending on who wins.
    std::thread cutter([&] { proxy.Cut(/*reset=*/true); });
    auto r = direct.EnqueueBatch(batch);
    cutter.join();
    REQUIRE(r.ok());
  } else {
    // The client stops reading: the server answers every poll into the void. kFin then closes
    // the connection without having read the answers; kFrozen never says a word again.
    proxy.Freeze();
    auto r = direct.EnqueueBatch(batch);
    REQUIRE(r.ok());
    if (how == Vanish::kFin) {
      CHECK(
          WaitFor([&] { return GaugeIs(http_port, "ledgerq_parked_long_polls", 0); }, 10s, 100ms));
      proxy.Cut(/*reset=*/false);
    }
  }

  size_t retried = 0;
  std::string why;
  auto done = WorkUntil(direct, queue, kJobs, 20s, &retried, &why);
  INFO(why);
  CHECK(done.size() == static_cast<size_t>(kJobs));
  for (auto& t : polls) t.join();

  // Each job's history: leased to the vanished client at most as often as it came back from
  // it (given back, or its lease expired), then completed once by the survivor.
  size_t to_vanished = 0, given_back = 0, expired = 0;
  std::string bad;
  for (uint64_t id : done) {
    v1::GetJobHistoryRequest hreq;
    hreq.set_id(id);
    auto h = direct.GetJobHistory(hreq);
    if (!h.ok() || h->jobs_size() != 1) {
      bad = "history of job " + std::to_string(id) + ": " +
            (h.ok() ? "no job" : h.status().ToString());
      break;
    }
    int held = 0, completed = 0;
    for (const auto& ev : h->jobs(0).events()) {
      if (ev.type() == "LEASED" && ev.worker_id() == "vanishing") {
        ++held;
        ++to_vanished;
      } else if (held > 0 && ev.type() == "RELEASED") {
        --held;
        ++given_back;
      } else if (held > 0 && ev.type() == "LEASE_EXPIRED") {
        --held;
        ++expired;
      } else if (ev.type() == "COMPLETED") {
        ++completed;
      }
    }
    if (held != 0 || completed != 1) {
      bad = "job " + std::to_string(id) + ": " + h->jobs(0).ShortDebugString();
      break;
    }
  }
  INFO(bad);
  CHECK(bad.empty());
  std::cout << "hostile: vanishing long-polls (" << queue << "): " << to_vanished << " of " << kJobs
            << " jobs went to the vanished client (" << given_back << " given back, " << expired
            << " lease expired); its polls ended with "
            << (poll_outcomes.empty() ? std::string("?") : poll_outcomes.front()) << std::endl;

  auto queues = direct.ListQueues();
  REQUIRE(queues.ok());
  bool seen = false;
  for (const auto& q : queues->queues()) {
    if (q.name() != queue) continue;
    seen = true;
    CHECK(q.succeeded() == static_cast<uint64_t>(kJobs));
    CHECK(q.leased() == 0);
    CHECK(q.ready() == 0);
    CHECK(q.dead() == 0);
  }
  CHECK(seen);
  CHECK(WaitFor([&] { return GaugeIs(http_port, "ledgerq_parked_long_polls", 0); }, 10s, 100ms));
  CHECK(WaitFor([&] { return GaugeIs(http_port, "ledgerq_active_leases", 0); }, 10s, 100ms));
  ExitInfo e = Terminate(d);
  CHECK(e.exited);
  CHECK(e.code == 0);
}

TEST_CASE("Lease long-polls whose connection is reset lose no job and leak no lease",
          "[e2e][hostile]") {
  VanishingLongPolls(Vanish::kReset);
}

TEST_CASE("Lease long-polls closed without reading their answers lose no job and leak no lease",
          "[e2e][hostile]") {
  VanishingLongPolls(Vanish::kFin);
}

TEST_CASE("Lease long-polls whose client goes silent lose no job and leak no lease",
          "[e2e][hostile]") {
  VanishingLongPolls(Vanish::kFrozen);
}

TEST_CASE("garbage on the gRPC port is dropped and the daemon carries on", "[e2e][hostile]") {
  TempDir tmp;
  Daemon d;
  REQUIRE(d.Start(tmp.Sub("data")));
  const int port = PortOf(d.grpc_address());
  RequireResponsive(d, "warm");
  const long rss_before = RssKiB(d.pid());

  // A client that sends half the preface and stalls: cut off by the handshake timeout.
  Sockets stalled;
  const auto t_stall = SteadyClock::now();
  for (int i = 0; i < 20; ++i) {
    int fd = ConnectLoopback(port);
    REQUIRE(fd >= 0);
    stalled.fds.push_back(fd);
    REQUIRE(SendAll(fd, kH2Preface.substr(0, 10)));
  }

  std::mt19937 rng(12345);
  std::string random_bytes(64 << 10, '\0');
  for (auto& c : random_bytes) c = static_cast<char>(rng());
  std::string bad_hpack;
  for (int i = 0; i < 200; ++i) bad_hpack.push_back(static_cast<char>(0xff));
  const std::vector<std::pair<std::string, std::string>> kinds = {
      {"random bytes", random_bytes},
      {"an HTTP/1.1 request", "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"},
      {"an HTTP/1.1 POST with a body",
       "POST /ledgerq.v1.JobService/Enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: "
       "application/grpc\r\nContent-Length: 5\r\n\r\nhello"},
      {"the preface then a 16 MiB frame header",
       kH2Preface + H2Frame(kH2Settings, 0, 0, "") +
           std::string("\xff\xff\xff\x00\x00\x00\x00\x00\x01", 9)},
      {"the preface then undecodable HPACK",
       kH2Preface + H2Frame(kH2Settings, 0, 0, "") +
           H2Frame(kH2Headers, kH2EndHeaders | kH2EndStream, 1, bad_hpack)},
      {"the preface then random bytes", kH2Preface + random_bytes},
  };
  for (int round = 0; round < 5; ++round) {
    for (const auto& [what, bytes] : kinds) {
      INFO(what << " (round " << round << ")");
      Sockets s;
      int fd = ConnectLoopback(port);
      REQUIRE(fd >= 0);
      s.fds.push_back(fd);
      SendAll(fd, bytes);  // the server may hang up before it all went
      CHECK(WaitAllClosed(s.fds, 5s, SteadyClock::now()) == 0);
    }
  }
  std::vector<double> stall_closed;
  CHECK(WaitAllClosed(stalled.fds, kGrpcHandshakeTimeout + 10s, t_stall, &stall_closed) == 0);
  std::cout << "hostile: half-preface gRPC connections closed after "
            << (stall_closed.empty() ? -1 : stall_closed.back()) << " s" << std::endl;

  REQUIRE(Alive(d.pid()));
  RequireResponsive(d, "after");
  CHECK(RssKiB(d.pid()) - rss_before < kRssGrowthBoundKiB);
  ExitInfo e = Terminate(d);
  CHECK(e.exited);
  CHECK(e.code == 0);
}

}  // namespace
