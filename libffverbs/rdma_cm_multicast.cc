// rdma_cm multicast: rdma_join_multicast(_ex) and rdma_leave_multicast of a
// UDP id. The router's connection manager keeps the id's groups and posts
// MULTICAST_JOIN at once (the fabric's groups need no subnet manager); the
// shim fills the event's UD parameters and attaches the id's QP to the
// group, and detaches it on leave, as librdmacm does. A group is an IPv4
// multicast address; its GID on this RoCE v2 port is ::ffff:a.b.c.d.
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "libffverbs/rdma_cm.h"
#include "libffverbs/request.h"
#include "libffverbs/shim.h"

namespace proto = ff::proto;
using namespace ff::verbs;
using namespace ff::verbs::cm;

namespace {

ibv_gid group_gid(uint32_t group) {
  ibv_gid g{};
  g.raw[10] = g.raw[11] = 0xff;
  uint32_t be = htonl(group);
  std::memcpy(g.raw + 12, &be, 4);
  return g;
}

// The group an address names (host order), or 0 when it is none.
uint32_t group_of(const sockaddr* addr) {
  if (addr == nullptr || addr->sa_family != AF_INET) return 0;
  uint32_t ip = ntohl(reinterpret_cast<const sockaddr_in*>(addr)->sin_addr.s_addr);
  return (ip >> 28) == 0xe ? ip : 0;
}

int ask(FfCmId& id, uint32_t group, bool join) {
  flatbuffers::FlatBufferBuilder fbb;
  proto::CmAddr addr(group, 0);
  return request<void>(fbb, proto::CreateCmJoinMulticast(fbb, id.handle, &addr, join),
                       join ? "rdma_join_multicast" : "rdma_leave_multicast")
      .error;
}

int join(rdma_cm_id* cm_id, const sockaddr* addr, void* context, bool attach) {
  if (cm_id == nullptr) return fail(EINVAL);
  if (addr != nullptr && addr->sa_family == AF_INET6) return fail(EAFNOSUPPORT);
  uint32_t group = group_of(addr);
  if (group == 0) return fail(EINVAL);
  FfCmId* id = to_ff(cm_id);
  auto same = [&](const FfCmId::Join& x) { return x.group == group; };
  {
    std::lock_guard lock(id->mu);
    if (std::any_of(id->joins.begin(), id->joins.end(), same)) return fail(EADDRINUSE);
    id->joins.push_back({group, context, attach});
  }
  if (int e = ask(*id, group, true); e != 0) {
    std::lock_guard lock(id->mu);
    auto& j = id->joins;
    j.erase(std::find_if(j.begin(), j.end(), same));
    return fail(e);
  }
  return id->sync ? wait_sync(*id) : 0;
}

}  // namespace

namespace ff::verbs::cm {

void joined(FfCmId& id, uint32_t group, rdma_cm_event& ev) {
  FfCmId::Join join{group, nullptr, false};  // left before its event was read: nothing to attach
  {
    std::lock_guard lock(id.mu);
    for (const auto& j : id.joins)
      if (j.group == group) join = j;
  }
  rdma_ud_param& ud = ev.param.ud;
  ud.private_data = join.context;  // librdmacm: the context given to the join
  ud.private_data_len = 0;
  ud.qp_num = 0xffffff;
  ud.qkey = RDMA_UDP_QKEY;
  ud.ah_attr = ibv_ah_attr{};
  ud.ah_attr.is_global = 1;
  ud.ah_attr.grh.dgid = group_gid(group);
  ud.ah_attr.grh.sgid_index = 0;
  ud.ah_attr.grh.hop_limit = 64;
  ud.ah_attr.grh.traffic_class = id.tos;
  ud.ah_attr.port_num = id.id.port_num != 0 ? id.id.port_num : 1;
  if (join.attach && id.id.qp != nullptr) {
    if (int e = ibv_attach_mcast(id.id.qp, &ud.ah_attr.grh.dgid, 0); e != 0) {
      ev.event = RDMA_CM_EVENT_MULTICAST_ERROR;
      ev.status = -e;
    }
  }
}

}  // namespace ff::verbs::cm

extern "C" {

int rdma_join_multicast(rdma_cm_id* id, sockaddr* addr, void* context) { return join(id, addr, context, true); }

// Full members only (a send-only member's QP is not attached); the group by
// address (RDMA_CM_JOIN_MC_ATTR_ADDRESS), with no other attributes.
int rdma_join_multicast_ex(rdma_cm_id* id, rdma_cm_join_mc_attr_ex* attr, void* context) {
  // librdmacm asks for both the address and the join flags.
  if (attr == nullptr || (attr->comp_mask & RDMA_CM_JOIN_MC_ATTR_ADDRESS) == 0 ||
      (attr->comp_mask & RDMA_CM_JOIN_MC_ATTR_JOIN_FLAGS) == 0)
    return fail(EINVAL);
  constexpr uint32_t kKnown = RDMA_CM_JOIN_MC_ATTR_ADDRESS | RDMA_CM_JOIN_MC_ATTR_JOIN_FLAGS;
  if ((attr->comp_mask & ~kKnown) != 0) return fail(EINVAL);
  uint32_t flags = attr->join_flags;
  if (flags != RDMA_MC_JOIN_FLAG_FULLMEMBER && flags != RDMA_MC_JOIN_FLAG_SENDONLY_FULLMEMBER) return fail(EINVAL);
  return join(id, attr->addr, context, flags == RDMA_MC_JOIN_FLAG_FULLMEMBER);
}

int rdma_leave_multicast(rdma_cm_id* cm_id, sockaddr* addr) {
  if (cm_id == nullptr) return fail(EINVAL);
  uint32_t group = group_of(addr);
  if (group == 0) return fail(EINVAL);
  FfCmId* id = to_ff(cm_id);
  bool attached = false, known = false;
  {
    std::lock_guard lock(id->mu);
    auto& j = id->joins;
    auto it = std::find_if(j.begin(), j.end(), [&](const FfCmId::Join& x) { return x.group == group; });
    if (it != j.end()) {
      known = true;
      attached = it->attach;
      j.erase(it);
    }
  }
  if (!known) return fail(EADDRNOTAVAIL);
  if (attached && cm_id->qp != nullptr) {
    ibv_gid g = group_gid(group);
    ibv_detach_mcast(cm_id->qp, &g, 0);  // not attached if its join failed: nothing to undo
  }
  if (int e = ask(*id, group, false); e != 0) return fail(e);
  return 0;
}

}  // extern "C"
