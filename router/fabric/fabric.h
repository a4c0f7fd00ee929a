// The router talks to "the network" only through Fabric. Implementations:
// SoftFabric (the router executes the transport itself; no RDMA hardware) and,
// later, VerbsFabric (a real HCA through rdma-core).
//
// Thread contract: the control plane calls everything here from the Asio
// thread. Objects returned are owned by the session that asked for them and
// release their fabric resources in their destructors.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <memory>
#include <string_view>

namespace ff::router {

// A protection domain on the fabric.
class FabricPd {
 public:
  virtual ~FabricPd() = default;
};

struct FabricDeviceLimits {
  ibv_device_attr_ex attr{};  // node_guid/sys_image_guid are filled per client
  uint32_t max_inline_data = 0;
};

class Fabric {
 public:
  virtual ~Fabric() = default;
  virtual std::string_view name() const = 0;
  // What the virtual device reports (limits, capabilities, ids).
  virtual const FabricDeviceLimits& device_limits() const = 0;
  // The single virtual port's attributes (port 1).
  virtual ibv_port_attr port_attr() const = 0;
  // nullptr with errno set when the fabric is out of PDs.
  virtual std::unique_ptr<FabricPd> alloc_pd() = 0;
};

}  // namespace ff::router
