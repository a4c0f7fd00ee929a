// The poller's thread contract (router/fabric/poller.h): a command for a
// sleeping poller runs inline in the caller's thread and leaves it asleep
// unless the command left it work; one for an awake poller runs on its
// thread; the control thread and a poller that falls asleep and wakes all
// the time never hold the state at once; a poller whose core another
// thread wants sleeps instead of spinning out its budget.
#include "router/fabric/poller.h"

#include <gtest/gtest.h>

#include <sched.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

namespace ff::router {
namespace {

using namespace std::chrono_literals;

// State that only the holder of the poller's state may touch: `holders`
// counts who is inside, and any overlap is a broken contract.
struct FakeHooks : PollerHooks {
  int pending = 0;         // work a command left; the poller takes it
  uint64_t passes = 0;     // work() calls
  uint64_t taken = 0;      // pending work done by the poller thread
  std::atomic<int> holders{0};
  std::atomic<bool> overlap{false};
  std::thread::id poller_thread;
  std::chrono::nanoseconds work_takes{0};  // per unit of pending work, spent in the pass

  struct Hold {
    FakeHooks& h;
    explicit Hold(FakeHooks& hooks) : h(hooks) {
      if (h.holders.fetch_add(1) != 0) h.overlap = true;
    }
    ~Hold() { h.holders.fetch_sub(1); }
  };
  bool work(uint64_t) override {
    Hold hold(*this);
    poller_thread = std::this_thread::get_id();
    ++passes;
    if (pending == 0) return false;
    taken += static_cast<uint64_t>(pending);
    auto until = std::chrono::steady_clock::now() + pending * work_takes;
    while (std::chrono::steady_clock::now() < until) {
    }
    pending = 0;
    return true;
  }
  bool prepare_to_sleep(uint64_t, uint64_t&) override {
    Hold hold(*this);
    return pending == 0;
  }
  void cancel_sleep() override {}
};

// Waits (bounded) until the poller has gone to sleep `n` times.
bool wait_for_sleeps(const Poller& p, uint64_t n) {
  for (int i = 0; i < 20000 && p.sleeps() < n; ++i) std::this_thread::sleep_for(100us);
  return p.sleeps() >= n;
}

TEST(Poller, ACommandForASleepingPollerRunsInlineAndLeavesItAsleep) {
  FakeHooks hooks;
  Poller poller(0us, hooks);
  poller.start();
  ASSERT_TRUE(wait_for_sleeps(poller, 1));
  uint64_t sleeps = poller.sleeps(), passes_before = 0;
  std::thread::id ran_on;
  poller.run_sync([&] {
    ran_on = std::this_thread::get_id();
    passes_before = hooks.passes;
    EXPECT_TRUE(poller.owns_state()) << "the borrower holds the state";
  });
  EXPECT_EQ(ran_on, std::this_thread::get_id()) << "run inline: no wakeup, no context switch";
  EXPECT_EQ(poller.borrows(), 1u);
  EXPECT_FALSE(poller.owns_state()) << "given back";
  std::this_thread::sleep_for(20ms);
  uint64_t passes_after = 0;
  poller.run_sync([&] { passes_after = hooks.passes; });
  EXPECT_EQ(passes_after, passes_before) << "nothing to do: the poller was not woken";
  EXPECT_EQ(poller.sleeps(), sleeps);
  EXPECT_FALSE(hooks.overlap);
}

TEST(Poller, ACommandThatLeavesWorkWakesThePoller) {
  FakeHooks hooks;
  Poller poller(0us, hooks);
  poller.start();
  ASSERT_TRUE(wait_for_sleeps(poller, 1));
  poller.run_sync([&] { hooks.pending = 3; });
  ASSERT_EQ(poller.borrows(), 1u);
  // The poller must wake and take the work by itself.
  uint64_t taken = 0;
  std::thread::id worked_on;  // read under the borrow: the poller writes it on every pass
  for (int i = 0; i < 20000 && taken == 0; ++i) {
    std::this_thread::sleep_for(100us);
    poller.run_sync([&] {
      taken = hooks.taken;
      worked_on = hooks.poller_thread;
    });
  }
  EXPECT_EQ(taken, 3u);
  EXPECT_NE(worked_on, std::this_thread::get_id());
  EXPECT_FALSE(hooks.overlap);
}

// Poller::busy_ns (ffrouter_poller_busy_seconds_total) covers the passes
// that found work, all of each, and does not move while the poller sleeps.
TEST(Poller, BusyTimeCoversThePassesThatFoundWorkAndNotTheSleeps) {
  FakeHooks hooks;
  hooks.work_takes = 2ms;
  Poller poller(0us, hooks);
  poller.start();
  ASSERT_TRUE(wait_for_sleeps(poller, 1));
  uint64_t before = poller.busy_ns(), sleeps = poller.sleeps();
  poller.run_sync([&] { hooks.pending = 5; });  // one pass of 10 ms
  ASSERT_TRUE(wait_for_sleeps(poller, sleeps + 1));
  uint64_t busy = poller.busy_ns();
  EXPECT_GE(busy - before, 10'000'000u) << "the busy pass's time";
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(poller.busy_ns(), busy) << "asleep, nothing is busy time";
}

TEST(Poller, ACommandThatThrowsGivesTheStateBack) {
  FakeHooks hooks;
  Poller poller(0us, hooks);
  poller.start();
  ASSERT_TRUE(wait_for_sleeps(poller, 1));
  EXPECT_THROW(poller.run_sync([] { throw std::runtime_error("a handler's bug"); }), std::runtime_error);
  EXPECT_EQ(poller.borrows(), 1u);
  EXPECT_FALSE(poller.owns_state());
  // The poller takes its state back and serves again.
  poller.run_sync([&] { hooks.pending = 1; });
  uint64_t taken = 0;
  for (int i = 0; i < 20000 && taken == 0; ++i) {
    std::this_thread::sleep_for(100us);
    poller.run_sync([&] { taken = hooks.taken; });
  }
  EXPECT_EQ(taken, 1u);
  EXPECT_FALSE(hooks.overlap);
}

TEST(Poller, TheControlThreadAndAPollerWakingAndSleepingNeverHoldTheStateTogether) {
  FakeHooks hooks;
  Poller poller(50us, hooks);
  poller.start();
  constexpr int kPerThread = 9000;
  std::atomic<int> done{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 1; ++t)  // one control thread (poller.h): the command queue has one producer
    callers.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        poller.run_sync([&] {
          FakeHooks::Hold hold(hooks);
          if (i % 7 == 0) hooks.pending += 1;  // keeps the poller busy now and then
        });
        if (i % 500 == 0) std::this_thread::sleep_for(200us);  // and lets it fall asleep
      }
      done.fetch_add(1);
    });
  for (auto& c : callers) c.join();
  uint64_t taken = 0;
  int pending = -1;
  for (int i = 0; i < 20000 && pending != 0; ++i) {
    poller.run_sync([&] { pending = hooks.pending; taken = hooks.taken; });
    if (pending != 0) std::this_thread::sleep_for(100us);
  }
  EXPECT_EQ(done.load(), 1);
  EXPECT_GT(poller.borrows(), 0u) << "some commands found the poller asleep";
  EXPECT_EQ(pending, 0);
  EXPECT_EQ(taken, uint64_t{(kPerThread + 6) / 7}) << "every piece of work was taken exactly once";
  EXPECT_FALSE(hooks.overlap) << "two holders of the poller's state at once";
}

// Two spinners on one core: the poller's spinning would only delay the
// thread that produces its work, so it sleeps long before its budget (an
// hour here) runs out.
TEST(Poller, APollerSharingItsCoreWithASpinnerSleepsBeforeItsSpinBudget) {
  FakeHooks hooks;
  Poller poller(std::chrono::hours(1), hooks, PollerPlacement{"ffr-test", 0, -1});
  std::atomic<bool> stop{false};
  std::thread spinner([&] {
    cpu_set_t zero;
    CPU_ZERO(&zero);
    CPU_SET(0, &zero);
    ASSERT_EQ(::pthread_setaffinity_np(::pthread_self(), sizeof zero, &zero), 0);
    while (!stop.load(std::memory_order_relaxed)) {
    }
  });
  poller.start();
  bool slept = wait_for_sleeps(poller, 1);
  stop = true;
  spinner.join();
  EXPECT_TRUE(slept) << "the poller kept spinning on a core another thread wanted";
}

}  // namespace
}  // namespace ff::router
