#include "server/http_server.h"

#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/version.hpp>
#include <chrono>
#include <fstream>
#include <list>
#include <mutex>
#include <vector>

namespace ledgerq::server {
namespace {

namespace beast = boost::beast;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// Limits for a port that serves scrapers and probes, never bulk traffic, and that hostile
// clients (idle floods, slowloris) must not be able to take away from them. Constants, not
// flags: a scrape or a probe is one small request answered in microseconds.
//
// From the moment a session waits for a request (accept, or the previous response sent) the
// whole request, headers and body, must arrive within kRequestTimeout: an idle keep-alive
// connection and one trickling bytes are both closed then. Prometheus and kubelet reconnect.
constexpr auto kRequestTimeout = std::chrono::seconds(10);
// Writing a response (at most a /metrics page) to a client that does not read.
constexpr auto kWriteTimeout = std::chrono::seconds(10);
constexpr uint32_t kHeaderLimit = 8 * 1024;
constexpr size_t kBodyLimit = 8 * 1024;  // operators' endpoints take no bodies worth having
// Connections held at once. At the cap, a new connection closes the one that has waited
// longest for its request (idle or trickling), so a flood cannot lock probes out; each session
// costs a descriptor and a few KiB.
constexpr size_t kMaxSessions = 512;
// After a failed accept (out of descriptors: EMFILE, ENFILE, ENOBUFS), wait before the next
// one instead of spinning on the event loop, which the dispatcher shares.
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

HttpResponse Text(const HttpRequest& req, http::status status, std::string body,
                  const char* content_type = "text/plain; charset=utf-8") {
  HttpResponse res{status, req.version()};
  res.set(http::field::server, "ledgerqd");
  res.set(http::field::content_type, content_type);
  res.keep_alive(req.keep_alive());
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

void Fail(beast::error_code ec, const char* what) {
  // Peers vanishing mid-request, timeouts and evictions are routine for a scrape endpoint;
  // nothing to log.
  (void)ec;
  (void)what;
}

// A connection, plain or TLS; the table closes it through this.
class SessionBase : public std::enable_shared_from_this<SessionBase> {
 public:
  virtual ~SessionBase() = default;
  // Closes the connection (on the session's strand); its pending read fails and it ends.
  virtual void Close() = 0;
};
using Session = SessionBase;

// How a session stands in the SessionTable; every field is guarded by the table's mutex.
struct Slot {
  std::weak_ptr<Session> session;
  bool waiting = false;  // in the table's waiting list, at `pos`
  std::list<Slot*>::iterator pos;
  bool evicted = false;  // chosen to make room; its close is on the way
};

// The open sessions, and those waiting for a request in the order they started waiting.
class SessionTable {
 public:
  // A new connection arrives. Returns false when it must be refused (every session is busy
  // answering); otherwise it is counted in and *evict holds the sessions to close for room.
  bool Admit(std::vector<std::shared_ptr<Session>>* evict) {
    std::lock_guard<std::mutex> lock(mu_);
    while (open_ - closing_ >= kMaxSessions && !waiting_.empty()) {
      Slot* oldest = waiting_.front();
      waiting_.pop_front();
      oldest->waiting = false;
      // A session that cannot be locked is being destroyed and leaves the count by itself.
      if (auto s = oldest->session.lock()) {
        oldest->evicted = true;
        ++closing_;
        evict->push_back(std::move(s));
      }
    }
    if (open_ - closing_ >= kMaxSessions) return false;
    ++open_;
    return true;
  }
  void StartWaiting(Slot& slot, std::weak_ptr<Session> session) {
    std::lock_guard<std::mutex> lock(mu_);
    slot.session = std::move(session);
    if (slot.evicted || slot.waiting) return;
    slot.pos = waiting_.insert(waiting_.end(), &slot);
    slot.waiting = true;
  }
  void StopWaiting(Slot& slot) {
    std::lock_guard<std::mutex> lock(mu_);
    Unlist(slot);
  }
  void Closed(Slot& slot) {
    std::lock_guard<std::mutex> lock(mu_);
    Unlist(slot);
    if (slot.evicted) --closing_;
    --open_;
  }

 private:
  void Unlist(Slot& slot) {
    if (!slot.waiting) return;
    waiting_.erase(slot.pos);
    slot.waiting = false;
  }

  std::mutex mu_;
  size_t open_ = 0;     // sessions admitted and not yet destroyed
  size_t closing_ = 0;  // of those, evicted ones not yet destroyed
  std::list<Slot*> waiting_;
};

// The client certificate's CN and RFC 2253 subject (as gRPC reports them), if one was sent.
HttpPeer PeerOf(SSL* ssl) {
  HttpPeer peer;
  X509* cert = SSL_get_peer_certificate(ssl);
  if (cert == nullptr) return peer;
  X509_NAME* name = X509_get_subject_name(cert);
  char cn[256];
  int n = X509_NAME_get_text_by_NID(name, NID_commonName, cn, sizeof cn);
  if (n > 0) peer.cert_cn.assign(cn, static_cast<size_t>(n));
  if (BIO* bio = BIO_new(BIO_s_mem())) {
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0) {
      char* data = nullptr;
      long len = BIO_get_mem_data(bio, &data);
      if (len > 0) peer.cert_subject.assign(data, static_cast<size_t>(len));
    }
    BIO_free(bio);
  }
  X509_free(cert);
  return peer;
}

using TlsStream = beast::ssl_stream<beast::tcp_stream>;

template <class Stream>
class BasicSession final : public SessionBase {
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

