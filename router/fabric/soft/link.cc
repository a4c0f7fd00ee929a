#include "router/fabric/soft/link.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ff::router::soft {

Link::Link(Peer& p, UniqueFd socket, bool outbound_link, Ssl tls)
    : peer(p), fd(std::move(socket)), outbound(outbound_link), tls_(std::move(tls)), rx_(kRxBuffer) {
  tx_.reserve(kTxHighWater + 2 * (sizeof(wire::Header) + wire::kMaxChunk));
  if (tls_ && !tls_buffer_writes(tls_.get())) {
    dead = true;  // out of memory: the link goes, as a broken one would
    why_dead = "cannot buffer TLS records (out of memory)";
  }
}

std::byte* Link::put(const wire::Header& h) {
  if (tx_head_ == tx_.size()) {  // drained: start over at the front
    tx_.clear();
    tx_head_ = 0;
  }
  size_t at = tx_.size();
  tx_.resize(at + sizeof h + h.payload);
  std::memcpy(tx_.data() + at, &h, sizeof h);
  peer.frames_sent.fetch_add(1, std::memory_order_relaxed);
  peer.bytes_sent.fetch_add(sizeof h + h.payload, std::memory_order_relaxed);
  return tx_.data() + at + sizeof h;
}

bool Link::put_gathered(const wire::Header& h, std::span<const iovec> parts, bool may_defer) {
  constexpr size_t kMaxParts = 16;
  size_t sent = 0;
  if (!tls_ && !tx_pending() && parts.size() <= kMaxParts) {
    iovec iov[kMaxParts + 1];
    iov[0] = {const_cast<wire::Header*>(&h), sizeof h};
    std::copy(parts.begin(), parts.end(), iov + 1);
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = parts.size() + 1;
    for (;;) {
      ssize_t n = ::sendmsg(fd.get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) {
        sent = static_cast<size_t>(n);
        break;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (!may_defer) break;
        return false;
      }
      why_dead = std::string("send: ") + std::strerror(errno);
      dead = true;  // reaped with the other dead links (Links::flush)
      return true;
    }
  }
  size_t whole = sizeof h + h.payload;
  peer.frames_sent.fetch_add(1, std::memory_order_relaxed);
  peer.bytes_sent.fetch_add(whole, std::memory_order_relaxed);
  if (sent == whole) return true;
  // What the socket did not take, in order: the rest of the header, then of the payload.
  if (tx_head_ == tx_.size()) {  // drained: start over at the front
    tx_.clear();
    tx_head_ = 0;
  }
  if (sent < sizeof h)
    tx_.insert(tx_.end(), reinterpret_cast<const std::byte*>(&h) + sent, reinterpret_cast<const std::byte*>(&h + 1));
  size_t skip = sent > sizeof h ? sent - sizeof h : 0;
  for (const iovec& part : parts) {
    auto* b = static_cast<const std::byte*>(part.iov_base);
    size_t drop = std::min(skip, part.iov_len);
    skip -= drop;
    tx_.insert(tx_.end(), b + drop, b + part.iov_len);
  }
  return true;
}

bool Link::flush() {
  while (tx_head_ < tx_.size()) {
    ssize_t n = write_some(tx_.data() + tx_head_, tx_.size() - tx_head_);
    if (n < 0) return false;
    if (n == 0) break;
    tx_head_ += static_cast<size_t>(n);
  }
  // TLS collects records and sends them together (tls_buffer_writes).
  if (tls_ && tls_flush(tls_.get(), why_dead) < 0) return false;
  if (tx_head_ == tx_.size()) {
    tx_.clear();
    tx_head_ = 0;
  } else if (tx_head_ > kTxHighWater) {  // keep the buffer from creeping forward
    tx_.erase(tx_.begin(), tx_.begin() + static_cast<std::ptrdiff_t>(tx_head_));
    tx_head_ = 0;
  }
  return true;
}

bool Link::frame_ready() const {
  if (tls_ && tls_has_pending(tls_.get())) return true;
  if (placing_.bytes != 0)
    return placed_ == placing_.bytes && rx_tail_ - rx_head_ >= placing_header_.payload - placing_.bytes;
  wire::Header h;
  std::span<const std::byte> payload;
  size_t used = 0;
  const char* why = nullptr;
  return wire::decode(std::span<const std::byte>(rx_.data() + rx_head_, rx_tail_ - rx_head_), h, payload, used, why) !=
         wire::Decode::kNeedMore;
}

