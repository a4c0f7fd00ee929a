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
  // What one QP may move in one pass, whatever its weight: while it moves,
  // every other QP, link and control request waits (4 MiB: well under a
  // millisecond of copying). Tenants' weights hold exactly up to 8:1 between
  // tenants of one busy QP each; tenants with more QPs have more turns.
  static constexpr uint64_t kMaxPassBytes = 4 << 20;

  enum class Admission {
    kGo,
    kCapped,    // over its caps: the QP waits until `ready_at`
    kHeldBack,  // used its share of this pass: the QP goes on next pass
  };

  void configure(const policy::QosSpec& spec, uint64_t now) {
    bytes_.reconfigure(spec.max_gbps * 1e9 / 8, static_cast<double>(spec.burst_bytes), now);
    double ops_rate = spec.max_mops * 1e6;
    ops_.reconfigure(ops_rate, std::max(32.0, ops_rate / 1000), now);  // a burst: a millisecond's worth
    fair_.set_weight(spec.weight);
  }

  // Whether `bytes` of work may move now (`starts`: the first piece of a
  // work request). The caps first, then the fair share of pass `round`.
  // One of its QPs asks for the first time in pass `round`.
  void qp_busy(uint64_t round) {
    if (round != busy_round_) {
      busy_before_ = busy_round_ + 1 == round ? busy_now_ : 0;
      busy_now_ = 0;
      busy_round_ = round;
    }
    ++busy_now_;
  }

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
    if (!fair_.take(fair_cost(bytes, starts))) return Admission::kHeldBack;
    bytes_.try_take(static_cast<double>(bytes), now);
    if (starts) ops_.try_take(1, now);
    return Admission::kGo;
  }

  // Work admitted that then did not go (a retry will ask again). `tried`:
  // the router did try it (an RNR or not-ready answer): the caps get it all
  // back, the fair share keeps one work request's cost, so that a tenant's
  // retries pay for the poller's time like any work.
  void refund(uint64_t bytes, bool starts, bool tried) {
    bytes_.give_back(static_cast<double>(bytes));
    if (starts) ops_.give_back(1);
    uint64_t cost = fair_cost(bytes, starts);
    fair_.refund(tried ? cost - std::min(cost, kWorkRequestCost) : cost);
  }
  // One of its QPs ended its turn in a pass (pass_budget) with work left:
  // the tenant keeps its credit.
  void turn_ended() { fair_.still_waiting(); }
  // What one of its QPs may move in one pass (soft fabric: local pieces,
  // link chunks; a turn always moves one): an equal part of the tenant's
  // share among its QPs that had work in the pass before, so that each has
  // its turn whatever their order.
  uint64_t pass_budget() const {
    return std::min<uint64_t>(kQuantum * fair_.weight() / std::max<uint32_t>(busy_before_, 1), kMaxPassBytes);
  }

  // Time its work waited on its caps (the union over its QPs), for ffctl
  // and /metrics.
  uint64_t throttled_ns() const { return throttled_ns_.get(); }

 private:
  // What work costs in the fair share: its bytes, at most one quantum (the
  // verbs fabric hands a work request to the device whole: a large one is
  // charged fully by the caps, but weighs no more than a quantum in the
  // share, which the account can always pay within two passes).
  static uint64_t fair_cost(uint64_t bytes, bool starts) {
    return std::min(bytes, kQuantum) + (starts ? kWorkRequestCost : 0);
  }

  policy::TokenBucket bytes_;
  policy::TokenBucket ops_;
  policy::DrrAccount fair_;
  uint64_t throttled_until_ = 0;
  uint64_t busy_round_ = 0;  // its QPs that asked in pass busy_round_, and in the one before
  uint32_t busy_now_ = 0;
  uint32_t busy_before_ = 0;
  SingleWriterCounter throttled_ns_;
};

// What the router keeps per tenant on the data path: made on its first QP
// or its first QoS spec, kept for good (its counters never go back).
struct TenantBlock {
  LiveTraffic traffic;
  TenantShare share;
};

}  // namespace ff::router::core
