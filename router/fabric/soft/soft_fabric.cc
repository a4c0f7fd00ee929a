#include "router/fabric/soft/soft_fabric.h"

#include <cerrno>
#include <cstring>

#include "policy/tenant.h"
#include "router/fabric/memory.h"
#include "router/fabric/qp_transitions.h"

namespace ff::router {

using soft::Qp;

SoftFabric::SoftFabric(const RouterOptions& options)
    : engine_(std::chrono::microseconds(options.poll_spin_us)) {
  ibv_device_attr& a = limits_.attr.orig_attr;
  std::snprintf(a.fw_ver, sizeof a.fw_ver, "ffrouter-0.1.0 soft");
  a.max_mr_size = uint64_t{1} << 40;
  a.page_size_cap = 4096;
  a.vendor_id = options.vendor_id;
  a.vendor_part_id = options.vendor_part_id;
  a.hw_ver = 1;
  a.max_qp = 16384;
  a.max_qp_wr = 16384;
  a.device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_PORT_ACTIVE_EVENT |
                       IBV_DEVICE_SYS_IMAGE_GUID | IBV_DEVICE_CHANGE_PHY_PORT |
                       IBV_DEVICE_N_NOTIFY_CQ;
  a.max_sge = shm::kMaxSge;
  a.max_sge_rd = shm::kMaxSge;
  a.max_cq = 16384;
  a.max_cqe = (1 << 20) - 1;
  a.max_mr = 1 << 18;
  a.max_pd = 1 << 16;
  a.max_qp_rd_atom = 16;
  a.max_res_rd_atom = 16 * 16384;
  a.max_qp_init_rd_atom = 16;
  a.atomic_cap = IBV_ATOMIC_HCA;
  a.max_ah = 1 << 16;
  a.max_srq = 4096;
  a.max_srq_wr = 16384;
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
  p.gid_tbl_len = 1;
  p.port_cap_flags = IBV_PORT_CM_SUP;
  p.max_msg_sz = 1u << 31;
  p.pkey_tbl_len = 1;
  p.max_vl_num = 1;
  p.active_width = 2;   // 4X
  p.active_speed = 32;  // EDR: 4X EDR = 100 Gb/s
  p.phys_state = 5;     // LinkUp
  p.link_layer = IBV_LINK_LAYER_ETHERNET;
  return p;
}

FabricCounters SoftFabric::counters() const {
  const soft::EngineStats& s = engine_.stats();
  FabricCounters c;
  c.work_requests = s.wqes.load(std::memory_order_relaxed);
  c.bytes = s.bytes.load(std::memory_order_relaxed);
  c.error_completions = s.error_completions.load(std::memory_order_relaxed);
  c.poller_sleeps = engine_.sleeps();
  return c;
}

std::unique_ptr<FabricContext> SoftFabric::open_context(FabricError& err) {
  try {
    return std::make_unique<soft::Context>(engine_);
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
}

std::unique_ptr<FabricPd> SoftFabric::alloc_pd(const Owner& owner, FabricError&) {
  return std::make_unique<soft::Pd>(owner);
}

std::shared_ptr<FabricSegment> SoftFabric::map_segment(UniqueFd fd, uint64_t app_base,
                                                       uint64_t length, FabricError& err) {
  return map_client_segment(std::move(fd), app_base, length, err);
}

std::unique_ptr<FabricMr> SoftFabric::reg_mr(FabricPd& pd,
                                             std::span<const std::shared_ptr<FabricSegment>> segments,
                                             uint64_t addr, uint64_t length, uint64_t iova,
                                             unsigned access, FabricError& err) {
  if (!check_mr_request(access, length, iova, limits_.attr.orig_attr.max_mr_size, err)) return nullptr;
  std::vector<SegmentPiece> pieces;
  if (!split_over_segments(segments, addr, length, pieces, err)) return nullptr;
  auto mr = std::make_unique<soft::Mr>(engine_);
  mr->pd = static_cast<soft::Pd*>(&pd);
  mr->iova = iova;
  mr->length = length;
  mr->access = access;
  for (const SegmentPiece& p : pieces) mr->extents.push_back({p.app_addr - addr, p.length, p.router_addr()});
  mr->segments.assign(segments.begin(), segments.end());
  mr->key = next_key();
  engine_.run_sync([&] { engine_.link_mr(mr.get()); });
  return mr;
}

std::unique_ptr<FabricChannel> SoftFabric::create_channel(FabricError& err) {
  try {
    return std::make_unique<VirtualChannel>();
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
}

std::unique_ptr<FabricCq> SoftFabric::create_cq(FabricContext& ctx, int cqe, FabricChannel* channel,
                                                uint32_t tag, FabricError& err) {
  if (cqe < 1 || cqe > limits_.attr.orig_attr.max_cqe) return err.set(EINVAL, "cqe out of range");
  uint32_t cap = shm::ring_capacity_for(static_cast<uint32_t>(cqe));
  try {
    return std::make_unique<VirtualCq>(static_cast<soft::Context&>(ctx).async, cap,
                                       static_cast<VirtualChannel*>(channel), tag);
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
}

std::unique_ptr<FabricQp> SoftFabric::create_qp(FabricContext& ctx, FabricPd& pd, FabricCq& send_cq,
                                                FabricCq& recv_cq, FabricSrq* srq, const QpInit& init,
                                                uint32_t tag, FabricError& err) {
  if (init.type != IBV_QPT_RC && init.type != IBV_QPT_UC && init.type != IBV_QPT_UD)
    return err.set(EOPNOTSUPP, "QP type not supported (RC, UC and UD are)");
  const ibv_qp_cap& c = init.cap;
  auto max_wr = static_cast<uint32_t>(limits_.attr.orig_attr.max_qp_wr);
  if (c.max_send_wr > max_wr || c.max_recv_wr > max_wr) return err.set(EINVAL, "max_send_wr/max_recv_wr exceed max_qp_wr");
  if (c.max_send_sge > shm::kMaxSge || c.max_recv_sge > shm::kMaxSge) return err.set(EINVAL, "too many SGEs");
  if (c.max_inline_data > shm::kMaxInline) return err.set(EINVAL, "max_inline_data exceeds 448");
  QpInit actual = init;
  uint32_t send_cap = shm::ring_capacity_for(std::max(c.max_send_wr, 1u));
  uint32_t recv_cap = shm::ring_capacity_for(std::max(c.max_recv_wr, 1u));
  actual.cap.max_send_wr = send_cap;
  actual.cap.max_recv_wr = recv_cap;
  actual.cap.max_send_sge = shm::kMaxSge;
  actual.cap.max_recv_sge = shm::kMaxSge;
  actual.cap.max_inline_data = shm::kMaxInline;
  try {
    auto seg = shm::Mapping::create("ffr-qp", shm::SegmentKind::kRing,
                                    shm::qp_segment_bytes(send_cap, recv_cap));
    return std::make_unique<Qp>(engine_, static_cast<soft::Context&>(ctx), std::move(seg),
                                static_cast<soft::Pd&>(pd), static_cast<soft::Cq&>(send_cq),
                                static_cast<soft::Cq&>(recv_cq), static_cast<soft::Srq*>(srq), actual,
                                send_cap, recv_cap, next_qpn(), tag);
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
}

std::unique_ptr<FabricSrq> SoftFabric::create_srq(FabricContext& ctx, FabricPd& pd, uint32_t max_wr,
                                                  uint32_t max_sge, uint32_t srq_limit, uint32_t tag,
                                                  FabricError& err) {
  const ibv_device_attr& a = limits_.attr.orig_attr;
  if (max_wr == 0 || max_wr > static_cast<uint32_t>(a.max_srq_wr)) return err.set(EINVAL, "max_wr out of range");
  if (max_sge > shm::kMaxSge) return err.set(EINVAL, "too many SGEs");
  uint32_t cap = shm::ring_capacity_for(max_wr);
  if (srq_limit > cap) return err.set(EINVAL, "srq_limit exceeds max_wr");
  try {
    return std::make_unique<soft::Srq>(
        static_cast<soft::Context&>(ctx),
        shm::Mapping::create("ffr-srq", shm::SegmentKind::kRing, shm::srq_segment_bytes(cap)),
        static_cast<soft::Pd&>(pd), cap, shm::kMaxSge, srq_limit, tag);
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
}

int SoftFabric::modify_srq(FabricSrq& fsrq, uint32_t mask, uint32_t srq_limit, std::string& why) {
  auto& srq = static_cast<soft::Srq&>(fsrq);
  if (int rc = check_modify_srq(mask, srq_limit, srq.cap, why); rc != 0) return rc;
  if ((mask & IBV_SRQ_LIMIT) != 0) {
    engine_.run_sync([&] {
      srq.limit = srq_limit;
      engine_.check_srq_limit(srq);  // already below: the event fires now
    });
  }
  return 0;
}

uint32_t SoftFabric::query_srq_limit(FabricSrq& fsrq) {
  auto& srq = static_cast<soft::Srq&>(fsrq);
  uint32_t limit = 0;
  engine_.run_sync([&] { limit = srq.limit; });
  return limit;
}

std::unique_ptr<FabricAh> SoftFabric::create_ah(FabricPd& pd, const ibv_ah_attr& attr, FabricError& err) {
  if (attr.port_num != 1) return err.set(EINVAL, "ah_attr.port_num must be 1");
  // The port is RoCE: an address is a GID, the IPv4-mapped GID of a virtual
  // IP. An AH without a GRH (LID addressing, as programs run without a GID
  // index do) reaches QPs of the tenant on this router by number alone.
  if (attr.is_global != 0 && !policy::ipv4_of_gid(attr.grh.dgid.raw))
    return err.set(EINVAL, "the port is Ethernet (RoCE v2): a global address handle needs an "
                           "IPv4-mapped dgid (::ffff:a.b.c.d)");
  if (attr.grh.sgid_index != 0) return err.set(EINVAL, "grh.sgid_index must be 0 (the port has one GID)");
  soft::Peer* route = nullptr;
  if (attr.is_global != 0 && routes_ != nullptr) {
    std::string why;
    if (!routes_->locate(static_cast<soft::Pd&>(pd).owner.tenant, *policy::ipv4_of_gid(attr.grh.dgid.raw), route, why))
      return err.set(EINVAL, why);
  }
  uint32_t id = ah_counter_++;
  return std::make_unique<soft::Ah>(engine_, static_cast<soft::Pd&>(pd), attr, id, route);
}

int SoftFabric::modify_qp(FabricQp& fqp, const ibv_qp_attr& attr, int mask, std::string& why) {
  auto& qp = static_cast<Qp&>(fqp);
  // The address vector names the connected QP's virtual IP: on this router,
  // on another one (the directory says which), or nowhere in this tenant.
  const bool routed = (mask & IBV_QP_AV) != 0 && attr.ah_attr.is_global != 0 && qp.init.type != IBV_QPT_UD;
  const uint32_t remote_ip = routed ? policy::ipv4_of_gid(attr.ah_attr.grh.dgid.raw).value_or(0) : 0;
  if (routed && !policy::ipv4_of_gid(attr.ah_attr.grh.dgid.raw)) {
    why = "ah_attr.grh.dgid must be an IPv4-mapped GID (::ffff:a.b.c.d) of a virtual IP";
    return EINVAL;
  }
  soft::Peer* route = nullptr;
  if (routed && routes_ != nullptr && !routes_->locate(qp.pd.owner.tenant, remote_ip, route, why)) return EINVAL;
  int rc = 0;
  engine_.run_sync([&] {
    rc = check_modify_qp(qp.init.type, qp.state, attr, mask, why);
    if (rc != 0) return;
    if ((mask & IBV_QP_DEST_QPN) != 0 && route == nullptr) {
      // A known destination must be a QP of the same tenant, at the address named.
      if (const Qp* dest = engine_.find_qp(attr.dest_qp_num)) {
        if (dest->pd.owner.tenant != qp.pd.owner.tenant) {
          why = "dest_qp_num belongs to another tenant";
          rc = EINVAL;
          return;
        }
        uint32_t ip = policy::ipv4_of_gid(attr.ah_attr.grh.dgid.raw).value_or(0);
        if ((mask & IBV_QP_AV) != 0 && attr.ah_attr.is_global != 0 && ip != dest->pd.owner.virtual_ip) {
          why = "dest_qp_num is not at the GID given in ah_attr";
          rc = EINVAL;
          return;
        }
      }
    }
    ibv_qp_state next = next_state(qp.state, attr, mask);
    apply_qp_attr(qp.attr, attr, mask);
    if (next == IBV_QPS_RESET) {
      // Reset empties both queues without completions (and recovers rings a
      // client had corrupted).
      qp.sq.sc_reset_to_producer();
      if (qp.srq == nullptr) qp.rq.sc_reset_to_producer();
      qp.attr = ibv_qp_attr{};
      qp.peer_gone = false;
      qp.wait_until_ns = 0;
      qp.route = nullptr;
      qp.remote_ip = 0;
      // Sequence numbers go on: answers to a former life stay stale.
      qp.remote_req = soft::RemoteRequester{.head_seq = qp.remote_req.head_seq + 1024};
      qp.remote_resp = soft::RemoteResponder{};
    }
    if (routed) {
      qp.route = route;
      qp.remote_ip = remote_ip;
    }
    if (next == IBV_QPS_ERR && qp.state != IBV_QPS_ERR) {
      engine_.set_error(qp);  // raises LAST_WQE_REACHED for SRQ QPs
      return;
    }
    if (next == IBV_QPS_RTS && qp.state != IBV_QPS_RTS) {
      qp.rnr_left = qp.attr.rnr_retry;
      qp.retry_left = qp.attr.retry_cnt;
    }
    qp.state = next;
  });
  return rc;
}

void SoftFabric::query_qp(FabricQp& fqp, ibv_qp_attr& attr) {
  auto& qp = static_cast<Qp&>(fqp);
  engine_.run_sync([&] {
    attr = qp.attr;
    attr.qp_state = qp.state;
    attr.cur_qp_state = qp.state;
  });
}

uint32_t SoftFabric::next_qpn() {
  for (;;) {
    uint32_t n = qpn_counter_++;
    if (qpn_counter_ > 0xffffff) qpn_counter_ = 0x100;
    bool used = false;
    engine_.run_sync([&] { used = engine_.find_qp(n) != nullptr; });
    if (!used) return n;
  }
}

uint32_t SoftFabric::next_key() {
  // Unique per router, and not guessable from the previous one: a counter in
  // the high bits, random low bits.
  for (;;) {
    uint32_t k = (key_counter_++ << 8) | (rng_() & 0xff);
    if (key_counter_ >= (1u << 24)) key_counter_ = 1;
    bool used = false;
    engine_.run_sync([&] { used = engine_.find_mr(k) != nullptr; });
    if (!used) return k;
  }
}

}  // namespace ff::router
