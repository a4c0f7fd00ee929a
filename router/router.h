// The router daemon: one Asio io_context serving a Unix socket per tenant and
// an admin socket, a registry of live sessions, and the fabric.
//
// Thread contract: run() drives everything on the calling thread; stop() may
// be called from any thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "policy/quota.h"
#include "policy/tenant.h"
#include "router/control/session.h"
#include "router/directory/directory.h"
#include "router/fabric/fabric.h"
#include "router/options.h"

namespace ff::router {

namespace soft {
class Peers;
}

class Router {
 public:
  // Creates the run directory layout and binds every socket. Throws
  // std::runtime_error with what to fix (permissions, another router running).
  Router(RouterOptions options, std::vector<policy::TenantSpec> tenants,
         std::unique_ptr<Fabric> fabric);
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  void run();
  void stop();

  const RouterOptions& options() const { return options_; }
  Fabric& fabric() { return *fabric_; }
  const std::vector<policy::TenantSpec>& tenants() const { return tenants_; }
  std::string tenant_socket_path(const policy::TenantSpec& t) const;
  std::string admin_socket_path() const;

  // Live sessions, oldest first.
  std::vector<std::shared_ptr<Session>> sessions() const;
  // Called by Session::close().
  void forget(uint64_t session_id);

  // Multi-host: null when this router serves its host alone.
  Directory* directory() { return directory_.get(); }
  soft::Peers* peers() { return peers_.get(); }
  // A greeted client's virtual IP is this router's while it is connected.
  void client_arrived(const Session& s);

  policy::TenantQuota& quota(const policy::TenantSpec& t) { return quotas_.at(t.name); }
  uint64_t sessions_refused() const { return sessions_refused_; }
  size_t tenant_sessions(const policy::TenantSpec& t) const;

 private:
  struct Listener {
    Listener(boost::asio::io_context& io, SessionRole r, const policy::TenantSpec* t, std::string p)
        : role(r), tenant(t), path(std::move(p)), acceptor(io) {}
    SessionRole role;
    const policy::TenantSpec* tenant;
    std::string path;
    boost::asio::local::stream_protocol::acceptor acceptor;
  };
  void bind(Listener& l, unsigned mode);
  void join_peers();
  void accept_next(Listener& l);

  RouterOptions options_;
  std::vector<policy::TenantSpec> tenants_;
  std::unique_ptr<Fabric> fabric_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::map<uint64_t, std::shared_ptr<Session>> sessions_;
  std::map<std::string, policy::TenantQuota> quotas_;
  uint64_t next_session_id_ = 1;
  uint64_t sessions_refused_ = 0;
  bool stopping_ = false;
  // After io_: destroyed first, while the fabric's engine still runs.
  std::unique_ptr<Directory> directory_;
  std::unique_ptr<soft::Peers> peers_;
};

}  // namespace ff::router
