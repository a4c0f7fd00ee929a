// VerbsFabric: the router owns a real RDMA device (an HCA, or SoftRoCE)
// through rdma-core and backs every virtual object with a shadow object on
// it. Tenants get their own device PDs, so the hardware enforces the
// boundaries between them on every key.
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

#include "router/fabric/core/queue_fabric.h"
#include "router/fabric/verbs/engine.h"

namespace ff::router {

class VerbsFabric final : public core::QueueFabric {
 public:
  // Opens config.device (empty: the first device with an active port) at
  // config.gid_index (-1: its RoCE v2 IPv4 GID). Throws FabricStartError.
  explicit VerbsFabric(const FabricConfig& config);
  ~VerbsFabric() override;
  std::string_view name() const override { return "verbs"; }
  const std::string& device_name() const { return device_->name; }
  ibv_port_attr port_attr() const override;
  Result<std::unique_ptr<FabricPd>> alloc_pd(const Owner& owner) override;
  Status modify_qp(FabricQp& qp, const ibv_qp_attr& attr, int mask) override;

 protected:
  core::QueueCore& core() override { return *engine_; }
  Result<std::unique_ptr<FabricMr>> make_mr(const core::MrRequest& r) override;
  Result<std::unique_ptr<FabricQp>> make_qp(const core::QpRequest& r, shm::Mapping rings) override;
  Result<std::unique_ptr<FabricSrq>> make_srq(const core::SrqRequest& r, shm::Mapping ring) override;
  Result<std::unique_ptr<FabricAh>> make_ah(const core::AhRequest& r) override;

 private:
  // The device needs one virtual range: an MR over several segments maps
  // them side by side.
  Status compose(verbs::Mr& mr, std::span<const SegmentPiece> pieces, uint64_t addr, uint64_t length);

  std::unique_ptr<verbs::Device> device_;
  std::unique_ptr<verbs::Engine> engine_;
};

// Whether a device the verbs fabric can use exists (for --fabric auto);
// `why` says why not.
bool usable_verbs_device(const FabricConfig& config, std::string& why);

}  // namespace ff::router
