// What the fabric fuzzers set up alike: a fabric call that must succeed,
// and 64 KiB of memory at 0x100000 registered with every right.
#pragma once

#include <unistd.h>

#include <memory>

#include "router/fabric/fabric.h"
#include "shm/segment.h"

namespace fuzz_setup {

// The value of a fabric call that must succeed here.
template <typename R>
auto take(R r) {
  if (!r) __builtin_trap();
  return std::move(*r);
}

inline constexpr uint64_t kMemoryBase = 0x100000;

// Maps `memory` at kMemoryBase and registers all of it (local and remote
// write, read, atomics); `segment` keeps the mapping.
inline std::unique_ptr<ff::router::FabricMr> register_all(ff::router::Fabric& fabric, ff::router::FabricPd& pd,
                                                          const ff::shm::Mapping& memory,
                                                          std::shared_ptr<ff::router::FabricSegment>& segment) {
  segment = take(fabric.map_segment(ff::UniqueFd(::dup(memory.fd())), kMemoryBase, memory.size(), 0));
  std::shared_ptr<ff::router::FabricSegment> segs[] = {segment};
  return take(fabric.reg_mr(pd, segs, kMemoryBase, memory.size(), kMemoryBase,
                            IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                                IBV_ACCESS_REMOTE_ATOMIC));
}

}  // namespace fuzz_setup
