// The router daemon: one Asio io_context serving a Unix socket per tenant and
// an admin socket, a registry of live sessions, the fabric and, with a
// directory, this router's cluster. It is what the control plane's
// ControlServices are.
//
// Thread contract: run() drives everything on the calling thread; stop() may
// be called from any thread.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "policy/quota.h"
#include "proto/fd.h"
#include "policy/tenant.h"
#include "router/control/services.h"
#include "router/control/session.h"
#include "router/daemon/metrics_server.h"
#include "router/daemon/service_manager.h"
#include "router/daemon/options.h"
#include "router/directory/directory.h"
#include "router/fabric/fabric.h"

namespace ff::router {

class Router final : public ControlServices, private cm::Routes, private cm::Clock {
 public:
  // Creates the run directory layout and binds every socket. Throws
  // std::runtime_error with what to fix (permissions, another router running).
  Router(RouterOptions options, std::vector<policy::TenantSpec> tenants,
         std::unique_ptr<Fabric> fabric);
  ~Router() override;
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  void run();
  void stop();
  // What systemd shows as the router's status (STATUS=).
  std::string serving() const;
  // Re-reads --config (SIGHUP), on the Asio thread: tenants added get
  // their socket, tenants removed lose it and their clients, a changed
  // network or fallback address applies to new clients (and clients whose
  // address the new network leaves out are closed). A file that does not
  // load changes nothing: the error, with its line, goes to the log.
  void reload_config();
  // The same with tenants already parsed.
  void apply_tenants(std::vector<policy::TenantSpec> next);

  const RouterOptions& options() const { return options_; }
  std::string admin_socket_path() const;

  // ControlServices
  Fabric& fabric() override { return *fabric_; }
  const ControlLimits& limits() const override { return limits_; }
  policy::TenantQuota& quota(const policy::TenantSpec& t) override { return quotas_.at(t.name); }
  policy::TenantQuota& handles(const policy::TenantSpec& t) override { return handle_quotas_.at(t.name); }
  void session_greeted(Session& s) override;
  void session_closed(uint64_t session_id) override;
  std::vector<std::shared_ptr<Session>> sessions() const override;  // oldest first
  std::vector<const policy::TenantSpec*> tenants() const override;
  Status set_tenant_qos(const std::string& tenant, const policy::QosSpec& qos) override;
  uint64_t admit_control(const policy::TenantSpec& t, uint64_t now_ns) override;
  void control_waited(const policy::TenantSpec& t, uint64_t ns) override;
  uint64_t control_delayed_ns(const policy::TenantSpec& t) const override;
  std::string tenant_socket_path(const policy::TenantSpec& t) const override;
  uint64_t sessions_refused() const override { return sessions_refused_; }
  const Directory* directory() const override { return directory_.get(); }
  const FabricCluster* cluster() const override { return cluster_.get(); }
  cm::ConnectionManager& connection_manager() override { return connection_manager_; }
  XrcDomains& xrc_domains() override { return xrc_domains_; }
  bool reachable(const std::string& tenant, uint32_t vip) override;

  size_t tenant_sessions(const policy::TenantSpec& t) const;

 private:
  // Shared with its pending accept and retry, which may finish after a
  // reload removed it (closed: they do nothing then).
  struct Listener {
    Listener(boost::asio::io_context& io, SessionRole r, const policy::TenantSpec* t, std::string p)
        : role(r), tenant(t), path(std::move(p)), acceptor(io), retry(io) {}
    SessionRole role;
    const policy::TenantSpec* tenant;
    std::string path;
    boost::asio::local::stream_protocol::acceptor acceptor;
    // accept() failing (EMFILE: out of descriptors) waits before the next
    // try, doubling up to 1 s, instead of failing in a loop.
    boost::asio::steady_timer retry;
    std::chrono::milliseconds backoff{0};
    uint64_t failures = 0;
    bool closed = false;
  };
  void lock_run_dir();
  void bind(Listener& l, unsigned mode);
  void close(Listener& l);
  void wait_for_signal();  // SIGINT/SIGTERM stop, SIGHUP reloads
  // A tenant's quotas, directory and socket; false (logged) when its socket
  // cannot be made.
  // Sets the tenant's QoS where it applies: the fabric (caps, weight) and
  // the control thread (max_control_per_s).
  void apply_qos(const policy::TenantSpec& t);
  bool add_tenant(const policy::TenantSpec& t);
  void remove_tenant(const policy::TenantSpec& t);
  // Closes the tenant's sessions whose virtual IP its network leaves out.
  void close_sessions_outside(const policy::TenantSpec& t);
  // Each tenant's share of the handles (--max-handles-per-tenant), for the
  // tenants there are now.
  void share_handles();
  void join_cluster();
  // Whether a greeted client of `tenant` has `vip` here.
  bool serves_here(const std::string& tenant, uint32_t vip) const;
  // cm::Routes: rdma_cm's messages to other routers go through the cluster.
  std::optional<std::string> router_for(const std::string& tenant, uint32_t vip) override;
  void send(const std::string& router, std::vector<std::byte> message) override;
  // cm::Clock: rdma_cm's timeouts on the Asio thread's timers.
  void after(std::chrono::milliseconds delay, std::function<void()> fire) override;
  void accept_next(std::shared_ptr<Listener> l);
  void accept_failed(std::shared_ptr<Listener> l, const boost::system::error_code& ec);
  void admit(Listener& l, boost::asio::local::stream_protocol::socket sock);

  RouterOptions options_;
  UniqueFd run_dir_lock_;  // held while this router serves the run directory
  ControlLimits limits_;
  // Live tenants in config order; removed ones stay allocated (sessions
  // and pending handlers may still name them; only the operator's reloads
  // add to it).
  std::vector<std::unique_ptr<policy::TenantSpec>> tenants_;
  std::vector<std::unique_ptr<policy::TenantSpec>> removed_tenants_;
  std::unique_ptr<Fabric> fabric_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  std::vector<std::shared_ptr<Listener>> listeners_;
  cm::ConnectionManager connection_manager_;  // before sessions_: their ids go first
  XrcDomains xrc_domains_;
  std::map<uint64_t, std::shared_ptr<Session>> sessions_;
  // By tenant name, never erased: charges point into them (a tenant
  // removed and added again finds its quotas).
  std::map<std::string, policy::TenantQuota> quotas_;
  std::map<std::string, policy::TenantQuota> handle_quotas_;
  // Per tenant: its control requests' rate (qos.max_control_per_s).
  struct ControlRate {
    policy::TokenBucket bucket;
    uint64_t delayed_ns = 0;
  };
  std::map<std::string, ControlRate> control_rates_;
  std::map<uint64_t, std::unique_ptr<boost::asio::steady_timer>> cm_timers_;  // rdma_cm's, pending
  std::unique_ptr<MetricsServer> metrics_;  // --metrics-listen
  ServiceManager service_{io_};               // systemd's view (Type=notify)
  uint64_t next_timer_ = 1;
  uint64_t next_session_id_ = 1;
  uint64_t sessions_refused_ = 0;
  bool running_ = false;  // run() began accepting
  bool stopping_ = false;
  // After io_: destroyed first, while the fabric's engine still runs.
  // The links that carry the control messages of a fabric without links
  // of its own (the verbs fabric), when joined.
  std::unique_ptr<Fabric> message_links_;
  std::unique_ptr<Directory> directory_;
  std::unique_ptr<FabricCluster> cluster_;
};

}  // namespace ff::router
