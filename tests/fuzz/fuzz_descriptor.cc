// libFuzzer: the descriptor validator. Each input is a run of 512-byte send
// descriptors written straight into a QP's shared send ring, as a hostile
// client would; the router's poller copies, validates and executes them
// against a registered MR. Nothing may crash, hang or touch memory outside
// the MR, whatever the opcode, SGE list, keys, addresses or lengths say.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>

#include "fabric_setup.h"
#include "router/fabric/soft/soft_fabric.h"
#include "shm/descriptors.h"

namespace {

using fuzz_setup::take;

using namespace ff;

struct World {
  router::SoftFabric fabric{router::FabricConfig{}};
  std::unique_ptr<router::FabricContext> ctx = take(fabric.open_context("fuzz"));
  std::unique_ptr<router::FabricPd> pd = take(fabric.alloc_pd({"fuzz", 1, 0x0a000001}));
  shm::Mapping memory = shm::Mapping::create("fuzz-mr", shm::SegmentKind::kArena, 1 << 16);
  std::shared_ptr<router::FabricSegment> segment;
  std::unique_ptr<router::FabricMr> mr;
  std::unique_ptr<router::FabricCq> cq = take(fabric.create_cq(*ctx, 4096, nullptr, false, 1));
  std::unique_ptr<router::FabricQp> qp;
  shm::Mapping qp_segment;
  shm::RingControl* ring = nullptr;
  shm::Mapping cq_segment;
  shm::RingConsumer<shm::Cqe> completions;
  World() {
    mr = fuzz_setup::register_all(fabric, *pd, memory, segment);
    router::QpInit init;
    init.cap = {64, 64, 16, 16, 0};
    qp = take(fabric.create_qp(*ctx, *pd, cq.get(), cq.get(), nullptr, init, 2));
    qp_segment = shm::Mapping::attach(qp->segment_fd(), shm::SegmentKind::kRing);
    ring = reinterpret_cast<shm::RingControl*>(qp_segment.base() + shm::kQpSendRingOffset);
    cq_segment = shm::Mapping::attach(cq->segment_fd(), shm::SegmentKind::kRing);
    completions = shm::RingConsumer<shm::Cqe>(cq_segment.base() + shm::kCqRingOffset, cq->capacity());
  }
  // Back to RTS, connected to itself (errors in the input put it in ERR).
  void reset() {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RESET;
    (void)fabric.modify_qp(*qp, a, IBV_QP_STATE);
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                        IBV_ACCESS_REMOTE_ATOMIC;
    (void)fabric.modify_qp(*qp, a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    a = {};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_4096;
    a.dest_qp_num = qp->qp_num();
    a.max_dest_rd_atomic = 16;
    a.min_rnr_timer = 1;
    a.ah_attr.port_num = 1;
    a.ah_attr.is_global = 1;
    a.ah_attr.grh.dgid.raw[10] = a.ah_attr.grh.dgid.raw[11] = 0xff;  // ::ffff:10.0.0.1, the PD's address
    a.ah_attr.grh.dgid.raw[12] = 10;
    a.ah_attr.grh.dgid.raw[15] = 1;
    (void)fabric.modify_qp(*qp, a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                 IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    a = {};
    a.qp_state = IBV_QPS_RTS;
    a.timeout = 1;
    a.retry_cnt = 0;
    a.rnr_retry = 0;
    a.max_rd_atomic = 16;
    (void)fabric.modify_qp(*qp, a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                 IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC);
  }
};

World& world() {
  static World* w = new World();
  return *w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  w.reset();  // also empties the rings the previous input left behind
  size_t count = std::min<size_t>(size / sizeof(shm::SendWqe), 32);
  if (count == 0) return 0;
  auto* slots = reinterpret_cast<shm::SendWqe*>(w.qp_segment.base() + shm::kQpSendRingOffset +
                                                sizeof(shm::RingControl));
  uint64_t start = w.ring->producer_index.load();
  for (size_t i = 0; i < count; ++i)
    std::memcpy(&slots[(start + i) % w.qp->send_capacity()], data + i * sizeof(shm::SendWqe), sizeof(shm::SendWqe));
  // The last 8 bytes past the descriptors, if any, are the producer index to
  // publish (hostile); else the honest one.
  uint64_t index = start + count;
  if (size >= count * sizeof(shm::SendWqe) + 8) std::memcpy(&index, data + count * sizeof(shm::SendWqe), 8);
  w.ring->producer_index.store(index, std::memory_order_release);
  // Let the poller take them (or give up on a stuck QP).
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
  while (w.ring->consumer_index.load(std::memory_order_acquire) != index &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::yield();
  // Completions are whatever they are; drain them so the CQ never overruns.
  shm::Cqe c;
  while (w.completions.sc_try_pop(c)) {
  }
  return 0;
}
