// The soft fabric's objects. Created on the control (Asio) thread; once
// linked into the Engine, everything marked "engine thread" is touched only
// by the poller, and the control thread reaches it only through
// Engine::run_sync.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "router/fabric/fabric.h"
#include "router/fabric/soft/link.h"
#include "router/fabric/virtual_queues.h"
#include "shm/descriptors.h"
#include "shm/doorbell.h"
#include "shm/segment.h"

namespace ff::router::soft {

class Engine;

using Context = ClientContext<Engine>;

struct Pd final : FabricPd {
  explicit Pd(Owner o) : owner(std::move(o)) {}
  Owner owner;
};

// A contiguous piece of an MR inside one segment.
struct Extent {
  uint64_t mr_offset;  // from the MR's start
  uint64_t length;
  std::byte* base;     // router address of mr_offset
};

struct Mr final : FabricMr {
  Mr(Engine& e) : engine(e) {}
  ~Mr() override;
  uint32_t lkey() const override { return key; }
  uint32_t rkey() const override { return key; }

  // The router address of [iova, iova + len) if it lies inside one extent;
  // otherwise nullptr and `contiguous` tells how much of it does.
  std::byte* translate(uint64_t addr, uint64_t len, uint64_t& contiguous) const;
  bool contains(uint64_t addr, uint64_t len) const {
    return addr >= iova && len <= length && addr - iova <= length - len;
  }

  Engine& engine;
  const Pd* pd = nullptr;
  uint64_t iova = 0;
  uint64_t length = 0;
  unsigned access = 0;
  uint32_t key = 0;
  std::vector<Extent> extents;
  std::vector<std::shared_ptr<FabricSegment>> segments;  // keeps the memory mapped
};

using Cq = VirtualCq;

struct Srq final : FabricSrq {
  Srq(Context& c, shm::Mapping m, const Pd& pd, uint32_t cap, uint32_t max_sge, uint32_t limit,
      uint32_t tag);
  int segment_fd() const override { return mapping.fd(); }
  uint32_t capacity() const override { return cap; }
  uint32_t max_sge() const override { return sge; }
  Context& ctx;
  shm::Mapping mapping;
  const Pd& pd;
  const uint32_t cap;
  const uint32_t sge;
  const uint32_t tag;  // the client's handle
  // --- engine thread ---
  shm::RingConsumer<shm::RecvWqe> ring;  // shared by every QP on it: all on the poller
  uint32_t limit;                        // armed when non-zero
};

struct Ah final : FabricAh {
  Ah(Engine& e, const Pd& p, const ibv_ah_attr& a, uint32_t ident, Peer* route);
  ~Ah() override;
  uint32_t id() const override { return ident; }
  Engine& engine;
  const Pd& pd;
  const ibv_ah_attr attr;
  const uint32_t virtual_ip;  // from the IPv4-mapped dgid
  const uint32_t ident;
  Peer* const route;  // the router serving virtual_ip; nullptr: this one
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
  bool receiving = false;  // a chunked SEND/WRITE_WITH_IMM holds `recv`
  uint32_t seq = 0;        // of the message in progress
  shm::RecvWqe recv{};     // taken at its first chunk
  bool nak_pending = false;
  uint32_t nak_seq = 0;    // drop requests until this one comes again
  bool discard = false;    // UC: drop the rest of message `seq`
};

struct Qp final : FabricQp {
  Qp(Engine& e, Context& c, shm::Mapping m, const Pd& pd, Cq& scq, Cq& rcq, Srq* srq,
     const QpInit& init, uint32_t send_cap, uint32_t recv_cap, uint32_t qpn, uint32_t tag);
  ~Qp() override;
  uint32_t qp_num() const override { return qpn; }
  int segment_fd() const override { return mapping.fd(); }
  ibv_qp_cap cap() const override { return init.cap; }
  uint32_t send_capacity() const override { return send_cap; }
  uint32_t recv_capacity() const override { return recv_cap; }

  Engine& engine;
  Context& ctx;
  shm::Mapping mapping;
  const Pd& pd;
  Cq& send_cq;
  Cq& recv_cq;
  Srq* const srq;  // receives come from here when set
  const QpInit init;
  const uint32_t send_cap;
  const uint32_t recv_cap;
  const uint32_t qpn;
  const uint32_t tag;  // the client's handle

  // --- engine thread ---
  shm::RingConsumer<shm::SendWqe> sq;
  shm::RingConsumer<shm::RecvWqe> rq;
  // The queue receives are taken from: the SRQ's ring or the QP's own.
  shm::RingConsumer<shm::RecvWqe>& receives() { return srq != nullptr ? srq->ring : rq; }
  ibv_qp_state state = IBV_QPS_RESET;
  ibv_qp_attr attr{};      // as last modified (qp_state kept in `state`)
  bool peer_gone = false;  // the connected QP was destroyed
  uint8_t rnr_left = 0;    // RNR retries left for the head WQE
  uint8_t retry_left = 0;  // transport retries left for the head WQE
  uint64_t wait_until_ns = 0;  // head WQE waits (RNR or no answer) until then
  // The connected QP is on another router (set at RTR; RC and UC).
  Peer* route = nullptr;
  uint32_t remote_ip = 0;  // its virtual IP (the dgid's)
  RemoteRequester remote_req;
  RemoteResponder remote_resp;
};

}  // namespace ff::router::soft
