// One TCP connection to a peer router, as the poller drives it: nonblocking
// reads into a buffer that frames are decoded from, and a transmit buffer
// that frames are appended to and flushed once per poller pass. The
// connection was set up (connect/accept, Hello) by Peers on the Asio
// thread; from attach on, only the poller touches it.
//
// Why the poller does the socket I/O itself, not the Asio thread: a frame
// costs no thread hop and no lock, and a spinning poller sees an answer as
// soon as the kernel has it. The sockets are nonblocking, so the poller still
// never blocks; a full socket leaves bytes in the transmit buffer, and the
// QPs feeding it stop at the high-water mark (kTxHighWater) until it drains.
//
// Both buffers are bounded whatever the peer does. The receive buffer is a
// fixed kRxBuffer. Each request frame gets at most one answer frame, so an
// inbound link (requests in, answers out) stops taking requests while its
// answers are above the high-water mark: a peer that asks for 2 GiB of READ
// data and never reads the answers holds at most kTxHighWater plus one frame
// of this router's memory, and TCP carries the backpressure to it. An
// outbound link always takes its answers (they free the requesters' window
// and produce nothing on the link), so two routers that both stop reading
// cannot wait on each other.
//
// A large WRITE chunk is received straight into its destination: once its
// header is in, Engine::placement_for checks it as its delivery will and
// names where its payload goes; the payload is then read from the socket
// into those pages, all but its last kThroughBuffer bytes, which come
// through the buffer and are delivered as the chunk's remainder (the
// responder stores them in order, last: transfer.cc). The kernel's copy is
// the only one.
//
// With link security (tls.h) the connection carries TLS and the Link owns
// its session: the same nonblocking reads and writes go through it
// (read_some/write_some), and nothing else here knows the difference.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "proto/fd.h"
#include "router/fabric/soft/tls.h"
#include "router/fabric/soft/wire.h"

namespace ff::router::soft {

struct Link;

// A peer router, as both threads see it. Created by Peers (control thread)
// and never destroyed while the router runs: QPs and AHs keep pointers to
// it. The engine-thread fields change only on the poller (or in run_sync).
struct Peer {
  explicit Peer(std::string n) : name(std::move(n)) {}
  const std::string name;
  // --- engine thread ---
  Link* out = nullptr;  // our requests, their answers
  Link* in = nullptr;   // their requests, our answers
  uint64_t incarnation = 0;  // of the peer router last seen
  uint64_t wanted_since_ns = 0;  // a QP waits for `out` since then (0: none)
  // --- any thread (ffctl) ---
  std::atomic<bool> out_up{false};
  std::atomic<bool> in_up{false};
  std::atomic<uint64_t> frames_sent{0}, frames_received{0}, bytes_sent{0}, bytes_received{0};
  std::atomic<uint64_t> connects{0};      // connections established, both directions
  std::atomic<uint64_t> failures{0};      // connections lost or refused for a protocol error
  std::atomic<uint64_t> qps_failed{0};    // QPs moved to ERR because a connection was lost
};

struct Link {
  static constexpr size_t kTxHighWater = 4u << 20;  // stop producing above this
  static constexpr size_t kRxBuffer = 1u << 20;
  // Chunks with at least this much payload may be received in place; the
  // last kThroughBuffer bytes of one always come through the buffer.
  static constexpr uint32_t kPlaceFrom = 16 * 1024;
  static constexpr uint32_t kThroughBuffer = 64;

  // Where a chunk's first `bytes` of payload go (Engine::placement_for);
  // `keep` holds the pages mapped until they are in. Checked again (the
  // same call) whenever *epoch moved from epoch_at (QueueCore::
  // access_epoch): if the chunk may no longer go there, the rest of what
  // was to be placed is read and dropped, and its delivery says so
  // (placement_failed). Empty: through the buffer, as any frame.
  struct Placement {
    std::byte* to = nullptr;
    uint32_t bytes = 0;
    std::shared_ptr<const void> keep;
    const uint64_t* epoch = nullptr;
    uint64_t epoch_at = 0;
  };

  // `tls`: the connection's TLS session (null: in the clear).
  Link(Peer& p, UniqueFd socket, bool outbound_link, Ssl tls = nullptr);
  Peer& peer;
  UniqueFd fd;
  const bool outbound;
  bool dead = false;
  std::string why_dead;
  bool wants_writable = false;  // EPOLLOUT armed for the poller's sleep
  bool wants_readable = true;   // EPOLLIN armed (off while requests are paused)

  bool room() const { return tx_.size() - tx_head_ < kTxHighWater; }
  // An inbound link whose answers are backed up takes no more requests.
  bool paused() const { return !outbound && !room(); }
  // A whole frame waits in the receive buffer, or decrypted bytes in the
  // TLS session: work, even if the socket has nothing new to wake the
  // poller with.
  bool frame_ready() const;
  bool tx_pending() const { return tx_head_ < tx_.size() || (tls_ && tls_unsent(tls_.get()) > 0); }
  // Appends a frame and returns where its payload goes (header.payload bytes).
  std::byte* put(const wire::Header& h);
  // A frame whose payload (header.payload bytes) lies in `parts`, router
  // addresses of registered memory. When nothing waits in the transmit
  // buffer (and the link is in the clear) the socket takes what it can
  // straight from those pages, so the kernel's copy is the only one; only
  // what it does not take now is copied into the transmit buffer. A
  // failed connection is marked dead (why_dead), as a failed flush is.
  // With `may_defer`, a socket that takes none of it now leaves the frame
  // unsent (false: the requester tries again on a later pass, as it does
  // when the buffer is above its high-water mark), so that a stream the
  // peer drains slower than it is produced is not copied into the buffer
  // frame after frame.
  bool put_gathered(const wire::Header& h, std::span<const iovec> parts, bool may_defer);
  // Writes what the socket takes. False when the connection failed.
  bool flush();
  // Reads what is there and calls on_frame(header, payload) per whole frame;
  // place(header) for a request whose header is in and whose payload (of
  // kPlaceFrom bytes or more) is not: a Placement, or an empty one. A
  // placed chunk is delivered as its remainder: offset and payload moved
  // past the placed bytes. False when the connection closed or the peer
  // sent garbage.
  template <class OnFrame, class Place>
  bool receive(OnFrame&& on_frame, Place&& place);
  // The chunk being placed, checked again if its epoch moved (place as for
  // receive): a chunk that may no longer land lets its pages go at once.
  template <class Place>
  void recheck_placement(Place&& place);
  // While on_frame runs for a placed chunk's remainder: how many bytes of
  // the chunk were placed before it (its offset as sent is the
  // remainder's less these), and whether they failed to land (the
  // placement was refused on a later check: the request must be refused).
  uint32_t placed_ahead() const { return delivering_placed_; }
  bool placement_failed() const { return delivering_failed_; }

