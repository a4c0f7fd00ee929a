// The verbs fabric's objects: the core objects (router/fabric/core), each
// backed by a shadow object on the RDMA device the router owns. Created on
// the control thread; once linked into the Engine, everything marked
// "poller" is touched only by the poller thread (the control thread goes
// through run_sync). Destructors unlink before they free the shadow.
//
// Keys and QP numbers are the device's own: what an app exchanges with its
// peer out of band is valid on the wire as it is. Memory is registered with
// ibv_reg_mr_iova2 at the app's addresses, so the device reads and writes the
// app's pages (shared memfds) directly: zero copies on the data path.
#pragma once

#include <infiniband/verbs.h>

#include <array>
#include <cassert>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "router/fabric/core/objects.h"
#include "router/fabric/verbs/device.h"

namespace ff::router::verbs {

class Engine;

// Fixed-size table of in-flight work requests: the device's wr_id is the
// slot index, the slot holds what the completion needs.
template <typename Entry>
class SlotTable {
 public:
  explicit SlotTable(uint32_t n = 0) : entries_(n) {
    free_.reserve(n);
    for (uint32_t i = n; i > 0; --i) free_.push_back(i - 1);
  }
  bool has_free() const { return !free_.empty(); }
  uint32_t acquire() {
    assert(!free_.empty() && "acquire only after has_free()");
    uint32_t i = free_.back();
    free_.pop_back();
    return i;
  }
  void release(uint32_t i) {
    assert(i < entries_.size() && free_.size() < entries_.size() && "a slot is released once");
    free_.push_back(i);
  }
  bool valid(uint64_t i) const { return i < entries_.size(); }
  Entry& operator[](uint64_t i) { return entries_[i]; }
  uint32_t used() const { return static_cast<uint32_t>(entries_.size() - free_.size()); }
  void release_all() {
    free_.clear();
    for (uint32_t i = static_cast<uint32_t>(entries_.size()); i > 0; --i) free_.push_back(i - 1);
  }

 private:
  std::vector<Entry> entries_;
  std::vector<uint32_t> free_;
};

using core::Context;

// One device PD per virtual PD: the device enforces PD boundaries (and so
// tenant boundaries: a PD never spans tenants) on every key.
struct Pd final : core::Pd {
  Pd(Owner o, ibv_pd* p) : core::Pd(std::move(o)), pd(p) {}
  ~Pd() override { ibv_dealloc_pd(pd); }
  ibv_pd* pd;
};

// Keys are the device's: valid on the wire as they are.
struct Mr final : core::Mr {
  using core::Mr::Mr;
  ~Mr() override;
  // The router's address of app address `addr` (inside the MR).
  std::byte* router_addr(uint64_t addr) const { return router_at_iova + (addr - iova); }

