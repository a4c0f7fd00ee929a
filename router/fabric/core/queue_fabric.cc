#include "router/fabric/core/queue_fabric.h"

#include <algorithm>
#include <cerrno>
#include <string>
#include <system_error>

#include "policy/tenant.h"
#include "router/fabric/qp_transitions.h"

namespace ff::router::core {

Error out_of_memory(const std::exception& e) { return Error{ENOMEM, e.what()}; }

FabricCounters QueueFabric::counters() const {
  FabricCounters sum;
  for (size_t i = 0; i < core_count(); ++i) {
    FabricCounters c = core_at(i).counters();
    sum.work_requests += c.work_requests;
    sum.bytes += c.bytes;
    sum.error_completions += c.error_completions;
    sum.poller_sleeps += c.poller_sleeps;
    sum.poller_busy_ns += c.poller_busy_ns;
  }
  return sum;
}

std::map<std::string, TrafficCounters> QueueFabric::tenant_traffic() const {
  std::map<std::string, TrafficCounters> all;  // a tenant is on one poller only
  for (size_t i = 0; i < core_count(); ++i) all.merge(core_at(i).tenant_traffic());
  return all;
}

Result<std::unique_ptr<FabricContext>> QueueFabric::open_context(std::string_view tenant) {
  try {
    return std::unique_ptr<FabricContext>(std::make_unique<Context>(core_for(tenant)));
  } catch (const std::system_error& e) {
    return out_of_memory(e);
  }
}

Result<std::shared_ptr<FabricSegment>> QueueFabric::map_segment(UniqueFd fd, uint64_t app_base, uint64_t length,
                                                               uint64_t offset) {
  return map_client_segment(std::move(fd), app_base, length, offset);
}

Result<std::unique_ptr<FabricMr>> QueueFabric::reg_mr(FabricPd& pd,
                                                      std::span<const std::shared_ptr<FabricSegment>> segments,
                                                      uint64_t addr, uint64_t length, uint64_t iova, unsigned access) {
  if (Status st = check_mr_request(access, addr, length, iova, limits_.attr.orig_attr.max_mr_size); !st) return st.error();
  auto pieces = split_over_segments(segments, addr, length);
  if (!pieces) return pieces.error();
  return make_mr(MrRequest{static_cast<Pd&>(pd), *pieces, segments, addr, length, iova, access});
}

Result<std::unique_ptr<FabricChannel>> QueueFabric::create_channel() {
  try {
    return std::unique_ptr<FabricChannel>(std::make_unique<VirtualChannel>());
  } catch (const std::system_error& e) {
    return out_of_memory(e);
  }
}

Result<std::unique_ptr<FabricCq>> QueueFabric::create_cq(FabricContext& ctx, int cqe, FabricChannel* channel,
                                                         bool timestamps, uint32_t tag) {
  // Virtual CQs are rings the router writes, on every fabric.
  if (cqe < 1 || cqe > limits_.attr.orig_attr.max_cqe) return Error{EINVAL, "cqe out of range"};
  try {
    return std::unique_ptr<FabricCq>(std::make_unique<Cq>(static_cast<Context&>(ctx),
                                                          shm::ring_capacity_for(static_cast<uint32_t>(cqe)),
                                                          static_cast<VirtualChannel*>(channel), tag, timestamps));
  } catch (const std::system_error& e) {
    return out_of_memory(e);
  }
}

Status QueueFabric::resize_cq(FabricCq& fcq, int cqe, const std::function<bool(int segment_fd)>& admit) {
  auto& cq = static_cast<Cq&>(fcq);
  if (cqe < 1 || cqe > limits_.attr.orig_attr.max_cqe) return Error{EINVAL, "cqe out of range"};
  std::optional<VirtualCq::Segment> next;
  try {
    next.emplace(shm::ring_capacity_for(static_cast<uint32_t>(cqe)));
  } catch (const std::system_error& e) {
    return out_of_memory(e);
  }
  next->mapping.prefault();
  if (!admit(next->mapping.fd())) return Error{ENOMEM, "no room for the resized CQ"};
  bool moved = false;
  cq.core.run_sync([&] { moved = cq.move_to(*next); });
  // `next` (the old segment when moved) is unmapped here, off the poller.
  if (!moved)
    return Error{EINVAL, "more completions wait in the CQ than " + std::to_string(cqe) +
                             " (or its ring's consumer index is corrupt): poll them first"};
  return {};
}

Result<QpShape> QueueFabric::shape_qp(const QpInit& init, bool has_send_cq, bool has_recv_cq) const {
  const bool xrc = init.type == IBV_QPT_XRC_SEND || init.type == IBV_QPT_XRC_RECV;
  if (init.type != IBV_QPT_RC && init.type != IBV_QPT_UC && init.type != IBV_QPT_UD && !(xrc && offers_xrc()))
    return Error{EOPNOTSUPP, std::string("QP type not supported (RC, UC and UD are") +
                                 (offers_xrc() ? ", and XRC)" : "; XRC is on the soft fabric)")};
  if (init.atomic_write && (init.type != IBV_QPT_RC || (limits_.attr.device_cap_flags_ex & kDeviceCapAtomicWrite) == 0))
    return Error{EOPNOTSUPP, "ATOMIC WRITE is served on RC QPs of the soft fabric (the device here has none)"};
  // An XRC send QP has no receive side, an XRC receive QP neither side:
  // verbs ignores what is asked of them (rdma-core's providers report 0).
  if (init.type == IBV_QPT_XRC_RECV)
    return QpShape{QpInit{init.type, {}, false, false, init.xrcd}, shm::ring_capacity_for(1), shm::ring_capacity_for(1)};
  if (!has_send_cq || (!has_recv_cq && init.type != IBV_QPT_XRC_SEND))
    return Error{EINVAL, "a QP needs its send and receive CQs (an XRC send QP its send CQ)"};
  const ibv_device_attr& a = limits_.attr.orig_attr;
  ibv_qp_cap c = init.cap;
  if (init.type == IBV_QPT_XRC_SEND) c.max_recv_wr = c.max_recv_sge = 0;
  auto max_wr = static_cast<uint32_t>(a.max_qp_wr);
  auto max_sge = static_cast<uint32_t>(a.max_sge);
  if (c.max_send_wr > max_wr || c.max_recv_wr > max_wr)
    return Error{EINVAL, "max_send_wr/max_recv_wr exceed max_qp_wr (" + std::to_string(max_wr) + ")"};
  if (c.max_send_sge > max_sge || c.max_recv_sge > max_sge)
    return Error{EINVAL, "max_send_sge/max_recv_sge exceed max_sge (" + std::to_string(max_sge) + ")"};
  if (c.max_inline_data > limits_.max_inline_data)
    return Error{EINVAL, "max_inline_data exceeds " + std::to_string(limits_.max_inline_data)};
  QpShape shape{init, shm::ring_capacity_for(std::max(c.max_send_wr, 1u)),
                shm::ring_capacity_for(std::max(c.max_recv_wr, 1u))};
  shape.init.cap = ibv_qp_cap{shape.send_cap, shape.recv_cap, max_sge, max_sge, limits_.max_inline_data};
  if (init.type == IBV_QPT_XRC_SEND) shape.init.cap.max_recv_wr = shape.init.cap.max_recv_sge = 0;
  return shape;
}

Result<std::unique_ptr<FabricQp>> QueueFabric::create_qp(FabricContext& ctx, FabricPd& pd, FabricCq* send_cq,
                                                         FabricCq* recv_cq, FabricSrq* srq, const QpInit& init,
                                                         uint32_t tag) {
  auto shape = shape_qp(init, send_cq != nullptr, recv_cq != nullptr);
  if (!shape) return shape.error();
  const bool xrc = init.type == IBV_QPT_XRC_SEND || init.type == IBV_QPT_XRC_RECV;
  try {
    auto& context = static_cast<Context&>(ctx);
    size_t bytes = shm::qp_segment_bytes(shape->send_cap, shape->recv_cap);
    std::optional<shm::Mapping> spare = context.spare_segments.take(bytes);
    if (spare) spare->stamp_header(shm::SegmentKind::kRing);  // the rings are made anew by the Qp
    auto rings = spare ? std::move(*spare) : shm::Mapping::create("ffr-qp", shm::SegmentKind::kRing, bytes);
    QpRequest r{context, static_cast<Pd&>(pd),
                init.type == IBV_QPT_XRC_RECV ? nullptr : static_cast<VirtualCq*>(send_cq),
                xrc ? nullptr : static_cast<VirtualCq*>(recv_cq), xrc ? nullptr : static_cast<Srq*>(srq), *shape,
                tag};
    return make_qp(r, std::move(rings));
  } catch (const std::system_error& e) {
    return out_of_memory(e);
  }
}

Result<std::unique_ptr<FabricSrq>> QueueFabric::create_srq(FabricContext& ctx, FabricPd& pd, uint32_t max_wr,
                                                           uint32_t max_sge, uint32_t srq_limit, uint32_t tag,
                                                           const XrcSrqInit* xrc) {
  const ibv_device_attr& a = limits_.attr.orig_attr;
  if (xrc != nullptr && !offers_xrc()) return Error{EOPNOTSUPP, "XRC is served on the soft fabric"};
  if (xrc != nullptr && (xrc->xrcd == 0 || xrc->cq == nullptr))
    return Error{EINVAL, "an XRC SRQ needs its XRC domain and CQ"};
  if (max_wr == 0 || max_wr > static_cast<uint32_t>(a.max_srq_wr)) return Error{EINVAL, "max_wr out of range"};
  if (max_sge > static_cast<uint32_t>(a.max_srq_sge)) return Error{EINVAL, "too many SGEs"};
  uint32_t cap = shm::ring_capacity_for(max_wr);
  if (srq_limit > cap) return Error{EINVAL, "srq_limit exceeds max_wr"};
  try {
    auto ring = shm::Mapping::create("ffr-srq", shm::SegmentKind::kRing, shm::srq_segment_bytes(cap));
    SrqRequest r{static_cast<Context&>(ctx), static_cast<Pd&>(pd), cap, srq_limit, tag};
    if (xrc != nullptr) {
      r.xrcd = xrc->xrcd;
      r.cq = static_cast<VirtualCq*>(xrc->cq);
    }
    return make_srq(r, std::move(ring));
  } catch (const std::system_error& e) {
    return out_of_memory(e);
  }
}

Status QueueFabric::modify_srq(FabricSrq& fsrq, uint32_t mask, uint32_t max_wr, uint32_t srq_limit,
                               const std::function<bool(int segment_fd)>& admit) {
  auto& srq = static_cast<Srq&>(fsrq);
  uint32_t armed = query_srq_limit(srq);
  if (Status st = check_modify_srq(mask, max_wr, srq_limit, srq.cap, armed,
                                   static_cast<uint32_t>(limits_.attr.orig_attr.max_srq_wr));
      !st)
    return st;
  if ((mask & IBV_SRQ_MAX_WR) != 0)
    if (Status st = resize_srq(srq, shm::ring_capacity_for(max_wr), admit); !st) return st;
  if ((mask & IBV_SRQ_LIMIT) != 0) {
    srq.ctx.core.run_sync([&] {
      srq.limit = srq_limit;
      srq.ctx.core.check_srq_limit(srq);  // already below: the event fires now
    });
  }
  return {};
}

Status QueueFabric::resize_srq(Srq& srq, uint32_t capacity, const std::function<bool(int segment_fd)>& admit) {
  shm::Mapping next;
  try {
    next = shm::Mapping::create("ffr-srq", shm::SegmentKind::kRing, shm::srq_segment_bytes(capacity));
  } catch (const std::system_error& e) {
    return out_of_memory(e);
  }
  next.prefault();
  std::byte* at = next.base() + shm::kSrqRingOffset;
  shm::init_ring<shm::RecvWqe>(at, capacity);
  if (!admit(next.fd())) return Error{ENOMEM, "no room for the resized SRQ"};
  bool moved = false;
  srq.ctx.core.run_sync([&] {
    // The receives waiting move as if the app had posted them there; the
    // app's producer continues after them (libffverbs holds the SRQ's lock).
    shm::RingProducer<shm::RecvWqe> filler(at, capacity);
    moved = srq.ctx.core.srq_receives_held(srq) <= capacity && srq.ring.move_queued_to(filler);
    if (!moved) return;
    srq.ring = shm::RingConsumer<shm::RecvWqe>(at, capacity);
    std::swap(srq.mapping, next);
    srq.cap = capacity;
  });
  // `next` (the old segment when moved) is unmapped here, off the poller.
  if (!moved)
    return Error{EINVAL, "more receives wait in the SRQ than the new max_wr (or its ring's producer index is "
                         "corrupt): let them complete first"};
  return {};
}

uint32_t QueueFabric::query_srq_limit(FabricSrq& fsrq) {
  auto& srq = static_cast<Srq&>(fsrq);
  uint32_t limit = 0;
  srq.ctx.core.run_sync([&] { limit = srq.limit; });
  return limit;
}

Result<std::unique_ptr<FabricAh>> QueueFabric::create_ah(FabricPd& pd, const ibv_ah_attr& attr) {
  if (attr.port_num != 1) return Error{EINVAL, "ah_attr.port_num must be 1"};
  // The port is RoCE: an address is a GID, the IPv4-mapped GID of a virtual IP.
  if (attr.is_global == 0) return Error{EINVAL, kRoceNeedsGrh};
  std::optional<uint32_t> ip = policy::ipv4_of_gid(attr.grh.dgid.raw);
  if (!ip)
    return Error{EINVAL, "the port is Ethernet (RoCE v2): a global address handle needs an "
                         "IPv4-mapped dgid (::ffff:a.b.c.d)"};
  if (attr.grh.sgid_index != 0) return Error{EINVAL, "grh.sgid_index must be 0 (the port has one GID)"};
  return make_ah(AhRequest{static_cast<Pd&>(pd), attr, *ip, next_ah_id_++});
}

Status QueueFabric::check_destination_elsewhere(const Qp& qp, const ibv_qp_attr& attr, int mask) {
  if ((mask & IBV_QP_DEST_QPN) == 0) return {};
  for (size_t i = 0; i < core_count(); ++i) {
    QueueCore& other = core_at(i);
    if (&other == &qp.ctx.core) continue;
    bool served = false;
    other.run_sync([&] { served = other.find_qp(attr.dest_qp_num) != nullptr; });
    if (served) return Error{EINVAL, "dest_qp_num belongs to another tenant"};
  }
  return {};
}

ibv_qp_attr QueueFabric::query_qp(FabricQp& fqp) {
  auto& qp = static_cast<Qp&>(fqp);
  ibv_qp_attr attr{};
  qp.ctx.core.run_sync([&] { attr = QueueCore::query(qp); });
  return attr;
}

Result<std::unique_ptr<FabricCluster>> QueueFabric::join_cluster(boost::asio::io_context&, Directory&,
                                                                 const std::string&, const LinkSecurity&) {
  return Error{EOPNOTSUPP, "the " + std::string(name()) + " fabric has no links between routers of its own"};
}

}  // namespace ff::router::core
