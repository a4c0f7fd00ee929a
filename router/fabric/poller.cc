#include "router/fabric/poller.h"

#include <numa.h>
#include <pthread.h>
#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include "shm/idle_yield.h"

namespace ff::router {

Poller::Poller(std::chrono::microseconds spin, PollerHooks& hooks, PollerPlacement placement)
    : spin_(spin), hooks_(hooks), placement_(std::move(placement)) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  watch_bell(command_bell_.fd());
}

Poller::~Poller() {
  stop();
  ::close(epoll_fd_);
}

void Poller::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] {
      take_place();
      loop();
    });
}

// The CPU was checked when the options were read (router/daemon/options.cc):
// a CPU taken offline since leaves the thread where it was.
void Poller::take_place() const {
  ::pthread_setname_np(::pthread_self(), placement_.name.substr(0, 15).c_str());
  if (placement_.cpu >= 0 && placement_.cpu < CPU_SETSIZE) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(static_cast<size_t>(placement_.cpu), &one);
    ::pthread_setaffinity_np(::pthread_self(), sizeof one, &one);
  }
  if (placement_.numa_node >= 0 && ::numa_available() >= 0) {
    ::numa_set_preferred(placement_.numa_node);
    if (placement_.cpu < 0) ::numa_run_on_node(placement_.numa_node);  // not pinned: on the node, anywhere
  }
}

void Poller::stop() {
  if (!thread_.joinable()) return;
  stop_ = true;
  command_bell_.ring();
  thread_.join();
}

void Poller::run_sync(const std::function<void()>& fn) {
  if (!thread_.joinable()) {  // not started (or stopped): nobody else touches the state
    fn();
    return;
  }
  if (try_borrow(fn)) return;
  Command c;
  c.fn = &fn;
  while (!commands_.push(&c)) std::this_thread::yield();  // 256 queued: the poller is behind
  command_bell_.ring();
  c.done.wait(false, std::memory_order_acquire);  // pairs with the poller's store-release
}

// Runs `fn` in a sleeping poller's place. Afterwards the wakeups are armed
// again (a QP `fn` made must wake the poller too) and the poller is rung
// only if there is work now or a deadline earlier than the one it sleeps to.
bool Poller::try_borrow(const std::function<void()>& fn) {
  int asleep = kAsleep;
  if (!state_.compare_exchange_strong(asleep, kBorrowed, std::memory_order_acquire, std::memory_order_relaxed))
    return false;
  std::thread::id poller = running_.exchange(std::this_thread::get_id(), std::memory_order_acq_rel);
  ++borrowed_during_sleep_;
  // Given back whatever happens: a command that throws must not leave the
  // poller waiting for the state for ever (it is rung to look again).
  bool wake = true;
  struct GiveBack {
    Poller& p;
    std::thread::id poller;
    bool& wake;
    ~GiveBack() {
      p.running_.store(poller, std::memory_order_release);
      p.state_.store(kAsleep, std::memory_order_release);
      p.state_.notify_one();
      p.borrows_.fetch_add(1, std::memory_order_relaxed);
      if (wake) p.command_bell_.ring();
    }
  } give_back{*this, poller, wake};
  fn();
  uint64_t deadline = UINT64_MAX;
  bool idle = hooks_.prepare_to_sleep(now_ns(), deadline);
  wake = !idle || deadline < sleep_deadline_;
  return true;
}

bool Poller::drain_commands() {
  bool any = false;
  Command* c;
  while (commands_.pop(c)) {
    (*c->fn)();
    c->done.store(true, std::memory_order_release);
    c->done.notify_one();
    any = true;
  }
  return any;
}

void Poller::watch_bell(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
}

void Poller::watch_other(int fd) {
  other_fds_.insert(fd);
  watch_bell(fd);
}

void Poller::set_interest(int fd, bool readable, bool writable) {
  epoll_event ev{};
  ev.events = (readable ? EPOLLIN : 0u) | (writable ? EPOLLOUT : 0u);
  ev.data.fd = fd;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
}