  ibv_mr* mr = nullptr;
  // An MR over several segments gets one contiguous router mapping of them
  // (the device needs one virtual range); null when it lies in one segment.
  std::byte* composed = nullptr;
  size_t composed_length = 0;
};

struct Srq final : core::Srq {
  Srq(Context& c, shm::Mapping m, const Pd& p, ibv_srq* s, uint32_t capacity, uint32_t max_sge, uint32_t lim,
      uint32_t t)
      : core::Srq(c, std::move(m), p, capacity, max_sge, lim, t), srq(s), device_depth(capacity), posted(capacity) {}
  ~Srq() override;
  ibv_srq* srq;
  // Receives on the device at most: the depth it was made with (a resize
  // changes the ring; what does not fit on the device waits there).
  const uint32_t device_depth;
  // --- poller ---
  SlotTable<shm::RecvWqe> posted;  // on the device
};

// An address handle toward another host's virtual IP gets its device AH
// once that host's router has named a QP behind it (its device's GID comes
// with the answer): until then `ah` is null and datagrams to it wait.
struct Ah final : core::Ah {
  Ah(core::QueueCore& c, const Pd& p, const ibv_ah_attr& a, uint32_t ip, uint32_t id, ibv_ah* h,
     std::string router)
      : core::Ah(c, p, a, ip, id), ah(h), far_router(std::move(router)) {}
  ~Ah() override;
  ibv_ah* ah;                    // poller reads; the control thread sets it (run_sync)
  const std::string far_router;  // the router serving virtual_ip ("": this one)
};

// What a UD QP learned of a destination on another host (its router's
// answer): datagrams go to it, are dropped (no such QP of the tenant
// there), or wait for the answer.
struct FarDestination {
  enum class State : uint8_t { kAsked, kAllowed, kRefused } state = State::kAsked;
  uint64_t until_ns = 0;  // a refusal is asked again after this
  std::string router;
};

// A device QP on another host allowed to send datagrams to a UD QP here:
// its router asked for this QP on its behalf (cluster.h, Asker).
struct FarSender {
  uint32_t vip;
  std::string router;
  // When its router said it is gone (QpGone, or the router was lost); 0
  // while it lives. Datagrams it sent before going may still be on the
  // wire (udaddy's server sends its replies and exits at once): they are
  // delivered for kGoneSenderGraceNs after that, later ones dropped. The
  // entry stays until its place is needed, so that the host stays known.
  uint64_t gone_ns = 0;
};
inline constexpr uint64_t kGoneSenderGraceNs = 2'000'000'000;
using FarSenderKey = std::pair<std::array<uint8_t, 16>, uint32_t>;  // (device GID, device QP number)

// What the completion of a send needs.
struct SendSlot {
  uint64_t wr_id;
  uint64_t index;  // in the send ring
  uint32_t opcode;
  bool signaled;
};

struct Qp final : core::Qp {
  Qp(Context& c, shm::Mapping m, const Pd& p, VirtualCq* scq, VirtualCq* rcq, Srq* s, const QpInit& i,
     uint32_t send_c, uint32_t recv_c, uint32_t t)
      : core::Qp(c, std::move(m), p, scq, rcq, s, i, send_c, recv_c, t),
        sends(send_c),
        receives(s != nullptr ? 0 : recv_c) {}
  ~Qp() override;
  const Pd& device_pd() const { return static_cast<const Pd&>(pd); }
  Srq* device_srq() const { return static_cast<Srq*>(srq); }

  // The shadow: its own CQs, sized so that they cannot overflow (every send
  // is signaled on the device, so the router knows when its slot is free).
  ibv_cq* device_send_cq = nullptr;
  ibv_cq* device_recv_cq = nullptr;
  ibv_qp* qp = nullptr;

  // --- poller ---
  SlotTable<SendSlot> sends;         // on the device
  SlotTable<shm::RecvWqe> receives;  // on the device (own receive queue only)
  uint32_t sends_visible = 0;        // published before this pass looked at receives
  std::deque<bool> solicited;        // RC: IBV_SEND_SOLICITED of each posted message that consumes a receive
  // The control thread is changing the device QP's state (ibv_modify_qp
  // takes a firmware command, not the poller's time): nothing is posted to
  // it meanwhile.
  bool device_changing = false;
  bool device_in_error = false;  // moved to ERR already: on_error need not
  std::string far_router;        // the router its destination is on ("": this one)
  // UD across hosts (both bounded: kMaxFarPeers).
  std::map<std::pair<uint32_t, uint32_t>, FarDestination> far_destinations;  // (virtual IP, QP number)
  std::map<FarSenderKey, FarSender> far_senders;
  bool waiting_for_far = false;  // the head send waits for an answer
  // --- control thread ---
  uint64_t serial = 0;  // tells this QP from a later one with its number
  // Routers that know this QP's number (they asked about it, or it asked
  // them): told when it goes, so that nothing of theirs reaches a later QP
  // of that number. At most one entry per router.
  std::set<std::string> known_to;
  uint32_t device_pacing_kbps = 0;  // set on the device (pacing.h); 0: unpaced
};

// How many far destinations a UD QP remembers, and far senders it accepts.
inline constexpr size_t kMaxFarPeers = 4096;

// A QP on another router's device, as that router describes it.
struct RemoteQp {
  ibv_gid gid;   // its device's
  uint32_t qpn;  // on that device
};

// A modify the control thread carries out on the device between
// Engine::begin_modify and Engine::end_modify.
struct DeviceModify {
  ibv_qp_attr attr{};
  ibv_qp_state from = IBV_QPS_RESET;  // the QP's state when it was checked
  bool dest_missing = false;
  std::string far_router;  // where the destination is, when on another host
};

}  // namespace ff::router::verbs
