// A doorbell is an eventfd that a producer rings when the consumer asked to
// be woken (RingConsumer::prepare_to_sleep). The eventfd travels to the other
// process over the control socket.
#pragma once

#include <chrono>

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

}  // namespace ff::shm
