// libFuzzer: a hostile peer router. Each input is the byte stream a peer
// sends on one connection: to this router's inbound link (requests: the
// responder half executes them against a local RC QP, a UD QP and an MR)
// or, when the first byte is odd, on its outbound link (answers: the
// requester half matches them against a send queue with work in flight).
// Whatever the frames say, nothing may crash, hang, or touch memory outside
// the MR; the stream ends (EOF) and the link is dropped, failing the QPs
// routed through that peer, which the next input sets up again.
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include "router/fabric/soft/soft_fabric.h"
#include "shm/descriptors.h"

namespace {

// The value of a fabric call that must succeed here.
template <typename R>
auto take(R r) {
  if (!r) __builtin_trap();
  return std::move(*r);
}

using namespace ff;
using router::soft::Peer;

constexpr uint32_t kLocalIp = 0x0a000001, kPeerIp = 0x0a000002;

// Every address that is not ours is on the one peer.
struct OnePeer : router::SoftRoutes {
  Peer peer{"fuzz-peer"};
  router::Result<Peer*> locate(std::string_view, uint32_t vip) override {
    return vip == kLocalIp ? nullptr : &peer;
  }
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
    ctx = take(fabric.open_context());
    pd = take(fabric.alloc_pd({"fuzz", 1, kLocalIp}));
    cq = take(fabric.create_cq(*ctx, 4096, nullptr, 1));
    segment = take(fabric.map_segment(UniqueFd(::dup(memory.fd())), 0x100000, memory.size(), 0));
    std::shared_ptr<router::FabricSegment> segs[] = {segment};
    mr = take(fabric.reg_mr(*pd, segs, 0x100000, memory.size(), 0x100000,
                       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                           IBV_ACCESS_REMOTE_ATOMIC));
    router::QpInit init;
    init.cap = {64, 64, 16, 16, 0};
    rc = take(fabric.create_qp(*ctx, *pd, *cq, *cq, nullptr, init, 2));
    init.type = IBV_QPT_UD;
    ud = take(fabric.create_qp(*ctx, *pd, *cq, *cq, nullptr, init, 3));
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

World& world() {
  static World* w = new World();
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  World& w = world();
  w.reset();
  const bool answers = (data[0] & 1) != 0;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  auto& engine = w.fabric.engine();
  Peer& peer = w.routes.peer;
  engine.run_sync([&] {
    engine.attach_link(std::make_unique<router::soft::Link>(peer, UniqueFd(sv[0]), answers), 1);
  });
  if (answers) w.post_sends();
  // The peer's bytes, then EOF; the link is gone once the engine read it all.
  size_t off = 1;
  while (off < size) {
    ssize_t n = ::send(sv[1], data + off, size - off, MSG_NOSIGNAL);
    if (n <= 0) {
      // Full: let the engine read, and keep going.
      std::this_thread::yield();
      if (!(answers ? peer.out_up : peer.in_up).load()) break;
      continue;
    }
    off += static_cast<size_t>(n);
  }
  ::shutdown(sv[1], SHUT_WR);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((answers ? peer.out_up : peer.in_up).load() && std::chrono::steady_clock::now() < deadline) {
    // Answers to our answers go nowhere: keep the socket drained.
    char sink[65536];
    while (::recv(sv[1], sink, sizeof sink, MSG_DONTWAIT) > 0) {
    }
    std::this_thread::yield();
  }
  if ((answers ? peer.out_up : peer.in_up).load()) __builtin_trap();  // the engine hung on the input
  ::close(sv[1]);
  shm::Cqe c;
  while (w.completions.sc_try_pop(c)) {
  }
  return 0;
}
