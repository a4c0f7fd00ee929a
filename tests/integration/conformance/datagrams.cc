// Unreliable datagrams (UD): the GRH and a reply address built from the
// completion, Q_Key and QP number mismatches, datagrams over the MTU.
#include <cstring>

#include "fixture.h"

namespace conformance {
namespace {

TEST_F(Datagrams, GrhCarriesTheSenderAndTheReplyAddressWorks) {
  Pages buf(1);
  fill(buf.base, 64, 41);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_cq* cs = cq();
  ibv_cq* cr = cq();
  ibv_qp* s = ud_qp(cs);
  ibv_qp* r = ud_qp(cr);
  uint8_t* rbuf = buf.base + 1024;
  ASSERT_EQ(post_recv(r, 5, {{reinterpret_cast<uint64_t>(rbuf), 40 + 64, m->lkey}}), 0);
  ibv_sge sg{reinterpret_cast<uint64_t>(buf.base), 64, m->lkey};
  ibv_send_wr w = ud_wr(1, &sg, ah_to_self(), r->qp_num, kQkey);
  ASSERT_EQ(post(s, w), 0);
  EXPECT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
  ibv_wc wc = poll1(cr);
  ASSERT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.byte_len, 40u + 64u);
  EXPECT_TRUE(wc.wc_flags & IBV_WC_GRH);
  EXPECT_EQ(wc.src_qp, s->qp_num);
  EXPECT_EQ(0, std::memcmp(rbuf + 40, buf.base, 64));
  if (global) {
    // RoCE v2 over IPv4: the GRH's last 20 bytes are the IPv4 header, whose
    // source address is the sender's (here: our own) IPv4-mapped GID.
    const uint8_t* ip = rbuf + 20;
    EXPECT_EQ(ip[0] >> 4, 4);
    EXPECT_EQ(ip[9], 17);  // UDP
    EXPECT_EQ(0, std::memcmp(ip + 12, gid.raw + 12, 4));
  }
  // The reply address built from the completion reaches the sender.
  ibv_ah* back = ibv_create_ah_from_wc(pd, &wc, reinterpret_cast<ibv_grh*>(rbuf), 1);
  ASSERT_NE(back, nullptr);
  ahs_.push_back(back);
  ASSERT_EQ(post_recv(s, 6, {{reinterpret_cast<uint64_t>(buf.base + 2048), 40 + 64, m->lkey}}), 0);
  w = ud_wr(2, &sg, back, wc.src_qp, kQkey);
  ASSERT_EQ(post(r, w), 0);
  EXPECT_EQ(poll1(cr).status, IBV_WC_SUCCESS);
  ibv_wc got = poll1(cs);
  EXPECT_EQ(got.wr_id, 6u);
  EXPECT_EQ(got.src_qp, r->qp_num);
}

// udaddy's way: every receive on one buffer, so the GRH the app reads when
// it builds a reply address may already be a later datagram's. Each address
// built from a completion must still reach its sender (and name it:
// ibv_init_ah_from_wc's dgid is the sender's GID, here our own).
TEST_F(Datagrams, ReplyAddressesFromReceivesSharingOneBuffer) {
  constexpr uint64_t kDatagrams = 16;
  Pages buf(1);
  fill(buf.base, 64, 7);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_cq* cs = cq();
  ibv_cq* cr = cq();
  ibv_qp* s = ud_qp(cs);
  ibv_qp* r = ud_qp(cr);
  uint8_t* shared = buf.base + 1024;
  for (uint64_t i = 0; i < kDatagrams; ++i)
    ASSERT_EQ(post_recv(r, 100 + i, {{reinterpret_cast<uint64_t>(shared), 40 + 64, m->lkey}}), 0);
  for (uint64_t i = 0; i < kDatagrams; ++i)
    ASSERT_EQ(post_recv(s, 200 + i, {{reinterpret_cast<uint64_t>(buf.base + 2048), 40 + 64, m->lkey}}), 0);
  ibv_sge sg{reinterpret_cast<uint64_t>(buf.base), 64, m->lkey};
  ibv_ah* to_r = ah_to_self();
  for (uint64_t i = 0; i < kDatagrams; ++i) {
    ibv_send_wr w = ud_wr(i, &sg, to_r, r->qp_num, kQkey);
    ASSERT_EQ(post(s, w), 0);
  }
  for (uint64_t i = 0; i < kDatagrams; ++i) ASSERT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
  // r's CQ gets its receives and its replies' send completions, mixed.
  uint64_t received = 0, replies_sent = 0;
  while (received < kDatagrams || replies_sent < kDatagrams) {
    ibv_wc wc = poll1(cr);
    ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << "wr_id " << wc.wr_id;
    if (wc.opcode == IBV_WC_SEND) {
      ++replies_sent;
      continue;
    }
    ASSERT_EQ(wc.src_qp, s->qp_num);
    ibv_ah_attr attr;
    ASSERT_EQ(ibv_init_ah_from_wc(ctx, 1, &wc, reinterpret_cast<ibv_grh*>(shared), &attr), 0);
    if (global) {
      EXPECT_EQ(0, std::memcmp(attr.grh.dgid.raw, gid.raw, 16)) << "datagram " << received;
    }
    ibv_ah* back = ibv_create_ah_from_wc(pd, &wc, reinterpret_cast<ibv_grh*>(shared), 1);
    ASSERT_NE(back, nullptr);
    ahs_.push_back(back);
    ibv_send_wr w = ud_wr(1000 + received, &sg, back, wc.src_qp, kQkey);
    ASSERT_EQ(post(r, w), 0);
    ++received;
  }
  for (uint64_t i = 0; i < kDatagrams; ++i) {
    ibv_wc got = poll1(cs);
    EXPECT_EQ(got.status, IBV_WC_SUCCESS);
    EXPECT_EQ(got.src_qp, r->qp_num);
  }
}

TEST_F(Datagrams, WrongQkeyOrNoSuchQpIsDroppedSilently) {
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_cq* cs = cq();
  ibv_cq* cr = cq();
  ibv_qp* s = ud_qp(cs, kQkey);
  ibv_qp* r = ud_qp(cr, kQkey);
  ASSERT_EQ(post_recv(r, 5, {{reinterpret_cast<uint64_t>(buf.base + 1024), 40 + 64, m->lkey}}), 0);
  ibv_sge sg{reinterpret_cast<uint64_t>(buf.base), 16, m->lkey};
  ibv_ah* ah = ah_to_self();
  ibv_send_wr w = ud_wr(1, &sg, ah, r->qp_num, kQkey + 1);  // wrong Q_Key
  ASSERT_EQ(post(s, w), 0);
  EXPECT_EQ(poll1(cs).status, IBV_WC_SUCCESS);  // the sender cannot tell
  EXPECT_TRUE(quiet(cr, 100));
  w = ud_wr(2, &sg, ah, 0xabcdef, kQkey);  // no such QP
  ASSERT_EQ(post(s, w), 0);
  EXPECT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
  EXPECT_TRUE(quiet(cr, 100));
  w = ud_wr(3, &sg, ah, r->qp_num, 0x80000000u);  // high bit: use the sender QP's own Q_Key
  ASSERT_EQ(post(s, w), 0);
  EXPECT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
  EXPECT_EQ(poll1(cr).wr_id, 5u);
}

TEST_F(Datagrams, DatagramLargerThanTheMtuFails) {
  Pages buf(3);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_cq* c = cq();
  ibv_qp* s = ud_qp(c);
  ibv_qp* r = ud_qp(c);
  ibv_port_attr port{};
  ASSERT_EQ(ibv_query_port(ctx, 1, &port), 0);
  uint32_t mtu = 128u << port.active_mtu;
  ibv_sge sg{reinterpret_cast<uint64_t>(buf.base), mtu + 1, m->lkey};
  ibv_send_wr w = ud_wr(1, &sg, ah_to_self(), r->qp_num, kQkey);
  int rc = post(s, w);
  if (rc == 0) {
    ibv_wc wc = poll1(c);
    EXPECT_NE(wc.status, IBV_WC_SUCCESS);
  } else {
    EXPECT_EQ(rc, EINVAL);  // some providers refuse it at post time
  }
}

}  // namespace
}  // namespace conformance
