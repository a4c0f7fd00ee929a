// Unreliable connected (UC) QPs: SEND and WRITE with immediate, no READ.
#include <arpa/inet.h>

#include <cstring>
#include <utility>

#include "fixture.h"

namespace conformance {
namespace {

TEST_F(Verbs, UnreliableConnectedSendAndWrite) {
  Pages buf(2);
  fill(buf.base, 4096, 51);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_cq* cs = cq();
  ibv_cq* cr = cq();
  ibv_qp_init_attr a{};
  a.send_cq = cs;
  a.recv_cq = cs;
  a.qp_type = IBV_QPT_UC;
  a.cap = {16, 16, 1, 1, 0};
  ibv_qp* q = ibv_create_qp(pd, &a);
  a.send_cq = cr;
  a.recv_cq = cr;
  ibv_qp* peer = ibv_create_qp(pd, &a);
  ASSERT_NE(q, nullptr);
  ASSERT_NE(peer, nullptr);
  QpOptions uc;
  uc.access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
  // UC: RTR needs no atomics or RNR attributes, RTS only the PSN.
  for (auto [x, y] : {std::pair{q, peer}, std::pair{peer, q}}) {
    ASSERT_EQ(to_init(x, uc), 0);
    ibv_qp_attr at{};
    at.qp_state = IBV_QPS_RTR;
    at.path_mtu = IBV_MTU_1024;
    at.dest_qp_num = y->qp_num;
    address_self(at.ah_attr);
    ASSERT_EQ(ibv_modify_qp(x, &at, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN), 0);
  }
  for (ibv_qp* x : {q, peer}) {
    ibv_qp_attr at{};
    at.qp_state = IBV_QPS_RTS;
    ASSERT_EQ(ibv_modify_qp(x, &at, IBV_QP_STATE | IBV_QP_SQ_PSN), 0);
  }
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 1000, m->lkey};
  ibv_send_wr w = wr(IBV_WR_SEND, 1, &s, 1);
  ASSERT_EQ(post(q, w), 0);  // no receive posted: lost, and the sender cannot tell
  EXPECT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
  EXPECT_TRUE(quiet(cr, 100));
  ASSERT_EQ(post_recv(peer, 9, {}), 0);
  w = wr(IBV_WR_RDMA_WRITE_WITH_IMM, 2, &s, 1);
  w.imm_data = htonl(7);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf.base + 4096);
  w.wr.rdma.rkey = m->rkey;
  ASSERT_EQ(post(q, w), 0);
  EXPECT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
  ibv_wc r = poll1(cr);
  EXPECT_EQ(r.opcode, IBV_WC_RECV_RDMA_WITH_IMM);
  EXPECT_EQ(ntohl(r.imm_data), 7u);
  EXPECT_EQ(0, std::memcmp(buf.base + 4096, buf.base, 1000));
  ibv_sge rd{reinterpret_cast<uint64_t>(buf.base), 8, m->lkey};
  w = wr(IBV_WR_RDMA_READ, 3, &rd, 1);  // UC has no READ
  ibv_send_wr* bad = nullptr;
  EXPECT_NE(ibv_post_send(q, &w, &bad), 0);
  EXPECT_EQ(ibv_destroy_qp(q), 0);
  EXPECT_EQ(ibv_destroy_qp(peer), 0);
}

}  // namespace
}  // namespace conformance
