// A blocking TCP connection with a read buffer: enough for line protocols (beanstalkd) and a
// one-shot HTTP GET. No exceptions; every call reports failure through its result.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace ledgerq::bench {

class TcpConn {
 public:
  TcpConn() = default;
  ~TcpConn();
  TcpConn(const TcpConn&) = delete;
  TcpConn& operator=(const TcpConn&) = delete;

  // Connects to "host:port" (numeric IPv4 or a name) with TCP_NODELAY set.
  [[nodiscard]] bool Connect(const std::string& address, std::string* error);
  [[nodiscard]] bool SendAll(std::string_view data, std::string* error);
  // The next line without its "\r\n".
  [[nodiscard]] bool ReadLine(std::string* line, std::string* error);
  // Exactly n bytes.
  [[nodiscard]] bool ReadExact(size_t n, std::string* out, std::string* error);
  void Close();

 private:
  [[nodiscard]] bool Fill(std::string* error);

  int fd_ = -1;
  std::string buf_;
  size_t pos_ = 0;
};

// GET http://address/path; the status code, or 0 when the server could not be reached.
[[nodiscard]] int HttpGetStatus(const std::string& address, const std::string& path);

}  // namespace ledgerq::bench
