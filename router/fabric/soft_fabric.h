// SoftFabric: the router itself implements the RDMA transport between QPs
// whose memory it has mapped. No hardware needed.
#pragma once

#include "router/fabric/fabric.h"
#include "router/options.h"

namespace ff::router {

class SoftFabric final : public Fabric {
 public:
  explicit SoftFabric(const RouterOptions& options);
  std::string_view name() const override { return "soft"; }
  const FabricDeviceLimits& device_limits() const override { return limits_; }
  ibv_port_attr port_attr() const override;
  std::unique_ptr<FabricPd> alloc_pd() override;

  uint32_t live_pds() const { return live_pds_; }

 private:
  friend class SoftPd;
  FabricDeviceLimits limits_;
  uint32_t live_pds_ = 0;
};

}  // namespace ff::router
