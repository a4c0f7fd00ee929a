// SoftFabric: the router itself implements the RDMA transport between QPs
// whose memory it has mapped. No hardware needed.
#pragma once

#include <memory>
#include <random>

#include "router/fabric/fabric.h"
#include "router/fabric/soft/engine.h"
#include "router/options.h"

namespace ff::router {

// Where a tenant's virtual IP lives once routers are joined (Peers,
// router/fabric/soft/peers.h). Without routes every address is on this router.
class SoftRoutes {
 public:
  virtual ~SoftRoutes() = default;
  // True with `peer` null: on this router; true with `peer`: on that router;
  // false: no router serves it (`why` says so). Control thread.
  virtual bool locate(std::string_view tenant, uint32_t vip, soft::Peer*& peer, std::string& why) = 0;
};

class SoftFabric final : public Fabric {
 public:
  explicit SoftFabric(const RouterOptions& options);
  std::string_view name() const override { return "soft"; }
  const FabricDeviceLimits& device_limits() const override { return limits_; }
  ibv_port_attr port_attr() const override;

  std::unique_ptr<FabricContext> open_context(FabricError& err) override;
  std::unique_ptr<FabricPd> alloc_pd(const Owner& owner, FabricError& err) override;
  std::shared_ptr<FabricSegment> map_segment(UniqueFd fd, uint64_t app_base, uint64_t length,
                                             FabricError& err) override;
  std::unique_ptr<FabricMr> reg_mr(FabricPd& pd, std::span<const std::shared_ptr<FabricSegment>> segments,
                                   uint64_t addr, uint64_t length, uint64_t iova, unsigned access,
                                   FabricError& err) override;
  std::unique_ptr<FabricChannel> create_channel(FabricError& err) override;
  std::unique_ptr<FabricCq> create_cq(FabricContext& ctx, int cqe, FabricChannel* channel,
                                      uint32_t tag, FabricError& err) override;
  std::unique_ptr<FabricQp> create_qp(FabricContext& ctx, FabricPd& pd, FabricCq& send_cq,
                                      FabricCq& recv_cq, FabricSrq* srq, const QpInit& init,
                                      uint32_t tag, FabricError& err) override;
  std::unique_ptr<FabricSrq> create_srq(FabricContext& ctx, FabricPd& pd, uint32_t max_wr,
                                        uint32_t max_sge, uint32_t srq_limit, uint32_t tag,
                                        FabricError& err) override;
  int modify_srq(FabricSrq& srq, uint32_t mask, uint32_t srq_limit, std::string& why) override;
  uint32_t query_srq_limit(FabricSrq& srq) override;
  std::unique_ptr<FabricAh> create_ah(FabricPd& pd, const ibv_ah_attr& attr, FabricError& err) override;
  int modify_qp(FabricQp& qp, const ibv_qp_attr& attr, int mask, std::string& why) override;
  void query_qp(FabricQp& qp, ibv_qp_attr& attr) override;

  FabricCounters counters() const override;

  // Multi-host: set once, before clients connect.
  void set_routes(SoftRoutes* routes) { routes_ = routes; }
  soft::Engine& engine() { return engine_; }

 private:
  uint32_t next_qpn();
  uint32_t next_key();

  FabricDeviceLimits limits_;
  soft::Engine engine_;
  SoftRoutes* routes_ = nullptr;
  uint32_t qpn_counter_ = 0x100;  // QPNs 0 and 1 are special in InfiniBand
  uint32_t key_counter_ = 1;
  uint32_t ah_counter_ = 1;
  std::mt19937 rng_{std::random_device{}()};
};

}  // namespace ff::router