bool Link::fill() {
  if (rx_head_ == rx_tail_) rx_head_ = rx_tail_ = 0;
  if (rx_.size() - rx_tail_ < sizeof(wire::Header) + wire::kMaxChunk) {  // make room for a whole frame
    std::memmove(rx_.data(), rx_.data() + rx_head_, rx_tail_ - rx_head_);
    rx_tail_ -= rx_head_;
    rx_head_ = 0;
  }
  // TLS hands out a record per read and keeps the rest, which epoll does
  // not see: read on until it would block (or the buffer is full, and the
  // frames in it keep the poller busy).
  size_t want = rx_.size() - rx_tail_;
  if (read_limit_ != 0 && !tls_) want = std::min(want, read_limit_);
  read_limit_ = 0;
  do {
    ssize_t n = read_some(rx_.data() + rx_tail_, want);
    if (n < 0) return false;
    if (n == 0) return true;
    rx_tail_ += static_cast<size_t>(n);
    want = rx_.size() - rx_tail_;
  } while (tls_ && rx_tail_ < rx_.size());
  return true;
}

bool Link::start_placement(const wire::Header& h, Placement p) {
  // Some bytes always come through the buffer: the remainder's delivery
  // checks the chunk again.
  if (p.to == nullptr || p.bytes == 0 || p.bytes >= h.payload || p.epoch == nullptr) return false;
  rx_head_ += sizeof h;
  size_t here = std::min<size_t>(rx_tail_ - rx_head_, p.bytes);
  std::memcpy(p.to, rx_.data() + rx_head_, here);
  rx_head_ += here;
  placing_header_ = h;
  placed_ = static_cast<uint32_t>(here);
  placing_ = std::move(p);
  return true;
}

bool Link::fill_placement() {
  // What follows the placed bytes: the chunk's remainder and the next
  // header. Where TLS does not stand between, the read that ends the chunk
  // takes them too, into the buffer (empty while a chunk is placed); only
  // they, so that a next large chunk is placed too rather than read into
  // the buffer whole.
  const size_t after = std::min(placing_header_.payload - placing_.bytes + sizeof(wire::Header), rx_.size());
  const size_t want = placing_.bytes - placed_;
  size_t buffered = 0;
  ssize_t n;
  if (rx_head_ == rx_tail_) rx_head_ = rx_tail_ = 0;
  if (placing_.to == nullptr) {  // dropped: read into the buffer, not taken
    n = read_some(rx_.data() + rx_tail_, std::min(rx_.size() - rx_tail_, want));
  } else if (!tls_ && rx_head_ == rx_tail_) {
    iovec iov[2] = {{placing_.to + placed_, want}, {rx_.data(), after}};
    n = read_iov(iov, 2);
    if (n > static_cast<ssize_t>(want)) {
      buffered = static_cast<size_t>(n) - want;
      rx_tail_ = buffered;
      n = static_cast<ssize_t>(want);
    }
  } else {
    n = read_some(placing_.to + placed_, want);
  }
  if (n < 0) return false;
  placed_ += static_cast<uint32_t>(n);
  // Placed: the next fill() reads what is missing of the remainder and
  // header (all in: what it finds, as for any frame).
  if (placed_ == placing_.bytes) read_limit_ = after - buffered;
  return true;
}

ssize_t Link::read_iov(iovec* iov, size_t count) {
  msghdr m{};
  m.msg_iov = iov;
  m.msg_iovlen = count;
  for (;;) {
    ssize_t got = ::recvmsg(fd.get(), &m, MSG_DONTWAIT);
    if (got > 0) return got;
    if (got == 0) {
      why_dead = "the peer closed the connection";
      return -1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    why_dead = std::string("recv: ") + std::strerror(errno);
    return -1;
  }
}

ssize_t Link::read_some(std::byte* to, size_t n) {
  if (tls_) return tls_read(tls_.get(), to, n, why_dead);
  iovec iov{to, n};
  return read_iov(&iov, 1);
}

ssize_t Link::write_some(const std::byte* from, size_t n) {
  if (tls_) return tls_write(tls_.get(), from, n, why_dead);
  for (;;) {
    ssize_t sent = ::send(fd.get(), from, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0) return sent;
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    why_dead = std::string("send: ") + std::strerror(errno);
    return -1;
  }
}

}  // namespace ff::router::soft
