// A tenant's share of the poller: its caps (token buckets over payload bytes
// and work requests) and its account in the fair share between tenants
// (policy/qos.h). Every requester asks admit() before it moves a piece of
// work (QueueCore::admit); a refusal leaves the work in its ring: never
// dropped, never an error, never a sleep of the poller.
//
// Poller state: the poller admits; the control thread changes the spec only
// inside run_sync (QueueCore::configure_tenant) and reads the counters at
// any time.
#pragma once

#include <algorithm>
#include <cstdint>

#include "policy/qos.h"
#include "router/fabric/core/traffic.h"

namespace ff::router::core {

class TenantShare {
 public:
  // A work request costs the poller about as much as copying this many
  // bytes (descriptor copy, checks, completion): small-op storms are
  // charged by the work they cause, not only by their bytes.
  static constexpr uint64_t kWorkRequestCost = 2048;
  // What a weight of 1 earns per poller pass: two soft-fabric pieces.
  static constexpr uint64_t kQuantum = 512 * 1024;

  enum class Admission {
    kGo,
    kCapped,    // over its caps: the QP waits until `ready_at`
    kHeldBack,  // used its share of this pass: the QP goes on next pass
  };

  void configure(const policy::QosSpec& spec, uint64_t now) {
    spec_ = spec;
    bytes_.reconfigure(spec.max_gbps * 1e9 / 8, static_cast<double>(spec.burst_bytes), now);
    double ops_rate = spec.max_mops * 1e6;
    ops_.reconfigure(ops_rate, std::max(32.0, ops_rate / 1000), now);  // a burst: a millisecond's worth
    fair_.set_weight(spec.weight);
  }
  const policy::QosSpec& spec() const { return spec_; }

  // Whether `bytes` of work may move now (`starts`: the first piece of a
  // work request). The caps first, then the fair share of pass `round`.
  Admission admit(uint64_t bytes, bool starts, uint64_t round, uint64_t now, uint64_t& ready_at) {
    if (bytes_.capped() || ops_.capped()) {
      ready_at = std::max(bytes_.ready_at(now), starts ? ops_.ready_at(now) : now);
      if (ready_at > now) {
        uint64_t from = std::max(now, throttled_until_);
        if (ready_at > from) {
          throttled_ns_.add(ready_at - from);
          throttled_until_ = ready_at;
        }
        return Admission::kCapped;
      }
    }
    fair_.enter_round(round, kQuantum);
    if (!fair_.take(bytes + (starts ? kWorkRequestCost : 0))) return Admission::kHeldBack;
    bytes_.try_take(static_cast<double>(bytes), now);
    if (starts) ops_.try_take(1, now);
    return Admission::kGo;
  }

  // Time its work waited on its caps (the union over its QPs), for ffctl
  // and /metrics.
  uint64_t throttled_ns() const { return throttled_ns_.get(); }

 private:
  policy::QosSpec spec_;
  policy::TokenBucket bytes_;
  policy::TokenBucket ops_;
  policy::DrrAccount fair_;
  uint64_t throttled_until_ = 0;
  SingleWriterCounter throttled_ns_;
};

// What the router keeps per tenant on the data path: made on its first QP
// or its first QoS spec, kept for good (its counters never go back).
struct TenantBlock {
  LiveTraffic traffic;
  TenantShare share;
};

}  // namespace ff::router::core
