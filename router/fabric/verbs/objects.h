// The verbs fabric's objects: each virtual object a client sees is backed by
// a shadow object on the RDMA device the router owns. Created on the control
// thread; once linked into the Engine, everything marked "poller" is touched
// only by the poller thread (the control thread goes through run_sync).
//
// Keys and QP numbers are the device's own: what an app exchanges with its
// peer out of band is valid on the wire as it is. Memory is registered with
// ibv_reg_mr_iova2 at the app's addresses, so the device reads and writes the
// app's pages (shared memfds) directly: zero copies on the data path.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "router/fabric/fabric.h"
#include "router/fabric/virtual_queues.h"
#include "shm/descriptors.h"
#include "shm/doorbell.h"
#include "shm/segment.h"

namespace ff::router::verbs {

class Engine;

// The RDMA device the router owns, opened once at startup.
struct Device {
  std::string name;
  ibv_context* ctx = nullptr;
  uint8_t port = 1;
  int gid_index = 0;
  ibv_gid gid{};  // the device's own address (RoCE: its IPv4-mapped GID)
  ibv_device_attr_ex attr{};
  ibv_port_attr port_attr{};
  uint32_t max_inline = 0;  // what an RC QP accepts (probed)
  ibv_comp_channel* channel = nullptr;  // every shadow CQ reports here
  // Where UD datagrams the router must not deliver go (to a QP of another
  // tenant): a UD QP that never posts a receive, so the device drops them
  // and the sender completes as on the wire.
  ibv_pd* sink_pd = nullptr;
  ibv_cq* sink_cq = nullptr;
  ibv_qp* sink_qp = nullptr;
  ~Device();
};

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
    uint32_t i = free_.back();
    free_.pop_back();
    return i;
  }
  void release(uint32_t i) { free_.push_back(i); }
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

using Context = ClientContext<Engine>;

// One device PD per virtual PD: the device enforces PD boundaries (and so
// tenant boundaries: a PD never spans tenants) on every key.
struct Pd final : FabricPd {
  Pd(Owner o, ibv_pd* p) : owner(std::move(o)), pd(p) {}
  ~Pd() override { ibv_dealloc_pd(pd); }
  Owner owner;
  ibv_pd* pd;
};

struct Mr final : FabricMr {
  Mr(Engine& e) : engine(e) {}
  ~Mr() override;
  uint32_t lkey() const override { return mr->lkey; }
  uint32_t rkey() const override { return mr->rkey; }
  // The router's address of app address `addr` (inside the MR).
  std::byte* router_addr(uint64_t addr) const { return router_at_iova + (addr - iova); }
  bool contains(uint64_t addr, uint64_t len) const {
    return addr >= iova && len <= length && addr - iova <= length - len;
  }

  Engine& engine;
  const Pd* pd = nullptr;
  ibv_mr* mr = nullptr;
  uint64_t iova = 0;
  uint64_t length = 0;
  unsigned access = 0;
  std::byte* router_at_iova = nullptr;
  // An MR over several segments gets one contiguous router mapping of them
  // (the device needs one virtual range); null when it lies in one segment.
  std::byte* composed = nullptr;
  size_t composed_length = 0;
  std::vector<std::shared_ptr<FabricSegment>> segments;  // keeps the memory mapped
};

struct Srq final : FabricSrq {
  Srq(Context& c, shm::Mapping m, const Pd& pd, ibv_srq* s, uint32_t cap, uint32_t max_sge,
      uint32_t limit, uint32_t tag);
  ~Srq() override;
  int segment_fd() const override { return mapping.fd(); }
  uint32_t capacity() const override { return cap; }
  uint32_t max_sge() const override { return sge; }
  Context& ctx;
  shm::Mapping mapping;
  const Pd& pd;
  ibv_srq* srq;
  const uint32_t cap;
  const uint32_t sge;
  const uint32_t tag;  // the client's handle
  // --- poller ---
  shm::RingConsumer<shm::RecvWqe> ring;
  SlotTable<shm::RecvWqe> posted;  // on the device
  uint32_t limit;                  // armed when non-zero
};

struct Ah final : FabricAh {
  Ah(Engine& e, const Pd& p, ibv_ah* a, std::optional<uint32_t> ip, uint32_t ident);
  ~Ah() override;
  uint32_t id() const override { return ident; }
  Engine& engine;
  const Pd& pd;
  ibv_ah* ah;
  const std::optional<uint32_t> virtual_ip;  // nullopt: LID addressing (this router's QPs)
  const uint32_t ident;
};

// What the completion of a send needs.
struct SendSlot {
  uint64_t wr_id;
  uint32_t opcode;
  bool signaled;
};

struct Qp final : FabricQp {
  Qp(Context& c, shm::Mapping m, const Pd& pd, VirtualCq& scq, VirtualCq& rcq, Srq* srq,
     const QpInit& init, uint32_t send_cap, uint32_t recv_cap, uint32_t tag);
  ~Qp() override;
  uint32_t qp_num() const override { return qp->qp_num; }
  int segment_fd() const override { return mapping.fd(); }
  ibv_qp_cap cap() const override { return init.cap; }
  uint32_t send_capacity() const override { return send_cap; }
  uint32_t recv_capacity() const override { return recv_cap; }

  Context& ctx;
  shm::Mapping mapping;
  const Pd& pd;
  VirtualCq& send_cq;
  VirtualCq& recv_cq;
  Srq* const srq;
  const QpInit init;
  const uint32_t send_cap;
  const uint32_t recv_cap;
  const uint32_t tag;  // the client's handle
  // The shadow: its own CQs, sized so that they cannot overflow (every send
  // is signaled on the device, so the router knows when its slot is free).
  ibv_cq* device_send_cq = nullptr;
  ibv_cq* device_recv_cq = nullptr;
  ibv_qp* qp = nullptr;

  // --- poller ---
  shm::RingConsumer<shm::SendWqe> sq;
  shm::RingConsumer<shm::RecvWqe> rq;
  SlotTable<SendSlot> sends;        // on the device
  SlotTable<shm::RecvWqe> receives; // on the device (own receive queue only)
  ibv_qp_state state = IBV_QPS_RESET;
  ibv_qp_attr attr{};  // as the app set it (virtual addresses)
  bool peer_gone = false;  // the connected QP was destroyed
  uint32_t sends_visible = 0;      // published before this pass looked at receives
  std::deque<bool> solicited;      // RC: IBV_SEND_SOLICITED of each posted message that consumes a receive
};

}  // namespace ff::router::verbs
