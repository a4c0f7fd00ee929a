// A doorbell is what a producer rings when the consumer asked to be woken
// (RingConsumer::prepare_to_sleep).
//
// Doorbell (an eventfd) serves threads of one process. Between processes
// (the router and a client) a PipeDoorbell: an eventfd passed to the other
// process is one open file description shared by both, so the other side
// could make our write block (fill the counter, clear O_NONBLOCK) or race our
// read; a pipe's two ends are two descriptions, one kept here, one passed.
#pragma once

#include <chrono>
#include <cstdint>

namespace ff::shm {

// Owns one eventfd. Thread-safe: ring() and wait() may be called concurrently.
class Doorbell {
 public:
  // Whether the eventfd's file description starts out O_NONBLOCK. The flag
  // is shared with every copy passed to another process: an fd that an app
  // receives as a verbs fd (async_fd, a completion channel) must start out
  // blocking, as the kernel's do; the app may set O_NONBLOCK itself.
  enum class Mode { kNonBlocking, kBlocking };

  // Creates a new eventfd. Throws std::system_error on failure.
  explicit Doorbell(Mode mode = Mode::kNonBlocking);
  // Takes ownership of an eventfd received from the other side.
  explicit Doorbell(int adopted_fd) : fd_(adopted_fd) {}
  ~Doorbell();
  Doorbell(Doorbell&& other) noexcept;
  Doorbell& operator=(Doorbell&& other) noexcept;
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;

  // Wakes the waiter. Never blocks in practice (an eventfd write blocks only
  // when the counter is about to overflow 2^64-2).
  void ring() const;
  // Blocks until rung or the timeout passes (negative: forever). Consumes all
  // pending rings. Returns true when it was rung.
  bool wait(std::chrono::milliseconds timeout) const;
  // Consumes pending rings without blocking; true when there was one.
  bool drain() const;

  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

// A pipe: this process keeps one end (O_NONBLOCK, its own file
// description), the peer process gets the other. The side that rings never
// blocks (a full pipe is EAGAIN: the waiter is certain to wake); the side that
// waits never blocks on a drain, and the peer cannot read what it may not.
class PipeDoorbell {
 public:
  enum class Keep { kWriteEnd, kReadEnd };  // this process rings, or waits
  // `bytes`: how many unread rings the pipe holds before a ring is EAGAIN
  // (rounded up to whole pages by the kernel; the kernel memory each pipe
  // costs). Throws std::system_error on failure.
  PipeDoorbell(Keep keep, uint32_t bytes);
  ~PipeDoorbell();
  PipeDoorbell(const PipeDoorbell&) = delete;
  PipeDoorbell& operator=(const PipeDoorbell&) = delete;

  // The end kept here.
  int fd() const { return kept_; }
  // The other end, for the peer; blocking (verbs fds start out blocking, and
  // the peer may change its own end as it likes). The caller owns it; -1
  // after the first call.
  int release_peer_end();
  // Keep::kWriteEnd: wakes the waiter.
  void ring() const;
  // Keep::kReadEnd: consumes every pending ring; true when there was one.
  bool drain() const;

 private:
  int kept_ = -1;
  int peer_ = -1;
};

}  // namespace ff::shm
