// Per-tenant QoS, pure logic: rate caps (token buckets) and weighted fair
// sharing (deficit round robin). No I/O, no threads, no clock of its own:
// callers pass the time in nanoseconds (the poller's clock; tests a fake
// one). Enforced by the poller (docs/ARCHITECTURE.md, QoS); a WQE over its
// budget waits in its ring, never dropped, never an error.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

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
  // Takes `n` now, into debt if need be (a reservation: each taker gets its
  // own turn, in order); returns when the taker may go: now_ns while the
  // bucket is not in debt, else when the debt is paid.
  uint64_t reserve(double n, uint64_t now_ns) {
    if (!capped()) return now_ns;
    refill(now_ns);
    tokens_ -= n;
    if (tokens_ >= 0) return now_ns;
    return now_ns + static_cast<uint64_t>(std::min(-tokens_ / rate_ * 1e9, 86400e9));
  }
  // Returns what a take took for work that then did not go.
  void give_back(double n) {
    if (capped()) tokens_ = std::min(burst_, tokens_ + n);
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

// A tenant's cap on its control requests is a TokenBucket of requests:
// each reserves one token (TokenBucket::reserve); one that finds the bucket
// empty waits for its turn (its session reads nothing meanwhile). The burst
// is a tenth of a second's worth, at least kControlBurst requests: a
// program's start-up (perftest asks for about a dozen things) goes at once,
// a storm at the rate.
inline constexpr double kControlBurst = 16;
inline double control_burst(double per_s) { return std::max(kControlBurst, per_s / 10); }

// Weighted fair sharing of the poller between flows (tenants) by deficit
// round robin, one account per flow. The scheduler numbers its rounds (the
// poller: its passes); a flow's first use in a round earns quantum × weight
// of credit, and its work is served while the credit covers its cost. A
// flow still waiting at the end of a round (held back by its credit, or by
// the scheduler's limit on one turn: still_waiting()) keeps up to one
// round's worth into the next; one that was not (it had no work, or waited
// for another reason, e.g. its cap) starts from zero: an idle tenant saves
// nothing, and credit never exceeds two rounds' worth. Over a busy period
// each flow's share is its weight over the busy flows' weights, within one
// quantum × weight; work costing up to two quanta × weight is served (the
// scheduler cuts larger work into pieces, or charges it at most that).
class DrrAccount {
 public:
  explicit DrrAccount(uint32_t weight = 1) { set_weight(weight); }

  void set_weight(uint32_t weight) { weight_ = std::max<uint32_t>(weight, 1); }
  uint32_t weight() const { return weight_; }
  uint64_t credit() const { return credit_; }

  void enter_round(uint64_t round, uint64_t quantum) {
    if (round == round_) return;
    uint64_t share = quantum * weight_;
    credit_ = held_back_ && round == round_ + 1 ? std::min(credit_, share) : 0;
    round_ = round;
    held_back_ = false;
    credit_ += share;
  }
  // The flow's turn ended with work left for another reason than its
  // credit: what is left of the credit carries over, as for a take refused.
  void still_waiting() { held_back_ = true; }
  // Whether work costing `cost` may go in this round; takes it when so.
  bool take(uint64_t cost) {
    if (credit_ < cost) {
      held_back_ = true;
      return false;
    }
    credit_ -= cost;
    return true;
  }
  // Returns what a take took for work that then did not go.
  void refund(uint64_t cost) { credit_ += cost; }

 private:
  uint32_t weight_ = 1;
  uint64_t credit_ = 0;
  uint64_t round_ = 0;
  bool held_back_ = false;
};

// A tenant's QoS, as the config says (qos: in the tenant's entry): caps of
// 0 are none; the burst is what an idle tenant may send at once.
struct QosSpec {
  double max_gbps = 0;           // payload bits per second, in 1e9
  double max_mops = 0;           // work requests per second, in 1e6
  uint64_t burst_bytes = 256 * 1024;
  uint32_t weight = 1;           // its share of a busy poller against other tenants'
  double max_control_per_s = 0;  // control requests (creates, modifies, registrations, ...) per second
  bool operator==(const QosSpec&) const = default;
};

// The keys of a spec, as the config file (qos: {KEY: VALUE, ...}) and
// ffctl qos (KEY VALUE ...) name them, with their ranges: one table, so both
// take the same keys and refuse the same values.
struct QosKey {
  const char* name;
  double low, high;  // the range, in the key's unit
  bool whole;        // a whole number
  bool zero_is_none; // 0 is also allowed: no cap
  double (*get)(const QosSpec&);
  void (*set)(QosSpec&, double);
};
inline constexpr QosKey kQosKeys[] = {
    {"max_gbps", 0, 10000, false, true, [](const QosSpec& q) { return q.max_gbps; },
     [](QosSpec& q, double v) { q.max_gbps = v; }},
    {"max_mops", 0, 10000, false, true, [](const QosSpec& q) { return q.max_mops; },
     [](QosSpec& q, double v) { q.max_mops = v; }},
    {"burst_kib", 4, 1 << 20, false, false, [](const QosSpec& q) { return static_cast<double>(q.burst_bytes) / 1024; },
     [](QosSpec& q, double v) { q.burst_bytes = static_cast<uint64_t>(v * 1024); }},
    {"weight", 1, 1000, true, false, [](const QosSpec& q) { return static_cast<double>(q.weight); },
     [](QosSpec& q, double v) { q.weight = static_cast<uint32_t>(v); }},
    // At least one a second: a request never waits longer than the
    // tenant's other waiting requests plus a second.
    {"max_control_per_s", 1, 1e6, false, true, [](const QosSpec& q) { return q.max_control_per_s; },
     [](QosSpec& q, double v) { q.max_control_per_s = v; }},
};

inline const QosKey* find_qos_key(std::string_view name) {
  for (const QosKey& k : kQosKeys)
    if (name == k.name) return &k;
  return nullptr;
}

// "max_gbps, max_mops, ...", for errors that list the keys.
inline std::string qos_key_names() {
  std::string out;
  for (const QosKey& k : kQosKeys) out += (out.empty() ? "" : ", ") + std::string(k.name);
  return out;
}

// Sets one key; empty when the value is in its range, else what is wrong
// (the spec is unchanged then).
inline std::string set_qos_key(QosSpec& q, const QosKey& k, double v) {
  bool none = k.zero_is_none && v == 0;
  if (!none && (!std::isfinite(v) || v < k.low || v > k.high || (k.whole && v != std::floor(v)))) {
    char range[128];
    std::snprintf(range, sizeof range, "%s%s number from %.15g to %.15g", k.zero_is_none && k.low > 0 ? "0 (no cap) or " : "",
                  k.whole ? "a whole" : "a", k.low, k.high);
    return std::string(k.name) + " must be " + range + (k.low == 0 && k.zero_is_none ? " (0: no cap)" : "");
  }
  k.set(q, v);
  return {};
}

// Empty when every key of `q` is within its range, else what is wrong.
inline std::string qos_problem(const QosSpec& q) {
  for (const QosKey& k : kQosKeys) {
    QosSpec copy = q;
    if (std::string problem = set_qos_key(copy, k, k.get(q)); !problem.empty()) return problem;
  }
  return {};
}

}  // namespace ff::policy
