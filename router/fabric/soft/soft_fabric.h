// SoftFabric: the router itself implements the RDMA transport between QPs
// whose memory it has mapped (engine.h). No hardware needed; joined with
// other routers (peers.h), it carries tenants' traffic between hosts.
#pragma once

#include <memory>
#include <random>
#include <vector>

#include "router/fabric/core/queue_fabric.h"
#include "router/fabric/soft/engine.h"

namespace ff::router {

// Where a tenant's virtual IP lives once routers are joined (Peers,
// router/fabric/soft/peers.h). Without routes every address is on this router.
class SoftRoutes {
 public:
  virtual ~SoftRoutes() = default;
  // The router serving `vip` in `tenant`: nullptr for this one, or the
  // peer; an error when no router serves it. Control thread.
  virtual Result<soft::Peer*> locate(std::string_view tenant, uint32_t vip) = 0;
  // The other routers serving addresses of `tenant`: where its multicast
  // datagrams go. Control thread.
  virtual std::vector<soft::Peer*> peers_of(std::string_view tenant) = 0;
};

class SoftFabric final : public core::QueueFabric {
 public:
  explicit SoftFabric(const FabricConfig& config);
  std::string_view name() const override { return "soft"; }
  ibv_port_attr port_attr() const override;
  Result<std::unique_ptr<FabricPd>> alloc_pd(const Owner& owner) override;
  Result<std::unique_ptr<FabricMw>> alloc_mw(FabricPd& pd, uint32_t type) override;
  Status attach_mcast(FabricQp& qp, const ibv_gid& mgid, bool attach) override;
  Status modify_qp(FabricQp& qp, const ibv_qp_attr& attr, int mask) override;
  Result<std::unique_ptr<FabricCluster>> join_cluster(boost::asio::io_context& io, Directory& directory,
                                                      const std::string& listen, const LinkSecurity& security) override;

  // Multi-host: set before clients connect (by Peers, or a test's routes).
  void set_routes(SoftRoutes* routes) { routes_ = routes; }
  // Poller `i`'s engine, and the one serving `tenant`.
  soft::Engine& engine(size_t i = 0) { return *shards_[i].engine; }
  soft::Engine& engine_for(std::string_view tenant) { return static_cast<soft::Engine&>(core_for(tenant)); }

 protected:
  size_t core_count() const override { return shards_.size(); }
  core::QueueCore& core_at(size_t i) override { return *shards_[i].engine; }
  Result<std::unique_ptr<FabricMr>> make_mr(const core::MrRequest& r) override;
  Result<std::unique_ptr<FabricQp>> make_qp(const core::QpRequest& r, shm::Mapping rings) override;
  Result<std::unique_ptr<FabricSrq>> make_srq(const core::SrqRequest& r, shm::Mapping ring) override;
  Result<std::unique_ptr<FabricAh>> make_ah(const core::AhRequest& r) override;

 private:
  // One poller's engine and the numbers it hands out: QP numbers and XRC
  // SRQ numbers (24 bits each) of shard i of n are those congruent to i
  // modulo n, so that they are unique on the router and each engine checks
  // only its own registries. Keys are the router's (next_key).
  struct Shard {
    Shard(size_t i, size_t n, const FabricConfig& config);
    std::unique_ptr<soft::Engine> engine;
    uint32_t qpn_counter;      // QPNs 0 and 1 are special in InfiniBand
    uint32_t srq_num_counter;  // XRC SRQ numbers, never 0
  };
  Shard& shard_of(const core::QueueCore& core);
  template <typename InUse>
  Result<uint32_t> next_free_number(Shard& shard, uint32_t& counter, uint32_t first, InUse in_use);
  Result<uint32_t> next_qpn(Shard& shard);
  Result<uint32_t> next_srq_num(Shard& shard);
  Result<uint32_t> next_key();

  std::vector<Shard> shards_;
  SoftRoutes* routes_ = nullptr;
  uint32_t key_counter_ = 1;   // key indices, never 0
  bool keys_wrapped_ = false;  // key_counter_ went round: indices may be in use
  std::mt19937 rng_{std::random_device{}()};
};

}  // namespace ff::router
