#include "router/fabric/verbs/verbs_fabric.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "policy/tenant.h"
#include "router/fabric/memory.h"
#include "router/fabric/qp_transitions.h"

namespace ff::router {

using verbs::Device;

namespace {

std::string errno_text(int e) { return std::strerror(e != 0 ? e : EINVAL); }

uint32_t floor_pow2(uint64_t v) {
  uint32_t p = 1;
  while (uint64_t{p} * 2 <= v && p < (1u << 20)) p *= 2;
  return p;
}

// The GID to send from: a RoCE v2 GID holding an IPv4 address (what the
// virtual port reports too), else any RoCE v2 GID, else the first valid one.
int pick_gid_index(ibv_context* ctx, uint8_t port, int table_len) {
  int roce_v2 = -1, any = -1;
  for (int i = 0; i < table_len; ++i) {
    ibv_gid_entry e{};
    if (ibv_query_gid_ex(ctx, port, static_cast<uint32_t>(i), &e, 0) != 0) continue;
    bool zero = std::all_of(e.gid.raw, e.gid.raw + 16, [](uint8_t b) { return b == 0; });
    if (zero) continue;
    if (any < 0) any = i;
    if (e.gid_type == IBV_GID_TYPE_ROCE_V2) {
      if (policy::ipv4_of_gid(e.gid.raw)) return i;
      if (roce_v2 < 0) roce_v2 = i;
    }
  }
  return roce_v2 >= 0 ? roce_v2 : any;
}

// Largest inline size an RC QP of the device accepts (providers differ).
uint32_t probe_max_inline(ibv_pd* pd, ibv_cq* cq) {
  for (uint32_t size : {448u, 256u, 220u, 128u, 64u, 32u}) {
    ibv_qp_init_attr a{};
    a.send_cq = a.recv_cq = cq;
    a.qp_type = IBV_QPT_RC;
    a.cap.max_send_wr = a.cap.max_recv_wr = 1;
    a.cap.max_send_sge = a.cap.max_recv_sge = 1;
    a.cap.max_inline_data = size;
    if (ibv_qp* qp = ibv_create_qp(pd, &a)) {
      uint32_t got = std::max(size, a.cap.max_inline_data);
      ibv_destroy_qp(qp);
      return std::min<uint32_t>(got, shm::kMaxInline);
    }
  }
  return 0;
}

// A UD QP in RTS that never posts a receive: the device drops what is sent to it.
bool make_sink(Device& d, std::string& why) {
  d.sink_pd = ibv_alloc_pd(d.ctx);
  d.sink_cq = d.sink_pd != nullptr ? ibv_create_cq(d.ctx, 1, nullptr, nullptr, 0) : nullptr;
  if (d.sink_cq == nullptr) {
    why = "cannot allocate a PD and a CQ: " + errno_text(errno);
    return false;
  }
  d.max_inline = probe_max_inline(d.sink_pd, d.sink_cq);
  ibv_qp_init_attr a{};
  a.send_cq = a.recv_cq = d.sink_cq;
  a.qp_type = IBV_QPT_UD;
  a.cap.max_send_wr = a.cap.max_recv_wr = 1;
  a.cap.max_send_sge = a.cap.max_recv_sge = 1;
  d.sink_qp = ibv_create_qp(d.sink_pd, &a);
  if (d.sink_qp == nullptr) {
    why = "cannot create a UD QP: " + errno_text(errno);
    return false;
  }
  ibv_qp_attr m{};
  m.qp_state = IBV_QPS_INIT;
  m.port_num = d.port;
  m.qkey = 0x11111111;
  int rc = ibv_modify_qp(d.sink_qp, &m, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY);
  m.qp_state = IBV_QPS_RTR;
  if (rc == 0) rc = ibv_modify_qp(d.sink_qp, &m, IBV_QP_STATE);
  m.qp_state = IBV_QPS_RTS;
  if (rc == 0) rc = ibv_modify_qp(d.sink_qp, &m, IBV_QP_STATE | IBV_QP_SQ_PSN);
  if (rc != 0) {
    why = "cannot bring a UD QP to RTS: " + errno_text(rc);
    return false;
  }
  return true;
}

std::unique_ptr<Device> open_device(const RouterOptions& o, std::string& why) {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list == nullptr || n == 0) {
    if (list != nullptr) ibv_free_device_list(list);
    why = "no RDMA device found. Load the HCA's driver, or create a SoftRoCE device "
          "(`rdma link add rxe0 type rxe netdev <ifname>`), or run with --fabric soft";
    return nullptr;
  }
  auto d = std::make_unique<Device>();
  std::string names;
  for (int i = 0; i < n && d->ctx == nullptr; ++i) {
    std::string name = ibv_get_device_name(list[i]);
    names += (names.empty() ? "" : ", ") + name;
    if (!o.device.empty() && name != o.device) continue;
    ibv_context* ctx = ibv_open_device(list[i]);
    if (ctx == nullptr) {
      why = "cannot open " + name + ": " + errno_text(errno) + " (is /dev/infiniband accessible?)";
      continue;
    }
    ibv_port_attr port{};
    if (ibv_query_port(ctx, 1, &port) != 0 || port.state != IBV_PORT_ACTIVE) {
      why = name + " port 1 is not ACTIVE (check `rdma link` and the netdev's state)";
      ibv_close_device(ctx);
      continue;
    }
    d->name = name;
    d->ctx = ctx;
    d->port_attr = port;
  }
  ibv_free_device_list(list);
  if (d->ctx == nullptr) {
    if (!o.device.empty() && why.empty())
      why = "no RDMA device named '" + o.device + "' (found: " + names + "); pick one with --device";
    return nullptr;
  }
  if (ibv_query_device_ex(d->ctx, nullptr, &d->attr) != 0) {
    why = d->name + ": ibv_query_device_ex failed: " + errno_text(errno);
    return nullptr;
  }
  d->gid_index = o.gid_index_value >= 0 ? o.gid_index_value : pick_gid_index(d->ctx, d->port, d->port_attr.gid_tbl_len);
  if (d->gid_index < 0 || d->gid_index >= d->port_attr.gid_tbl_len ||
      ibv_query_gid(d->ctx, d->port, d->gid_index, &d->gid) != 0 ||
      std::all_of(d->gid.raw, d->gid.raw + 16, [](uint8_t b) { return b == 0; })) {
    why = d->name + " port 1 has no usable GID" +
          (o.gid_index_value >= 0 ? " at index " + std::to_string(o.gid_index_value) : std::string()) +
          " (give the netdev an IP address, or pick one with --gid-index; see `show_gids`)";
    return nullptr;
  }
  d->channel = ibv_create_comp_channel(d->ctx);
  if (d->channel == nullptr) {
    why = d->name + ": cannot create a completion channel: " + errno_text(errno);
    return nullptr;
  }
  // The poller reads both without blocking.
  for (int fd : {d->channel->fd, d->ctx->async_fd}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (!make_sink(*d, why)) {
    why = d->name + ": " + why;
    return nullptr;
  }
  return d;
}

}  // namespace

bool usable_verbs_device(const RouterOptions& options, std::string& why) {
  return open_device(options, why) != nullptr;
}

VerbsFabric::VerbsFabric(const RouterOptions& options) {
  std::string why;
  device_ = open_device(options, why);
  if (!device_) throw FabricStartError("--fabric verbs: " + why);
  const ibv_device_attr& dev = device_->attr.orig_attr;
  ibv_device_attr& a = limits_.attr.orig_attr;
  a = dev;
  std::snprintf(a.fw_ver, sizeof a.fw_ver, "ffrouter-0.1.0 on %s", device_->name.c_str());
  a.vendor_id = options.vendor_id;
  a.vendor_part_id = options.vendor_part_id;
  a.node_guid = 0;
  a.sys_image_guid = 0;
  a.phys_port_cnt = 1;
  a.max_pkeys = 1;
  a.max_sge = std::min<int>(dev.max_sge, static_cast<int>(shm::kMaxSge));
  a.max_sge_rd = std::min<int>(dev.max_sge_rd, static_cast<int>(shm::kMaxSge));
  a.max_srq_sge = std::min<int>(dev.max_srq_sge, static_cast<int>(shm::kMaxSge));
  // Rings hold a power of two of WQEs and the shadow queue as many.
  a.max_qp_wr = static_cast<int>(floor_pow2(static_cast<uint64_t>(dev.max_qp_wr)));
  a.max_srq_wr = static_cast<int>(floor_pow2(static_cast<uint64_t>(dev.max_srq_wr)));
  // The virtual device's limit (router/fabric/qp_transitions.cc checks it).
  a.max_qp_rd_atom = std::min(dev.max_qp_rd_atom, 16);
  a.max_qp_init_rd_atom = std::min(dev.max_qp_init_rd_atom, 16);
  a.max_cqe = (1 << 20) - 1;  // virtual CQs are rings in the router, not device CQs
  a.device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_SYS_IMAGE_GUID | IBV_DEVICE_N_NOTIFY_CQ |
                       (dev.device_cap_flags & IBV_DEVICE_PORT_ACTIVE_EVENT);
  a.max_mw = 0;
  a.max_ee = a.max_rdd = a.max_ee_rd_atom = a.max_ee_init_rd_atom = 0;
  a.max_mcast_grp = a.max_mcast_qp_attach = a.max_total_mcast_qp_attach = 0;
  a.max_raw_ipv6_qp = a.max_raw_ethy_qp = 0;
  limits_.max_inline_data = device_->max_inline;
  engine_ = std::make_unique<verbs::Engine>(*device_, std::chrono::microseconds(options.poll_spin_us));
  char gid[64];
  std::snprintf(gid, sizeof gid, "%02x%02x:%02x%02x:...:%02x%02x:%02x%02x", device_->gid.raw[0],
                device_->gid.raw[1], device_->gid.raw[2], device_->gid.raw[3], device_->gid.raw[12],
                device_->gid.raw[13], device_->gid.raw[14], device_->gid.raw[15]);
  spdlog::info("verbs fabric on {} port 1, GID index {} ({}), MTU {}, max inline {}", device_->name,
               device_->gid_index, gid, 128 << device_->port_attr.active_mtu, device_->max_inline);
}

VerbsFabric::~VerbsFabric() { engine_.reset(); }

ibv_port_attr VerbsFabric::port_attr() const {
  ibv_port_attr p = device_->port_attr;
  p.state = IBV_PORT_ACTIVE;
  p.gid_tbl_len = 1;
  p.pkey_tbl_len = 1;
  p.port_cap_flags = IBV_PORT_CM_SUP;
  p.lid = 0;
  p.sm_lid = 0;
  p.lmc = 0;
  p.link_layer = IBV_LINK_LAYER_ETHERNET;  // the virtual port is RoCE whatever the device is
  return p;
}

FabricCounters VerbsFabric::counters() const {
  const verbs::EngineStats& s = engine_->stats();
  FabricCounters c;
  c.work_requests = s.wqes.load(std::memory_order_relaxed);
  c.bytes = s.bytes.load(std::memory_order_relaxed);
  c.error_completions = s.error_completions.load(std::memory_order_relaxed);
  c.poller_sleeps = engine_->sleeps();
  return c;
}

std::unique_ptr<FabricContext> VerbsFabric::open_context(FabricError& err) {
  try {
    return std::make_unique<verbs::Context>(*engine_);
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
}

std::unique_ptr<FabricPd> VerbsFabric::alloc_pd(const Owner& owner, FabricError& err) {
  ibv_pd* pd = ibv_alloc_pd(device_->ctx);
  if (pd == nullptr) return err.set(errno != 0 ? errno : ENOMEM, device_->name + ": cannot allocate a PD");
  return std::make_unique<verbs::Pd>(owner, pd);
}

std::shared_ptr<FabricSegment> VerbsFabric::map_segment(UniqueFd fd, uint64_t app_base, uint64_t length,
                                                        FabricError& err) {
  return map_client_segment(std::move(fd), app_base, length, err);
}

std::unique_ptr<FabricMr> VerbsFabric::reg_mr(FabricPd& fpd, std::span<const std::shared_ptr<FabricSegment>> segments,
                                              uint64_t addr, uint64_t length, uint64_t iova,
                                              unsigned access, FabricError& err) {
  if (!check_mr_request(access, length, iova, limits_.attr.orig_attr.max_mr_size, err)) return nullptr;
  std::vector<SegmentPiece> pieces;
  if (!split_over_segments(segments, addr, length, pieces, err)) return nullptr;
  auto& pd = static_cast<verbs::Pd&>(fpd);
  auto mr = std::make_unique<verbs::Mr>(*engine_);
  mr->pd = &pd;
  mr->iova = iova;
  mr->length = length;
  mr->access = access;
  mr->segments.assign(segments.begin(), segments.end());
  std::byte* start = pieces.front().router_addr();
  if (pieces.size() > 1) {
    // The device needs one virtual range: map the pieces side by side.
    uint64_t first_page = addr & ~(shm::kPageSize - 1);
    mr->composed_length = ((addr + length + shm::kPageSize - 1) & ~(shm::kPageSize - 1)) - first_page;
    void* area = ::mmap(nullptr, mr->composed_length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (area == MAP_FAILED) return err.set(ENOMEM, "cannot reserve address space for the registration");
    mr->composed = static_cast<std::byte*>(area);
    for (const SegmentPiece& p : pieces) {
      uint64_t from = p.app_addr & ~(shm::kPageSize - 1);
      uint64_t to = (p.app_addr + p.length + shm::kPageSize - 1) & ~(shm::kPageSize - 1);
      void* at = mr->composed + (from - first_page);
      if (::mmap(at, to - from, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, p.segment->fd(),
                 static_cast<off_t>(from - p.segment->app_base())) == MAP_FAILED)
        return err.set(ENOMEM, "cannot map the registration's segments side by side");
    }
    start = mr->composed + (addr - first_page);
  }
  mr->router_at_iova = start;
  mr->mr = ibv_reg_mr_iova2(pd.pd, start, length, iova, access);
  if (mr->mr == nullptr) {
    int e = errno != 0 ? errno : EINVAL;
    if (mr->composed != nullptr) ::munmap(mr->composed, mr->composed_length);
    mr->composed = nullptr;
    return err.set(e, device_->name + " refused the registration: " + errno_text(e));
  }
  engine_->run_sync([&] { engine_->link_mr(mr.get()); });
  return mr;
}

std::unique_ptr<FabricChannel> VerbsFabric::create_channel(FabricError& err) {
  try {
    return std::make_unique<VirtualChannel>();
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
}

std::unique_ptr<FabricCq> VerbsFabric::create_cq(FabricContext& ctx, int cqe, FabricChannel* channel,
                                                 uint32_t tag, FabricError& err) {
  if (cqe < 1 || cqe > limits_.attr.orig_attr.max_cqe) return err.set(EINVAL, "cqe out of range");
  try {
    return std::make_unique<VirtualCq>(static_cast<verbs::Context&>(ctx).async,
                                       shm::ring_capacity_for(static_cast<uint32_t>(cqe)),
                                       static_cast<VirtualChannel*>(channel), tag);
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
}

std::unique_ptr<FabricQp> VerbsFabric::create_qp(FabricContext& fctx, FabricPd& fpd, FabricCq& send_cq,
                                                 FabricCq& recv_cq, FabricSrq* fsrq, const QpInit& init,
                                                 uint32_t tag, FabricError& err) {
  if (init.type != IBV_QPT_RC && init.type != IBV_QPT_UC && init.type != IBV_QPT_UD)
    return err.set(EOPNOTSUPP, "QP type not supported (RC, UC and UD are)");
  const ibv_device_attr& a = limits_.attr.orig_attr;
  const ibv_qp_cap& c = init.cap;
  auto max_wr = static_cast<uint32_t>(a.max_qp_wr);
  auto max_sge = static_cast<uint32_t>(a.max_sge);
  if (c.max_send_wr > max_wr || c.max_recv_wr > max_wr) return err.set(EINVAL, "max_send_wr/max_recv_wr exceed max_qp_wr");
  if (c.max_send_sge > max_sge || c.max_recv_sge > max_sge) return err.set(EINVAL, "too many SGEs");
  if (c.max_inline_data > limits_.max_inline_data)
    return err.set(EINVAL, "max_inline_data exceeds " + std::to_string(limits_.max_inline_data) + " (the device's limit)");
  auto& ctx = static_cast<verbs::Context&>(fctx);
  auto& pd = static_cast<verbs::Pd&>(fpd);
  auto* srq = static_cast<verbs::Srq*>(fsrq);
  uint32_t send_cap = shm::ring_capacity_for(std::max(c.max_send_wr, 1u));
  uint32_t recv_cap = shm::ring_capacity_for(std::max(c.max_recv_wr, 1u));
  QpInit actual = init;
  actual.cap.max_send_wr = send_cap;
  actual.cap.max_recv_wr = recv_cap;
  actual.cap.max_send_sge = max_sge;
  actual.cap.max_recv_sge = max_sge;
  actual.cap.max_inline_data = limits_.max_inline_data;
  std::unique_ptr<verbs::Qp> qp;
  try {
    qp = std::make_unique<verbs::Qp>(ctx, shm::Mapping::create("ffr-qp", shm::SegmentKind::kRing,
                                                               shm::qp_segment_bytes(send_cap, recv_cap)),
                                     pd, static_cast<VirtualCq&>(send_cq), static_cast<VirtualCq&>(recv_cq),
                                     srq, actual, send_cap, recv_cap, tag);
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
  // The shadow CQs hold every completion the QP can have outstanding.
  int recv_cqe = static_cast<int>(srq != nullptr ? srq->cap : recv_cap);
  qp->device_send_cq = ibv_create_cq(device_->ctx, static_cast<int>(send_cap), qp.get(), device_->channel, 0);
  qp->device_recv_cq = ibv_create_cq(device_->ctx, recv_cqe, qp.get(), device_->channel, 0);
  if (qp->device_send_cq == nullptr || qp->device_recv_cq == nullptr)
    return err.set(errno != 0 ? errno : ENOMEM, device_->name + ": cannot create the QP's completion queues");
  ibv_qp_init_attr ia{};
  ia.qp_context = qp.get();
  ia.send_cq = qp->device_send_cq;
  ia.recv_cq = qp->device_recv_cq;
  ia.srq = srq != nullptr ? srq->srq : nullptr;
  ia.cap.max_send_wr = send_cap;
  ia.cap.max_recv_wr = srq != nullptr ? 0 : recv_cap;
  ia.cap.max_send_sge = max_sge;
  ia.cap.max_recv_sge = srq != nullptr ? 0 : max_sge;
  ia.cap.max_inline_data = limits_.max_inline_data;
  ia.qp_type = init.type;
  qp->qp = ibv_create_qp(pd.pd, &ia);
  if (qp->qp == nullptr)
    return err.set(errno != 0 ? errno : ENOMEM, device_->name + " refused the QP: " + errno_text(errno));
  engine_->run_sync([&] { engine_->link_qp(qp.get()); });
  return qp;
}

std::unique_ptr<FabricSrq> VerbsFabric::create_srq(FabricContext& ctx, FabricPd& fpd, uint32_t max_wr,
                                                   uint32_t max_sge, uint32_t srq_limit, uint32_t tag,
                                                   FabricError& err) {
  const ibv_device_attr& a = limits_.attr.orig_attr;
  if (max_wr == 0 || max_wr > static_cast<uint32_t>(a.max_srq_wr)) return err.set(EINVAL, "max_wr out of range");
  if (max_sge > static_cast<uint32_t>(a.max_srq_sge)) return err.set(EINVAL, "too many SGEs");
  uint32_t cap = shm::ring_capacity_for(max_wr);
  if (srq_limit > cap) return err.set(EINVAL, "srq_limit exceeds max_wr");
  auto& pd = static_cast<verbs::Pd&>(fpd);
  ibv_srq_init_attr ia{};
  ia.attr.max_wr = cap;
  ia.attr.max_sge = static_cast<uint32_t>(a.max_srq_sge);
  ibv_srq* s = ibv_create_srq(pd.pd, &ia);
  if (s == nullptr) return err.set(errno != 0 ? errno : ENOMEM, device_->name + " refused the SRQ: " + errno_text(errno));
  try {
    return std::make_unique<verbs::Srq>(
        static_cast<verbs::Context&>(ctx),
        shm::Mapping::create("ffr-srq", shm::SegmentKind::kRing, shm::srq_segment_bytes(cap)), pd, s, cap,
        static_cast<uint32_t>(a.max_srq_sge), srq_limit, tag);
  } catch (const std::system_error& e) {
    ibv_destroy_srq(s);
    return err.set(ENOMEM, e.what());
  }
}

int VerbsFabric::modify_srq(FabricSrq& fsrq, uint32_t mask, uint32_t srq_limit, std::string& why) {
  auto& srq = static_cast<verbs::Srq&>(fsrq);
  if (int rc = check_modify_srq(mask, srq_limit, srq.cap, why); rc != 0) return rc;
  if ((mask & IBV_SRQ_LIMIT) != 0) {
    engine_->run_sync([&] {
      srq.limit = srq_limit;
      engine_->check_srq_limit(srq);
    });
  }
  return 0;
}

uint32_t VerbsFabric::query_srq_limit(FabricSrq& fsrq) {
  auto& srq = static_cast<verbs::Srq&>(fsrq);
  uint32_t limit = 0;
  engine_->run_sync([&] { limit = srq.limit; });
  return limit;
}

std::unique_ptr<FabricAh> VerbsFabric::create_ah(FabricPd& fpd, const ibv_ah_attr& attr, FabricError& err) {
  if (attr.port_num != 1) return err.set(EINVAL, "ah_attr.port_num must be 1");
  std::optional<uint32_t> ip;
  if (attr.is_global != 0) {
    ip = policy::ipv4_of_gid(attr.grh.dgid.raw);
    if (!ip)
      return err.set(EINVAL, "the port is Ethernet (RoCE v2): a global address handle needs an "
                             "IPv4-mapped dgid (::ffff:a.b.c.d)");
  }
  if (attr.grh.sgid_index != 0) return err.set(EINVAL, "grh.sgid_index must be 0 (the port has one GID)");
  auto& pd = static_cast<verbs::Pd&>(fpd);
  ibv_ah_attr dev = verbs::device_address(*device_, attr);
  ibv_ah* ah = ibv_create_ah(pd.pd, &dev);
  if (ah == nullptr) return err.set(errno != 0 ? errno : EINVAL, device_->name + " refused the address handle");
  return std::make_unique<verbs::Ah>(*engine_, pd, ah, ip, ah_counter_++);
}

int VerbsFabric::modify_qp(FabricQp& fqp, const ibv_qp_attr& attr, int mask, std::string& why) {
  auto& qp = static_cast<verbs::Qp&>(fqp);
  int rc = 0;
  engine_->run_sync([&] { rc = engine_->modify_qp(qp, attr, mask, why); });
  return rc;
}

void VerbsFabric::query_qp(FabricQp& fqp, ibv_qp_attr& attr) {
  auto& qp = static_cast<verbs::Qp&>(fqp);
  engine_->run_sync([&] {
    attr = qp.attr;
    attr.qp_state = qp.state;
    attr.cur_qp_state = qp.state;
  });
}

}  // namespace ff::router
