// Device packet pacing for shadow QPs. Where the device paces QPs itself
// (ibv_query_device_ex reports packet_pacing_caps), the router asks it to
// (ibv_modify_qp_rate_limit) as well as pacing in software: the device's
// pacing spaces packets on the wire, which the router's token buckets,
// handing whole work requests to the device, cannot.
//
// Each of a tenant's QPs is paced at the tenant's whole cap (max_gbps): the
// device paces per QP, the cap is per tenant, so the software buckets keep
// the tenant's sum and the device keeps any one QP from bursting past it.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <optional>

namespace ff::router::verbs {

// The rate (kb/s) a shadow QP of `type` should be paced at for a tenant
// capped at `max_gbps` (0: no cap): nullopt when the device cannot pace it
// (no packet pacing, or not for this QP type: leave the QP alone); 0 for
// "unpaced" (no cap, or a cap outside what the device can pace, which the
// software buckets hold alone).
inline std::optional<uint32_t> device_pacing_kbps(const ibv_packet_pacing_caps& caps, ibv_qp_type type,
                                                  double max_gbps) {
  const int bit = static_cast<int>(type);
  if (caps.qp_rate_limit_max == 0 || bit < 0 || bit >= 32 || (caps.supported_qpts & (1u << bit)) == 0)
    return std::nullopt;
  if (max_gbps <= 0) return 0u;
  double kbps = max_gbps * 1e6;
  if (kbps < caps.qp_rate_limit_min || kbps > caps.qp_rate_limit_max) return 0u;
  return static_cast<uint32_t>(kbps);
}

}  // namespace ff::router::verbs
