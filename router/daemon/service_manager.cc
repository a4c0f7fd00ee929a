#include "router/daemon/service_manager.h"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <chrono>

namespace ff::router {

void ServiceManager::ready(const std::string& status) {
  sd_notifyf(0, "READY=1\nSTATUS=%s", status.c_str());
  if (watchdog_usec_ != 0) return;  // pinging already (a reload)
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdog_usec_ = usec;
    spdlog::info("systemd watchdog: pinging every {} ms", usec / 2000);
    ping();
  }
}

void ServiceManager::reloading() { sd_notify(0, "RELOADING=1\nSTATUS=reloading the config"); }

void ServiceManager::stopping() {
  sd_notify(0, "STOPPING=1\nSTATUS=shutting down");
  watchdog_.cancel();
  watchdog_usec_ = 0;
}

void ServiceManager::ping() {
  sd_notify(0, "WATCHDOG=1");
  watchdog_.expires_after(std::chrono::microseconds(watchdog_usec_ / 2));
  watchdog_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && watchdog_usec_ != 0) ping();
  });
}

}  // namespace ff::router
