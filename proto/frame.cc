#include "proto/frame.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace ff::proto {
namespace {
// A peer that stops reading in the middle of a frame is dropped after this.
constexpr int kPartialFrameTimeoutMs = 5000;
}  // namespace

int send_frame(int sock, std::span<const uint8_t> payload, std::span<const int> fds) {
  if (payload.size() > kMaxPayload || fds.size() > kMaxFds) return EMSGSIZE;
  FrameHeader h{static_cast<uint32_t>(payload.size()), static_cast<uint16_t>(fds.size()), 0};
  iovec iov[2] = {{&h, sizeof h}, {const_cast<uint8_t*>(payload.data()), payload.size()}};
  size_t total = sizeof h + payload.size();
  size_t sent = 0;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  bool first = true;
  while (sent < total) {
    // Rebuild the iovec for what is left.
    iovec rest[2];
    int n = 0;
    size_t skip = sent;
    for (const iovec& v : iov) {
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      rest[n++] = {static_cast<char*>(v.iov_base) + skip, v.iov_len - skip};
      skip = 0;
    }
    msghdr msg{};
    msg.msg_iov = rest;
    msg.msg_iovlen = static_cast<size_t>(n);
    if (first && !fds.empty()) {
      std::memset(control, 0, sizeof control);
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t r = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && !first) {
        // Part of a frame is out: it must be finished, or the stream is torn.
        pollfd p{sock, POLLOUT, 0};
        if (::poll(&p, 1, kPartialFrameTimeoutMs) <= 0) return ETIMEDOUT;
        continue;
      }
      return errno;
    }
    sent += static_cast<size_t>(r);
    first = false;
  }
  return 0;
}

FrameReader::Io FrameReader::read_some(int sock, bool dontwait) {
  // Consumed frames go: what stays is at most the start of one frame, so a
  // peer that always leaves half a frame unread holds one frame of memory,
  // not everything it ever sent.
  if (start_ > 0) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(start_));
    start_ = 0;
  }
  constexpr size_t kKeep = sizeof(FrameHeader) + kMaxPayload + 16384;
  if (buf_.capacity() > 2 * kKeep) buf_.shrink_to_fit();
  size_t old = buf_.size();
  buf_.resize(old + 16384);
  iovec iov{buf_.data() + old, 16384};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds * 4)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t r;
  do {
    r = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | (dontwait ? MSG_DONTWAIT : 0));
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    buf_.resize(old);
    errno_ = errno;
    return errno == EAGAIN ? Io::kWouldBlock : Io::kError;
  }
  buf_.resize(old + static_cast<size_t>(r));
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds_.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) {
    error_ = "too many file descriptors in one message";
    return Io::kError;
  }
  if (fds_.size() > 4 * kMaxFds) {
    error_ = "too many file descriptors queued without frames";
    return Io::kError;
  }
  return r == 0 ? Io::kClosed : Io::kProgress;
}

std::optional<Frame> FrameReader::next() {
  if (!error_.empty()) return std::nullopt;
  size_t have = buf_.size() - start_;
  if (have < sizeof(FrameHeader)) return std::nullopt;
  FrameHeader h;
  std::memcpy(&h, buf_.data() + start_, sizeof h);
  if (h.length > kMaxPayload) {
    error_ = "frame of " + std::to_string(h.length) + " bytes exceeds the limit";
    return std::nullopt;
  }
  if (h.num_fds > kMaxFds || h.reserved != 0) {
    error_ = "bad frame header";
    return std::nullopt;
  }
  // The descriptors ride on the frame's first byte, so they arrived with the header.
  if (h.num_fds > fds_.size()) {
    error_ = "frame announces more file descriptors than were sent";
    return std::nullopt;
  }
  if (have < sizeof h + h.length) return std::nullopt;
  Frame f;
  const uint8_t* p = buf_.data() + start_ + sizeof h;
  f.payload.assign(p, p + h.length);
  for (uint16_t i = 0; i < h.num_fds; ++i) {
    f.fds.push_back(std::move(fds_.front()));
    fds_.pop_front();
  }
  start_ += sizeof h + h.length;
  return f;
}

int read_frame_blocking(int sock, FrameReader& reader, Frame& out) {
  for (;;) {
    if (auto f = reader.next()) {
      out = std::move(*f);
      return 0;
    }
    if (!reader.error().empty()) return EPROTO;
    switch (reader.read_some(sock, false)) {
      case FrameReader::Io::kProgress:
        break;
      case FrameReader::Io::kClosed:
        return ECONNRESET;
      case FrameReader::Io::kWouldBlock:
      case FrameReader::Io::kError:
        return reader.last_errno() != 0 ? reader.last_errno() : EPROTO;
    }
  }
}

}  // namespace ff::proto
