// VerbsFabric: the router owns a real RDMA device (an HCA, or SoftRoCE)
// through rdma-core and backs every virtual object with a shadow object on
// it. Tenants get their own device PDs, so the hardware enforces the
// boundaries between them on every key.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "router/fabric/core/queue_fabric.h"
#include "router/fabric/verbs/cluster.h"
#include "router/fabric/verbs/engine.h"

namespace ff::router {

class VerbsFabric final : public core::QueueFabric, public verbs::ClusterMember {
 public:
  // Opens config.device (empty: the first device with an active port) at
  // config.gid_index (-1: its RoCE v2 IPv4 GID). Throws FabricStartError.
  explicit VerbsFabric(const FabricConfig& config);
  ~VerbsFabric() override;
  std::string_view name() const override { return "verbs"; }
  const std::string& device_name() const { return device().name; }
  ibv_port_attr port_attr() const override;
  Result<std::unique_ptr<FabricPd>> alloc_pd(const Owner& owner) override;
  Status modify_qp(FabricQp& qp, const ibv_qp_attr& attr, int mask) override;
  ibv_gid sender_address(FabricQp& receiver, uint32_t src_qp, const ibv_gid& seen) override;
  // Besides the software caps: the device's packet pacing of the tenant's
  // QPs in RTS, where the device has it (pacing.h).
  void configure_tenant(const std::string& tenant, const policy::QosSpec& spec) override;
  // Across hosts (cluster.h): a destination another router serves is
  // asked of that router first.
  Result<std::string> modify_route(const FabricQp& qp, const ibv_qp_attr& attr, int mask) const override;
  void modify_qp_via_peer(FabricQp& qp, const ibv_qp_attr& attr, int mask, const std::string& router,
                          ModifyDone done) override;
  Result<std::unique_ptr<FabricCluster>> join_cluster_over(std::unique_ptr<FabricCluster> links,
                                                           boost::asio::io_context& io,
                                                           Directory& directory) override;

 protected:
  size_t core_count() const override { return shards_.size(); }
  core::QueueCore& core_at(size_t i) override { return *shards_[i].engine; }
  Result<std::unique_ptr<FabricMr>> make_mr(const core::MrRequest& r) override;
  Result<std::unique_ptr<FabricQp>> make_qp(const core::QpRequest& r, shm::Mapping rings) override;
  Result<std::unique_ptr<FabricSrq>> make_srq(const core::SrqRequest& r, shm::Mapping ring) override;
  Result<std::unique_ptr<FabricAh>> make_ah(const core::AhRequest& r) override;

 private:
  // The device needs one virtual range: an MR over several segments maps
  // them side by side.
  Status compose(verbs::Mr& mr, std::span<const SegmentPiece> pieces, uint64_t addr, uint64_t length);
  // The modify on the device; `far` as in Engine::begin_modify.
  Status modify(verbs::Qp& qp, const ibv_qp_attr& attr, int mask, const verbs::FarQp* far,
                const std::string& far_router = {});
  // ClusterMember: what this router tells another about one of its QPs.
  verbs::FarQp describe_qp(const std::string& router, const std::string& tenant, uint32_t vip, uint32_t qpn,
                           ibv_qp_type type, const verbs::Asker& asker) override;
  void far_qp_gone(const std::string& router, uint32_t qpn) override;
  void left_cluster() override;
  void router_lost(const std::string& router) override;
  // A UD QP's datagram toward another host (Engine::AskFar), on the
  // control thread: asks that host's router, and gives the AH its device
  // AH with the answer.
  struct FarQuestion {
    uint32_t qpn;
    uint64_t serial;
    Owner owner;
    uint32_t vip, remote_qpn, ah_id;
    std::string router;
  };
  void ask_far(const FarQuestion& f);
  // Asks the device to pace `q` (in RTS) at its tenant's cap, where it can
  // (control thread: a firmware command on real hardware).
  void pace(verbs::Qp& q);
  verbs::Asker asker_for(uint32_t qpn, const Owner& owner) const;

  // One poller's context on the device (its own PDs, CQs, QPs, completion
  // channel and async events: a poller never touches another's) and its
  // engine.
  struct Shard {
    std::unique_ptr<verbs::Device> device;
    std::unique_ptr<verbs::Engine> engine;
  };
  // Poller 0's context: what every context shares (name, GID, attributes).
  const verbs::Device& device() const { return *shards_.front().device; }
  Shard& shard_for(std::string_view tenant) { return shards_[poller_of(tenant, shards_.size())]; }
  Shard& shard_of(const core::QueueCore& core);
  static verbs::Engine& engine_of(const verbs::Qp& q) { return static_cast<verbs::Engine&>(q.ctx.core); }

  std::vector<Shard> shards_;
  verbs::VerbsCluster* cluster_ = nullptr;  // joined: owned by the daemon
  boost::asio::io_context* io_ = nullptr;   // the control thread's, once joined
  uint64_t next_qp_serial_ = 1;
  std::map<std::string, double> tenant_max_gbps_;  // control thread: each tenant's cap (pace())
};

// Whether a device the verbs fabric can use exists (for --fabric auto);
// `why` says why not.
bool usable_verbs_device(const FabricConfig& config, std::string& why);

}  // namespace ff::router
