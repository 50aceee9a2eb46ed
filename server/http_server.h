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

// kUnauthenticated: 401 (no or bad credentials); kForbidden: 403 (a principal whose role may
// not read this).
enum class HttpAccess { kAllowed, kUnauthenticated, kForbidden };
using HttpAuthorizeFn = std::function<HttpAccess(
    std::string_view authorization, std::string_view cert_cn, std::string_view cert_subject)>;

struct HttpRoutes {
  std::function<std::string()> metrics;  // Prometheus text exposition
  std::function<bool()> alive;
  std::function<std::string()> not_ready_reason;  // empty when ready
  // With auth on: may this Authorization header value or client certificate identity read
  // /metrics? Null: /metrics is open. /healthz and /readyz are always open (probes).
  HttpAuthorizeFn authorize_metrics;
};

// The TLS identity of the connection a request came on (empty without a client certificate).
struct HttpPeer {
  std::string cert_cn;
  std::string cert_subject;  // RFC 2253, as gRPC's x509_subject
};

HttpResponse Route(const HttpRequest& req, const HttpRoutes& routes, const HttpPeer& peer = {});

// PEM files for serving HTTPS; with client_ca, a verified client certificate is required.
struct TlsFiles {
  std::string cert;
  std::string key;
  std::string client_ca;
};

// "host:port" or "[v6]:port" -> endpoint; errors name `field`.
[[nodiscard]] Result<boost::asio::ip::tcp::endpoint> ParseEndpoint(const std::string& text,
                                                                   std::string_view field);

class HttpServer {
 public:
  HttpServer(boost::asio::io_context& ioc, HttpRoutes routes);
  ~HttpServer();
  // Serves HTTPS from now on (call before Listen). Errors name the flag of the bad file.
  [[nodiscard]] Status UseTls(const TlsFiles& files);
  // Binds and starts accepting. Fails (naming the address) when the port is taken.
  [[nodiscard]] Status Listen(const boost::asio::ip::tcp::endpoint& ep);
  uint16_t port() const;
  void Stop();

 private:
  struct Listener;
  boost::asio::io_context& ioc_;
  std::shared_ptr<const HttpRoutes> routes_;
  std::shared_ptr<void> tls_;  // boost::asio::ssl::context, kept out of this header
  std::shared_ptr<Listener> listener_;
};

}  // namespace ledgerq::server
