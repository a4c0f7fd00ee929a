// Shared receive queues: one SRQ serving several QPs, its limit event, the
// last WQE event of a QP on it, and its slots when such a QP goes.
#include <utility>
#include <vector>

#include "fixture.h"

namespace conformance {
namespace {

TEST_F(Verbs, SharedReceiveQueueServesSeveralQpsAndSignalsItsLimit) {
  Pages buf(2);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_srq* srq = one_sge_srq(16);
  ASSERT_NE(srq, nullptr);
  ibv_cq* cs = cq();
  ibv_cq* cr = cq();
  std::vector<std::pair<ibv_qp*, ibv_qp*>> pairs;
  for (int i = 0; i < 2; ++i) {
    ibv_qp* rq = srq_qp(cr, srq);
    ASSERT_NE(rq, nullptr);
    ibv_qp* sq = qp(cs, cs);
    connect(sq, rq);
    pairs.emplace_back(sq, rq);
  }
  for (uint64_t i = 0; i < 5; ++i) {
    ibv_sge s{reinterpret_cast<uint64_t>(buf.base + 512 * i), 512, m->lkey};
    ibv_recv_wr r{};
    r.wr_id = 100 + i;
    r.sg_list = &s;
    r.num_sge = 1;
    ibv_recv_wr* bad = nullptr;
    ASSERT_EQ(ibv_post_srq_recv(srq, &r, &bad), 0);
  }
  ibv_srq_attr limit{};
  limit.srq_limit = 4;
  ASSERT_EQ(ibv_modify_srq(srq, &limit, IBV_SRQ_LIMIT), 0);
  ibv_srq_attr q{};
  ASSERT_EQ(ibv_query_srq(srq, &q), 0);
  EXPECT_EQ(q.srq_limit, 4u);
  // One message through each QP: both take from the SRQ, in order.
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base + 4096), 32, m->lkey};
  for (auto& [sq, rq] : pairs) {
    ibv_send_wr w = wr(IBV_WR_SEND, 1, &s, 1);
    ASSERT_EQ(post(sq, w), 0);
    EXPECT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
  }
  ibv_wc a = poll1(cr), b = poll1(cr);
  EXPECT_EQ(a.wr_id, 100u);
  EXPECT_EQ(b.wr_id, 101u);
  EXPECT_EQ(a.qp_num, pairs[0].second->qp_num);
  EXPECT_EQ(b.qp_num, pairs[1].second->qp_num);
  // 3 left < 4: the limit event fired, and the limit is disarmed.
  ibv_async_event ev{};
  ASSERT_TRUE(await_async(ctx, IBV_EVENT_SRQ_LIMIT_REACHED, ev, 5000));
  EXPECT_EQ(ev.element.srq, srq);
  ASSERT_EQ(ibv_query_srq(srq, &q), 0);
  EXPECT_EQ(q.srq_limit, 0u);
  // A QP on the SRQ entering ERR reports its last WQE.
  ibv_qp_attr err{};
  err.qp_state = IBV_QPS_ERR;
  ASSERT_EQ(ibv_modify_qp(pairs[0].second, &err, IBV_QP_STATE), 0);
  ASSERT_TRUE(await_async(ctx, IBV_EVENT_QP_LAST_WQE_REACHED, ev, 5000));
  EXPECT_EQ(ev.element.qp, pairs[0].second);
  EXPECT_EQ(ibv_destroy_srq(srq), EBUSY);  // QPs still use it
  for (auto& [sq, rq] : pairs) EXPECT_EQ(ibv_destroy_qp(rq), 0);
  EXPECT_EQ(ibv_destroy_srq(srq), 0);
}

// Receives an SRQ gave to a QP free their slots whether or not the app
// polls their completions before it destroys the QP (UCX destroys
// endpoints with completions still queued, and posts its SRQ full: one
// slot lost per QP would end in ENOMEM).
TEST_F(Verbs, SrqSlotsComeBackFromAQpDestroyedBeforeItsCompletionsArePolled) {
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  uint32_t depth = 0;
  ibv_srq* srq = one_sge_srq(8, &depth);
  ASSERT_NE(srq, nullptr);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 64, m->lkey};
  auto post_srq = [&](uint64_t id) { return post_srq_recv(srq, id, s); };
  for (uint32_t i = 0; i < depth; ++i) ASSERT_EQ(post_srq(i), 0) << "receive " << i << " of " << depth;
  auto [cs, cr, sq, rq] = srq_pair(srq);
  ASSERT_NE(rq, nullptr);
  ibv_sge from{reinterpret_cast<uint64_t>(buf.base + 1024), 8, m->lkey};
  for (uint64_t i = 0; i < 2; ++i) {
    ibv_send_wr w = wr(IBV_WR_SEND, i, &from, 1);
    ASSERT_EQ(post(sq, w), 0);
    ASSERT_EQ(poll1(cs).status, IBV_WC_SUCCESS);  // delivered: two SRQ receives taken
  }
  ASSERT_EQ(ibv_destroy_qp(rq), 0);  // their completions not polled
  EXPECT_EQ(post_srq(100), 0);
  EXPECT_EQ(post_srq(101), 0);
  EXPECT_EQ(ibv_destroy_srq(srq), 0);
}

}  // namespace
}  // namespace conformance
