// Per-tenant QoS, pure logic: rate caps (token buckets) and weighted fair
// sharing (deficit round robin). No I/O, no threads, no clock of its own:
// callers pass the time in nanoseconds (the poller's clock; tests a fake
// one). Enforced by the poller (docs/ARCHITECTURE.md, QoS); a WQE over its
// budget waits in its ring, never dropped, never an error.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ff::policy {

// A rate cap: `rate` units per second, at most `burst` saved up while idle.
// A take may overdraw: a message larger than the burst still goes once the
// bucket is not in debt, and what follows waits until the debt is paid, so
// the long-run rate is exact and no message size is starved.
class TokenBucket {
 public:
  TokenBucket() = default;  // no cap
  TokenBucket(double rate_per_s, double burst, uint64_t now_ns) { reconfigure(rate_per_s, burst, now_ns); }

  bool capped() const { return rate_ > 0; }
  double rate() const { return rate_; }
  double burst() const { return burst_; }

  // Whether `n` may go now; takes them when so.
  bool try_take(double n, uint64_t now_ns) {
    if (!capped()) return true;
    refill(now_ns);
    if (tokens_ <= 0) return false;
    tokens_ -= n;
    return true;
  }
  // When a take may go: now_ns when it may already, else when the debt is paid.
  uint64_t ready_at(uint64_t now_ns) {
    if (!capped()) return now_ns;
    refill(now_ns);
    if (tokens_ > 0) return now_ns;
    // Strictly past the point where the tokens reach zero (a debt that
    // would take more than a day is a day: the caller asks again).
    double wait = std::min(-tokens_ / rate_ * 1e9, 86400e9);
    return now_ns + static_cast<uint64_t>(wait) + 1;
  }
  // A live change (a reloaded config, ffctl qos): what was earned at the
  // old rate is kept, up to the new burst; a debt stays a debt.
  void reconfigure(double rate_per_s, double burst, uint64_t now_ns) {
    if (capped()) refill(now_ns);
    bool was_capped = capped();
    rate_ = rate_per_s > 0 ? rate_per_s : 0;
    burst_ = std::max(burst, 1.0);
    tokens_ = was_capped ? std::min(tokens_, burst_) : burst_;
    last_ns_ = now_ns;
  }

 private:
  void refill(uint64_t now_ns) {
    if (now_ns > last_ns_) tokens_ = std::min(burst_, tokens_ + rate_ * static_cast<double>(now_ns - last_ns_) / 1e9);
    last_ns_ = std::max(last_ns_, now_ns);
  }

  double rate_ = 0;  // 0: no cap
  double burst_ = 0;
  double tokens_ = 0;
  uint64_t last_ns_ = 0;
};

// Weighted fair sharing of one resource (the poller's bytes) between flows
// (tenants) by deficit round robin: each round, every flow with work earns
// quantum × weight of credit and is served while its credit covers the
// cost of its next piece of work; a flow with no work loses its credit, so
// an idle tenant's share goes to the others and none is saved for later.
// Over a busy period each flow's share is its weight over the weights of
// the busy flows, within one quantum × weight.
class FairShare {
 public:
  explicit FairShare(uint64_t quantum) : quantum_(std::max<uint64_t>(quantum, 1)) {}

  // A new flow (weight at least 1); returns its id.
  size_t add(uint32_t weight) {
    for (size_t i = 0; i < flows_.size(); ++i)
      if (!flows_[i].live) {
        flows_[i] = Flow{std::max<uint32_t>(weight, 1), 0, true};
        return i;
      }
    flows_.push_back(Flow{std::max<uint32_t>(weight, 1), 0, true});
    return flows_.size() - 1;
  }
  void remove(size_t flow) { flows_.at(flow) = Flow{}; }
  void set_weight(size_t flow, uint32_t weight) { flows_.at(flow).weight = std::max<uint32_t>(weight, 1); }
  uint32_t weight(size_t flow) const { return flows_.at(flow).weight; }

  // The scheduler's loop, per pass: begin_round(); then, for each flow in
  // turn, while it has work and take(flow, cost) allows, serve it; a flow
  // found with no work is idle(flow). A round ends when no flow could go.
  void begin_round() {
    for (auto& f : flows_)
      if (f.live) f.credit += quantum_ * f.weight;
  }
  // Whether `flow` may do work costing `cost` now; takes it when so. A cost
  // above the flow's credit waits for later rounds (credit accumulates
  // while the flow has work), so large work is not starved.
  bool take(size_t flow, uint64_t cost) {
    Flow& f = flows_.at(flow);
    if (f.credit < cost) return false;
    f.credit -= cost;
    return true;
  }
  void idle(size_t flow) { flows_.at(flow).credit = 0; }
  uint64_t credit(size_t flow) const { return flows_.at(flow).credit; }

 private:
  struct Flow {
    uint32_t weight = 1;
    uint64_t credit = 0;
    bool live = false;
  };
  uint64_t quantum_;
  std::vector<Flow> flows_;
};

}  // namespace ff::policy
