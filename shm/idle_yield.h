// Spinning on work that another thread produces, on a core that may or may
// not be shared with it (the app and the router's poller on two cores, or
// on one). On a shared core the spinner must yield now and then, or the
// producer never runs; on a core of its own a yield is a system call for
// nothing (1.5 µs on the 2-core VM of LIMITS.md), during which whatever
// arrives waits: yielding every 32 empty polls made a 2-byte WRITE's round
// trip cost 2 µs there.
//
// So the spin between yields adapts: a yield after which no other thread
// had run on this core since the last one (the thread's involuntary
// context switches did not move: a yield that hands the CPU over counts as
// one, as does a preemption) doubles the spin before the next one, up to
// `max_spins`; otherwise the spin starts over at `min_spins`. On a core of
// its own the spinner rarely yields; on a shared one as often as before,
// whatever the other thread does with the CPU it gets.
#pragma once

#include <sched.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdint>

namespace ff::shm {

class IdleYield {
 public:
  // min_spins 0: never yield.
  constexpr explicit IdleYield(uint32_t min_spins = 32, uint32_t max_spins = 1u << 14)
      : min_(min_spins), max_(std::max(min_spins, max_spins)), limit_(min_spins) {}

  // One empty poll. True when it yielded (the caller may do its rarer
  // checks then).
  bool idle() {
    if (min_ == 0 || ++spins_ < limit_) return false;
    spins_ = 0;
    sched_yield();
    long switches = involuntary_switches();
    bool alone = switches == last_switches_;
    last_switches_ = switches;
    shared_ = !alone;
    limit_ = alone ? std::min(limit_ * 2, max_) : min_;
    return true;
  }
  // The last yield found another thread running on this core since the one
  // before: spinning here takes the CPU from someone.
  bool core_shared() const { return shared_; }
  // Work arrived: the spin toward the next yield starts over (its length stays).
  void busy() { spins_ = 0; }

 private:
  static long involuntary_switches() {
    rusage u{};
    return ::getrusage(RUSAGE_THREAD, &u) == 0 ? u.ru_nivcsw : -1;
  }

  uint32_t min_, max_, limit_;
  uint32_t spins_ = 0;
  long last_switches_ = -1;
  bool shared_ = false;
};

}  // namespace ff::shm
