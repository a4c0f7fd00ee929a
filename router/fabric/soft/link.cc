#include "router/fabric/soft/link.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ff::router::soft {

Link::Link(Peer& p, UniqueFd socket, bool outbound_link)
    : peer(p), fd(std::move(socket)), outbound(outbound_link), rx_(kRxBuffer) {
  tx_.reserve(kTxHighWater + 2 * (sizeof(wire::Header) + wire::kMaxChunk));
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

bool Link::flush() {
  while (tx_head_ < tx_.size()) {
    ssize_t n = ::send(fd.get(), tx_.data() + tx_head_, tx_.size() - tx_head_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      tx_head_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    why_dead = std::string("send: ") + std::strerror(errno);
    return false;
  }
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
  for (;;) {
    ssize_t n = ::recv(fd.get(), rx_.data() + rx_tail_, rx_.size() - rx_tail_, MSG_DONTWAIT);
    if (n > 0) {
      rx_tail_ += static_cast<size_t>(n);
      return true;
    }
    if (n == 0) {
      why_dead = "the peer closed the connection";
      return false;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
    why_dead = std::string("recv: ") + std::strerror(errno);
    return false;
  }
}

}  // namespace ff::router::soft
