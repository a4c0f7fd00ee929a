// QueueFabric: the Fabric overrides every fabric shares, on top of a
// QueueCore. It checks each request against what verbs and the virtual
// device's limits allow, sizes the rings, and leaves to the concrete fabric
// only the make_* hooks (what it builds on its device) and what differs.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "router/fabric/core/queue_core.h"
#include "router/fabric/fabric.h"
#include "router/fabric/memory.h"

namespace ff::router::core {

// The deepest queue (send, receive or shared receive) the virtual device
// offers on either fabric: its rings live in the app's and the router's
// memory, about 12 MiB for a QP this deep (512 B per send WQE, 272 B per
// receive WQE). The verbs fabric offers less where its device makes less.
inline constexpr uint32_t kMaxQueueDepth = 16384;

// The capability flags the virtual device reports on either fabric (the
// fabrics add what depends on their device): what the queue core serves
// itself, whatever executes the work. Each is one that works (conformance
// EveryReportedCapabilityWorksAndTheOthersAreRefused): the AV's port is
// checked, the current-state modifier is taken, SRQs resize.
inline constexpr unsigned kVirtualDeviceCaps = IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_SYS_IMAGE_GUID |
                                               IBV_DEVICE_SRQ_RESIZE | IBV_DEVICE_UD_AV_PORT_ENFORCE |
                                               IBV_DEVICE_CURR_QP_STATE_MOD;

// IB_UVERBS_DEVICE_ATOMIC_WRITE in device_cap_flags_ex (rdma-core names no
// IBV_ constant for it; programs test the bit, or ask for
// IBV_QP_EX_WITH_ATOMIC_WRITE and see EOPNOTSUPP).
inline constexpr uint64_t kDeviceCapAtomicWrite = uint64_t{1} << 40;

// The ring capacities and capabilities a QP gets (what ibv_create_qp
// reports back), and the checked request.
struct QpShape {
  QpInit init;        // with the capabilities granted
  uint32_t send_cap;  // ring slots, powers of two
  uint32_t recv_cap;
};

// What the concrete fabric is asked to build, once the request passed the
// checks.
struct MrRequest {
  Pd& pd;
  std::span<const SegmentPiece> pieces;  // of `segments`, in address order
  std::span<const std::shared_ptr<FabricSegment>> segments;
  uint64_t addr, length, iova;
  unsigned access;
};
struct QpRequest {
  Context& ctx;
  Pd& pd;
  VirtualCq* send_cq;  // null: XRC receive
  VirtualCq* recv_cq;  // null: XRC
  Srq* srq;
  QpShape shape;
  uint32_t tag;
};
struct SrqRequest {
  Context& ctx;
  Pd& pd;
  uint32_t capacity;  // ring slots, a power of two
  uint32_t srq_limit;
  uint32_t tag;
  uint32_t xrcd = 0;           // XRC: its domain
  VirtualCq* cq = nullptr;     // XRC: where its receives complete
};
struct AhRequest {
  Pd& pd;
  const ibv_ah_attr& attr;
  uint32_t virtual_ip;  // the IPv4 of the dgid (the port is RoCE: every address is global)
  uint32_t id;
};

class QueueFabric : public Fabric {
 public:
  const FabricDeviceLimits& device_limits() const override { return limits_; }
  size_t pollers() const override { return core_count(); }
  FabricCounters counters() const override;
  std::map<std::string, TrafficCounters> tenant_traffic() const override;
  void configure_tenant(const std::string& tenant, const policy::QosSpec& spec) override {
    core_for(tenant).configure_tenant(tenant, spec);
  }
  TrafficCounters qp_traffic(const FabricQp& qp) const override {
    const auto& q = static_cast<const Qp&>(qp);
    TrafficCounters t = q.traffic.snapshot();
    t.send_queued = q.sq.queued_now();
    // (an XRC receive QP's srq is the poller's: not read here; it has no queue)
    t.recv_queued = q.xrc_target() || q.srq != nullptr ? 0 : q.rq.queued_now();
    return t;
  }

