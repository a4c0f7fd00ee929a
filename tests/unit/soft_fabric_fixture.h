// The soft fabric in this process, as the unit tests drive it: a client's
// objects made through the Fabric interface (a context, a PD, a CQ, memory
// from a memfd registered twice, QPs and the app's side of their rings),
// and a fixture with two tenants' clients that connects QPs as a program
// would (INIT, RTR, RTS).
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "router/fabric/soft/responder.h"
#include "router/fabric/soft/soft_fabric.h"
#include "shm/descriptors.h"
#include "shm/ring.h"

namespace ff::router::soft::fixture {


constexpr uint64_t kBase = 0x10000000;  // where the client's memory "is"
constexpr uint64_t kSize = 64 * 1024;
constexpr uint32_t kBlueIp = 0x0a000001, kRedIp = 0x0a000002;
constexpr unsigned kAllRemote = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

template <typename R>
auto take(R r) {
  EXPECT_TRUE(r.ok()) << r.error().message;
  return std::move(*r);
}

inline ibv_gid gid_of(uint32_t ip) {
  ibv_gid g{};
  g.raw[10] = g.raw[11] = 0xff;
  for (int i = 0; i < 4; ++i) g.raw[12 + i] = static_cast<uint8_t>(ip >> (24 - 8 * i));
  return g;
}

// One tenant's client as the fabric sees it: a context, a PD, a CQ, memory
// registered twice (all rights; local read only) and QPs.
struct Client {
  Client(SoftFabric& f, std::string tenant, uint32_t ip) : fabric(f) {
    ctx = take(f.open_context(tenant));
    doorbell = ctx->take_client_doorbell();
    pd = take(f.alloc_pd(Owner{std::move(tenant), 1, ip}));
    cq = take(f.create_cq(*ctx, 256, nullptr, false, 1));
    cq_view = shm::Mapping::attach(cq->segment_fd(), shm::SegmentKind::kRing);
    completions = shm::RingConsumer<shm::Cqe>(cq_view.base() + shm::kCqRingOffset, cq->capacity());
    segment = take(f.map_segment(UniqueFd(::dup(memory.fd())), kBase, kSize, 0));
    std::shared_ptr<FabricSegment> segs[] = {segment};
    mr = take(f.reg_mr(*pd, segs, kBase, kSize / 2, kBase, IBV_ACCESS_LOCAL_WRITE | kAllRemote));
    read_only = take(f.reg_mr(*pd, segs, kBase + kSize / 2, kSize / 2, kBase + kSize / 2, 0));
  }

  Qp& make_qp(ibv_qp_type type) {
    QpInit init;
    init.type = type;
    init.cap = {16, 16, 4, 4, 0};
    qps.push_back(take(fabric.create_qp(*ctx, *pd, cq.get(), cq.get(), nullptr, init, 7)));
    auto& q = *qps.back();
    views.push_back(shm::Mapping::attach(q.segment_fd(), shm::SegmentKind::kRing));
    receives.emplace_back(views.back().base() + shm::qp_recv_ring_offset(q.send_capacity()), q.recv_capacity());
    sends.emplace_back(views.back().base() + shm::kQpSendRingOffset, q.send_capacity());
    return static_cast<Qp&>(q);
  }

  // Posts a receive of [addr, addr + len) under `lkey` to QP number i.
  void post_receive(size_t i, uint64_t wr_id, uint64_t addr, uint32_t len, uint32_t lkey) {
    shm::RecvWqe r{};
    r.wr_id = wr_id;
    r.num_sge = 1;
    r.sge[0] = {addr, len, lkey};
    ASSERT_TRUE(receives[i].sp_try_push(r));
    if (receives[i].consumer_needs_wakeup()) wake();
  }