 private:
  // Reads what is there (TLS: until it would block, since TLS may hold
  // bytes epoll cannot see); false on EOF or error.
  bool fill();
  // Reads what is there of the chunk being placed into its destination.
  bool fill_placement();
  // Starts placing the chunk whose header `h` is at the buffer's head (its
  // payload not all in): what of it the buffer holds goes there now.
  bool start_placement(const wire::Header& h, Placement p);
  // One nonblocking read or write, in the clear or through TLS: bytes moved,
  // 0 when it would block, -1 when the connection failed (why_dead says why).
  ssize_t read_some(std::byte* to, size_t n);
  // One nonblocking read in the clear, filling the pieces in order.
  ssize_t read_iov(iovec* iov, size_t count);
  ssize_t write_some(const std::byte* from, size_t n);
  Ssl tls_;
  std::vector<std::byte> tx_;
  size_t tx_head_ = 0;
  std::vector<std::byte> rx_;
  size_t rx_head_ = 0, rx_tail_ = 0;
  // The chunk being received in place (placing_.bytes 0: none; placing_.to
  // null then: its bytes are dropped): its header as sent, and how many of
  // placing_.bytes are in.
  Placement placing_;
  wire::Header placing_header_{};
  uint32_t placed_ = 0;
  bool placing_failed_ = false;
  bool place_refused_ = false;  // for the frame at rx_head_: not asked again
  uint32_t delivering_placed_ = 0;
  bool delivering_failed_ = false;
  size_t read_limit_ = 0;  // the next fill() reads at most this much (0: what fits)
};

template <class Place>
void Link::recheck_placement(Place&& place) {
  if (placing_.to == nullptr || *placing_.epoch == placing_.epoch_at) return;
  Placement again = place(placing_header_);
  if (again.to == placing_.to && again.bytes == placing_.bytes) {
    placing_.epoch_at = again.epoch_at;
    return;
  }
  placing_.to = nullptr;  // the rest is dropped
  placing_.keep.reset();
  placing_failed_ = true;
}

template <class OnFrame, class Place>
bool Link::receive(OnFrame&& on_frame, Place&& place) {
  recheck_placement(place);
  for (int reads = 0; reads < 4 && !paused(); ++reads) {
    size_t before = rx_tail_;
    uint32_t placed_before = placed_;
    if (!(placing_.bytes != 0 && placed_ < placing_.bytes ? fill_placement() : fill())) return false;
    while (!paused()) {
      if (placing_.bytes != 0) {
        wire::Header h = placing_header_;
        uint32_t rest = h.payload - placing_.bytes;
        if (placed_ < placing_.bytes || rx_tail_ - rx_head_ < rest) break;  // more to read
        recheck_placement(place);  // the last bytes placed were read after it was last checked
        std::span<const std::byte> remainder(rx_.data() + rx_head_, rest);
        rx_head_ += rest;
        peer.frames_received.fetch_add(1, std::memory_order_relaxed);
        peer.bytes_received.fetch_add(sizeof h + h.payload, std::memory_order_relaxed);
        h.offset += placing_.bytes;
        h.payload = rest;
        delivering_placed_ = placing_.bytes;
        delivering_failed_ = placing_failed_;
        placing_ = {};
        placing_failed_ = false;
        place_refused_ = false;
        on_frame(h, remainder);
        delivering_placed_ = 0;
        delivering_failed_ = false;
        if (dead) return false;
        continue;
      }
      wire::Header h;
      std::span<const std::byte> payload;
      size_t used = 0;
      const char* why = nullptr;
      auto d = wire::decode(std::span<const std::byte>(rx_.data() + rx_head_, rx_tail_ - rx_head_), h, payload,
                            used, why);
      if (d == wire::Decode::kNeedMore) {
        // A whole, valid header: a chunk that may go straight to its pages
        // (asked once per frame).
        if (rx_tail_ - rx_head_ >= sizeof h && h.type == static_cast<uint8_t>(wire::Type::kRequest) &&
            h.payload >= kPlaceFrom && !place_refused_) {
          if (start_placement(h, place(h))) continue;
          place_refused_ = true;
        }
        break;
      }
      if (d == wire::Decode::kBad) {
        why_dead = std::string("protocol error from the peer: ") + why;
        return false;
      }
      rx_head_ += used;
      place_refused_ = false;
      peer.frames_received.fetch_add(1, std::memory_order_relaxed);
      peer.bytes_received.fetch_add(used, std::memory_order_relaxed);
      on_frame(h, payload);
      if (dead) return false;
    }
    if (rx_tail_ == before && placed_ == placed_before) break;  // nothing more to read now
  }
  return true;
}

}  // namespace ff::router::soft
