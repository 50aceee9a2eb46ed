#include "bench/net.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace ledgerq::bench {

TcpConn::~TcpConn() { Close(); }

void TcpConn::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
  pos_ = 0;
}

bool TcpConn::Connect(const std::string& address, std::string* error) {
  Close();
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    *error = "address without a port: " + address;
    return false;
  }
  const std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    *error = "resolve " + address + ": " + ::gai_strerror(rc);
    return false;
  }
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      fd_ = fd;
      break;
    }
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (fd_ < 0) {
    *error = "connect " + address + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

bool TcpConn::SendAll(std::string_view data, std::string* error) {
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = std::string("send: ") + std::strerror(errno);
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

bool TcpConn::Fill(std::string* error) {
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  }
  char chunk[16384];
  for (;;) {
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      *error = std::string("recv: ") + std::strerror(errno);
      return false;
    }
    if (n == 0) {
      *error = "connection closed by peer";
      return false;
    }
    buf_.append(chunk, static_cast<size_t>(n));
    return true;
  }
}

bool TcpConn::ReadLine(std::string* line, std::string* error) {
  for (;;) {
    size_t eol = buf_.find("\r\n", pos_);
    if (eol != std::string::npos) {
      line->assign(buf_, pos_, eol - pos_);
      pos_ = eol + 2;
      return true;
    }
    if (!Fill(error)) return false;
  }
}

bool TcpConn::ReadExact(size_t n, std::string* out, std::string* error) {
  while (buf_.size() - pos_ < n) {
    if (!Fill(error)) return false;
  }
  out->assign(buf_, pos_, n);
  pos_ += n;
  return true;
}

int HttpGetStatus(const std::string& address, const std::string& path) {
  TcpConn conn;
  std::string error;
  if (!conn.Connect(address, &error)) return 0;
  if (!conn.SendAll(
          "GET " + path + " HTTP/1.1\r\nHost: " + address + "\r\nConnection: close\r\n\r\n",
          &error)) {
    return 0;
  }
  std::string status_line;
  if (!conn.ReadLine(&status_line, &error)) return 0;
  // "HTTP/1.1 200 OK"
  const size_t sp = status_line.find(' ');
  if (sp == std::string::npos) return 0;
  return std::atoi(status_line.c_str() + sp + 1);
}

}  // namespace ledgerq::bench
