#include "router/control/handlers.h"

#include "router/common/qos_wire.h"
#include "router/common/version.h"
#include "router/directory/directory.h"

namespace ff::router {
namespace {

flatbuffers::Offset<proto::Traffic> traffic(flatbuffers::FlatBufferBuilder& fbb, const TrafficCounters& t) {
  return proto::CreateTraffic(fbb, fbb.CreateVector(t.ops.data(), t.ops.size()),
                              fbb.CreateVector(t.bytes.data(), t.bytes.size()), t.received, t.received_bytes,
                              fbb.CreateVector(t.completions.data(), t.completions.size()), t.rnr_waits);
}

// A client: its objects by kind, its listening rdma_cm ids and, when asked,
// its QPs with their traffic.
flatbuffers::Offset<proto::ClientStatus> client_status(flatbuffers::FlatBufferBuilder& fbb, const Fabric& fabric,
                                                      const Session& c, bool with_qps) {
  std::vector<flatbuffers::Offset<proto::ObjectCount>> counts;
  for (size_t k = 0; k < static_cast<size_t>(ObjectKind::kCount); ++k) {
    auto kind = static_cast<ObjectKind>(k);
    counts.push_back(proto::CreateObjectCount(fbb, fbb.CreateString(kind_name(kind)), c.objects().count(kind)));
  }
  // rdma_cm ids that listen: a server is ready for its clients.
  uint32_t listening = 0;
  c.objects().for_each<CmIdObject>(ObjectKind::kCmId, [&](const CmIdObject& o) {
    if (o.id->state() == cm::Id::State::kListening) ++listening;
  });
  std::vector<flatbuffers::Offset<proto::QpStatus>> qps;
  if (with_qps)
    c.objects().for_each<QpObject>(ObjectKind::kQp, [&](const QpObject& o) {
      TrafficCounters t = fabric.qp_traffic(*o.fabric);
      qps.push_back(proto::CreateQpStatus(fbb, o.fabric->qp_num(), static_cast<uint32_t>(o.fabric->qp_type()),
                                          traffic(fbb, t), t.send_queued, t.recv_queued));
    });
  return proto::CreateClientStatus(fbb, c.id(), c.peer().pid, c.virtual_ip(), fbb.CreateString(c.peer().program),
                                   fbb.CreateVector(counts), listening, fbb.CreateVector(qps));
}

}  // namespace

// Tenants, their connected clients and every client's live objects.
Status handle_admin_status(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  ControlServices& r = s.services();
  // What to show: QPs only when asked, clients of one tenant or process
  // only (a tenant's thousands of QPs must not make the reply too large for
  // everyone else's view; Session::queue refuses a reply past the frame).
  const proto::AdminStatus* ask = req.body_as_AdminStatus();
  const bool with_qps = ask != nullptr && ask->qps();
  const std::string only_tenant = ask != nullptr && ask->tenant() != nullptr ? ask->tenant()->str() : std::string();
  const int32_t only_pid = ask != nullptr ? ask->pid() : 0;
  auto& fbb = w.fbb();
  auto sessions = r.sessions();
  const auto by_tenant = r.fabric().tenant_traffic();
  std::vector<flatbuffers::Offset<proto::TenantStatus>> tenants;
  for (const policy::TenantSpec* tp : r.tenants()) {
    const policy::TenantSpec& t = *tp;
    std::vector<flatbuffers::Offset<proto::ClientStatus>> clients;
    for (const auto& c : sessions) {
      if (c->role() != SessionRole::kTenant || c->tenant() != &t) continue;
      if ((!only_tenant.empty() && t.name != only_tenant) || (only_pid != 0 && c->peer().pid != only_pid)) continue;
      clients.push_back(client_status(fbb, r.fabric(), *c, with_qps));
    }
    const policy::TenantQuota& q = r.quota(t);
    const policy::TenantQuota& h = r.handles(t);
    auto it = by_tenant.find(t.name);
    const TrafficCounters counted = it != by_tenant.end() ? it->second : TrafficCounters{};
    tenants.push_back(proto::CreateTenantStatus(
        fbb, fbb.CreateString(t.name), fbb.CreateString(r.tenant_socket_path(t)), fbb.CreateVector(clients),
        q.used(), q.limit(), q.refusals() + h.refusals(), h.used(), h.limit(), traffic(fbb, counted),
        qos_to_wire(fbb, t.qos), counted.throttled_ns, r.control_delayed_ns(t),
        static_cast<uint32_t>(poller_of(t.name, r.fabric().pollers()))));
  }
  FabricCounters fc = r.fabric().counters();
  std::vector<flatbuffers::Offset<proto::Counter>> counters;
  for (auto [name, value] : {std::pair{"work_requests", fc.work_requests}, {"bytes", fc.bytes},
                             {"error_completions", fc.error_completions},
                             {"poller_sleeps", fc.poller_sleeps},
                             {"poller_busy_ns", fc.poller_busy_ns},
                             {"sessions_refused", r.sessions_refused()},
                             {"cm_requests", r.connection_manager().requests()},
                             {"cm_messages_refused", r.connection_manager().messages_refused()}})
    counters.push_back(proto::CreateCounter(fbb, fbb.CreateString(name), value));
  std::vector<flatbuffers::Offset<proto::PeerStatus>> peers;
  std::vector<flatbuffers::Offset<proto::DirectoryEntryStatus>> entries;
  std::string directory, router_name;
  if (const Directory* d = r.directory()) {
    directory = d->describe();
    router_name = d->self();
    for (const auto& e : d->entries())
      entries.push_back(proto::CreateDirectoryEntryStatus(fbb, fbb.CreateString(e.tenant),
                                                          fbb.CreateString(e.addresses.to_string()),
                                                          fbb.CreateString(e.router)));
  }
  if (const FabricCluster* cluster = r.cluster()) {
    for (const auto& st : cluster->peers())
      peers.push_back(proto::CreatePeerStatus(fbb, fbb.CreateString(st.name), fbb.CreateString(st.address), st.out_up,
                                              st.in_up, st.frames_sent, st.frames_received, st.bytes_sent,
                                              st.bytes_received, st.connects, st.failures, st.qps_failed,
                                              fbb.CreateString(st.last_error)));
  }
  w.set_body(proto::CreateStatusReply(fbb, fbb.CreateString(std::string("ffrouter ") + kVersion),
                                      fbb.CreateString(std::string(r.fabric().name())),
                                      fbb.CreateVector(tenants), fbb.CreateVector(counters),
                                      fbb.CreateString(router_name), fbb.CreateString(directory),
                                      fbb.CreateVector(peers), fbb.CreateVector(entries)));
  return Status{};
}

}  // namespace ff::router
