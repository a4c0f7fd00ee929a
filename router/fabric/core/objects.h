// The objects every fabric has, whatever executes the work: a client's
// context, PDs, MRs, SRQs, address handles and QPs with the rings the client
// posts to. A fabric derives from them to add what is its own (the soft
// fabric's transport state, the verbs fabric's shadow objects on the
// device).
//
// Thread contract: created on the control (Asio) thread; once linked into
// the QueueCore, everything marked "poller" is touched only by the poller
// thread, and the control thread reaches it only through
// QueueCore::run_sync. Objects unlink themselves in their destructors; a
// fabric's class deriving from one of these unlinks in its own destructor
// (its members are gone before the base's destructor runs, and the poller
// may be using them until the object is unlinked).
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "router/fabric/core/spare_segments.h"
#include "router/fabric/core/tenant_share.h"
#include "router/fabric/core/traffic.h"
#include "router/fabric/fabric.h"
#include "router/fabric/virtual_queues.h"
#include "shm/descriptors.h"
#include "shm/doorbell.h"
#include "shm/segment.h"

namespace ff::router::core {

class QueueCore;

// A client's context: the doorbell its posts ring (watched by the poller
// while the context lives) and its asynchronous events.
struct Context final : FabricContext {
  explicit Context(QueueCore& c);  // throws std::system_error
  ~Context() override;
  UniqueFd take_client_doorbell() override { return UniqueFd(doorbell.release_peer_end()); }
  UniqueFd take_client_async_fd() override { return async.take_client_event_fd(); }
  int async_segment_fd() const override { return async.segment_fd(); }
  void keep_spare_segments(policy::TenantQuota* memory, policy::TenantQuota* handles) override {
    spare_segments.charge_to(memory, handles);
  }
  QueueCore& core;
  SpareSegments spare_segments;  // control thread
  // The client rings, the poller wakes (a full pipe is rung already).
  shm::PipeDoorbell doorbell{shm::PipeDoorbell::Keep::kReadEnd, 4096};
  AsyncEvents async;  // poller
};

// A CQ: written by the poller that serves the context that made it.
struct Cq final : VirtualCq {
  Cq(Context& ctx, uint32_t capacity, VirtualChannel* channel, uint32_t tag, bool timestamps)
      : VirtualCq(ctx.async, capacity, channel, tag, timestamps), core(ctx.core) {}
  QueueCore& core;
};

struct Pd : FabricPd {
  explicit Pd(Owner o) : owner(std::move(o)) {}
  const Owner owner;
};

// A memory region; linked by its lkey.
struct Mr : FabricMr {
  explicit Mr(QueueCore& c) : core(c) {}
  ~Mr() override;  // unlinks
  uint32_t lkey() const override { return lkey_value; }
  uint32_t rkey() const override { return rkey_value; }
  uint32_t windows_bound() const override { return windows.load(std::memory_order_relaxed); }
  bool contains(uint64_t addr, uint64_t len) const {
    return addr >= iova && len <= length && addr - iova <= length - len;
  }
  // Whether the MR lets `pd` do `need` on [addr, addr + len).
  bool grants(const Pd& to, unsigned need, uint64_t addr, uint64_t len) const {
    return pd == &to && (access & need) == need && contains(addr, len);
  }