 public:
  template <class... StreamArgs>
  BasicSession(tcp::socket&& socket, std::shared_ptr<const HttpRoutes> routes,
               std::shared_ptr<SessionTable> table, StreamArgs&&... args)
      : stream_(std::move(socket), std::forward<StreamArgs>(args)...),
        routes_(std::move(routes)),
        table_(std::move(table)) {}
  ~BasicSession() override { table_->Closed(slot_); }

  void Run() {
    asio::dispatch(stream_.get_executor(), [self = Self()] {
      if constexpr (kTls) {
        // The handshake counts against the first request's time limit.
        self->table_->StartWaiting(self->slot_, self->weak_from_this());
        beast::get_lowest_layer(self->stream_).expires_after(kRequestTimeout);
        self->stream_.async_handshake(asio::ssl::stream_base::server, [self](beast::error_code ec) {
          self->table_->StopWaiting(self->slot_);
          if (ec) return Fail(ec, "handshake");
          self->peer_ = PeerOf(self->stream_.native_handle());
          self->DoRead();
        });
      } else {
        self->DoRead();
      }
    });
  }

  void Close() override {
    asio::post(stream_.get_executor(),
               [self = Self()] { beast::get_lowest_layer(self->stream_).close(); });
  }

 private:
  std::shared_ptr<BasicSession> Self() {
    return std::static_pointer_cast<BasicSession>(shared_from_this());
  }

  void DoRead() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    beast::get_lowest_layer(stream_).expires_after(kRequestTimeout);
    table_->StartWaiting(slot_, weak_from_this());
    http::async_read(stream_, buffer_, *parser_,
                     [self = Self()](beast::error_code ec, size_t n) { self->OnRead(ec, n); });
  }

  void OnRead(beast::error_code ec, size_t) {
    table_->StopWaiting(slot_);
    if (ec == http::error::end_of_stream) return DoClose();
    if (ec) return Fail(ec, "read");  // timeout, eviction, limits, garbage: the socket closes
    HttpRequest req = parser_->release();
    auto res = std::make_shared<HttpResponse>(Route(req, *routes_, peer_));
    bool keep = res->keep_alive();
    beast::get_lowest_layer(stream_).expires_after(kWriteTimeout);
    http::async_write(stream_, *res, [self = Self(), res, keep](beast::error_code ec, size_t) {
      if (ec) return Fail(ec, "write");
      if (!keep) return self->DoClose();
      self->DoRead();
    });
  }

