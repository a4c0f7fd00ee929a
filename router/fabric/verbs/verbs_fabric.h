// VerbsFabric: the router owns a real RDMA device (an HCA, or SoftRoCE)
// through rdma-core and backs every virtual object with a shadow object on
// it. Tenants get their own device PDs, so the hardware enforces the
// boundaries between them on every key.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "router/fabric/fabric.h"
#include "router/fabric/verbs/engine.h"
#include "router/options.h"

namespace ff::router {

// The device named is missing or unusable; the message says what to do.
class FabricStartError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class VerbsFabric final : public Fabric {
 public:
  // Opens options.fabric_device (empty: the first device with an active
  // port) at options.gid_index (-1: its RoCE v2 IPv4 GID). Throws
  // FabricStartError.
  explicit VerbsFabric(const RouterOptions& options);
  ~VerbsFabric() override;
  std::string_view name() const override { return "verbs"; }
  const std::string& device_name() const { return device_->name; }
  const FabricDeviceLimits& device_limits() const override { return limits_; }
  ibv_port_attr port_attr() const override;
  FabricCounters counters() const override;

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

 private:
  std::unique_ptr<verbs::Device> device_;
  FabricDeviceLimits limits_;
  std::unique_ptr<verbs::Engine> engine_;
  uint32_t ah_counter_ = 1;
};

// Whether a device the verbs fabric can use exists (for --fabric auto);
// `why` says why not.
bool usable_verbs_device(const RouterOptions& options, std::string& why);

}  // namespace ff::router
