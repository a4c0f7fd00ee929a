// The soft fabric's objects: the core objects (router/fabric/core) plus
// what the soft transport keeps per object. Created on the control (Asio)
// thread; once linked into the Engine, everything marked "poller" is touched
// only by the poller, and the control thread reaches it only through
// Engine::run_sync.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "router/common/addresses.h"
#include "router/fabric/core/objects.h"
#include "router/fabric/soft/link.h"

namespace ff::router::soft {

class Engine;

using core::Context;
using core::Pd;
using core::Srq;
using Cq = VirtualCq;

// A contiguous piece of an MR inside one segment.
struct Extent {
  uint64_t mr_offset;  // from the MR's start
  uint64_t length;
  std::byte* base;     // router address of mr_offset
};

// lkey and rkey are one key.
struct Mr final : core::Mr {
  using core::Mr::Mr;
  ~Mr() override;  // unlinks before its extents go
  // The router address of [addr, addr + len) if it lies inside one extent;
  // otherwise nullptr and `contiguous` tells how much of it does.
  std::byte* translate(uint64_t addr, uint64_t len, uint64_t& contiguous) const {
    if (router_at_iova == nullptr) return translate_searched(addr, len, contiguous);
    uint64_t off = addr - iova;  // below iova: wraps past length
    contiguous = off < length ? std::min(len, length - off) : 0;
    return off < length ? router_at_iova + off : nullptr;
  }
  // The segment whose mapping holds router address `p` (null: none).
  std::shared_ptr<const void> segment_holding(const std::byte* p) const;
  // Sets the extents (in MR order; `length` set before), and router_at_iova
  // when one extent holds the whole MR (most MRs: one segment, or a range
  // of one): translate() then needs no search, and reads nothing beyond
  // the line grants() read.
  void set_extents(std::vector<Extent> e);

 private:
  std::byte* translate_searched(uint64_t addr, uint64_t len, uint64_t& contiguous) const;
  std::vector<Extent> extents;  // private: router_at_iova is derived from them
};

struct Ah final : core::Ah {
  Ah(core::QueueCore& c, const Pd& p, const ibv_ah_attr& a, uint32_t ip, uint32_t id, Peer* r,
     std::vector<Peer*> also = {})
      : core::Ah(c, p, a, ip, id), route(r), fanout(std::move(also)) {}
  ~Ah() override;  // unlinks before its own state goes
  bool multicast() const { return is_multicast_ipv4(virtual_ip); }
  Peer* const route;  // the router serving virtual_ip; nullptr: this one (or a multicast group)
  const std::vector<Peer*> fanout;  // multicast: the other routers of the tenant
};

// A QP's requester state when its responder is on another router: the
// WQEs from the send queue's head on are numbered head_seq, head_seq+1, ...;
// the first `sent` of them went out whole and wait for their answer (RC),
// and `offset` bytes of the next one went out so far.
struct RemoteRequester {
  uint32_t head_seq = 0;
  uint32_t sent = 0;
  uint64_t offset = 0;
  uint64_t bytes_out = 0;  // of the `sent` WQEs (the window)
  uint64_t read_got = 0;   // bytes of the head READ's answer so far
};

// A QP's responder state for requests from another router: the message
// being received in chunks, and the NAK it waits to see retried.
struct RemoteResponder {
  bool receiving = false;  // a chunked SEND/WRITE_WITH_IMM holds the QP's held_recv
  uint32_t seq = 0;        // of the message in progress
  bool nak_pending = false;
  uint32_t nak_seq = 0;    // drop requests until this one comes again
  bool discard = false;    // UC: drop the rest of message `seq`
};

struct Qp final : core::Qp {
  using core::Qp::Qp;
  ~Qp() override;  // unlinks before its own state goes

  // --- poller ---
  uint8_t rnr_left = 0;        // RNR retries left for the head WQE
  uint8_t retry_left = 0;      // transport retries left for the head WQE
  uint64_t wait_until_ns = 0;  // head WQE waits (RNR or no answer) until then
  bool rnr_waiting = false;    // ... for a receive at its responder (RNR)
  // A long message toward a QP of this router moves in pieces, one per
  // poller pass: the bytes of the head WQE moved so far (the receive it
  // took is the responder's held_recv).
  uint64_t head_moved = 0;
  // As responder: the receive a message took at its first piece or chunk,
  // until it completes; if this QP fails first, it completes flushed
  // (Responder::take_receive).
  std::optional<shm::RecvWqe> held_recv;
  uint8_t rnr_backoff = 0;     // RNR retries of the head WQE so far (their wait grows)
  // The connected QP is on another router (set at RTR; RC and UC).
  Peer* route = nullptr;
  uint32_t remote_ip = 0;  // its virtual IP (the dgid's)
  RemoteRequester remote_req;
  RemoteResponder remote_resp;
};

}  // namespace ff::router::soft
