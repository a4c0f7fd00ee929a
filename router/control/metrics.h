// The router's state in the Prometheus text exposition format (0.0.4), for
// /metrics: per tenant what its QPs did and what it holds, and the router's
// own counters. Per-QP detail stays in ffctl (a label per QP number would
// make series that come and go with every connection).
//
// collect_metrics reads the control plane (Asio thread); render_metrics is
// pure, so the format is unit-tested without a router.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "router/control/services.h"
#include "router/fabric/fabric.h"

namespace ff::router {

struct TenantMetrics {
  std::string name;
  TrafficCounters traffic;
  uint64_t clients = 0;
  uint64_t shm_bytes = 0;
  uint64_t shm_limit_bytes = 0;  // 0: no limit
  uint64_t handles = 0;
  uint64_t handles_limit = 0;
  uint64_t limit_refusals = 0;
  policy::QosSpec qos;
  uint64_t control_delayed_ns = 0;
};

struct RouterMetrics {
  std::string version;
  std::string fabric;
  std::vector<TenantMetrics> tenants;
  FabricCounters counters;
  uint64_t sessions = 0;
  uint64_t sessions_refused = 0;
  uint64_t cm_requests = 0;
  uint64_t cm_messages_refused = 0;
  std::vector<PeerStatus> peers;  // multi-host
};

RouterMetrics collect_metrics(ControlServices& services);
std::string render_metrics(const RouterMetrics& m);

}  // namespace ff::router
