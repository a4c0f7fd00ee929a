// What the control plane needs from the daemon that runs it, and nothing
// more: sessions and handlers see this interface, never the daemon, so the
// daemon can change without them (and tests can serve them alone).
//
// Thread contract: the Asio thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "policy/quota.h"
#include "policy/tenant.h"
#include "router/cm/connection_manager.h"
#include "router/control/xrc_domains.h"
#include "router/fabric/fabric.h"

namespace ff::router {

class Directory;
class Session;

// The control plane's knobs.
struct ControlLimits {
  std::string device_name = "ffvirt0";       // the virtual device's name
  uint32_t max_objects_per_session = 16384;  // contexts, PDs, MRs, CQs, QPs, ... of one client
};

class ControlServices {
 public:
  virtual ~ControlServices() = default;
  virtual Fabric& fabric() = 0;
  virtual const ControlLimits& limits() const = 0;
  // The shared-memory quota of a tenant (its objects are charged to it).
  virtual policy::TenantQuota& quota(const policy::TenantSpec& tenant) = 0;
  // File descriptors and mappings the router holds for the tenant's objects.
  virtual policy::TenantQuota& handles(const policy::TenantSpec& tenant) = 0;
  // A tenant's client said Hello: its virtual IP is this router's now (the
  // reply may be held until the directory has it: Session::hold).
  virtual void session_greeted(Session& s) = 0;
  // Session::close() is done with the session.
  virtual void session_closed(uint64_t session_id) = 0;

  // What the admin status shows.
  virtual std::vector<std::shared_ptr<Session>> sessions() const = 0;
  virtual std::vector<const policy::TenantSpec*> tenants() const = 0;  // live ones, config order
  // Changes a live tenant's QoS (ffctl qos) until the next change or
  // config reload; EINVAL for no such tenant.
  virtual Status set_tenant_qos(const std::string& tenant, const policy::QosSpec& qos) = 0;
  // A tenant's client sent a request: it takes its turn in the tenant's
  // control rate (qos.max_control_per_s); 0 when it may be handled now,
  // else the nanoseconds until its turn (the session reads nothing more
  // meanwhile, then handles it without asking again).
  virtual uint64_t admit_control(const policy::TenantSpec& tenant, uint64_t now_ns) = 0;
  // A request of the tenant's waited so long (counted when it goes), and
  // the total.
  virtual void control_waited(const policy::TenantSpec& tenant, uint64_t ns) = 0;
  virtual uint64_t control_delayed_ns(const policy::TenantSpec& tenant) const = 0;
  virtual std::string tenant_socket_path(const policy::TenantSpec& tenant) const = 0;
  virtual uint64_t sessions_refused() const = 0;
  // The tenants' XRC domains (ibv_open_xrcd).
  virtual XrcDomains& xrc_domains() = 0;
  // rdma_cm's ports, listeners and connections (router/cm/).
  virtual cm::ConnectionManager& connection_manager() = 0;
  // Whether a client of `tenant` has virtual IP `vip`, on this router or
  // (multi-host) on one the directory lists.
  virtual bool reachable(const std::string& tenant, uint32_t vip) = 0;
  // Multi-host: null when this router serves its host alone.
  virtual const Directory* directory() const = 0;
  virtual const FabricCluster* cluster() const = 0;
};

}  // namespace ff::router