  Result<std::unique_ptr<FabricContext>> open_context(std::string_view tenant) override;
  Result<std::shared_ptr<FabricSegment>> map_segment(UniqueFd fd, uint64_t app_base, uint64_t length,
                                                     uint64_t offset) override;
  Result<std::unique_ptr<FabricMr>> reg_mr(FabricPd& pd, std::span<const std::shared_ptr<FabricSegment>> segments,
                                           uint64_t addr, uint64_t length, uint64_t iova, unsigned access) override;
  Result<std::unique_ptr<FabricChannel>> create_channel() override;
  Result<std::unique_ptr<FabricCq>> create_cq(FabricContext& ctx, int cqe, FabricChannel* channel,
                                              bool timestamps, uint32_t tag) override;
  Status resize_cq(FabricCq& cq, int cqe, const std::function<bool(int segment_fd)>& admit) override;
  Result<std::unique_ptr<FabricQp>> create_qp(FabricContext& ctx, FabricPd& pd, FabricCq* send_cq,
                                              FabricCq* recv_cq, FabricSrq* srq, const QpInit& init,
                                              uint32_t tag) override;
  Result<std::unique_ptr<FabricSrq>> create_srq(FabricContext& ctx, FabricPd& pd, uint32_t max_wr, uint32_t max_sge,
                                                uint32_t srq_limit, uint32_t tag, const XrcSrqInit* xrc) override;
  Status modify_srq(FabricSrq& srq, uint32_t mask, uint32_t max_wr, uint32_t srq_limit,
                    const std::function<bool(int segment_fd)>& admit) override;
  uint32_t query_srq_limit(FabricSrq& srq) override;
  Result<std::unique_ptr<FabricAh>> create_ah(FabricPd& pd, const ibv_ah_attr& attr) override;
  ibv_qp_attr query_qp(FabricQp& qp) override;
  Result<std::unique_ptr<FabricCluster>> join_cluster(boost::asio::io_context& io, Directory& directory,
                                                      const std::string& listen, const LinkSecurity& security) override;

 protected:
  // The queue cores, one per poller thread, and the one serving `tenant`:
  // everything of a tenant's lives on one poller, so that no work request
  // crosses pollers (QPs connect, and keys resolve, within a tenant).
  virtual size_t core_count() const = 0;
  virtual QueueCore& core_at(size_t i) = 0;
  const QueueCore& core_at(size_t i) const { return const_cast<QueueFabric*>(this)->core_at(i); }
  QueueCore& core_for(std::string_view tenant) { return core_at(poller_of(tenant, core_count())); }

  // What the concrete fabric builds (and links into its engine).
  virtual Result<std::unique_ptr<FabricMr>> make_mr(const MrRequest& r) = 0;
  virtual Result<std::unique_ptr<FabricQp>> make_qp(const QpRequest& r, shm::Mapping rings) = 0;
  virtual Result<std::unique_ptr<FabricSrq>> make_srq(const SrqRequest& r, shm::Mapping ring) = 0;
  virtual Result<std::unique_ptr<FabricAh>> make_ah(const AhRequest& r) = 0;

  FabricDeviceLimits limits_;

  // ibv_modify_qp's destination rule across pollers (control thread): a
  // destination QP number another poller serves belongs to another tenant
  // (EINVAL, as QueueCore::check_modify says of one on the QP's poller).
  Status check_destination_elsewhere(const Qp& qp, const ibv_qp_attr& attr, int mask);

 private:
  Status resize_srq(Srq& srq, uint32_t capacity, const std::function<bool(int segment_fd)>& admit);
  // The checked shape of a QP of `init` (EINVAL, EOPNOTSUPP as verbs says).
  Result<QpShape> shape_qp(const QpInit& init, bool has_send_cq, bool has_recv_cq) const;
  bool offers_xrc() const { return (limits_.attr.orig_attr.device_cap_flags & IBV_DEVICE_XRC) != 0; }

  uint32_t next_ah_id_ = 1;
};

// Where poller `i` of a fabric runs: named ffr-poller-i, on the CPU the
// configuration gives it, with its memory from `numa_node` (the device's).
inline PollerPlacement poller_placement(const FabricConfig& c, size_t i, int numa_node = -1) {
  PollerPlacement p;
  p.name = c.poller_name + "-" + std::to_string(i);
  if (!c.poller_cpus.empty()) p.cpu = c.poller_cpus[i % c.poller_cpus.size()];
  p.numa_node = numa_node;
  return p;
}

// std::system_error from making a segment or an eventfd, as an Error.
Error out_of_memory(const std::exception& e);

}  // namespace ff::router::core