void Poller::unwatch(int fd) {
  other_fds_.erase(fd);
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

void Poller::loop() {
  running_.store(std::this_thread::get_id(), std::memory_order_release);
  uint64_t idle_since = 0;
  // Spinning yields too: on a machine with few cores the apps we serve may
  // need this CPU to post the next request; on a core of our own the
  // yields grow rare (shm/idle_yield.h). The first yield of a spin comes
  // early: on a shared core it is what tells the poller to sleep.
  shm::IdleYield yield(8, 1024);
  uint64_t busy_from = 0;  // the clock at a pass that found work (0: the last did not)
  while (!stop_.load(std::memory_order_relaxed)) {
    bool busy = drain_commands();
    uint64_t now = now_ns();
    if (busy_from != 0) busy_ns_.add(now - busy_from);  // the busy pass ran until now
    busy |= hooks_.work(now);
    busy_from = busy ? now : 0;
    if (busy) {
      idle_since = 0;
      yield.busy();
      continue;
    }
    if (idle_since == 0) idle_since = now;
    if (now - idle_since < static_cast<uint64_t>(spin_.count())) {
      bool yielded = yield.idle();
      if (!yielded) __builtin_ia32_pause();
      // Spinning on a core that other threads want (the apps we serve, a
      // second router, on a machine with fewer cores than spinners) delays
      // the very work it waits for by a scheduler turn: sleep now, to be
      // woken by the doorbell or the socket (a wakeup preempts a spinner).
      if (!yielded || !yield.core_shared()) continue;
    }
    sleep_until_work();
    idle_since = 0;
  }
  drain_commands();
  running_.store(std::thread::id(), std::memory_order_release);
}

// Sleeps in epoll until a watched fd or the deadline (ns, steady clock). A
// deadline closer than the cost of a sleep is spun for instead; any other
// is slept for precisely (epoll_pwait2), so a QP that retries every few
// microseconds for ever does not keep a core busy.
int Poller::wait_for_events(epoll_event* events, int max, uint64_t now, uint64_t deadline) {
  if (deadline == UINT64_MAX) return ::epoll_wait(epoll_fd_, events, max, -1);
  uint64_t ns = deadline - std::min(deadline, now);
  timespec t{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  int n = ::epoll_pwait2(epoll_fd_, events, max, &t, nullptr);
  if (n < 0 && errno == ENOSYS)  // kernels before 5.11: millisecond resolution, rounded up
    n = ::epoll_wait(epoll_fd_, events, max, static_cast<int>((ns + 999'999) / 1'000'000));
  return n;
}

void Poller::sleep_until_work() {
  constexpr uint64_t kSpinBelowNs = 20'000;  // about the cost of a sleep and a wakeup
  uint64_t now = now_ns();
  uint64_t deadline = UINT64_MAX;
  bool may_sleep = hooks_.prepare_to_sleep(now, deadline);
  if (may_sleep && deadline != UINT64_MAX && deadline - std::min(deadline, now) < kSpinBelowNs)
    may_sleep = false;  // about to be due: keep spinning
  if (may_sleep) {
    epoll_event events[16];
    sleeps_.fetch_add(1, std::memory_order_relaxed);
    sleep_deadline_ = deadline;
    uint64_t borrows_before = borrowed_during_sleep_;
    state_.store(kAsleep, std::memory_order_release);
    int n = wait_for_events(events, 16, now, deadline);
    // Take the state back, after any borrow in progress.
    for (int asleep = kAsleep;
         !state_.compare_exchange_weak(asleep, kAwake, std::memory_order_acquire, std::memory_order_relaxed);
         asleep = kAsleep)
      if (asleep == kBorrowed) state_.wait(kBorrowed, std::memory_order_acquire);
    // A borrower may have unwatched and closed an fd this sleep reported
    // (and the number been reused): the events are stale. Level-triggered,
    // whatever is still ready is reported again by the next sleep, after a
    // full pass.
    if (borrowed_during_sleep_ != borrows_before) n = 0;
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (other_fds_.count(fd) != 0) {
        hooks_.readable(fd);
        continue;
      }
      char sink[256];  // only the wakeup matters
      while (::read(fd, sink, sizeof sink) > 0) {
      }
    }
  }
  hooks_.cancel_sleep();
}

}  // namespace ff::router
