#include "tests/support/e2e_helpers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <thread>

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

google::protobuf::Duration Seconds(int64_t s, int32_t nanos) {
  google::protobuf::Duration d;
  d.set_seconds(s);
  d.set_nanos(nanos);
  return d;
}

v1::LeaseRequest LeaseReq(const std::string& queue, uint32_t max_jobs, int64_t lease_seconds,
                          int64_t wait_seconds, const std::string& worker_id) {
  v1::LeaseRequest r;
  r.add_queues(queue);
  r.set_worker_id(worker_id);
  r.set_max_jobs(max_jobs);
  *r.mutable_lease_duration() = Seconds(lease_seconds);
  *r.mutable_wait() = Seconds(wait_seconds);
  return r;
}

v1::CompleteRequest CompleteReq(const v1::LeaseToken& token, const std::string& result) {
  v1::CompleteRequest r;
  *r.mutable_token() = token;
  r.set_result(result);
  return r;
}

v1::FailRequest FailReq(const v1::LeaseToken& token, v1::ErrorKind kind, const std::string& code,
                        const std::string& message) {
  v1::FailRequest r;
  *r.mutable_token() = token;
  r.mutable_error()->set_kind(kind);
  r.mutable_error()->set_code(code);
  r.mutable_error()->set_message(message);
  return r;
}

v1::FailRequest FailReq(const v1::LeaseToken& token, v1::ErrorKind kind, const std::string& code) {
  return FailReq(token, kind, code, "failed with " + code);
}

bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds limit,
             std::chrono::milliseconds every) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(every);
  }
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

std::vector<std::string> CliArgv(const std::string& server, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {LedgerqCliPath(), "--server", server};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

ExitInfo Cli(const std::string& server, const std::vector<std::string>& args, std::string* out,
             std::string* err) {
  return RunCommand(CliArgv(server, args), out, err);
}

int ConnectLoopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

HttpReply HttpGet(int port, const std::string& path) {
  HttpReply reply;
  int fd = ConnectLoopback(port);
  if (fd < 0) return reply;
  const std::string request = "GET " + path +
                              " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                              "\r\nConnection: close\r\n\r\n";
  size_t sent = 0;
  while (sent < request.size()) {
    ssize_t n = ::send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
  std::string raw;
  char buf[8192];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) raw.append(buf, static_cast<size_t>(n));
  ::close(fd);
  auto head_end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos) return reply;
  auto sp = raw.find(' ');
  reply.status = std::atoi(raw.c_str() + sp + 1);
  reply.headers = raw.substr(0, head_end);
  reply.body = raw.substr(head_end + 4);
  return reply;
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  return static_cast<bool>(out);
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace ledgerq::testing
