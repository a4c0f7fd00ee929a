#include "router/fabric/poller.h"

#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace ff::router {

Poller::Poller(std::chrono::microseconds spin, PollerHooks& hooks) : spin_(spin), hooks_(hooks) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  watch_bell(command_bell_.fd());
}

Poller::~Poller() {
  stop();
  ::close(epoll_fd_);
}

void Poller::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
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
  Command c;
  c.fn = &fn;
  while (!commands_.push(&c)) std::this_thread::yield();  // 256 queued: the poller is behind
  command_bell_.ring();
  c.done.wait(false, std::memory_order_acquire);  // pairs with the poller's store-release
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

void Poller::want_writable(int fd, bool on) {
  epoll_event ev{};
  ev.events = EPOLLIN | (on ? EPOLLOUT : 0u);
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
  uint64_t idle_spins = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    bool busy = drain_commands();
    uint64_t now = now_ns();
    busy |= hooks_.work(now);
    if (busy) {
      idle_since = 0;
      continue;
    }
    if (idle_since == 0) idle_since = now;
    if (now - idle_since < static_cast<uint64_t>(spin_.count())) {
      // Idle spinning yields too: on a machine with few cores the apps we
      // serve need the CPU to post the next request.
      if (++idle_spins % 64 == 0) sched_yield(); else __builtin_ia32_pause();
      continue;
    }
    sleep_until_work();
    idle_since = 0;
  }
  drain_commands();
  running_.store(std::thread::id(), std::memory_order_release);
}

void Poller::sleep_until_work() {
  uint64_t now = now_ns();
  uint64_t deadline = UINT64_MAX;
  bool may_sleep = hooks_.prepare_to_sleep(now, deadline);
  if (may_sleep && deadline != UINT64_MAX && deadline - std::min(deadline, now) < 1'000'000)
    may_sleep = false;  // < 1 ms away: keep spinning
  if (may_sleep) {
    int timeout_ms = deadline == UINT64_MAX ? -1 : static_cast<int>((deadline - now) / 1'000'000);
    epoll_event events[16];
    sleeps_.fetch_add(1, std::memory_order_relaxed);
    int n = ::epoll_wait(epoll_fd_, events, 16, timeout_ms);
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
