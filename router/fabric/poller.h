// The fabric's data-path thread: one poller that does every fabric's work,
// spins while there is work (or was, within `spin`), then sleeps in epoll on
// the doorbells it watches.
//
// Thread contract: everything the hooks touch belongs to whoever holds the
// poller's state: the poller thread, or, while the poller sleeps, a control
// thread inside run_sync(). run_sync() borrows a sleeping poller's state and
// runs the command inline (no wakeup, no two context switches: on a machine
// with few cores that is most of a control verb's cost), re-arms the
// wakeups itself and rings the poller only when the command left it work or
// an earlier deadline. An awake poller gets the command through a lock-free
// queue and runs it between passes; the poller never takes a lock the
// control thread holds, it only waits for a borrow to end before touching
// its state again.
#pragma once

#include <atomic>
#include <boost/lockfree/queue.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <unordered_set>

#include "router/common/single_writer_counter.h"
#include "shm/doorbell.h"

struct epoll_event;

namespace ff::router {

class PollerHooks {
 public:
  virtual ~PollerHooks() = default;
  // One pass over every queue; true when it did anything.
  virtual bool work(uint64_t now_ns) = 0;
  // Arms every wakeup source the poller sleeps on and re-checks them. False
  // when work arrived meanwhile (the poller then does not sleep). `deadline`
  // (ns, steady clock) may be lowered to wake up by then.
  virtual bool prepare_to_sleep(uint64_t now_ns, uint64_t& deadline) = 0;
  // After the sleep: withdraws what prepare_to_sleep armed.
  virtual void cancel_sleep() = 0;
  // A watched fd that is not a plain eventfd became readable.
  virtual void readable(int /*fd*/) {}
};

// Where a poller's thread runs: its name (ps, top, perf), the CPU it is
// pinned to (-1: wherever the router may run) and the NUMA node its memory
// comes from (-1: the kernel's choice).
struct PollerPlacement {
  std::string name = "ffr-poller";
  int cpu = -1;
  int numa_node = -1;
};

class Poller {
 public:
  Poller(std::chrono::microseconds spin, PollerHooks& hooks, PollerPlacement placement = {});
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  // Starts the thread (once the hooks' object is complete).
  void start();
  // Stops and joins it; idempotent. Owners call it before their state goes.
  void stop();

  // Runs `fn` with the poller's state held, inline when the poller sleeps,
  // else on the poller thread, and waits for it. Control thread only (one
  // caller at a time: the command queue's single producer).
  void run_sync(const std::function<void()>& fn);

  // Poller thread (or inside run_sync). A bell (an eventfd, or the read end
  // of a pipe, nonblocking) only wakes the poller and is drained on wakeup;
  // any other fd is handed to PollerHooks::readable.
  void watch_bell(int fd);
  void watch_other(int fd);
  void unwatch(int fd);
  // What wakes the poller about a watched non-bell fd: readable (the
  // default), writable, both or neither.
  void set_interest(int fd, bool readable, bool writable);

  uint64_t sleeps() const { return sleeps_.load(std::memory_order_relaxed); }
  // Nanoseconds spent in passes that found work (commands, a WQE, a
  // frame): how loaded the poller's core is, whatever its idle spinning
  // makes top show. Counted between the clock reads the loop makes anyway.
  uint64_t busy_ns() const { return busy_ns_.get(); }
  // Commands run inline in a sleeping poller's place (for tests and ffctl).
  uint64_t borrows() const { return borrows_.load(std::memory_order_relaxed); }
  // Whether the caller may touch the poller's state: it is the poller
  // thread, or no poller thread runs (run_sync then runs inline). For
  // assertions.
  bool owns_state() const {
    std::thread::id id = running_.load(std::memory_order_acquire);
    return id == std::thread::id() || id == std::this_thread::get_id();
  }

  static uint64_t now_ns() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
  }

 private:
  struct Command {
    const std::function<void()>* fn;
    std::atomic<bool> done{false};
  };

  void loop();
  void take_place() const;  // on the thread, first
  bool drain_commands();
  bool try_borrow(const std::function<void()>& fn);
  void sleep_until_work();
  int wait_for_events(::epoll_event* events, int max, uint64_t now, uint64_t deadline);

  std::chrono::nanoseconds spin_;
  PollerHooks& hooks_;
  const PollerPlacement placement_;
  int epoll_fd_ = -1;
  shm::Doorbell command_bell_;
  boost::lockfree::queue<Command*, boost::lockfree::capacity<256>> commands_;
  std::unordered_set<int> other_fds_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sleeps_{0};
  SingleWriterCounter busy_ns_;
  std::atomic<uint64_t> borrows_{0};
  // Who holds the state while the thread runs: the poller (kAwake), nobody
  // while it sleeps in epoll (kAsleep), or a control thread (kBorrowed).
  // Taking it is acquire and giving it back release: what one holder wrote,
  // the next one reads.
  enum State : int { kAwake, kAsleep, kBorrowed };
  std::atomic<int> state_{kAwake};
  uint64_t sleep_deadline_ = UINT64_MAX;  // what the sleeping poller wakes by; read under the state
  uint64_t borrowed_during_sleep_ = 0;    // bumped by each borrow, read by the poller on reclaiming
  std::atomic<std::thread::id> running_{};  // the poller thread's id while loop() runs
  std::thread thread_;
};

}  // namespace ff::router
