// QP states and object lifetimes: ibv_modify_qp follows the state table, a QP
// connected to itself loops back, objects in use cannot be destroyed.
#include <chrono>
#include <cstring>
#include <thread>

#include "fixture.h"

namespace conformance {
namespace {

TEST_F(Verbs, ModifyQpFollowsTheStateTable) {
  ibv_cq* c = cq();
  ibv_qp* q = qp(c, c);
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTS;  // RESET -> RTS does not exist
  EXPECT_EQ(ibv_modify_qp(q, &a, IBV_QP_STATE), EINVAL);
  a.qp_state = IBV_QPS_INIT;  // INIT needs port, pkey index and access flags
  EXPECT_EQ(ibv_modify_qp(q, &a, IBV_QP_STATE), EINVAL);
  a.port_num = 2;  // no such port
  EXPECT_EQ(ibv_modify_qp(q, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS), EINVAL);
  ASSERT_EQ(to_init(q), 0);
  EXPECT_EQ(state_of(q), IBV_QPS_INIT);
  a = {};
  a.qp_state = IBV_QPS_RTR;  // RTR without its required attributes
  EXPECT_EQ(ibv_modify_qp(q, &a, IBV_QP_STATE | IBV_QP_PATH_MTU), EINVAL);
  ASSERT_EQ(to_rtr(q, q->qp_num), 0);
  ASSERT_EQ(to_rts(q), 0);
  ibv_qp_attr got{};
  ibv_qp_init_attr init{};
  ASSERT_EQ(ibv_query_qp(q, &got, IBV_QP_STATE | IBV_QP_DEST_QPN | IBV_QP_RNR_RETRY, &init), 0);
  EXPECT_EQ(got.qp_state, IBV_QPS_RTS);
  EXPECT_EQ(got.dest_qp_num, q->qp_num);
  EXPECT_EQ(got.rnr_retry, 7);
  EXPECT_EQ(got.max_dest_rd_atomic, 16);
  a = {};
  a.qp_state = IBV_QPS_ERR;
  ASSERT_EQ(ibv_modify_qp(q, &a, IBV_QP_STATE), 0);
  a.qp_state = IBV_QPS_RESET;
  ASSERT_EQ(ibv_modify_qp(q, &a, IBV_QP_STATE), 0);
  EXPECT_EQ(state_of(q), IBV_QPS_RESET);
}

TEST_F(Verbs, QpToSelfLoopsBack) {
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  fill(buf.base, 100, 2);
  ibv_cq* c = cq();
  ibv_qp* q = qp(c, c);
  ASSERT_EQ(to_init(q), 0);
  ASSERT_EQ(to_rtr(q, q->qp_num), 0);
  ASSERT_EQ(to_rts(q), 0);
  ASSERT_EQ(post_recv(q, 1, {{reinterpret_cast<uint64_t>(buf.base + 2048), 100, m->lkey}}), 0);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 100, m->lkey};
  ibv_send_wr w = wr(IBV_WR_SEND, 2, &s, 1);
  ASSERT_EQ(post(q, w), 0);
  ibv_wc c1 = poll1(c), c2 = poll1(c);
  EXPECT_EQ(c1.status, IBV_WC_SUCCESS);
  EXPECT_EQ(c2.status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(buf.base, buf.base + 2048, 100));
}

TEST_F(Verbs, DestroyingObjectsInUseIsBusy) {
  Pages buf(1);
  ibv_pd* other = ibv_alloc_pd(ctx);
  ASSERT_NE(other, nullptr);
  ibv_mr* m = ibv_reg_mr(other, buf.base, buf.size, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(ibv_dealloc_pd(other), EBUSY);
  ASSERT_EQ(ibv_dereg_mr(m), 0);
  EXPECT_EQ(ibv_dealloc_pd(other), 0);
  ibv_cq* c = ibv_create_cq(ctx, 8, nullptr, nullptr, 0);
  ASSERT_NE(c, nullptr);
  ibv_qp* q = qp(c, c);
  EXPECT_EQ(ibv_destroy_cq(c), EBUSY);
  ASSERT_EQ(destroy(q), 0);
  EXPECT_EQ(ibv_destroy_cq(c), 0);
}

// A destroyed QP's completions leave the CQs it shares with other QPs,
// which keep theirs in order (mlx4 and mlx5 clean them at destroy;
// libfabric's rxm, closing a connection, handles every completion still
// in the CQ as its endpoint's: a receive is reposted on the closed one).
TEST_F(Verbs, ADestroyedQpLeavesNoCompletionInTheCqsItShares) {
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_cq* sends = cq();
  ibv_cq* receives = cq();
  ibv_qp* gone = qp(sends, receives);
  ibv_qp* stays = qp(sends, receives);
  ibv_cq* peers_cq = cq();
  ibv_qp* gone_peer = qp(peers_cq, peers_cq);
  ibv_qp* stays_peer = qp(peers_cq, peers_cq);
  connect(gone, gone_peer);
  connect(stays, stays_peer);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 8, m->lkey};
  ibv_sge into{reinterpret_cast<uint64_t>(buf.base + 2048), 64, m->lkey};
  // Interleaved: stays 0, gone 1, stays 2, gone 3, stays 4, in both CQs.
  for (uint64_t id = 0; id < 5; ++id) {
    ibv_qp* q = id % 2 == 0 ? stays : gone;
    ibv_qp* peer = id % 2 == 0 ? stays_peer : gone_peer;
    ASSERT_EQ(post_recv(q, 100 + id, {into}), 0);
    ibv_send_wr to_q = wr(IBV_WR_SEND, 200 + id, &s, 1);
    ASSERT_EQ(post(peer, to_q), 0);
    ASSERT_EQ(poll1(peers_cq).status, IBV_WC_SUCCESS);  // received: q's receive completion is written
    ibv_send_wr from_q = wr(IBV_WR_SEND, id, &s, 1);
    ASSERT_EQ(post_recv(peer, 300 + id, {into}), 0);
    ASSERT_EQ(post(q, from_q), 0);
    ASSERT_EQ(poll1(peers_cq).status, IBV_WC_SUCCESS);  // the peer's receive
  }
  // The last send completions may trail their receives: let them land
  // (were one not to, it would not appear after the destroy either).
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_EQ(destroy(gone), 0);
  for (uint64_t id : {0u, 2u, 4u}) {
    ibv_wc wc = poll1(sends);
    EXPECT_EQ(wc.wr_id, id);
    EXPECT_EQ(wc.qp_num, stays->qp_num);
    wc = poll1(receives);
    EXPECT_EQ(wc.wr_id, 100 + id);
    EXPECT_EQ(wc.qp_num, stays->qp_num);
  }
  EXPECT_TRUE(quiet(sends, 50));
  EXPECT_TRUE(quiet(receives, 50));
  // The CQs go on: the QP that stays still completes work.
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 9, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf.base + 1024);
  w.wr.rdma.rkey = m->rkey;
  ASSERT_EQ(post(stays, w), 0);
  EXPECT_EQ(poll1(sends).wr_id, 9u);
}