  void DoClose() {
    if constexpr (kTls) {
      beast::get_lowest_layer(stream_).expires_after(kWriteTimeout);
      stream_.async_shutdown([self = Self()](beast::error_code) {});
    } else {
      beast::error_code ec;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    }
  }

  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<const HttpRoutes> routes_;
  std::shared_ptr<SessionTable> table_;
  Slot slot_;
  HttpPeer peer_;
};

}  // namespace

struct HttpServer::Listener : std::enable_shared_from_this<HttpServer::Listener> {
  Listener(asio::io_context& ioc, std::shared_ptr<const HttpRoutes> routes,
           std::shared_ptr<asio::ssl::context> tls)
      : ioc(ioc),
        acceptor(asio::make_strand(ioc)),
        retry(acceptor.get_executor()),
        routes(std::move(routes)),
        table(std::make_shared<SessionTable>()),
        tls(std::move(tls)) {}

  void Accept() {
    acceptor.async_accept(asio::make_strand(ioc),
                          [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
                            if (ec == asio::error::operation_aborted || !self->acceptor.is_open())
                              return;
                            if (ec) {
                              // Out of descriptors (or memory): the connection stays in the
                              // backlog; try again soon.
                              self->retry.expires_after(kAcceptRetry);
                              self->retry.async_wait([self](beast::error_code wait_ec) {
                                if (!wait_ec && self->acceptor.is_open()) self->Accept();
                              });
                              return;
                            }
                            std::vector<std::shared_ptr<Session>> evict;
                            if (self->table->Admit(&evict)) {
                              if (self->tls) {
                                std::make_shared<BasicSession<TlsStream>>(
                                    std::move(socket), self->routes, self->table, *self->tls)
                                    ->Run();
                              } else {
                                std::make_shared<BasicSession<beast::tcp_stream>>(
                                    std::move(socket), self->routes, self->table)
                                    ->Run();
                              }
                            } else {
                              beast::error_code ignored;
                              socket.close(ignored);
                            }
                            for (auto& s : evict) s->Close();
                            self->Accept();
                          });
  }

  asio::io_context& ioc;
  tcp::acceptor acceptor;
  asio::steady_timer retry;
  std::shared_ptr<const HttpRoutes> routes;
  std::shared_ptr<SessionTable> table;
  std::shared_ptr<asio::ssl::context> tls;  // null: plain HTTP
};

HttpResponse Route(const HttpRequest& req, const HttpRoutes& routes, const HttpPeer& peer) {
  if (req.method() != http::verb::get && req.method() != http::verb::head) {
    auto res = Text(req, http::status::method_not_allowed, "only GET and HEAD are served\n");
    res.set(http::field::allow, "GET, HEAD");
    return res;
  }
  std::string_view target(req.target().data(), req.target().size());
  std::string_view path = target.substr(0, target.find('?'));
  HttpResponse res;
  std::string_view authorization;
  if (auto it = req.find(http::field::authorization); it != req.end()) {
    authorization = std::string_view(it->value().data(), it->value().size());
  }
  const HttpAccess metrics_access =
      path == "/metrics" && routes.authorize_metrics
          ? routes.authorize_metrics(authorization, peer.cert_cn, peer.cert_subject)
          : HttpAccess::kAllowed;
  if (metrics_access == HttpAccess::kUnauthenticated) {
    res = Text(req, http::status::unauthorized,
               "unauthorized: /metrics needs \"Authorization: Bearer <token>\" or a client "
               "certificate of a principal in the auth file\n");
    res.set(http::field::www_authenticate, "Bearer realm=\"ledgerq\"");
  } else if (metrics_access == HttpAccess::kForbidden) {
    res = Text(req, http::status::forbidden,
               "forbidden: /metrics is for the roles operator, auditor, admin and metrics\n");
  } else if (path == "/metrics") {
    res = Text(req, http::status::ok, routes.metrics ? routes.metrics() : std::string(),
               "text/plain; version=0.0.4; charset=utf-8");
  } else if (path == "/healthz") {
    bool alive = !routes.alive || routes.alive();
    res = Text(req, alive ? http::status::ok : http::status::service_unavailable,
               alive ? "ok\n" : "not alive: grpc listener not accepting\n");
  } else if (path == "/readyz") {
    std::string why = routes.not_ready_reason ? routes.not_ready_reason() : std::string();
    res = why.empty() ? Text(req, http::status::ok, "ready\n")
                      : Text(req, http::status::service_unavailable, "not ready: " + why + "\n");
  } else {
    res = Text(req, http::status::not_found, "not found; try /metrics, /healthz or /readyz\n");
  }
  if (req.method() == http::verb::head) {
    auto len = res.body().size();
    res.body().clear();
    res.content_length(len);
  }
  return res;
}

