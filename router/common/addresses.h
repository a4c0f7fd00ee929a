// Virtual addresses every part of the router reads the same way.
#pragma once

#include <cstdint>

namespace ff::router {

// An IPv4 multicast address (224.0.0.0/4, host order): a UD multicast group
// of the RoCE v2 IPv4 port (its GID ::ffff:a.b.c.d, as rdma_cm makes it).
inline bool is_multicast_ipv4(uint32_t ip) { return (ip >> 28) == 0xe; }

}  // namespace ff::router
