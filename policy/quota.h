// Per-tenant resource accounting. Pure logic: no I/O, no threads (the
// router's control thread owns every TenantQuota).
#pragma once

#include <cstdint>
#include <utility>

namespace ff::policy {

// One resource a tenant holds in the router, against its limit, and how
// often the limit refused it something. The router keeps two per tenant:
// bytes of shared memory (registered segments and every ring the router
// allocates for it) and handles (file descriptors plus memory mappings,
// which run out for the whole process: RLIMIT_NOFILE, vm.max_map_count).
class TenantQuota {
 public:
  explicit TenantQuota(uint64_t limit_bytes = 0) : limit_(limit_bytes) {}

  // Whether `bytes` more fit within the limit (0: no limit); a refusal is
  // counted when not.
  [[nodiscard]] bool fits(uint64_t bytes) {
    if (limit_ != 0 && (bytes > limit_ || used_ > limit_ - bytes)) {
      ++refusals_;
      return false;
    }
    return true;
  }
  // Takes `bytes` if they fit.
  [[nodiscard]] bool try_take(uint64_t bytes) {
    if (!fits(bytes)) return false;
    used_ += bytes;
    return true;
  }
  // Takes `bytes` that fits() allowed earlier (between the check and the
  // object being made, nothing else ran).
  void take(uint64_t bytes) { used_ += bytes; }
  void give_back(uint64_t bytes) { used_ -= bytes < used_ ? bytes : used_; }
  void count_refusal() { ++refusals_; }

  // A new limit applies to what is taken from now on; what is held stays.
  void set_limit(uint64_t limit) { limit_ = limit; }

  uint64_t used() const { return used_; }
  uint64_t limit() const { return limit_; }
  uint64_t refusals() const { return refusals_; }

 private:
  uint64_t limit_;
  uint64_t used_ = 0;
  uint64_t refusals_ = 0;
};

// What an object took from a quota; gives it back when destroyed. Move-only.
class Charge {
 public:
  Charge() = default;
  Charge(TenantQuota* q, uint64_t bytes) : quota_(q), bytes_(bytes) {}
  ~Charge() {
    if (quota_ != nullptr) quota_->give_back(bytes_);
  }
  Charge(Charge&& o) noexcept : quota_(std::exchange(o.quota_, nullptr)), bytes_(o.bytes_) {}
  Charge& operator=(Charge&& o) noexcept {
    if (this != &o) {
      if (quota_ != nullptr) quota_->give_back(bytes_);
      quota_ = std::exchange(o.quota_, nullptr);
      bytes_ = o.bytes_;
    }
    return *this;
  }
  Charge(const Charge&) = delete;
  Charge& operator=(const Charge&) = delete;

 private:
  TenantQuota* quota_ = nullptr;
  uint64_t bytes_ = 0;
};

}  // namespace ff::policy