  QueueCore& core;
  // What grants() and translating an address read, in the object's first
  // line: a work request touches one line of each MR it names.
  const Pd* pd = nullptr;
  uint64_t iova = 0;
  uint64_t length = 0;
  // The router's address of the MR's first byte, where the router reaches
  // the whole MR as one range (verbs: always, the range the device
  // registered; soft: when one segment holds it); else null.
  std::byte* router_at_iova = nullptr;
  unsigned access = 0;
  uint32_t lkey_value = 0;
  uint32_t rkey_value = 0;
  bool linked = false;
  std::vector<std::shared_ptr<FabricSegment>> segments;  // keeps the memory mapped
  std::atomic<uint32_t> windows{0};  // bound to it (the poller writes; dereg reads)
  struct Mw* bound_windows = nullptr;  // poller: the windows bound to it (Mw::on_mr)
};

struct Qp;

// A memory window; linked by its index (rkey >> 8), which no MR key
// shares (the fabric draws both from one counter). A bind gives it a range
// of an MR of its PD, its access and a new key byte; type 1 is bound by
// ibv_bind_mw and used through any QP of the PD, type 2 is bound by a
// work request and used only through the QP that bound it, until
// invalidated. The poller alone binds and invalidates (QueueCore).
struct Mw final : FabricMw {
  Mw(QueueCore& c, const Pd& p, uint32_t t, uint32_t key) : core(c), pd(p), type(t), first_rkey(key), current_rkey(key) {}
  ~Mw() override;  // unlinks (and unbinds)
  uint32_t rkey() const override { return first_rkey; }
  uint32_t index() const { return first_rkey >> 8; }
  bool bound() const { return mr != nullptr; }
  QueueCore& core;
  const Pd& pd;
  const uint32_t type;  // IBV_MW_TYPE_1 or _2
  const uint32_t first_rkey;
  bool linked = false;
  // --- poller ---
  uint32_t current_rkey;  // now
  Mr* mr = nullptr;       // bound to (nullptr: unbound; type 2: free)
  Qp* qp = nullptr;       // type 2: the QP that bound it
  uint64_t addr = 0;
  uint64_t length = 0;
  unsigned access = 0;    // remote read, write, atomic
  // Intrusive lists of the windows bound to one MR, and (type 2) by one QP:
  // an MR or QP that goes unbinds its own, without a scan, without allocating.
  struct Links {
    Mw* prev = nullptr;
    Mw* next = nullptr;
  };
  Links on_mr, on_qp;
};

// A shared receive queue: the ring clients post to with ibv_post_srq_recv.
// An XRC SRQ also names its XRC domain and the CQ its receives complete
// on, and is linked by its number (srq_num), which XRC senders name.
struct Srq : FabricSrq {
  Srq(Context& c, shm::Mapping m, const Pd& pd, uint32_t cap, uint32_t max_sge, uint32_t limit, uint32_t tag,
      uint32_t xrcd = 0, VirtualCq* cq = nullptr);
  ~Srq() override;  // unlinks
  int segment_fd() const override { return mapping.fd(); }
  uint32_t capacity() const override { return cap; }
  uint32_t max_sge() const override { return sge; }
  uint32_t srq_num() const override { return number; }
  Context& ctx;
  shm::Mapping mapping;
  const Pd& pd;
  uint32_t cap;        // changes with ring and mapping (resize, on the poller thread)
  const uint32_t sge;
  const uint32_t tag;  // the client's handle
  const uint32_t xrcd;      // XRC: its domain (0: a basic SRQ)
  VirtualCq* const cq;      // XRC: where its receives complete
  uint32_t number = 0;      // XRC: set before it is linked
  // --- poller ---
  shm::RingConsumer<shm::RecvWqe> ring;  // shared by every QP on it
  uint32_t limit;                        // armed when non-zero
};

// An address handle; linked by its id.
struct Ah : FabricAh {
  Ah(QueueCore& c, const Pd& p, const ibv_ah_attr& a, uint32_t ip, uint32_t ident);
  ~Ah() override;  // unlinks
  uint32_t id() const override { return ident; }
  QueueCore& core;
  const Pd& pd;
  const ibv_ah_attr attr;
  const uint32_t virtual_ip;  // from the IPv4-mapped dgid
  const uint32_t ident;
  bool linked = false;
};

struct Qp : FabricQp {
  Qp(Context& c, shm::Mapping m, const Pd& pd, VirtualCq* scq, VirtualCq* rcq, Srq* srq, const QpInit& init,
     uint32_t send_cap, uint32_t recv_cap, uint32_t tag);
  ~Qp() override;  // unlinks
  uint32_t qp_num() const override { return qpn; }
  int segment_fd() const override { return mapping.fd(); }
  ibv_qp_cap cap() const override { return init.cap; }
  uint32_t send_capacity() const override { return send_cap; }
  uint32_t recv_capacity() const override { return recv_cap; }
  ibv_qp_type qp_type() const override { return init.type; }
  bool xrc_target() const { return init.type == IBV_QPT_XRC_RECV; }
  // The queue receives are taken from: the SRQ's ring or the QP's own.
  shm::RingConsumer<shm::RecvWqe>& receives() { return srq != nullptr ? srq->ring : rq; }
  // The PD receive buffers are checked against: the queue's they were posted to.
  const Pd& receive_pd() const { return srq != nullptr ? srq->pd : pd; }
  // The PD remote keys are checked against: an XRC receive QP's is the one
  // of the SRQ its request names (IBA 9.8.2: the XRC SRQ's), so that a
  // request naming none touches no memory.
  const Pd* memory_pd() const { return xrc_target() ? (srq != nullptr ? &srq->pd : nullptr) : &pd; }
  // Where its receives complete: an XRC SRQ's CQ, else its own receive CQ.
  VirtualCq* receive_cq() const { return srq != nullptr && srq->cq != nullptr ? srq->cq : recv_cq; }
  bool signals(const shm::SendWqe& w) const { return (w.send_flags & IBV_SEND_SIGNALED) != 0 || init.sq_sig_all; }

  Context& ctx;
  shm::Mapping mapping;
  const Pd& pd;
  VirtualCq* const send_cq;  // null: an XRC receive QP
  VirtualCq* const recv_cq;  // null: an XRC QP
  // Its SRQ; an XRC receive QP's is the one the request it serves names
  // (poller: Responder::select_xrc_srq).
  Srq* srq;
  const QpInit init;
  const uint32_t send_cap;
  const uint32_t recv_cap;
  const uint32_t tag;  // the client's handle
  uint32_t qpn = 0;    // set before it is linked
  bool linked = false;

  // --- poller ---
  shm::RingConsumer<shm::SendWqe> sq;
  shm::RingConsumer<shm::RecvWqe> rq;
  ibv_qp_state state = IBV_QPS_RESET;
  ibv_qp_attr attr{};      // as last modified (the state is kept in `state`)
  bool peer_gone = false;  // the connected QP was destroyed
  uint64_t sq_retired = 0;  // send WRs (by ring index) covered by send completions written
  // What it did, and what its tenant's QPs did (QueueCore::count_sent,
  // complete_for); the poller writes both. The tenant's share of the
  // poller, and when this QP's work may go again after its tenant's caps
  // held it (QueueCore::admit).
  LiveTraffic traffic;
  TenantBlock& tenant;
  uint64_t capped_until_ns = 0;
  uint64_t asked_in_round = 0;  // the last poller pass it asked admit() in
  struct Mw* bound_windows = nullptr;  // the type 2 memory windows it bound (Mw::on_qp)
  uint32_t mcast_groups = 0;    // multicast groups it is attached to
};

// Whether a QP in `state` answers requests.
inline bool answers(ibv_qp_state state) {
  return state == IBV_QPS_RTR || state == IBV_QPS_RTS || state == IBV_QPS_SQD;
}

}  // namespace ff::router::core
