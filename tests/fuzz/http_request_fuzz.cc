// libFuzzer target: the HTTP listener's request handling without sockets. The bytes go through
// Beast's request parser with the limits a session uses, every complete request (pipelined ones
// too, as a keep-alive session reads them) is routed by server::Route, and the response is
// serialized as a session would write it.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "server/http_server.h"

namespace {

namespace http = boost::beast::http;
using ledgerq::server::HttpRoutes;

constexpr size_t kBodyLimit = 8 * 1024;  // as server/http_server.cc's sessions

const HttpRoutes& Routes() {
  static const HttpRoutes routes{
      .metrics = [] { return std::string("# TYPE ledgerq_up gauge\nledgerq_up 1\n"); },
      .alive = [] { return true; },
      .not_ready_reason = [] { return std::string("draining"); },
  };
  return routes;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // At most a handful of pipelined requests per input; each one parses from where the last
  // ended, like a session's buffer.
  for (int n = 0; n < 8 && !in.empty(); ++n) {
    http::request_parser<http::string_body> parser;
    parser.body_limit(kBodyLimit);
    parser.eager(true);
    boost::beast::error_code ec;
    size_t used = 0;
    for (int step = 0; step < 1024 && !parser.is_done(); ++step) {
      const size_t got = parser.put(boost::asio::buffer(in.data() + used, in.size() - used), ec);
      used += got;
      if (ec == http::error::need_more) {
        ec = {};
        if (got == 0) {
          // Nothing more to read: the peer closed, which ends a body delimited by the close.
          parser.put_eof(ec);
          break;
        }
      } else if (ec) {
        break;
      }
    }
    if (ec || !parser.is_done()) return 0;
    if (used > in.size()) std::abort();
    in.remove_prefix(used);
    auto req = parser.release();
    auto res = ledgerq::server::Route(req, Routes());
    const unsigned status = res.result_int();
    if (status != 200 && status != 404 && status != 405 && status != 503) std::abort();
    if (req.method() == http::verb::head && !res.body().empty()) std::abort();
    std::ostringstream wire;
    wire << res;  // as the session writes it
    if (!res.keep_alive() || used == 0) break;
  }
  return 0;
}
