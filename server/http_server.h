// The operator HTTP listener (Boost.Beast): /metrics, /healthz, /readyz. Routing is a pure
// function of the request, testable without sockets; sessions only move bytes. Responses never
// reflect request text.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http.hpp>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace ledgerq::server {

namespace http = boost::beast::http;
using HttpRequest = http::request<http::string_body>;
using HttpResponse = http::response<http::string_body>;

struct HttpRoutes {
  std::function<std::string()> metrics;  // Prometheus text exposition
  std::function<bool()> alive;
  std::function<std::string()> not_ready_reason;  // empty when ready
};

HttpResponse Route(const HttpRequest& req, const HttpRoutes& routes);

// "host:port" or "[v6]:port" -> endpoint; errors name `field`.
[[nodiscard]] Result<boost::asio::ip::tcp::endpoint> ParseEndpoint(const std::string& text,
                                                                   std::string_view field);

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& ioc, HttpRoutes routes);
  ~HttpServer();
  // Binds and starts accepting. Fails (naming the address) when the port is taken.
  [[nodiscard]] Status Listen(const boost::asio::ip::tcp::endpoint& ep);
  uint16_t port() const;
  void Stop();

 private:
  struct Listener;
  boost::asio::io_context& ioc_;
  std::shared_ptr<const HttpRoutes> routes_;
  std::shared_ptr<Listener> listener_;
};

}  // namespace ledgerq::server
