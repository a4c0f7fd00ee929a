// Per-tenant resource accounting. Pure logic: no I/O, no threads (the
// router's control thread owns every TenantQuota).
#pragma once

#include <cstdint>
#include <utility>

namespace ff::policy {

// Bytes of shared memory a tenant holds in the router (registered
// segments and every ring the router allocates for it), and how often a
// limit refused it something.
class TenantQuota {
 public:
  explicit TenantQuota(uint64_t limit_bytes = 0) : limit_(limit_bytes) {}

  // Takes `bytes` if the total stays within the limit (0: no limit).
  [[nodiscard]] bool try_take(uint64_t bytes) {
    if (limit_ != 0 && (bytes > limit_ || used_ > limit_ - bytes)) {
      ++refusals_;
      return false;
    }
    used_ += bytes;
    return true;
  }
  void give_back(uint64_t bytes) { used_ -= bytes < used_ ? bytes : used_; }
  void count_refusal() { ++refusals_; }

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
