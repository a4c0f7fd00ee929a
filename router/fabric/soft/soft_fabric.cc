#include "router/fabric/soft/soft_fabric.h"
#include "router/common/addresses.h"

#include <algorithm>
#include <optional>
#include <cerrno>
#include <cstring>

#include "policy/tenant.h"
#include "router/common/version.h"
#include "router/fabric/soft/peers.h"
#include "router/fabric/soft/requester.h"

namespace ff::router {

using soft::Qp;

namespace {

// The first number of shard `i` of `n` at or after `first`.
uint32_t first_of_shard(uint32_t first, size_t i, size_t n) {
  return first + static_cast<uint32_t>((i + n - first % n) % n);
}

}  // namespace

SoftFabric::Shard::Shard(size_t i, size_t n, const FabricConfig& config)
    : engine(std::make_unique<soft::Engine>(std::chrono::microseconds(config.poll_spin_us),
                                            core::poller_placement(config, i))),
      qpn_counter(first_of_shard(0x100, i, n)), srq_num_counter(first_of_shard(1, i, n)) {}

SoftFabric::SoftFabric(const FabricConfig& config) {
  const size_t n = std::clamp<size_t>(config.pollers, 1, kMaxPollers);
  shards_.reserve(n);
  for (size_t i = 0; i < n; ++i) shards_.emplace_back(i, n, config);
  ibv_device_attr& a = limits_.attr.orig_attr;
  std::snprintf(a.fw_ver, sizeof a.fw_ver, "ffrouter-%s soft", kVersion);
  a.max_mr_size = uint64_t{1} << 40;
  a.page_size_cap = 4096;
  a.vendor_id = config.vendor_id;
  a.vendor_part_id = config.vendor_part_id;
  a.hw_ver = 1;
  a.max_qp = 16384;
  a.max_qp_wr = static_cast<int>(core::kMaxQueueDepth);
  // Memory windows of both types, with LOCAL_INV and SEND_WITH_INV (the
  // memory management extensions an application can use).
  a.device_cap_flags = core::kVirtualDeviceCaps | IBV_DEVICE_PORT_ACTIVE_EVENT | IBV_DEVICE_MEM_WINDOW |
                       IBV_DEVICE_MEM_WINDOW_TYPE_2B | IBV_DEVICE_MEM_MGT_EXTENSIONS | IBV_DEVICE_XRC;
  limits_.attr.device_cap_flags_ex = core::kDeviceCapAtomicWrite;
  a.max_sge = shm::kMaxSge;
  a.max_sge_rd = shm::kMaxSge;
  a.max_cq = 16384;
  a.max_cqe = (1 << 20) - 1;
  a.max_mr = 1 << 18;
  a.max_mw = 1 << 16;
  // Multicast, per tenant (a tenant's attachments are router memory).
  a.max_mcast_grp = 1024;
  a.max_mcast_qp_attach = 64;
  a.max_total_mcast_qp_attach = 8192;
  for (Shard& shard : shards_)
    shard.engine->set_mcast_limits({static_cast<uint32_t>(a.max_mcast_grp),
                                    static_cast<uint32_t>(a.max_mcast_qp_attach),
                                    static_cast<uint32_t>(a.max_total_mcast_qp_attach)});
  a.max_pd = 1 << 16;
  a.max_qp_rd_atom = 16;
  a.max_res_rd_atom = 16 * 16384;
  a.max_qp_init_rd_atom = 16;
  a.atomic_cap = IBV_ATOMIC_HCA;
  a.max_ah = 1 << 16;
  a.max_srq = 4096;
  a.max_srq_wr = static_cast<int>(core::kMaxQueueDepth);
  a.max_srq_sge = shm::kMaxSge;
  a.max_pkeys = 1;
  a.local_ca_ack_delay = 15;
  a.phys_port_cnt = 1;
  limits_.max_inline_data = shm::kMaxInline;
}

ibv_port_attr SoftFabric::port_attr() const {
  ibv_port_attr p{};
  p.state = IBV_PORT_ACTIVE;
  p.max_mtu = IBV_MTU_4096;
  p.active_mtu = IBV_MTU_4096;
  p.max_msg_sz = 1u << 31;
  p.max_vl_num = 1;
  p.active_width = 2;   // 4X
  p.active_speed = 32;  // EDR: 4X EDR = 100 Gb/s
  p.phys_state = 5;     // LinkUp
  return p;
}

Result<std::unique_ptr<FabricPd>> SoftFabric::alloc_pd(const Owner& owner) {
  return std::unique_ptr<FabricPd>(std::make_unique<soft::Pd>(owner));
}

Result<std::unique_ptr<FabricMr>> SoftFabric::make_mr(const core::MrRequest& r) {
  soft::Engine& engine = engine_for(r.pd.owner.tenant);
  auto mr = std::make_unique<soft::Mr>(engine);
  mr->pd = &r.pd;
  mr->iova = r.iova;
  mr->length = r.length;
  mr->access = r.access;
  std::vector<soft::Extent> extents;
  for (const SegmentPiece& p : r.pieces) extents.push_back({p.app_addr - r.addr, p.length, p.router_addr()});
  mr->set_extents(std::move(extents));
  mr->segments.assign(r.segments.begin(), r.segments.end());
  auto key = next_key();
  if (!key) return key.error();
  mr->lkey_value = mr->rkey_value = *key;
  engine.run_sync([&] { engine.link_mr(*mr); });
  return std::unique_ptr<FabricMr>(std::move(mr));
}

Result<std::unique_ptr<FabricQp>> SoftFabric::make_qp(const core::QpRequest& r, shm::Mapping rings) {
  auto qp = std::make_unique<Qp>(r.ctx, std::move(rings), r.pd, r.send_cq, r.recv_cq, r.srq, r.shape.init,
                                 r.shape.send_cap, r.shape.recv_cap, r.tag);
  auto& engine = static_cast<soft::Engine&>(r.ctx.core);
  auto qpn = next_qpn(shard_of(engine));
  if (!qpn) return qpn.error();
  qp->qpn = *qpn;
  engine.run_sync([&] { engine.link_qp(*qp); });
  return std::unique_ptr<FabricQp>(std::move(qp));
}

Result<std::unique_ptr<FabricSrq>> SoftFabric::make_srq(const core::SrqRequest& r, shm::Mapping ring) {
  auto srq = std::make_unique<soft::Srq>(r.ctx, std::move(ring), r.pd, r.capacity, shm::kMaxSge, r.srq_limit, r.tag,
                                         r.xrcd, r.cq);
  auto& engine = static_cast<soft::Engine&>(r.ctx.core);
  if (r.xrcd != 0) {
    auto number = next_srq_num(shard_of(engine));
    if (!number) return number.error();
    srq->number = *number;
  }
  engine.run_sync([&] { engine.link_srq(*srq); });
  return std::unique_ptr<FabricSrq>(std::move(srq));
}

Result<std::unique_ptr<FabricAh>> SoftFabric::make_ah(const core::AhRequest& r) {
  soft::Peer* route = nullptr;
  std::vector<soft::Peer*> fanout;
  if (is_multicast_ipv4(r.virtual_ip)) {  // a multicast group: this router's members and every other router's
    if (routes_ != nullptr) fanout = routes_->peers_of(r.pd.owner.tenant);
  } else if (routes_ != nullptr) {
    auto located = routes_->locate(r.pd.owner.tenant, r.virtual_ip);
    if (!located) return Error{EINVAL, located.error().message};
    route = *located;
  }
  soft::Engine& engine = engine_for(r.pd.owner.tenant);
  auto ah = std::make_unique<soft::Ah>(engine, r.pd, r.attr, r.virtual_ip, r.id, route, std::move(fanout));
  engine.run_sync([&] { engine.link_ah(*ah); });
  return std::unique_ptr<FabricAh>(std::move(ah));
}

Status SoftFabric::modify_qp(FabricQp& fqp, const ibv_qp_attr& attr, int mask) {
  auto& qp = static_cast<Qp&>(fqp);
  // The address vector names the connected QP's virtual IP: on this router,
  // on another one (the directory says which), or nowhere in this tenant.
  const bool routed = (mask & IBV_QP_AV) != 0 && attr.ah_attr.is_global != 0 && qp.init.type != IBV_QPT_UD;
  const auto remote_ip = routed ? policy::ipv4_of_gid(attr.ah_attr.grh.dgid.raw) : std::nullopt;
  if (routed && !remote_ip)
    return Error{EINVAL, "ah_attr.grh.dgid must be an IPv4-mapped GID (::ffff:a.b.c.d) of a virtual IP"};
  soft::Peer* route = nullptr;
  if (routed && routes_ != nullptr) {
    auto located = routes_->locate(qp.pd.owner.tenant, *remote_ip);
    if (!located) return Error{EINVAL, located.error().message};
    route = *located;
  }
  // XRC travels between QPs of this router: its requests name an SRQ,
  // which the link frames between routers do not carry.
  if (route != nullptr && (qp.init.type == IBV_QPT_XRC_SEND || qp.init.type == IBV_QPT_XRC_RECV))
    return Error{EOPNOTSUPP, "XRC connects QPs of one host on the soft fabric: the destination is on another "
                             "router (use RC there)"};
  if (route == nullptr)
    if (Status st = check_destination_elsewhere(qp, attr, mask); !st) return st;
  Status st;
  core::QueueCore& engine = qp.ctx.core;
  engine.run_sync([&] {
    st = engine.check_modify(qp, attr, mask, /*dest_local=*/route == nullptr);
    if (!st) return;
    const ibv_qp_state was = qp.state;
    engine.apply_modify(qp, attr, mask);
    if (routed) {
      qp.route = route;
      qp.remote_ip = *remote_ip;
    }
    if (qp.state == IBV_QPS_RTS && was != IBV_QPS_RTS) soft::reset_retries(qp);
  });
  return st;
}

Result<std::unique_ptr<FabricCluster>> SoftFabric::join_cluster(boost::asio::io_context& io, Directory& directory,
                                                                const std::string& listen,
                                                                const LinkSecurity& security) {
  try {
    return std::unique_ptr<FabricCluster>(std::make_unique<soft::Peers>(io, *this, directory, listen, security));
  } catch (const std::runtime_error& e) {
    return Error{EADDRNOTAVAIL, e.what()};
  }
}

SoftFabric::Shard& SoftFabric::shard_of(const core::QueueCore& core) {
  for (Shard& shard : shards_)
    if (shard.engine.get() == &core) return shard;
  throw std::logic_error("an engine of another fabric");
}

// The shard's next number of a 24-bit space (from `counter`, going round to
// its first at or after `first`) that `in_use` (asked on its poller) says is
// free: looked for in batches, one borrow of the poller each, and given up
// after one whole pass (ENOMEM).
template <typename InUse>
Result<uint32_t> SoftFabric::next_free_number(Shard& shard, uint32_t& counter, uint32_t first, InUse in_use) {
  constexpr uint32_t kBatch = 4096;
  const size_t i = static_cast<size_t>(&shard - shards_.data());
  const uint32_t stride = static_cast<uint32_t>(shards_.size());
  const uint32_t space = (0x1000000 - first) / stride;  // numbers of this shard, about
  for (uint32_t looked = 0; looked <= space;) {
    std::optional<uint32_t> found;
    shard.engine->run_sync([&] {
      for (uint32_t b = 0; b < kBatch && looked <= space && !found; ++b, ++looked) {
        uint32_t n = counter;
        counter += stride;
        if (counter > 0xffffff) counter = first_of_shard(first, i, shards_.size());
        if (!in_use(*shard.engine, n)) found = n;
      }
    });
    if (found) return *found;
  }
  return Error{ENOMEM, "every number of this poller is in use: destroy QPs or SRQs first"};
}

Result<uint32_t> SoftFabric::next_qpn(Shard& shard) {
  return next_free_number(shard, shard.qpn_counter, 0x100,
                          [](soft::Engine& e, uint32_t n) { return e.find_qp(n) != nullptr; });
}

Result<uint32_t> SoftFabric::next_srq_num(Shard& shard) {
  return next_free_number(shard, shard.srq_num_counter, 1,
                          [](soft::Engine& e, uint32_t n) { return e.find_xrc_srq(n) != nullptr; });
}

Result<uint32_t> SoftFabric::next_key() {
  // Unique per router, and not guessable from the previous one: a counter in
  // the high bits (the index, which MRs and memory windows share, one space
  // for every poller, so that no tenant has fewer keys on a poller it
  // shares), random low bits. Once the counter wrapped, an index still in
  // use on any poller is skipped; a router whose key space is that full
  // refuses (a bounded search).
  for (int tries = 0; tries < 4096; ++tries) {
    uint32_t index = key_counter_++;
    if (key_counter_ >= (1u << 24)) {
      key_counter_ = 1;
      keys_wrapped_ = true;
    }
    bool used = false;
    if (keys_wrapped_)
      for (Shard& shard : shards_)
        if (!used) shard.engine->run_sync([&] { used = shard.engine->key_index_used(index); });
    if (!used) return (index << 8) | (rng_() & 0xff);
  }
  return Error{ENOMEM, "no free memory key: deregister memory regions or deallocate memory windows"};
}

Status SoftFabric::attach_mcast(FabricQp& qp, const ibv_gid& mgid, bool attach) {
  Status st;
  auto& q = static_cast<core::Qp&>(qp);
  q.ctx.core.run_sync([&] { st = attach ? q.ctx.core.attach_mcast(q, mgid) : q.ctx.core.detach_mcast(q, mgid); });
  return st;
}

Result<std::unique_ptr<FabricMw>> SoftFabric::alloc_mw(FabricPd& pd, uint32_t type) {
  if (type != IBV_MW_TYPE_1 && type != IBV_MW_TYPE_2) return Error{EINVAL, "a memory window is of type 1 or 2"};
  auto& p = static_cast<core::Pd&>(pd);
  soft::Engine& engine = engine_for(p.owner.tenant);
  auto key = next_key();
  if (!key) return key.error();
  auto mw = std::make_unique<core::Mw>(engine, p, type, *key);
  engine.run_sync([&] { engine.link_mw(*mw); });
  return std::unique_ptr<FabricMw>(std::move(mw));
}

}  // namespace ff::router
