// Unreliable datagrams (UD): the GRH and a reply address built from the
// completion, Q_Key and QP number mismatches, datagrams over the MTU.
#include <algorithm>
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
  auto [cs, cr, s, r] = ud_pair();
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

// Two contexts of one process (UCX opens the device once per UCP context:
// Open MPI's osc ucx beside pml ucx): datagrams between a QP of each arrive,
// both ways.
TEST_F(Datagrams, BetweenTwoContextsOfOneProcess) {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  ASSERT_NE(list, nullptr);
  ibv_context* ctx2 = ibv_open_device(list[0]);
  ibv_free_device_list(list);
  ASSERT_NE(ctx2, nullptr);
  ibv_pd* pd2 = ibv_alloc_pd(ctx2);
  ASSERT_NE(pd2, nullptr);
  ibv_cq* c2 = ibv_create_cq(ctx2, 64, nullptr, nullptr, 0);
  ASSERT_NE(c2, nullptr);
  Pages buf(2);
  fill(buf.base, 64, 7);
  ibv_mr* m = mr(buf.base, 4096);
  ibv_mr* m2 = ibv_reg_mr(pd2, buf.base + 4096, 4096, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(m2, nullptr);
  ibv_cq* c1 = cq();
  ibv_qp* q1 = ud_qp(c1);
  ibv_qp* q2 = ud_qp(c2, kQkey, pd2);
  ASSERT_NE(q2, nullptr);
  uint8_t* at2 = buf.base + 4096;
  ASSERT_EQ(post_recv(q2, 21, {{reinterpret_cast<uint64_t>(at2 + 1024), 40 + 64, m2->lkey}}), 0);
  ibv_sge sg{reinterpret_cast<uint64_t>(buf.base), 64, m->lkey};
  ibv_send_wr w = ud_wr(1, &sg, ah_to_self(), q2->qp_num, kQkey);
  ASSERT_EQ(post(q1, w), 0);
  EXPECT_EQ(poll1(c1).status, IBV_WC_SUCCESS);
  ibv_wc got = poll1(c2);
  EXPECT_EQ(got.status, IBV_WC_SUCCESS);
  EXPECT_EQ(got.wr_id, 21u);
  EXPECT_EQ(got.src_qp, q1->qp_num);
  EXPECT_EQ(0, std::memcmp(at2 + 1024 + 40, buf.base, 64));
  // And back, from the second context's QP.
  ASSERT_EQ(post_recv(q1, 22, {{reinterpret_cast<uint64_t>(buf.base + 2048), 40 + 64, m->lkey}}), 0);
  fill(at2, 64, 9);
  ibv_sge sg2{reinterpret_cast<uint64_t>(at2), 64, m2->lkey};
  ibv_send_wr back = ud_wr(2, &sg2, ah_to_self(pd2), q1->qp_num, kQkey);
  ASSERT_EQ(post(q2, back), 0);
  EXPECT_EQ(poll1(c2).status, IBV_WC_SUCCESS);
  got = poll1(c1);
  EXPECT_EQ(got.wr_id, 22u);
  EXPECT_EQ(got.src_qp, q2->qp_num);
  EXPECT_EQ(0, std::memcmp(buf.base + 2048 + 40, at2, 64));
  owned_.erase(std::find(owned_.begin(), owned_.end(), q2));
  EXPECT_EQ(ibv_destroy_qp(q2), 0);
  ibv_ah* ah2 = ahs_.back();  // made on pd2: gone before it
  ahs_.pop_back();
  EXPECT_EQ(ibv_destroy_ah(ah2), 0);
  EXPECT_EQ(ibv_dereg_mr(m2), 0);
  EXPECT_EQ(ibv_destroy_cq(c2), 0);
  EXPECT_EQ(ibv_dealloc_pd(pd2), 0);
  EXPECT_EQ(ibv_close_device(ctx2), 0);
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

// mckey's ending: it posts its last datagrams and destroys the AH, then
// the QP, at once. A device has them on the wire by then; every one arrives.
TEST_F(Datagrams, DatagramsPostedJustBeforeTheDestroyArrive) {
  constexpr uint64_t kDatagrams = 16;
  Pages buf(10);
  fill(buf.base, 1024, 23);
  ibv_mr* m = mr(buf.base, buf.size);
  auto [cs, cr, s, r] = ud_pair();
  for (uint64_t i = 0; i < kDatagrams; ++i)
    ASSERT_EQ(post_recv(r, i, {{reinterpret_cast<uint64_t>(buf.base + 4096 + 2048 * i), 40 + 1024, m->lkey}}), 0);
  ibv_sge sg{reinterpret_cast<uint64_t>(buf.base), 1024, m->lkey};
  ibv_ah* ah = ah_to_self();
  for (uint64_t i = 0; i < kDatagrams; ++i) {
    ibv_send_wr w = ud_wr(i, &sg, ah, r->qp_num, kQkey);
    w.send_flags = 0;  // mckey's sends are unsignaled
    ASSERT_EQ(post(s, w), 0);
  }
  ahs_.erase(std::find(ahs_.begin(), ahs_.end(), ah));
  ASSERT_EQ(ibv_destroy_ah(ah), 0);
  owned_.erase(std::find(owned_.begin(), owned_.end(), s));
  ASSERT_EQ(ibv_destroy_qp(s), 0);
  for (uint64_t i = 0; i < kDatagrams; ++i) {
    ibv_wc wc = poll1(cr);
    ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << "datagram " << i;
    EXPECT_EQ(wc.byte_len, 40u + 1024u);
  }
  EXPECT_EQ(0, std::memcmp(buf.base + 4096 + 2048 * (kDatagrams - 1) + 40, buf.base, 1024));
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
