#include "router/control/metrics.h"

#include <cstdio>

#include "router/common/traffic_labels.h"
#include "router/common/version.h"
#include "router/control/session.h"

namespace ff::router {
namespace {

static_assert(TrafficCounters::kOpcodes == kOpcodeLabels.size(), "a label per counted opcode");
static_assert(TrafficCounters::kStatuses == kStatusLabels.size(), "a label per counted status");

// A label value, escaped as the format asks (backslash, quote, newline).
std::string escaped(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

class Writer {
 public:
  // Every metric is announced once (HELP, TYPE), then its samples.
  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  // labels: "k1", "v1", "k2", "v2", ...
  void sample(const char* name, std::initializer_list<std::string_view> labels, uint64_t value) {
    put(name, labels, std::to_string(value));
  }
  void sample_real(const char* name, std::initializer_list<std::string_view> labels, double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%.9g", value);
    put(name, labels, text);
  }
  std::string take() { return std::move(out_); }

 private:
  void put(const char* name, std::initializer_list<std::string_view> labels, const std::string& value) {
    out_ += name;
    if (labels.size() > 0) {
      out_ += '{';
      bool key = true, first = true;
      for (std::string_view l : labels) {
        if (key) {
          if (!first) out_ += ',';
          out_ += l;
          out_ += "=\"";
        } else {
          out_ += escaped(l);
          out_ += '"';
        }
        key = !key;
        first = false;
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  std::string out_;
};

}  // namespace

RouterMetrics collect_metrics(ControlServices& r) {
  RouterMetrics m;
  m.version = kVersion;
  m.fabric = std::string(r.fabric().name());
  const auto traffic = r.fabric().tenant_traffic();
  const auto sessions = r.sessions();
  for (const policy::TenantSpec* t : r.tenants()) {
    TenantMetrics tm;
    tm.name = t->name;
    if (auto it = traffic.find(t->name); it != traffic.end()) tm.traffic = it->second;
    for (const auto& s : sessions)
      if (s->tenant() == t) ++tm.clients;
    const policy::TenantQuota& q = r.quota(*t);
    const policy::TenantQuota& h = r.handles(*t);
    tm.shm_bytes = q.used();
    tm.shm_limit_bytes = q.limit();
    tm.handles = h.used();
    tm.handles_limit = h.limit();
    tm.limit_refusals = q.refusals() + h.refusals();
    tm.qos = t->qos;
    tm.control_delayed_ns = r.control_delayed_ns(*t);
    m.tenants.push_back(std::move(tm));
  }
  m.counters = r.fabric().counters();
  m.sessions = sessions.size();
  m.sessions_refused = r.sessions_refused();
  m.cm_requests = r.connection_manager().requests();
  m.cm_messages_refused = r.connection_manager().messages_refused();
  if (const FabricCluster* cluster = r.cluster()) m.peers = cluster->peers();
  return m;
}

namespace {

// What each tenant's QPs did.
void render_traffic(Writer& w, const RouterMetrics& m) {
  w.family("ffrouter_tenant_work_requests_total", "counter",
           "Work requests a tenant's QPs posted that the router executed, by opcode.");
  for (const auto& t : m.tenants)
    for (size_t i = 0; i < TrafficCounters::kOpcodes; ++i)
      w.sample("ffrouter_tenant_work_requests_total", {"tenant", t.name, "opcode", kOpcodeLabels[i]}, t.traffic.ops[i]);
  w.family("ffrouter_tenant_bytes_total", "counter",
           "Bytes a tenant's work requests moved (direction=sent, by opcode) and its receives took "
           "(direction=received, opcode=recv).");
  for (const auto& t : m.tenants) {
    for (size_t i = 0; i < TrafficCounters::kOpcodes; ++i)
      w.sample("ffrouter_tenant_bytes_total", {"tenant", t.name, "direction", "sent", "opcode", kOpcodeLabels[i]},
               t.traffic.bytes[i]);
    w.sample("ffrouter_tenant_bytes_total", {"tenant", t.name, "direction", "received", "opcode", "recv"},
             t.traffic.received_bytes);
  }
  w.family("ffrouter_tenant_receives_total", "counter", "Receive work requests of a tenant completed with data.");
  for (const auto& t : m.tenants) w.sample("ffrouter_tenant_receives_total", {"tenant", t.name}, t.traffic.received);
  w.family("ffrouter_rnr_waits_total", "counter",
           "RNR NAKs a tenant's work requests met: each time one found no receive and waited (soft fabric).");
  for (const auto& t : m.tenants) w.sample("ffrouter_rnr_waits_total", {"tenant", t.name}, t.traffic.rnr_waits);
  w.family("ffrouter_throttled_seconds_total", "counter", "Time a tenant's work waited on its QoS caps.");
  for (const auto& t : m.tenants)
    w.sample_real("ffrouter_throttled_seconds_total", {"tenant", t.name}, static_cast<double>(t.traffic.throttled_ns) / 1e9);
  w.family("ffrouter_tenant_rate_limit_bytes_per_second", "gauge", "A tenant's cap on the bytes its work moves (0: none).");
  for (const auto& t : m.tenants)
    w.sample_real("ffrouter_tenant_rate_limit_bytes_per_second", {"tenant", t.name}, t.qos.max_gbps * 1e9 / 8);
  w.family("ffrouter_tenant_rate_limit_ops_per_second", "gauge", "A tenant's cap on its work requests (0: none).");
  for (const auto& t : m.tenants)
    w.sample_real("ffrouter_tenant_rate_limit_ops_per_second", {"tenant", t.name}, t.qos.max_mops * 1e6);
  w.family("ffrouter_control_delayed_seconds_total", "counter",
           "Time a tenant's control requests waited on its control rate (qos.max_control_per_s).");
  for (const auto& t : m.tenants)
    w.sample_real("ffrouter_control_delayed_seconds_total", {"tenant", t.name},
                  static_cast<double>(t.control_delayed_ns) / 1e9);
  w.family("ffrouter_tenant_control_rate_limit_per_second", "gauge",
           "A tenant's cap on its control requests per second (0: none).");
  for (const auto& t : m.tenants)
    w.sample_real("ffrouter_tenant_control_rate_limit_per_second", {"tenant", t.name}, t.qos.max_control_per_s);
  w.family("ffrouter_tenant_weight", "gauge", "A tenant's weight in the poller's fair share.");
  for (const auto& t : m.tenants) w.sample("ffrouter_tenant_weight", {"tenant", t.name}, uint64_t{t.qos.weight});
  w.family("ffrouter_completions_total", "counter", "Completions written to a tenant's CQs, by status.");
  for (const auto& t : m.tenants)
    for (size_t i = 0; i < TrafficCounters::kStatuses; ++i)
      if (i == IBV_WC_SUCCESS || t.traffic.completions[i] != 0)  // the rare statuses appear once they occur
        w.sample("ffrouter_completions_total", {"tenant", t.name, "status", kStatusLabels[i]},
                 t.traffic.completions[i]);
}

// What each tenant holds, and the router's own counters.
void render_holdings(Writer& w, const RouterMetrics& m) {
  // One value per tenant.
  struct PerTenant {
    const char* name;
    const char* type;
    const char* help;
    uint64_t TenantMetrics::*value;
  };
  for (const PerTenant& f : {
           PerTenant{"ffrouter_tenant_clients", "gauge", "Connected client sessions of a tenant.",
                     &TenantMetrics::clients},
           PerTenant{"ffrouter_shm_bytes", "gauge",
                     "Shared memory a tenant holds in the router (registered memory and rings).",
                     &TenantMetrics::shm_bytes},
           PerTenant{"ffrouter_shm_limit_bytes", "gauge", "A tenant's shared-memory limit (0: none).",
                     &TenantMetrics::shm_limit_bytes},
           PerTenant{"ffrouter_handles", "gauge", "File descriptors plus mappings the router holds for a tenant.",
                     &TenantMetrics::handles},
           PerTenant{"ffrouter_handles_limit", "gauge", "A tenant's limit on handles.", &TenantMetrics::handles_limit},
           PerTenant{"ffrouter_limit_refusals_total", "counter", "Requests of a tenant refused by a limit.",
                     &TenantMetrics::limit_refusals},
       }) {
    w.family(f.name, f.type, f.help);
    for (const auto& t : m.tenants) w.sample(f.name, {"tenant", t.name}, t.*f.value);
  }

  // The router's own.
  struct Single {
    const char* name;
    const char* type;
    const char* help;
    uint64_t value;
  };
  for (const Single& f : {
           Single{"ffrouter_work_requests_total", "counter",
                  "Work requests the router executed, for its own tenants and for requesters on other routers.",
                  m.counters.work_requests},
           Single{"ffrouter_bytes_total", "counter", "Bytes those work requests moved.", m.counters.bytes},
           Single{"ffrouter_poller_sleeps_total", "counter", "Times the poller went to sleep for lack of work.",
                  m.counters.poller_sleeps},
           Single{"ffrouter_sessions", "gauge", "Connected sessions (clients and operators).", m.sessions},
           Single{"ffrouter_sessions_refused_total", "counter", "Connections refused by --max-sessions limits.",
                  m.sessions_refused},
           Single{"ffrouter_cm_requests_total", "counter", "rdma_cm connection requests handled.", m.cm_requests},
           Single{"ffrouter_cm_messages_refused_total", "counter", "rdma_cm messages from other routers refused.",
                  m.cm_messages_refused},
       }) {
    w.family(f.name, f.type, f.help);
    w.sample(f.name, {}, f.value);
  }
  // Its rate is how loaded the pollers' cores are (1 per poller fully
  // busy), which their spinning hides from top; per work request, what one
  // costs them.
  w.family("ffrouter_poller_busy_seconds_total", "counter",
           "Time the pollers spent in passes that found work, summed over pollers.");
  w.sample_real("ffrouter_poller_busy_seconds_total", {}, static_cast<double>(m.counters.poller_busy_ns) / 1e9);

}

}  // namespace

std::string render_metrics(const RouterMetrics& m) {
  Writer w;
  w.family("ffrouter_build_info", "gauge", "The router's version and fabric (always 1).");
  w.sample("ffrouter_build_info", {"version", m.version, "fabric", m.fabric}, 1);
  render_traffic(w, m);
  render_holdings(w, m);
  if (!m.peers.empty()) {
    w.family("ffrouter_peer_up", "gauge", "Whether a link to a peer router is up, by direction.");
    for (const auto& p : m.peers) {
      w.sample("ffrouter_peer_up", {"peer", p.name, "direction", "outbound"}, p.out_up ? 1 : 0);
      w.sample("ffrouter_peer_up", {"peer", p.name, "direction", "inbound"}, p.in_up ? 1 : 0);
    }
    w.family("ffrouter_peer_bytes_total", "counter", "Bytes on the links with a peer router.");
    for (const auto& p : m.peers) {
      w.sample("ffrouter_peer_bytes_total", {"peer", p.name, "direction", "sent"}, p.bytes_sent);
      w.sample("ffrouter_peer_bytes_total", {"peer", p.name, "direction", "received"}, p.bytes_received);
    }
    w.family("ffrouter_peer_link_failures_total", "counter", "Failed connections to a peer router.");
    for (const auto& p : m.peers) w.sample("ffrouter_peer_link_failures_total", {"peer", p.name}, p.failures);
  }
  return w.take();
}

}  // namespace ff::router
