#include "shm/doorbell.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>
#include <utility>

namespace ff::shm {

Doorbell::Doorbell(Mode mode)
    : fd_(::eventfd(0, EFD_CLOEXEC | (mode == Mode::kNonBlocking ? EFD_NONBLOCK : 0))) {
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd for doorbell");
}

Doorbell::~Doorbell() {
  if (fd_ >= 0) ::close(fd_);
}

Doorbell::Doorbell(Doorbell&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

Doorbell& Doorbell::operator=(Doorbell&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void Doorbell::ring() const {
  uint64_t one = 1;
  // EAGAIN means the counter is saturated: the waiter is certain to wake.
  [[maybe_unused]] ssize_t r = ::write(fd_, &one, sizeof one);
}

bool Doorbell::drain() const {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, 0) != 1) return false;  // never block, even on a blocking fd
  uint64_t v;
  return ::read(fd_, &v, sizeof v) == static_cast<ssize_t>(sizeof v);
}

bool Doorbell::wait(std::chrono::milliseconds timeout) const {
  pollfd p{fd_, POLLIN, 0};
  int ms = timeout.count() < 0 ? -1 : static_cast<int>(timeout.count());
  int r;
  do {
    r = ::poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  if (r <= 0) return false;
  return drain();
}

PipeDoorbell::PipeDoorbell(Keep keep, uint32_t bytes) {
  int ends[2];
  if (::pipe2(ends, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe for doorbell");
  kept_ = keep == Keep::kReadEnd ? ends[0] : ends[1];
  peer_ = keep == Keep::kReadEnd ? ends[1] : ends[0];
  ::fcntl(kept_, F_SETFL, ::fcntl(kept_, F_GETFL) | O_NONBLOCK);  // our description only
  ::fcntl(kept_, F_SETPIPE_SZ, static_cast<int>(bytes));  // best effort: the default (16 pages) works too
}

PipeDoorbell::~PipeDoorbell() {
  if (kept_ >= 0) ::close(kept_);
  if (peer_ >= 0) ::close(peer_);
}

int PipeDoorbell::release_peer_end() { return std::exchange(peer_, -1); }

void PipeDoorbell::ring() const {
  const char one = 1;
  // EAGAIN: the pipe is full, the waiter is certain to wake.
  [[maybe_unused]] ssize_t r = ::write(kept_, &one, 1);
}

bool PipeDoorbell::drain() const {
  char sink[256];
  bool any = false;
  ssize_t r;
  while ((r = ::read(kept_, sink, sizeof sink)) > 0) any = true;
  return any;
}

}  // namespace ff::shm
