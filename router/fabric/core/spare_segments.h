// The ring segments of a context's destroyed QPs, kept for its next QPs:
// making a segment costs a memfd, a mapping and a page fault per page (about
// 40 µs on the reference VM, and 20 µs more to unmap it), most of what a QP
// set up through the router costs beyond its round trips. A kept segment is
// charged to the tenant's shared-memory and handle quotas like a live one
// (its bytes; its memfd and mapping), is dropped rather than kept when a
// quota is half used, and goes back to them when the context closes. Only a context's own QPs reuse them (never another
// context's, never an XRC domain's receive QPs shared between processes):
// whatever the app left in one is its own. Control thread only, as the quota.
#pragma once

#include <algorithm>
#include <optional>
#include <vector>

#include "policy/quota.h"
#include "shm/segment.h"

namespace ff::router::core {

class SpareSegments {
 public:
  static constexpr size_t kMaxKept = 4;
  static constexpr size_t kMaxBytes = 256 * 1024;  // per segment: deep queues are rare, and big

  static constexpr uint64_t kHandles = 2;  // a memfd and its mapping

  // Kept segments are charged to these; none are kept before this.
  void charge_to(policy::TenantQuota* memory, policy::TenantQuota* handles) {
    memory_ = memory;
    handles_ = handles;
  }

  // A kept segment of exactly `bytes` (rounded to pages), its charge given back.
  std::optional<shm::Mapping> take(size_t bytes) {
    bytes = shm::round_up(bytes, shm::kPageSize);
    auto it = std::find_if(kept_.begin(), kept_.end(), [&](const Kept& k) { return k.mapping.size() == bytes; });
    if (it == kept_.end()) return std::nullopt;
    shm::Mapping m = std::move(it->mapping);
    kept_.erase(it);
    return m;
  }

  // Keeps `m` if there is room and the quota allows; else it is unmapped.
  void give(shm::Mapping m) {
    if (memory_ == nullptr || handles_ == nullptr || kept_.size() >= kMaxKept || m.size() > kMaxBytes ||
        m.base() == nullptr)
      return;
    // Half of each quota stays free of kept segments: they are a cache,
    // never the reason a tenant's next object is refused.
    if (!below_half(*memory_, m.size()) || !below_half(*handles_, kHandles)) return;
    memory_->take(m.size());
    handles_->take(kHandles);
    policy::Charge bytes(memory_, m.size()), handles(handles_, kHandles);
    kept_.push_back({std::move(m), std::move(bytes), std::move(handles)});
  }

  size_t kept() const { return kept_.size(); }
  void clear() { kept_.clear(); }

 private:
  static bool below_half(const policy::TenantQuota& q, uint64_t more) {
    return q.limit() == 0 || q.used() + more <= q.limit() / 2;
  }
  struct Kept {
    shm::Mapping mapping;
    policy::Charge bytes, handles;
  };
  policy::TenantQuota* memory_ = nullptr;
  policy::TenantQuota* handles_ = nullptr;
  std::vector<Kept> kept_;
};

}  // namespace ff::router::core
