// The router's state for systemd (a unit with Type=notify, containers/systemd/):
// READY=1 once it serves its tenants, RELOADING=1 then READY=1 around a
// SIGHUP reload, STOPPING=1 at shutdown; and, when the unit sets
// WatchdogSec=, WATCHDOG=1 at half that interval from the control thread, so
// that a control thread that hangs gets the router restarted. Without
// NOTIFY_SOCKET (not started by systemd, or by podman --sdnotify=container)
// every call is a no-op.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <string>

namespace ff::router {

class ServiceManager {
 public:
  explicit ServiceManager(boost::asio::io_context& io) : watchdog_(io) {}
  void ready(const std::string& status);  // starts the watchdog pings
  void reloading();
  void stopping();  // and stops the pings

 private:
  void ping();
  boost::asio::steady_timer watchdog_;
  uint64_t watchdog_usec_ = 0;
};

}  // namespace ff::router
