// UD multicast groups: which QPs are attached to which group, within the
// limits the device reports, counted per tenant. A group is an IPv4
// multicast address (the port is RoCE v2 over IPv4: its multicast GIDs are
// ::ffff:224.0.0.0/4, as rdma_cm makes them). Groups are shared by name
// across tenants in this table; delivery keeps to the sender's tenant.
#include <algorithm>
#include <cerrno>

#include "policy/tenant.h"
#include "router/common/addresses.h"
#include "router/fabric/core/queue_core.h"

namespace ff::router::core {

namespace {
std::optional<uint32_t> group_of(const ibv_gid& mgid) {
  auto ip = policy::ipv4_of_gid(mgid.raw);
  if (!ip || !is_multicast_ipv4(*ip)) return std::nullopt;
  return ip;
}

bool same_tenant(const Qp& a, const Qp& b) { return a.pd.owner.tenant == b.pd.owner.tenant; }
}  // namespace

Status QueueCore::attach_mcast(Qp& qp, const ibv_gid& mgid) {
  assert_poller();
  if (qp.init.type != IBV_QPT_UD) return Error{EINVAL, "only UD QPs join multicast groups"};
  auto group = group_of(mgid);
  if (!group)
    return Error{EINVAL, "a multicast group of this RoCE v2 port is an IPv4-mapped multicast GID "
                         "(::ffff:224.0.0.0/4)"};
  std::vector<Qp*>& members = mcast_groups_[*group];
  if (std::find(members.begin(), members.end(), &qp) != members.end()) return Status{};
  McastUse& use = mcast_use_[qp.pd.owner.tenant];
  auto mine = static_cast<uint32_t>(
      std::count_if(members.begin(), members.end(), [&](const Qp* m) { return same_tenant(*m, qp); }));
  if ((mine == 0 && use.groups >= mcast_limits_.groups) || mine >= mcast_limits_.qps_per_group ||
      use.attachments >= mcast_limits_.attachments) {
    if (members.empty()) mcast_groups_.erase(*group);
    return Error{ENOMEM, "the tenant is at its multicast limits (max_mcast_grp, max_mcast_qp_attach, "
                         "max_total_mcast_qp_attach of ibv_query_device)"};
  }
  members.push_back(&qp);
  if (mine == 0) ++use.groups;
  ++use.attachments;
  ++qp.mcast_groups;
  return Status{};
}

Status QueueCore::detach_mcast(Qp& qp, const ibv_gid& mgid) {
  assert_poller();
  auto group = group_of(mgid);
  auto it = group ? mcast_groups_.find(*group) : mcast_groups_.end();
  if (it == mcast_groups_.end()) return Error{EINVAL, "the QP is not attached to that group"};
  std::vector<Qp*>& members = it->second;
  auto at = std::find(members.begin(), members.end(), &qp);
  if (at == members.end()) return Error{EINVAL, "the QP is not attached to that group"};
  members.erase(at);
  McastUse& use = mcast_use_[qp.pd.owner.tenant];
  --use.attachments;
  if (std::none_of(members.begin(), members.end(), [&](const Qp* m) { return same_tenant(*m, qp); })) --use.groups;
  --qp.mcast_groups;
  if (members.empty()) mcast_groups_.erase(it);
  return Status{};
}

void QueueCore::detach_all(Qp& qp) {
  std::vector<uint32_t> groups;
  for (const auto& [group, members] : mcast_groups_)
    if (std::find(members.begin(), members.end(), &qp) != members.end()) groups.push_back(group);
  for (uint32_t group : groups) {
    ibv_gid mgid{};
    policy::ipv4_mapped_gid(group, mgid.raw);
    (void)detach_mcast(qp, mgid);
  }
}

const std::vector<Qp*>* QueueCore::mcast_members(uint32_t group) const {
  auto it = mcast_groups_.find(group);
  return it == mcast_groups_.end() ? nullptr : &it->second;
}

}  // namespace ff::router::core
