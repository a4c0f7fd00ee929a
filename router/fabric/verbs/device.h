// The RDMA device the verbs fabric owns: opened once at startup, with the
// GID it sends from, a completion channel every shadow CQ reports to, and a
// sink for datagrams the router must not deliver.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <memory>
#include <string>

#include "router/fabric/fabric.h"

namespace ff::router::verbs {

struct Device {
  std::string name;
  ibv_context* ctx = nullptr;
  uint8_t port = 1;
  int gid_index = 0;
  ibv_gid gid{};  // the device's own address (RoCE: its IPv4-mapped GID)
  ibv_device_attr_ex attr{};
  ibv_port_attr port_attr{};
  uint32_t max_inline = 0;  // what an RC QP accepts (probed)
  int numa_node = -1;       // the NUMA node it is attached to (-1: none, or unknown)
  ibv_comp_channel* channel = nullptr;  // every shadow CQ reports here
  // Where UD datagrams the router must not deliver go (to a QP of another
  // tenant): a UD QP that never posts a receive, so the device drops them
  // and the sender completes as on the wire.
  ibv_pd* sink_pd = nullptr;
  ibv_cq* sink_cq = nullptr;
  ibv_qp* sink_qp = nullptr;
  ~Device();
};

// The deepest power-of-two queue, at most `depth`, the device makes for
// shadow QPs of every type (RC, UC, UD) at `sge` SGEs and `inline_size`
// inline bytes, with CQs as deep (1 when it makes none).
uint32_t probe_qp_depth(Device& d, uint32_t depth, uint32_t sge, uint32_t inline_size);
// The same for shadow SRQs at `sge` SGEs.
uint32_t probe_srq_depth(Device& d, uint32_t depth, uint32_t sge);

// Opens config.device (empty: the first device with an active port 1) at
// config.gid_index (-1: its RoCE v2 IPv4 GID); null with `why` (what to do)
// when there is none to use.
std::unique_ptr<Device> open_device(const FabricConfig& config, std::string& why);

}  // namespace ff::router::verbs
