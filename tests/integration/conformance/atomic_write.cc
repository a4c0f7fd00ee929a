// ATOMIC WRITE (rdma-core 44's ibv_wr_atomic_write, IBA A19.4.2): an 8-byte
// store done atomically at the responder after what came before it, on RC,
// with remote write access. Served where the device reports it
// (device_cap_flags_ex bit 40, IB_UVERBS_DEVICE_ATOMIC_WRITE: ffrouter's
// soft fabric); elsewhere (rxe before Linux 6.2, the verbs fabric over it) a
// QP asking for it is refused and the cases skip.
#include <cstring>
#include <vector>

#include "fixture.h"

namespace conformance {
namespace {

constexpr uint64_t kAtomicWriteCap = uint64_t{1} << 40;

// A QP on `c` that may post ATOMIC WRITE (and RDMA WRITE); null if refused.
ibv_qp* atomic_writer(ibv_context* ctx, ibv_pd* pd, ibv_cq* c, ibv_qp_type type = IBV_QPT_RC) {
  ibv_qp_init_attr_ex a{};
  a.send_cq = a.recv_cq = c;
  a.qp_type = type;
  a.cap = {16, 16, 1, 1, 0};
  a.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
  a.pd = pd;
  a.send_ops_flags = IBV_QP_EX_WITH_ATOMIC_WRITE | IBV_QP_EX_WITH_RDMA_WRITE;
  return ibv_create_qp_ex(ctx, &a);
}

class AtomicWrite : public Verbs {
 protected:
  void SetUp() override {
    Verbs::SetUp();
    if (!reported()) GTEST_SKIP() << "the device does not report ATOMIC WRITE";
  }
  bool reported() {
    ibv_device_attr_ex dev{};
    EXPECT_EQ(ibv_query_device_ex(ctx, nullptr, &dev), 0);
    return (dev.device_cap_flags_ex & kAtomicWriteCap) != 0;
  }
  // A QP that may post ATOMIC WRITE.
  ibv_qp* writer(ibv_cq* c, ibv_qp_type type = IBV_QPT_RC) {
    ibv_qp* q = atomic_writer(ctx, pd, c, type);
    if (q != nullptr) owned_.push_back(q);
    return q;
  }
  ibv_qp* connected_writer(ibv_cq* c) {
    ibv_qp* q = writer(c);
    EXPECT_NE(q, nullptr) << std::strerror(errno);
    if (q == nullptr) return nullptr;
    ibv_cq* other = cq();
    connect(q, qp(other, other));
    return q;
  }
  static int atomic_write(ibv_qp* q, uint64_t id, uint32_t rkey, uint64_t addr, uint64_t value) {
    ibv_qp_ex* x = ibv_qp_to_qp_ex(q);
    ibv_wr_start(x);
    x->wr_id = id;
    x->wr_flags = IBV_SEND_SIGNALED;
    ibv_wr_atomic_write(x, rkey, addr, &value);
    return ibv_wr_complete(x);
  }
  void TearDown() override {
    for (ibv_qp* q : owned_) ibv_destroy_qp(q);
    Verbs::TearDown();
  }
  std::vector<ibv_qp*> owned_;
};

// Offered exactly when reported (a program asks for the QP and trusts it).
TEST_F(Verbs, AtomicWriteIsOfferedExactlyWhenReported) {
  ibv_device_attr_ex dev{};
  ASSERT_EQ(ibv_query_device_ex(ctx, nullptr, &dev), 0);
  errno = 0;
  ibv_qp* q = atomic_writer(ctx, pd, cq());
  EXPECT_EQ(q != nullptr, (dev.device_cap_flags_ex & kAtomicWriteCap) != 0) << std::strerror(errno);
  if (q == nullptr) {
    EXPECT_EQ(errno, EOPNOTSUPP);
  } else {
    EXPECT_EQ(ibv_destroy_qp(q), 0);
  }
}

TEST_F(AtomicWrite, StoresEightBytesWithRemoteWriteAccess) {
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  ibv_cq* c = cq();
  ibv_qp* q = connected_writer(c);
  ASSERT_NE(q, nullptr);
  auto* word = reinterpret_cast<uint64_t*>(buf.base + 64);
  *word = 1;
  ASSERT_EQ(atomic_write(q, 7, m->rkey, reinterpret_cast<uint64_t>(word), 0x1122334455667788ull), 0);
  ibv_wc wc = poll1(c);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.opcode, IBV_WC_ATOMIC_WRITE);
  EXPECT_EQ(wc.wr_id, 7u);
  EXPECT_EQ(*word, 0x1122334455667788ull);
  // ibv_post_send takes it too: the value in wr.atomic.swap.
  ibv_send_wr w = wr(IBV_WR_ATOMIC_WRITE, 8, nullptr, 0);
  w.wr.atomic.remote_addr = reinterpret_cast<uint64_t>(word + 1);
  w.wr.atomic.rkey = m->rkey;
  w.wr.atomic.swap = 42;
  ASSERT_EQ(post(q, w), 0);
  EXPECT_EQ(poll1(c).status, IBV_WC_SUCCESS);
  EXPECT_EQ(word[1], 42u);
}

TEST_F(AtomicWrite, NeedsAlignmentRemoteWriteAndRc) {
  Pages buf(1);
  ibv_mr* writable = mr(buf.base, 2048, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  ibv_mr* atomic_only = mr(buf.base + 2048, 2048, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_ATOMIC);
  ibv_cq* c = cq();
  ibv_qp* q = connected_writer(c);
  ASSERT_NE(q, nullptr);
  ASSERT_EQ(atomic_write(q, 1, writable->rkey, reinterpret_cast<uint64_t>(buf.base + 4), 1), 0);
  EXPECT_EQ(poll1(c).status, IBV_WC_REM_INV_REQ_ERR) << "misaligned";
  ibv_qp* r = connected_writer(c);
  ASSERT_NE(r, nullptr);
  ASSERT_EQ(atomic_write(r, 2, atomic_only->rkey, reinterpret_cast<uint64_t>(buf.base + 2048), 1), 0);
  EXPECT_EQ(poll1(c).status, IBV_WC_REM_ACCESS_ERR) << "remote atomic access is not remote write";
  errno = 0;
  EXPECT_EQ(writer(c, IBV_QPT_UD), nullptr) << "ATOMIC WRITE is RC only";
  EXPECT_EQ(errno, EOPNOTSUPP);
}

}  // namespace
}  // namespace conformance
