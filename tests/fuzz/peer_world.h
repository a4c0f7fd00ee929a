// What the peer-link fuzzers share (fuzz_peer.cc, fuzz_peer_tls.cc): a soft
// fabric with a local RC QP, a UD QP and an MR, whose every other address is
// on one peer router, and the run of one input through a link to that peer.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>
#include <thread>

#include "fabric_setup.h"
#include "router/fabric/soft/soft_fabric.h"
#include "shm/descriptors.h"

namespace fuzz_peer {

using fuzz_setup::take;

using namespace ff;
using router::soft::Peer;

constexpr uint32_t kLocalIp = 0x0a000001, kPeerIp = 0x0a000002;

// Every address that is not ours is on the one peer.
struct OnePeer : router::SoftRoutes {
  Peer peer{"fuzz-peer"};
  router::Result<Peer*> locate(std::string_view, uint32_t vip) override {
    return vip == kLocalIp ? nullptr : &peer;
  }
  std::vector<Peer*> peers_of(std::string_view) override { return {&peer}; }
};

struct World {
  router::SoftFabric fabric{router::FabricConfig{}};
  OnePeer routes;
  std::unique_ptr<router::FabricContext> ctx;
  std::unique_ptr<router::FabricPd> pd;
  shm::Mapping memory = shm::Mapping::create("fuzz-mr", shm::SegmentKind::kArena, 1 << 16);
  std::shared_ptr<router::FabricSegment> segment;
  std::unique_ptr<router::FabricMr> mr;
  std::unique_ptr<router::FabricCq> cq;
  std::unique_ptr<router::FabricQp> rc, ud;
  shm::Mapping rc_segment, cq_segment;
  shm::RingConsumer<shm::Cqe> completions;
  World() {
    fabric.set_routes(&routes);
    ctx = take(fabric.open_context("fuzz"));
    pd = take(fabric.alloc_pd({"fuzz", 1, kLocalIp}));
    cq = take(fabric.create_cq(*ctx, 4096, nullptr, false, 1));
    mr = fuzz_setup::register_all(fabric, *pd, memory, segment);
    router::QpInit init;
    init.cap = {64, 64, 16, 16, 0};
    rc = take(fabric.create_qp(*ctx, *pd, cq.get(), cq.get(), nullptr, init, 2));
    init.type = IBV_QPT_UD;
    ud = take(fabric.create_qp(*ctx, *pd, cq.get(), cq.get(), nullptr, init, 3));
    rc_segment = shm::Mapping::attach(rc->segment_fd(), shm::SegmentKind::kRing);
    cq_segment = shm::Mapping::attach(cq->segment_fd(), shm::SegmentKind::kRing);
    completions = shm::RingConsumer<shm::Cqe>(cq_segment.base() + shm::kCqRingOffset, cq->capacity());
  }

  void modify(router::FabricQp& q, ibv_qp_attr a, int mask) { (void)fabric.modify_qp(q, a, mask); }
  // The RC QP connected to QP 0x100 at the peer, in RTS; the UD QP in RTS.
  void reset() {
    for (auto* q : {rc.get(), ud.get()}) {
      ibv_qp_attr a{};
      a.qp_state = IBV_QPS_RESET;
      modify(*q, a, IBV_QP_STATE);
      a.qp_state = IBV_QPS_INIT;
      a.port_num = 1;
      a.qkey = 0x11111111;
      a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                          IBV_ACCESS_REMOTE_ATOMIC;
      modify(*q, a,
             IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
                 (q == rc.get() ? IBV_QP_ACCESS_FLAGS : IBV_QP_QKEY));
      a = {};
      a.qp_state = IBV_QPS_RTR;
      int mask = IBV_QP_STATE;
      if (q == rc.get()) {
        a.path_mtu = IBV_MTU_4096;
        a.dest_qp_num = 0x100;
        a.max_dest_rd_atomic = 16;
        a.min_rnr_timer = 1;
        a.ah_attr.port_num = 1;
        a.ah_attr.is_global = 1;
        uint8_t* gid = a.ah_attr.grh.dgid.raw;
        gid[10] = gid[11] = 0xff;
        gid[12] = kPeerIp >> 24;
        gid[13] = (kPeerIp >> 16) & 0xff;
        gid[14] = (kPeerIp >> 8) & 0xff;
        gid[15] = kPeerIp & 0xff;
        mask |= IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
                IBV_QP_MIN_RNR_TIMER;
      }
      modify(*q, a, mask);
      a = {};
      a.qp_state = IBV_QPS_RTS;
      a.timeout = 1;
      a.retry_cnt = 1;
      a.rnr_retry = 1;
      a.max_rd_atomic = 16;
      modify(*q, a,
             IBV_QP_STATE | IBV_QP_SQ_PSN |
                 (q == rc.get() ? IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC : 0));
    }
  }