  // Posts a signaled SEND of [addr, addr + len) to QP number i, as the shim does.
  void post_send(size_t i, uint64_t wr_id, uint64_t addr, uint32_t len) {
    shm::SendWqe w{};
    w.wr_id = wr_id;
    w.opcode = IBV_WR_SEND;
    w.send_flags = IBV_SEND_SIGNALED;
    w.num_sge = 1;
    w.payload.sge[0] = {addr, len, mr->lkey()};
    ASSERT_TRUE(sends[i].sp_try_push(w));
    if (sends[i].consumer_needs_wakeup()) wake();
  }
  void wake() {
    const char one = 1;
    ASSERT_EQ(::write(doorbell.get(), &one, 1), 1);
  }
  bool await_completion(shm::Cqe& c) {
    for (int i = 0; i < 100000; ++i) {
      if (completions.sc_try_pop(c)) return true;
      ::usleep(10);
    }
    return false;
  }

  std::byte* at(uint64_t addr) { return memory.base() + (addr - kBase); }

  SoftFabric& fabric;
  shm::Mapping memory = shm::Mapping::create("responder-test", shm::SegmentKind::kArena, kSize);
  std::unique_ptr<FabricContext> ctx;
  UniqueFd doorbell;  // the client's end
  std::unique_ptr<FabricPd> pd;
  std::unique_ptr<FabricCq> cq;
  shm::Mapping cq_view;
  shm::RingConsumer<shm::Cqe> completions;
  std::shared_ptr<FabricSegment> segment;
  std::unique_ptr<FabricMr> mr, read_only;
  std::vector<std::unique_ptr<FabricQp>> qps;
  std::vector<shm::Mapping> views;
  std::vector<shm::RingProducer<shm::RecvWqe>> receives;  // the app's side of each QP's receive ring
  std::vector<shm::RingProducer<shm::SendWqe>> sends;     // ... and send ring
};

// `kPollers`: the fabric's poller threads (blue and red are on different
// ones when there are two: router/fabric/fabric.h, poller_of).
template <uint32_t kPollers>
class SoftFabricTestWith : public ::testing::Test {
 protected:
  static FabricConfig config() {
    FabricConfig c;
    c.pollers = kPollers;
    return c;
  }

  // Moves QP q to RTR (and RTS) connected to QP `dest` at `dest_ip`.
  void connect(Qp& q, uint32_t dest, uint32_t dest_ip, unsigned access, uint8_t retries = 0) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.qp_access_flags = access;
    a.qkey = 0x1234;
    int init_mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT;
    init_mask |= q.init.type == IBV_QPT_UD ? IBV_QP_QKEY : IBV_QP_ACCESS_FLAGS;
    ASSERT_TRUE(fabric.modify_qp(q, a, init_mask));
    a = {};
    a.qp_state = IBV_QPS_RTR;
    int mask = IBV_QP_STATE;
    if (q.init.type != IBV_QPT_UD) {
      a.path_mtu = IBV_MTU_4096;
      a.dest_qp_num = dest;
      a.min_rnr_timer = min_rnr_timer;
      a.ah_attr.port_num = 1;
      a.ah_attr.is_global = 1;
      a.ah_attr.grh.dgid = gid_of(dest_ip);
      mask |= IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN;
      if (q.init.type == IBV_QPT_RC) mask |= IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
    }
    ASSERT_TRUE(fabric.modify_qp(q, a, mask));
    a = {};
    a.qp_state = IBV_QPS_RTS;
    a.retry_cnt = retries;
    a.rnr_retry = retries;
    mask = IBV_QP_STATE | IBV_QP_SQ_PSN;
    if (q.init.type == IBV_QPT_RC) mask |= IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC;
    ASSERT_TRUE(fabric.modify_qp(q, a, mask));
  }

  // Runs `fn` with the responder on the poller thread.
  template <typename Fn>
  void rules(Fn fn) {
    fabric.engine().run_sync([&] { fn(fabric.engine().responder()); });
  }

  Origin from(const Qp& q, const Qp& to) {
    return Origin{q.qpn, to.qpn, q.init.type, nullptr, &q.pd.owner.tenant};
  }

  uint8_t min_rnr_timer = 12;  // 0.64 ms
  SoftFabric fabric{config()};
  Client blue{fabric, "blue", kBlueIp};
  Client red{fabric, "red", kRedIp};
};
using SoftFabricTest = SoftFabricTestWith<1>;

}  // namespace ff::router::soft::fixture
