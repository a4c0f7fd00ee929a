// The verbs fabric's datagrams (see engine.h): which senders on other hosts
// a UD QP takes datagrams from, and the GRH the app sees, rewritten from
// device addresses to virtual ones.
#include <cstring>

#include "policy/tenant.h"
#include "router/fabric/poller.h"
#include "router/fabric/verbs/engine.h"

namespace ff::router::verbs {
namespace {

using shm::RecvWqe;

uint16_t ipv4_checksum(const uint8_t* h) {
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2)
    if (i != 10) sum += (uint32_t{h[i]} << 8) | h[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

void put_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

}  // namespace

bool Engine::accept_far_sender(Qp& q, const ibv_gid& gid, uint32_t qpn, uint32_t vip, const std::string& router) {
  FarSenderKey key;
  std::memcpy(key.first.data(), gid.raw, key.first.size());
  key.second = qpn;
  auto it = q.far_senders.find(key);
  if (it == q.far_senders.end() && q.far_senders.size() >= kMaxFarPeers) {
    uint64_t now = Poller::now_ns();
    std::erase_if(q.far_senders,
                  [&](const auto& s) { return s.second.gone_ns != 0 && now - s.second.gone_ns > kGoneSenderGraceNs; });
    if (q.far_senders.size() >= kMaxFarPeers) return false;
  }
  q.far_senders[key] = FarSender{vip, router};
  return true;
}

void Engine::far_senders_gone(Qp& q, const std::function<bool(const FarSenderKey&, const FarSender&)>& which) {
  uint64_t now = Poller::now_ns();
  for (auto& [key, sender] : q.far_senders)
    if (sender.gone_ns == 0 && which(key, sender)) sender.gone_ns = now;
}

void Engine::far_qp_gone(const std::string& router, uint32_t qpn) {
  for (core::Qp* c : qps()) {
    auto& q = static_cast<Qp&>(*c);
    if (q.init.type != IBV_QPT_UD && q.far_router == router && q.attr.dest_qp_num == qpn) q.peer_gone = true;
    std::erase_if(q.far_destinations,
                  [&](const auto& d) { return d.first.second == qpn && d.second.router == router; });
    far_senders_gone(q, [&](const FarSenderKey& k, const FarSender& s) { return k.second == qpn && s.router == router; });
  }
}

// The device wrote its own addresses into the GRH; the app must see the
// virtual ones: the sender's and its own virtual IP (RoCE v2 over IPv4 puts
// an IPv4 header in the GRH's last 20 bytes; other layouts carry GIDs).
// The sender is a QP on this device, or one on another host whose router
// asked for this QP (accept_far_sender); false for another QP of such a
// host: the datagram must not be delivered.
bool Engine::translate_grh(Qp& q, const RecvWqe& r, uint32_t src_qp) {
  uint8_t grh[40];
  std::byte* where[40];
  uint32_t got = 0;
  for (uint32_t i = 0; i < r.num_sge && i < shm::kMaxSge && got < 40; ++i) {
    const Mr* mr = find_mr(r.sge[i].lkey);
    uint32_t take = std::min<uint32_t>(r.sge[i].length, 40 - got);
    if (mr == nullptr || !mr->contains(r.sge[i].addr, take)) return true;  // as the device would have failed it
    std::byte* p = mr->router_addr(r.sge[i].addr);
    for (uint32_t k = 0; k < take; ++k) {
      where[got] = p + k;
      grh[got++] = static_cast<uint8_t>(p[k]);
    }
  }
  if (got < 40) return true;  // the device would have failed the receive
  bool ipv4 = (grh[20] >> 4) == 4;
  FarSenderKey from;
  if (ipv4) {
    uint8_t mapped[16];
    policy::ipv4_mapped_gid((uint32_t{grh[32]} << 24) | (uint32_t{grh[33]} << 16) | (uint32_t{grh[34]} << 8) | grh[35],
                            mapped);
    std::memcpy(from.first.data(), mapped, 16);
  } else {
    std::memcpy(from.first.data(), grh + 8, 16);
  }
  from.second = src_qp;
  Sender sender = identify_sender(q, from);
  if (sender.refused) return false;  // another QP of a host that sends here: nobody asked for it
  bool known = sender.virtual_ip.has_value();
  uint32_t src_ip = sender.virtual_ip.value_or(0);
  // An unknown source is no device's: a receive buffer shared by several
  // receives holds what the router wrote for an earlier one; it is left as
  // it is. (Such a buffer can also hold a later datagram's raw GRH when the
  // app reads it: ibv_init_ah_from_wc asks sender_address.)
  uint32_t dst_ip = q.pd.owner.virtual_ip;
  if (ipv4) {
    uint8_t* ip = grh + 20;
    if (known) put_be32(ip + 12, src_ip);
    put_be32(ip + 16, dst_ip);
    uint16_t sum = ipv4_checksum(ip);
    ip[10] = static_cast<uint8_t>(sum >> 8);
    ip[11] = static_cast<uint8_t>(sum);
  } else {
    uint8_t gid[16];
    if (known) {
      policy::ipv4_mapped_gid(src_ip, gid);
      std::memcpy(grh + 8, gid, 16);
    }
    policy::ipv4_mapped_gid(dst_ip, gid);
    std::memcpy(grh + 24, gid, 16);
  }
  for (uint32_t k = 0; k < 40; ++k) *where[k] = static_cast<std::byte>(grh[k]);
  return true;
}

// Who sent a datagram `q` received from device address `from`: a QP on this
// device, or one on another host whose router asked for `q`
// (accept_far_sender; a gone one's for kGoneSenderGraceNs); refused for
// another QP of such a host. Neither for an address no device has (a GRH
// the router already rewrote).
Engine::Sender Engine::identify_sender(const Qp& q, const FarSenderKey& from) const {
  if (std::memcmp(from.first.data(), device_.gid.raw, 16) == 0) {
    const Qp* local = find_qp(from.second);
    return local != nullptr ? Sender{local->pd.owner.virtual_ip, false} : Sender{};
  }
  if (auto it = q.far_senders.find(from); it != q.far_senders.end()) {
    if (it->second.gone_ns == 0 || Poller::now_ns() - it->second.gone_ns <= kGoneSenderGraceNs)
      return Sender{it->second.vip, false};
    return Sender{};
  }
  auto host = q.far_senders.lower_bound({from.first, 0});
  return Sender{std::nullopt, host != q.far_senders.end() && host->first.first == from.first};
}

// ibv_init_ah_from_wc: a device address in the GRH becomes the sender's
// virtual IP when the sender is one `q` takes datagrams from (its tenant's
// on this device, or an accepted far sender); anything else is left as the
// app read it.
ibv_gid Engine::sender_address(const Qp& q, uint32_t src_qp, const ibv_gid& seen) const {
  if (q.init.type != IBV_QPT_UD) return seen;
  // A QP of this device that is another tenant's is none of the asker's
  // business (its datagrams never reach `q` anyway): no answer names it.
  if (std::memcmp(seen.raw, device_.gid.raw, 16) == 0) {
    const Qp* local = find_qp(src_qp);
    if (local == nullptr || local->pd.owner.tenant != q.pd.owner.tenant) return seen;
  }
  FarSenderKey from;
  std::memcpy(from.first.data(), seen.raw, 16);
  from.second = src_qp;
  std::optional<uint32_t> vip = identify_sender(q, from).virtual_ip;
  if (!vip) return seen;
  ibv_gid gid{};
  policy::ipv4_mapped_gid(*vip, gid.raw);
  return gid;
}

}  // namespace ff::router::verbs