  // Work for the requester half: a few WQEs of every kind, in flight once the
  // outbound link is up.
  void post_sends() {
    auto* ring = reinterpret_cast<shm::RingControl*>(rc_segment.base() + shm::kQpSendRingOffset);
    auto* slots = reinterpret_cast<shm::SendWqe*>(rc_segment.base() + shm::kQpSendRingOffset + sizeof(shm::RingControl));
    uint64_t p = ring->producer_index.load();
    const uint8_t ops[] = {IBV_WR_SEND, IBV_WR_RDMA_WRITE, IBV_WR_RDMA_READ, IBV_WR_ATOMIC_FETCH_AND_ADD,
                           IBV_WR_RDMA_READ};
    for (uint8_t op : ops) {
      shm::SendWqe w{};
      w.wr_id = p;
      w.opcode = op;
      w.num_sge = 1;
      w.send_flags = IBV_SEND_SIGNALED;
      w.remote_addr = 0x2000;
      w.rkey = 0x1234;
      w.payload.sge[0] = {0x100000 + 64, op == IBV_WR_ATOMIC_FETCH_AND_ADD ? 8u : (op == IBV_WR_RDMA_READ ? 40000u : 100u),
                          mr->lkey()};
      slots[p % rc->send_capacity()] = w;
      ++p;
    }
    ring->producer_index.store(p, std::memory_order_release);
  }
};

inline World& world() {
  static World* w = new World();
  return *w;
}

// One input's run: a link to the peer (`answers`: our outbound link, else
// its inbound one) on `router_end`, in the clear or with its TLS session;
// `send` (the peer's side: false when its socket is full) gets the bytes,
// then the peer's side of the connection is shut for writing (EOF). The
// link must be gone once the engine has read it all.
template <typename Send>
void run(World& w, bool answers, int router_end, router::soft::Ssl tls, int peer_end, std::span<const uint8_t> bytes,
         Send&& send) {
  auto& engine = w.fabric.engine();
  Peer& peer = w.routes.peer;
  engine.run_sync([&] {
    engine.attach_link(std::make_unique<router::soft::Link>(peer, UniqueFd(router_end), answers, std::move(tls)), 1);
  });
  if (answers) w.post_sends();
  auto up = [&] { return (answers ? peer.out_up : peer.in_up).load(); };
  for (size_t off = 0; off < bytes.size();) {
    size_t n = send(bytes.subspan(off));
    if (n == 0) {
      // Full: let the engine read, and keep going.
      std::this_thread::yield();
      if (!up()) break;
    }
    off += n;
  }
  ::shutdown(peer_end, SHUT_WR);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (up() && std::chrono::steady_clock::now() < deadline) {
    // Answers to our answers go nowhere: keep the socket drained.
    char sink[65536];
    while (::recv(peer_end, sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    std::this_thread::yield();
  }
  if (up()) __builtin_trap();  // the engine hung on the input
  ::close(peer_end);
  shm::Cqe c;
  while (w.completions.sc_try_pop(c)) {
  }
}

}  // namespace fuzz_peer

