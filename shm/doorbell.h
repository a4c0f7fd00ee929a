// A doorbell is an eventfd that a producer rings when the consumer asked to
// be woken (RingConsumer::prepare_to_sleep). The eventfd travels to the other
// process over the control socket.
#pragma once

#include <chrono>

namespace ff::shm {

// Owns one eventfd. Thread-safe: ring() and wait() may be called concurrently.
class Doorbell {
 public:
  // Creates a new non-blocking eventfd. Throws std::system_error on failure.
  Doorbell();
  // Takes ownership of an eventfd received from the other side.
  explicit Doorbell(int adopted_fd) : fd_(adopted_fd) {}
  ~Doorbell();
  Doorbell(Doorbell&& other) noexcept;
  Doorbell& operator=(Doorbell&& other) noexcept;
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;

  // Wakes the waiter. Never blocks.
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
