// HTTP for the operator's monitoring (--metrics-listen HOST:PORT, off by
// default): GET /metrics (Prometheus text format), /healthz (the control
// thread answers), /readyz (the router serves its tenants). On the router's
// Asio thread; bounded like every other input: at most kMaxConnections at
// once (more are closed at once), one request per connection, a request of
// at most 8 KiB that must arrive within 5 s.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ff::router {

class MetricsServer {
 public:
  static constexpr int kMaxConnections = 16;
  struct Handlers {
    std::function<std::string()> metrics;  // the exposition
    std::function<bool()> ready;
  };
  // Binds `listen` (HOST:PORT, IPv4); throws std::runtime_error saying what to fix.
  MetricsServer(boost::asio::io_context& io, const std::string& listen, Handlers handlers);
  ~MetricsServer();
  void start();
  void stop();

 private:
  class Connection;
  void accept_next();

  boost::asio::ip::tcp::acceptor acceptor_;
  boost::asio::steady_timer retry_;  // accept failing (EMFILE): try again later, not in a loop
  std::shared_ptr<const Handlers> handlers_;
  std::shared_ptr<int> open_connections_ = std::make_shared<int>(0);
  std::vector<std::weak_ptr<Connection>> connections_;  // closed at stop(), so that none holds the router up
  bool stopped_ = false;
};

}  // namespace ff::router
