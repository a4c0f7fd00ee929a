#include "router/fabric/verbs/verbs_fabric.h"

#include <numa.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include <boost/asio/post.hpp>

#include "policy/tenant.h"
#include "router/common/version.h"
#include "router/fabric/verbs/pacing.h"

namespace ff::router {
namespace {

std::string errno_text(int e) { return std::strerror(e != 0 ? e : EINVAL); }

Error device_error(const std::string& what) {
  int e = errno != 0 ? errno : ENOMEM;
  return Error{e, what + ": " + errno_text(e)};
}

uint32_t floor_pow2(uint64_t v) {
  uint32_t p = 1;
  while (uint64_t{p} * 2 <= v && p < (1u << 20)) p *= 2;
  return p;
}

}  // namespace

bool usable_verbs_device(const FabricConfig& config, std::string& why) {
  return verbs::open_device(config, why) != nullptr;
}

VerbsFabric::VerbsFabric(const FabricConfig& config) {
  std::string why;
  std::unique_ptr<verbs::Device> first = verbs::open_device(config, why);
  if (!first) throw FabricStartError("--fabric verbs: " + why);
  shards_.push_back({std::move(first), nullptr});
  const verbs::Device& d = device();
  const ibv_device_attr& dev = d.attr.orig_attr;
  ibv_device_attr& a = limits_.attr.orig_attr;
  a = dev;
  std::snprintf(a.fw_ver, sizeof a.fw_ver, "ffrouter-%s on %s", kVersion, d.name.c_str());
  a.vendor_id = config.vendor_id;
  a.vendor_part_id = config.vendor_part_id;
  a.node_guid = 0;
  a.sys_image_guid = 0;
  a.phys_port_cnt = 1;
  a.max_pkeys = 1;
  a.max_sge = std::min<int>(dev.max_sge, static_cast<int>(shm::kMaxSge));
  a.max_sge_rd = std::min<int>(dev.max_sge_rd, static_cast<int>(shm::kMaxSge));
  a.max_srq_sge = std::min<int>(dev.max_srq_sge, static_cast<int>(shm::kMaxSge));
  // Rings hold a power of two of WQEs, the shadow queue as many, and a
  // shadow CQ as many completions: the depth is what the device really
  // makes at these SGE and inline sizes (a device may report more than it
  // can make: rxe says 1048576 and runs out of memory), up to the virtual
  // device's own ceiling.
  uint32_t cq_depth = floor_pow2(static_cast<uint64_t>(dev.max_cqe));
  uint32_t qp_depth = std::min({floor_pow2(static_cast<uint64_t>(dev.max_qp_wr)), core::kMaxQueueDepth, cq_depth});
  uint32_t srq_depth = std::min({floor_pow2(static_cast<uint64_t>(dev.max_srq_wr)), core::kMaxQueueDepth, cq_depth});
  a.max_qp_wr = static_cast<int>(
      verbs::probe_qp_depth(*shards_.front().device, qp_depth, static_cast<uint32_t>(a.max_sge), d.max_inline));
  a.max_srq_wr = static_cast<int>(verbs::probe_srq_depth(*shards_.front().device, srq_depth, static_cast<uint32_t>(a.max_srq_sge)));
  // The virtual device's limit (router/fabric/qp_transitions.cc checks it).
  a.max_qp_rd_atom = std::min(dev.max_qp_rd_atom, 16);
  a.max_qp_init_rd_atom = std::min(dev.max_qp_init_rd_atom, 16);
  a.max_cqe = (1 << 20) - 1;  // virtual CQs are rings in the router, not device CQs
  a.device_cap_flags = core::kVirtualDeviceCaps | (dev.device_cap_flags & IBV_DEVICE_PORT_ACTIVE_EVENT);
  a.max_mw = 0;
  a.max_ee = a.max_rdd = a.max_ee_rd_atom = a.max_ee_init_rd_atom = 0;
  a.max_mcast_grp = a.max_mcast_qp_attach = a.max_total_mcast_qp_attach = 0;
  a.max_raw_ipv6_qp = a.max_raw_ethy_qp = 0;
  limits_.max_inline_data = d.max_inline;
  // Each further poller opens the device again, the same port and GID.
  FabricConfig same = config;
  same.device = d.name;
  same.gid_index = d.gid_index;
  for (size_t i = 1; i < std::clamp<size_t>(config.pollers, 1, kMaxPollers); ++i) {
    auto more = verbs::open_device(same, why);
    if (!more) throw FabricStartError("--fabric verbs: poller " + std::to_string(i) + ": " + why);
    shards_.push_back({std::move(more), nullptr});
  }
  // Rings and the router's copies of registered memory come from the
  // device's node (this thread makes them), and so do the pollers.
  if (d.numa_node >= 0 && ::numa_available() >= 0) {
    ::numa_set_preferred(d.numa_node);
    spdlog::info("{} is on NUMA node {}: the router's memory and its pollers are placed there", d.name,
                 d.numa_node);
  }
  for (size_t i = 0; i < shards_.size(); ++i)
    shards_[i].engine = std::make_unique<verbs::Engine>(*shards_[i].device,
                                                        std::chrono::microseconds(config.poll_spin_us),
                                                        core::poller_placement(config, i, d.numa_node));
  char gid[64];
  std::snprintf(gid, sizeof gid, "%02x%02x:%02x%02x:...:%02x%02x:%02x%02x", d.gid.raw[0],
                d.gid.raw[1], d.gid.raw[2], d.gid.raw[3], d.gid.raw[12],
                d.gid.raw[13], d.gid.raw[14], d.gid.raw[15]);
  spdlog::info("verbs fabric on {} port 1, GID index {} ({}), MTU {}, max inline {}", d.name,
               d.gid_index, gid, 128 << d.port_attr.active_mtu, d.max_inline);
  const ibv_packet_pacing_caps& pp = d.attr.packet_pacing_caps;
  if (pp.qp_rate_limit_max == 0)
    spdlog::info("{} has no packet pacing: tenants' caps are paced by the router alone", d.name);
  else
    spdlog::info("{} paces QPs at {}..{} kb/s (QP types 0x{:x}): capped tenants' QPs are paced by the device too",
                 d.name, pp.qp_rate_limit_min, pp.qp_rate_limit_max, pp.supported_qpts);
}

VerbsFabric::~VerbsFabric() {
  for (Shard& shard : shards_) shard.engine.reset();  // before any device goes
}

VerbsFabric::Shard& VerbsFabric::shard_of(const core::QueueCore& core) {
  for (Shard& shard : shards_)
    if (shard.engine.get() == &core) return shard;
  throw std::logic_error("an engine of another fabric");
}

ibv_port_attr VerbsFabric::port_attr() const {
  ibv_port_attr p = device().port_attr;
  p.state = IBV_PORT_ACTIVE;
  return p;
}

Result<std::unique_ptr<FabricPd>> VerbsFabric::alloc_pd(const Owner& owner) {
  ibv_pd* pd = ibv_alloc_pd(shard_for(owner.tenant).device->ctx);
  if (pd == nullptr) return device_error(device().name + ": cannot allocate a PD");
  return std::unique_ptr<FabricPd>(std::make_unique<verbs::Pd>(owner, pd));
}

Status VerbsFabric::compose(verbs::Mr& mr, std::span<const SegmentPiece> pieces, uint64_t addr, uint64_t length) {
  uint64_t first_page = addr & ~(shm::kPageSize - 1);
  mr.composed_length = ((addr + length + shm::kPageSize - 1) & ~(shm::kPageSize - 1)) - first_page;
  void* area = ::mmap(nullptr, mr.composed_length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (area == MAP_FAILED) return Error{ENOMEM, "cannot reserve address space for the registration"};
  mr.composed = static_cast<std::byte*>(area);
  for (const SegmentPiece& p : pieces) {
    uint64_t from = p.app_addr & ~(shm::kPageSize - 1);
    uint64_t to = (p.app_addr + p.length + shm::kPageSize - 1) & ~(shm::kPageSize - 1);
    void* at = mr.composed + (from - first_page);
    if (::mmap(at, to - from, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, p.segment->fd(),
               static_cast<off_t>(p.segment->file_offset_of(from))) == MAP_FAILED)
      return Error{ENOMEM, "cannot map the registration's segments side by side"};
  }
  mr.router_at_iova = mr.composed + (addr - first_page);
  return {};
}

Result<std::unique_ptr<FabricMr>> VerbsFabric::make_mr(const core::MrRequest& r) {
  verbs::Engine& engine = *shard_for(r.pd.owner.tenant).engine;
  auto mr = std::make_unique<verbs::Mr>(engine);
  mr->pd = &r.pd;
  mr->iova = r.iova;
  mr->length = r.length;
  mr->access = r.access;
  mr->segments.assign(r.segments.begin(), r.segments.end());
  mr->router_at_iova = r.pieces.front().router_addr();
  if (r.pieces.size() > 1) {
    if (Status st = compose(*mr, r.pieces, r.addr, r.length); !st) return st.error();
  }
  mr->mr = ibv_reg_mr_iova2(static_cast<verbs::Pd&>(r.pd).pd, mr->router_at_iova, r.length, r.iova, r.access);
  if (mr->mr == nullptr) return device_error(device().name + " refused the registration");
  mr->lkey_value = mr->mr->lkey;
  mr->rkey_value = mr->mr->rkey;
  engine.run_sync([&] { engine.link_mr(*mr); });
  return std::unique_ptr<FabricMr>(std::move(mr));
}

Result<std::unique_ptr<FabricQp>> VerbsFabric::make_qp(const core::QpRequest& r, shm::Mapping rings) {
  auto* srq = static_cast<verbs::Srq*>(r.srq);
  auto& pd = static_cast<verbs::Pd&>(r.pd);
  const core::QpShape& shape = r.shape;
  auto qp = std::make_unique<verbs::Qp>(r.ctx, std::move(rings), pd, r.send_cq, r.recv_cq, srq, shape.init,
                                        shape.send_cap, shape.recv_cap, r.tag);
  // The shadow CQs hold every completion the QP can have outstanding.
  Shard& shard = shard_of(r.ctx.core);
  const verbs::Device& dev = *shard.device;
  int recv_cqe = static_cast<int>(srq != nullptr ? srq->device_depth : shape.recv_cap);
  qp->device_send_cq = ibv_create_cq(dev.ctx, static_cast<int>(shape.send_cap), qp.get(), dev.channel, 0);
  qp->device_recv_cq = ibv_create_cq(dev.ctx, recv_cqe, qp.get(), dev.channel, 0);
  if (qp->device_send_cq == nullptr || qp->device_recv_cq == nullptr)
    return device_error(dev.name + ": cannot create the QP's completion queues");
  const ibv_qp_cap& cap = shape.init.cap;
  ibv_qp_init_attr ia{};
  ia.qp_context = qp.get();
  ia.send_cq = qp->device_send_cq;
  ia.recv_cq = qp->device_recv_cq;
  ia.srq = srq != nullptr ? srq->srq : nullptr;
  ia.cap = ibv_qp_cap{shape.send_cap, srq != nullptr ? 0 : shape.recv_cap, cap.max_send_sge,
                      srq != nullptr ? 0 : cap.max_recv_sge, cap.max_inline_data};
  ia.qp_type = shape.init.type;
  qp->qp = ibv_create_qp(pd.pd, &ia);
  if (qp->qp == nullptr) return device_error(dev.name + " refused the QP");
  qp->qpn = qp->qp->qp_num;
  qp->serial = next_qp_serial_++;
  shard.engine->run_sync([&] { shard.engine->link_qp(*qp); });
  return std::unique_ptr<FabricQp>(std::move(qp));
}

Result<std::unique_ptr<FabricSrq>> VerbsFabric::make_srq(const core::SrqRequest& r, shm::Mapping ring) {
  auto& pd = static_cast<verbs::Pd&>(r.pd);
  auto max_sge = static_cast<uint32_t>(limits_.attr.orig_attr.max_srq_sge);
  ibv_srq_init_attr ia{};
  ia.attr.max_wr = r.capacity;
  ia.attr.max_sge = max_sge;
  ibv_srq* s = ibv_create_srq(pd.pd, &ia);
  if (s == nullptr) return device_error(device().name + " refused the SRQ");
  auto srq = std::make_unique<verbs::Srq>(r.ctx, std::move(ring), pd, s, r.capacity, max_sge, r.srq_limit, r.tag);
  core::QueueCore& engine = r.ctx.core;
  engine.run_sync([&] { engine.link_srq(*srq); });
  return std::unique_ptr<FabricSrq>(std::move(srq));
}

Result<std::unique_ptr<FabricAh>> VerbsFabric::make_ah(const core::AhRequest& r) {
  auto& pd = static_cast<verbs::Pd&>(r.pd);
  // Toward another host: its device AH comes with its router's first
  // answer (ask_far). An address no router serves is this device's (its
  // datagrams reach no QP).
  std::string router;
  if (cluster_ != nullptr)
    if (auto route = cluster_->route(pd.owner, r.virtual_ip)) router = *route;
  ibv_ah* ah = nullptr;
  if (router.empty()) {
    ibv_ah_attr dev = verbs::device_address(device(), r.attr);
    ah = ibv_create_ah(pd.pd, &dev);
    if (ah == nullptr) return device_error(device().name + " refused the address handle");
  }
  verbs::Engine& engine = *shard_for(pd.owner.tenant).engine;
  auto out = std::make_unique<verbs::Ah>(engine, pd, r.attr, r.virtual_ip, r.id, ah, router);
  engine.run_sync([&] { engine.link_ah(*out); });
  return std::unique_ptr<FabricAh>(std::move(out));
}

Status VerbsFabric::modify_qp(FabricQp& fqp, const ibv_qp_attr& attr, int mask) {
  auto& q = static_cast<verbs::Qp&>(fqp);
  if (Status st = check_destination_elsewhere(q, attr, mask); !st) return st;
  return modify(q, attr, mask, nullptr);
}

Result<std::string> VerbsFabric::modify_route(const FabricQp& fqp, const ibv_qp_attr& attr, int mask) const {
  if (cluster_ == nullptr) return std::string{};
  return cluster_->route(static_cast<const verbs::Qp&>(fqp).pd.owner, attr, mask);
}

void VerbsFabric::modify_qp_via_peer(FabricQp& fqp, const ibv_qp_attr& attr, int mask, const std::string& router,
                                     ModifyDone done) {
  auto& q = static_cast<verbs::Qp&>(fqp);
  const Owner& owner = q.pd.owner;
  uint32_t vip = policy::ipv4_of_gid(attr.ah_attr.grh.dgid.raw).value_or(0);
  uint32_t qpn = q.qpn;
  uint64_t serial = q.serial;
  verbs::Engine* engine = &engine_of(q);
  cluster_->ask(router, owner, vip, attr.dest_qp_num, q.init.type, asker_for(qpn, owner),
                [this, engine, qpn, serial, attr, mask, router, done = std::move(done)](verbs::FarQp far) {
                  verbs::Qp* now = nullptr;
                  engine->run_sync([&] {
                    verbs::Qp* found = engine->find_qp(qpn);
                    if (found != nullptr && found->serial == serial) now = found;
                  });
                  if (now == nullptr) return;  // destroyed meanwhile: nobody waits
                  if (far) now->known_to.insert(router);  // it learns when this QP goes
                  done(modify(*now, attr, mask, &far, router));
                });
}

verbs::Asker VerbsFabric::asker_for(uint32_t qpn, const Owner& owner) const {
  verbs::Asker a;
  a.qpn = qpn;
  a.vip = owner.virtual_ip;
  a.gid = device().gid;
  return a;
}

void VerbsFabric::ask_far(const FarQuestion& f) {
  auto settle = [this, f](verbs::FarQp far) {
    // The app's AH gets its device AH toward that host (the AH lives as
    // long as this control thread does not destroy it).
    verbs::Engine& engine = *shard_for(f.owner.tenant).engine;
    verbs::Ah* ah = nullptr;
    engine.run_sync([&] { ah = engine.find_ah(f.ah_id); });
    ibv_ah* made = nullptr;
    if (far && ah != nullptr && ah->ah == nullptr) {
      ibv_ah_attr dev = verbs::device_address(device(), ah->attr);
      dev.grh.dgid = far->gid;
      made = ibv_create_ah(static_cast<const verbs::Pd&>(ah->pd).pd, &dev);
      if (made == nullptr) {
        spdlog::warn("{} refused an address handle toward router {}: {}", device().name, f.router,
                     errno_text(errno));
        far.reset();
      }
    }
    engine.run_sync([&] {
      if (made != nullptr && engine.find_ah(f.ah_id) == ah && ah->ah == nullptr) ah->ah = std::exchange(made, nullptr);
      verbs::Qp* q = engine.find_qp(f.qpn);
      if (q == nullptr || q->serial != f.serial) return;
      if (far) q->known_to.insert(f.router);
      engine.settle_far(*q, f.vip, f.remote_qpn, f.router, far.has_value());
    });
    if (made != nullptr) ibv_destroy_ah(made);
  };
  if (cluster_ == nullptr) {
    settle(std::nullopt);
    return;
  }
  cluster_->ask(f.router, f.owner, f.vip, f.remote_qpn, IBV_QPT_UD, asker_for(f.qpn, f.owner), settle);
}

Result<std::unique_ptr<FabricCluster>> VerbsFabric::join_cluster_over(std::unique_ptr<FabricCluster> links,
                                                                      boost::asio::io_context& io,
                                                                      Directory& directory) {
  if (device().port_attr.link_layer == IBV_LINK_LAYER_INFINIBAND)
    return Error{EOPNOTSUPP, device().name + " is an InfiniBand device: across hosts the verbs fabric needs RoCE "
                                             "devices (InfiniBand routes by LID, which routers do not exchange); "
                                             "run without --directory, or use a RoCE port"};
  auto cluster = std::make_unique<verbs::VerbsCluster>(std::move(links), io, directory, *this);
  cluster_ = cluster.get();
  io_ = &io;
  for (Shard& shard : shards_) {
    verbs::Engine& engine = *shard.engine;
    engine.on_qp_destroyed([this](uint32_t qpn, const std::set<std::string>& routers) {
      if (cluster_ != nullptr) cluster_->tell_qp_gone(routers, qpn);
    });
    engine.run_sync([this, &engine] {
      // On the poller: the question goes to the control thread.
      engine.on_far_question([this](const verbs::Qp& q, const verbs::Ah& ah, uint32_t remote_qpn) {
        FarQuestion f{q.qpn, q.serial, q.pd.owner, ah.virtual_ip, remote_qpn, ah.ident, ah.far_router};
        boost::asio::post(*io_, [this, f] { ask_far(f); });
      });
    });
  }
  return std::unique_ptr<FabricCluster>(std::move(cluster));
}

void VerbsFabric::left_cluster() {
  cluster_ = nullptr;
  // Questions the poller posts from now on are answered "no" (ask_far).
}

verbs::FarQp VerbsFabric::describe_qp(const std::string& router, const std::string& tenant, uint32_t vip,
                                      uint32_t qpn, ibv_qp_type type, const verbs::Asker& asker) {
  verbs::FarQp far;
  verbs::Engine& engine = *shard_for(tenant).engine;
  engine.run_sync([&] {
    verbs::Qp* q = engine.find_qp(qpn);
    if (q == nullptr || q->pd.owner.tenant != tenant || q->pd.owner.virtual_ip != vip || q->init.type != type) return;
    // A UD QP takes datagrams from the asking QP from now on (with its
    // virtual address in their GRH); one that takes from too many says no.
    if (type == IBV_QPT_UD && !engine.accept_far_sender(*q, asker.gid, asker.qpn, asker.vip, router)) return;
    q->known_to.insert(router);
    far = verbs::RemoteQp{device().gid, qpn};
  });
  return far;
}

ibv_gid VerbsFabric::sender_address(FabricQp& receiver, uint32_t src_qp, const ibv_gid& seen) {
  ibv_gid gid = seen;
  auto& q = static_cast<verbs::Qp&>(receiver);
  verbs::Engine& engine = engine_of(q);
  engine.run_sync([&] { gid = engine.sender_address(q, src_qp, seen); });
  return gid;
}

void VerbsFabric::far_qp_gone(const std::string& router, uint32_t qpn) {
  for (Shard& shard : shards_) shard.engine->run_sync([&] { shard.engine->far_qp_gone(router, qpn); });
}

void VerbsFabric::router_lost(const std::string& router) {
  for (Shard& shard : shards_) shard.engine->run_sync([&] { shard.engine->fail_qps_toward(router); });
}

Status VerbsFabric::modify(verbs::Qp& q, const ibv_qp_attr& attr, int mask, const verbs::FarQp* far,
                           const std::string& far_router) {
  verbs::DeviceModify change;
  change.far_router = far_router;
  Status st;
  verbs::Engine& engine = engine_of(q);
  engine.run_sync([&] { st = engine.begin_modify(q, attr, mask, change, far); });
  if (!st) return st;
  Status device = engine.modify_device(q, change, mask);  // here, not on the poller
  engine.run_sync([&] { st = engine.end_modify(q, attr, mask, change, device); });
  if (st && (mask & IBV_QP_STATE) != 0 && attr.qp_state == IBV_QPS_RTS) pace(q);
  return st;
}

void VerbsFabric::configure_tenant(const std::string& tenant, const policy::QosSpec& spec) {
  QueueFabric::configure_tenant(tenant, spec);
  tenant_max_gbps_[tenant] = spec.max_gbps;
  std::vector<verbs::Qp*> running;
  verbs::Engine& engine = *shard_for(tenant).engine;
  engine.run_sync([&] {
    for (core::Qp* c : engine.qps())
      if (c->pd.owner.tenant == tenant && c->state == IBV_QPS_RTS) running.push_back(static_cast<verbs::Qp*>(c));
  });
  // QPs are created and destroyed on this thread only: these are alive.
  for (verbs::Qp* q : running) pace(*q);
}

void VerbsFabric::pace(verbs::Qp& q) {
  auto it = tenant_max_gbps_.find(q.pd.owner.tenant);
  std::optional<uint32_t> kbps = verbs::device_pacing_kbps(device().attr.packet_pacing_caps, q.init.type,
                                                           it == tenant_max_gbps_.end() ? 0.0 : it->second);
  if (!kbps || *kbps == q.device_pacing_kbps) return;
  ibv_qp_rate_limit_attr limit{};
  limit.rate_limit = *kbps;
  int rc = ibv_modify_qp_rate_limit(q.qp, &limit);
  if (rc == 0) {
    q.device_pacing_kbps = *kbps;
    return;
  }
  // The software caps hold without it.
  spdlog::warn("{} refused to pace QP {} of tenant {} at {} kb/s ({}); its cap is kept in software only",
               device().name, q.qpn, q.pd.owner.tenant, *kbps, std::strerror(rc > 0 ? rc : errno));
}

}  // namespace ff::router