// The drain pattern: move a QP to ERR, post a marker, wait for its flush.
// Work posted to a QP in ERR completes with IBV_WC_WR_FLUSH_ERR (IB spec
// 10.3.1; mlx5 does so), also once the router has gone idle meanwhile.
TEST_F(Verbs, WorkPostedInErrorIsFlushed) {
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  Pair p = pair();
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_ERR;
  ASSERT_EQ(ibv_modify_qp(p.b, &a, IBV_QP_STATE), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // nothing to do: the router's poller sleeps
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 64, m->lkey};
  ASSERT_EQ(post_recv(p.b, 77, {s}), 0);
  ibv_wc wc = poll1(p.rcq);
  EXPECT_EQ(wc.wr_id, 77u);
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
  EXPECT_EQ(wc.opcode, IBV_WC_RECV);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ibv_send_wr w = wr(IBV_WR_SEND, 78, &s, 1);
  ASSERT_EQ(post(p.b, w), 0);
  wc = poll1(p.rcq);  // b's send and receive CQ
  EXPECT_EQ(wc.wr_id, 78u);
  EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
}

// ibv_create_qp_ex with create flags named but none set makes an ordinary
// QP; a create flag the device does not offer is refused.
TEST_F(Verbs, CreateQpExTakesFieldsThatAskForNothing) {
  ibv_cq* c = cq();
  ibv_qp_init_attr_ex a{};
  a.send_cq = a.recv_cq = c;
  a.qp_type = IBV_QPT_RC;
  a.cap = {16, 16, 1, 1, 0};
  a.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_CREATE_FLAGS;
  a.pd = pd;
  ibv_qp* q = ibv_create_qp_ex(ctx, &a);
  ASSERT_NE(q, nullptr) << std::strerror(errno);
  ibv_qp* peer = qp(c, c);
  connect(q, peer);  // an ordinary QP: it connects
  EXPECT_EQ(ibv_destroy_qp(q), 0);
  a.create_flags = IBV_QP_CREATE_SCATTER_FCS;  // raw packet QPs only
  errno = 0;
  ibv_qp* refused = ibv_create_qp_ex(ctx, &a);
  EXPECT_EQ(refused, nullptr);
  if (refused != nullptr) ibv_destroy_qp(refused);
  EXPECT_TRUE(errno == EOPNOTSUPP || errno == EINVAL) << std::strerror(errno);
}

// On a RoCE port every address names a GID: an AH or a QP path without a
// GRH is EINVAL, as on every RoCE device.
TEST_F(Verbs, AnAddressWithoutAGrhIsRefusedOnRoce) {
  if (!global) GTEST_SKIP() << "an InfiniBand port: LIDs address it";
  ibv_ah_attr a{};
  a.port_num = 1;
  a.dlid = lid;
  errno = 0;
  ibv_ah* ah = ibv_create_ah(pd, &a);
  EXPECT_EQ(ah, nullptr);
  if (ah != nullptr) ibv_destroy_ah(ah);
  EXPECT_EQ(errno, EINVAL);
  ibv_cq* c = cq();
  ibv_qp* q = qp(c, c);
  ASSERT_EQ(to_init(q), 0);
  ibv_qp_attr at{};
  at.qp_state = IBV_QPS_RTR;
  at.path_mtu = IBV_MTU_1024;
  at.dest_qp_num = q->qp_num;
  at.max_dest_rd_atomic = 1;
  at.min_rnr_timer = 12;
  at.ah_attr.port_num = 1;
  at.ah_attr.dlid = lid;
  EXPECT_EQ(ibv_modify_qp(q, &at, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                      IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER),
            EINVAL);
}

}  // namespace
}  // namespace conformance
