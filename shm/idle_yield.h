// Spinning on work that another thread produces, on a core that may or may
// not be shared with it (the app and the router's poller on two cores, or
// on one). On a shared core the spinner must yield now and then, or the
// producer never runs; on a core of its own a yield is a system call for
// nothing (1.5 µs on the 2-core VM of LIMITS.md), during which whatever
// arrives waits: yielding every 32 empty polls made a 2-byte WRITE's round
// trip cost 2 µs there.
//
// So the spin between yields adapts: a yield that comes back at once (no
// other thread wanted the CPU: the core is ours) doubles the spin before
// the next one, up to `max_spins`; a yield that let another thread run
// (it came back late) starts over from `min_spins`. On a dedicated core
// yields become rare; on a shared one they stay as frequent as before.
#pragma once

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cstdint>

namespace ff::shm {

class IdleYield {
 public:
  // A yield longer than this let another thread run (an empty one costs
  // 0.1-1.5 µs, a system call; another thread's turn is longer).
  static constexpr uint64_t kOtherRanNs = 10'000;

  // min_spins 0: never yield.
  explicit IdleYield(uint32_t min_spins = 32, uint32_t max_spins = 1u << 14)
      : min_(min_spins), max_(std::max(min_spins, max_spins)), limit_(min_spins) {}

  // One empty poll. True when it yielded (the caller may do its rarer
  // checks then).
  bool idle() {
    if (min_ == 0 || ++spins_ < limit_) return false;
    spins_ = 0;
    uint64_t before = now_ns();
    sched_yield();
    bool alone = now_ns() - before < kOtherRanNs;
    limit_ = alone ? std::min(limit_ * 2, max_) : min_;
    return true;
  }
  // Work arrived: the spin toward the next yield starts over (its length stays).
  void busy() { spins_ = 0; }

  uint32_t spins_between_yields() const { return limit_; }

 private:
  static uint64_t now_ns() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return static_cast<uint64_t>(t.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(t.tv_nsec);
  }

  uint32_t min_, max_, limit_;
  uint32_t spins_ = 0;
};

}  // namespace ff::shm