Result<tcp::endpoint> ParseEndpoint(const std::string& text, std::string_view field) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(std::string(field) + ": \"" + text + "\" " + why +
                                   " (expected host:port, e.g. 127.0.0.1:7401 or [::1]:7401)");
  };
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("has no port");
  std::string host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host == "localhost") host = "127.0.0.1";
  if (port_text.empty() || port_text.size() > 5 ||
      port_text.find_first_not_of("0123456789") != std::string::npos) {
    return bad("has an invalid port");
  }
  unsigned long port = std::stoul(port_text);
  if (port > 65535) return bad("has a port above 65535");
  beast::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return bad("has an invalid IP address");
  return tcp::endpoint(addr, static_cast<uint16_t>(port));
}

HttpServer::HttpServer(asio::io_context& ioc, HttpRoutes routes)
    : ioc_(ioc), routes_(std::make_shared<const HttpRoutes>(std::move(routes))) {}

HttpServer::~HttpServer() { Stop(); }

Status HttpServer::UseTls(const TlsFiles& files) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  beast::error_code ec;
  ctx->use_certificate_chain_file(files.cert, ec);
  if (ec)
    return Status::InvalidArgument("--tls-cert: cannot use " + files.cert + ": " + ec.message());
  ctx->use_private_key_file(files.key, asio::ssl::context::pem, ec);
  if (ec)
    return Status::InvalidArgument("--tls-key: cannot use " + files.key + ": " + ec.message());
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    return Status::InvalidArgument("--tls-key: " + files.key + " is not the key of --tls-cert " +
                                   files.cert);
  }
  if (!files.client_ca.empty()) {
    ctx->load_verify_file(files.client_ca, ec);
    if (ec) {
      return Status::InvalidArgument("--tls-client-ca: cannot use " + files.client_ca + ": " +
                                     ec.message());
    }
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  tls_ = ctx;
  return Status::Ok();
}

Status HttpServer::Listen(const tcp::endpoint& ep) {
  listener_ =
      std::make_shared<Listener>(ioc_, routes_, std::static_pointer_cast<asio::ssl::context>(tls_));
  beast::error_code ec;
  auto& a = listener_->acceptor;
  auto where = [&] { return ep.address().to_string() + ":" + std::to_string(ep.port()); };
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (ec) {
    return Status::Unavailable("--http-listen: cannot bind " + where() + ": " + ec.message());
  }
  a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Status::Unavailable("--http-listen: cannot listen on " + where() + ": " + ec.message());
  }
  listener_->Accept();
  return Status::Ok();
}

uint16_t HttpServer::port() const {
  beast::error_code ec;
  return listener_ ? listener_->acceptor.local_endpoint(ec).port() : 0;
}

void HttpServer::Stop() {
  if (!listener_) return;
  auto l = listener_;
  asio::post(l->acceptor.get_executor(), [l] {
    beast::error_code ec;
    l->acceptor.close(ec);
    l->retry.cancel();
  });
}

}  // namespace ledgerq::server
