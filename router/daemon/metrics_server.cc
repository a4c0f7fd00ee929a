#include "router/daemon/metrics_server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/ip/address_v4.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <stdexcept>

#include "router/directory/endpoint.h"

namespace ff::router {

namespace beast = boost::beast;
namespace http = beast::http;
using tcp = boost::asio::ip::tcp;

// One request, one answer, closed. Holds a count of open connections that
// the server checks before accepting more work.
class MetricsServer::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket s, std::shared_ptr<const Handlers> h, std::shared_ptr<int> open)
      : stream_(std::move(s)), handlers_(std::move(h)), open_(std::move(open)) {
    ++*open_;
  }
  ~Connection() { --*open_; }
  void close() {
    beast::error_code ignored;
    stream_.socket().close(ignored);
  }

  void start() {
    parser_.header_limit(8192);
    parser_.body_limit(0);
    stream_.expires_after(std::chrono::seconds(5));
    http::async_read(stream_, buffer_, parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;  // timed out, too large, garbage or gone: closed without an answer
      self->answer(self->parser_.get());
    });
  }

 private:
  void answer(const http::request<http::empty_body>& req) {
    response_.version(req.version());
    response_.keep_alive(false);
    response_.set(http::field::server, "ffrouter");
    std::string target(req.target());
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      reply(http::status::method_not_allowed, "text/plain", "GET only\n");
      response_.set(http::field::allow, "GET, HEAD");
    } else if (target == "/metrics") {
      reply(http::status::ok, "text/plain; version=0.0.4; charset=utf-8", handlers_->metrics());
    } else if (target == "/healthz") {
      reply(http::status::ok, "text/plain", "ok\n");
    } else if (target == "/readyz") {
      bool ready = handlers_->ready();
      reply(ready ? http::status::ok : http::status::service_unavailable, "text/plain",
            ready ? "ready\n" : "not ready\n");
    } else {
      reply(http::status::not_found, "text/plain", "not found: try /metrics, /healthz or /readyz\n");
    }
    if (req.method() == http::verb::head) response_.body().clear();
    response_.prepare_payload();
    stream_.expires_after(std::chrono::seconds(5));
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code, size_t) {
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    });
  }
  void reply(http::status status, const char* type, std::string body) {
    response_.result(status);
    response_.set(http::field::content_type, type);
    response_.body() = std::move(body);
  }

  beast::tcp_stream stream_;
  std::shared_ptr<const Handlers> handlers_;
  std::shared_ptr<int> open_;
  beast::flat_buffer buffer_{8192};
  http::request_parser<http::empty_body> parser_;
  http::response<http::string_body> response_;
};

MetricsServer::MetricsServer(boost::asio::io_context& io, const std::string& listen, Handlers handlers)
    : acceptor_(io), retry_(io), handlers_(std::make_shared<const Handlers>(std::move(handlers))) {
  auto ep = parse_endpoint(listen);
  if (!ep) throw std::runtime_error("--metrics-listen '" + listen + "' is not HOST:PORT (an IPv4 address and a port)");
  tcp::endpoint at(boost::asio::ip::address_v4(ep->ip), ep->port);
  boost::system::error_code ec;
  acceptor_.open(at.protocol(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(at, ec);
  if (!ec) acceptor_.listen(64, ec);
  if (ec) throw std::runtime_error("--metrics-listen " + listen + ": " + ec.message() + " (is the port taken?)");
  spdlog::info("serving /metrics, /healthz and /readyz on http://{}", listen);
}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::start() { accept_next(); }

void MetricsServer::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  retry_.cancel();
  for (auto& weak : connections_)
    if (auto c = weak.lock()) c->close();
  connections_.clear();
}

void MetricsServer::accept_next() {
  acceptor_.async_accept([this](const boost::system::error_code& ec, tcp::socket s) {
    if (stopped_ || ec == boost::asio::error::operation_aborted) return;
    if (ec) {
      retry_.expires_after(std::chrono::milliseconds(100));
      retry_.async_wait([this](const boost::system::error_code& wait_ec) {
        if (!wait_ec && !stopped_) accept_next();
      });
      return;
    }
    // Past the bound, a connection is closed at once (a scraper retries).
    if (*open_connections_ < kMaxConnections) {
      std::erase_if(connections_, [](const auto& weak) { return weak.expired(); });
      auto c = std::make_shared<Connection>(std::move(s), handlers_, open_connections_);
      connections_.push_back(c);
      c->start();
    }
    accept_next();
  });
}

}  // namespace ff::router
