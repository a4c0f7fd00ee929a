// Every opcode with its bytes checked end to end (SEND with immediate across
// SGEs, inline, RDMA WRITE / WRITE with immediate, READ, atomics alone and
// under contention, zero-length, 1 MiB), signaling (unsignaled work requests,
// sq_sig_all, post lists) and the extended API (ibv_wr_*, ibv_cq_ex).
#include <arpa/inet.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "fixture.h"

namespace conformance {
namespace {

// --- every opcode, bytes end to end -----------------------------------------

TEST_F(Verbs, SendWithImmAcrossSeveralSgesOnBothSides) {
  Pages src(4), dst(4);
  fill(src.base, src.size, 1);
  ibv_mr* smr = mr(src.base, src.size);
  ibv_mr* dmr = mr(dst.base, dst.size);
  Pair p = pair();
  // Receive into three pieces, send from two.
  ASSERT_EQ(post_recv(p.b, 7, {{reinterpret_cast<uint64_t>(dst.base + 3), 1000, dmr->lkey},
                               {reinterpret_cast<uint64_t>(dst.base + 5000), 3000, dmr->lkey},
                               {reinterpret_cast<uint64_t>(dst.base + 9000), 4000, dmr->lkey}}),
            0);
  ibv_sge s[2] = {{reinterpret_cast<uint64_t>(src.base + 11), 2500, smr->lkey},
                  {reinterpret_cast<uint64_t>(src.base + 8192), 3500, smr->lkey}};
  ibv_send_wr w = wr(IBV_WR_SEND_WITH_IMM, 1, s, 2);
  w.imm_data = htonl(0xC0FFEE);
  ASSERT_EQ(post(p.a, w), 0);
  ibv_wc sc = poll1(p.scq);
  EXPECT_EQ(sc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(sc.opcode, IBV_WC_SEND);
  EXPECT_EQ(sc.wr_id, 1u);
  ibv_wc rc = poll1(p.rcq);
  ASSERT_EQ(rc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(rc.opcode, IBV_WC_RECV);
  EXPECT_EQ(rc.wr_id, 7u);
  EXPECT_EQ(rc.byte_len, 6000u);
  EXPECT_TRUE(rc.wc_flags & IBV_WC_WITH_IMM);
  EXPECT_EQ(ntohl(rc.imm_data), 0xC0FFEEu);
  EXPECT_EQ(rc.qp_num, p.b->qp_num);  // (src_qp is defined for UD only)
  // The 6000 bytes, gathered then scattered in order.
  std::vector<uint8_t> sent(src.base + 11, src.base + 11 + 2500);
  sent.insert(sent.end(), src.base + 8192, src.base + 8192 + 3500);
  std::vector<uint8_t> got(dst.base + 3, dst.base + 3 + 1000);
  got.insert(got.end(), dst.base + 5000, dst.base + 5000 + 3000);
  got.insert(got.end(), dst.base + 9000, dst.base + 9000 + 2000);
  EXPECT_EQ(sent, got);
  EXPECT_EQ(dst.base[9000 + 2000], 0);  // nothing past the message
}

TEST_F(Verbs, InlineSendTakesTheDataAtPostTime) {
  uint8_t msg[48];
  fill(msg, sizeof msg, 9);
  Pages dst(1);
  ibv_mr* dmr = mr(dst.base, dst.size);
  Pair p = pair();
  ASSERT_EQ(post_recv(p.b, 1, {{reinterpret_cast<uint64_t>(dst.base), 4096, dmr->lkey}}), 0);
  ibv_sge s{reinterpret_cast<uint64_t>(msg), sizeof msg, 0};  // inline: no MR needed
  ibv_send_wr w = wr(IBV_WR_SEND, 2, &s, 1, IBV_SEND_SIGNALED | IBV_SEND_INLINE);
  ASSERT_EQ(post(p.a, w), 0);
  uint8_t expect[sizeof msg];
  std::memcpy(expect, msg, sizeof msg);
  std::memset(msg, 0xEE, sizeof msg);  // reusing the buffer at once is allowed
  EXPECT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  ibv_wc rc = poll1(p.rcq);
  EXPECT_EQ(rc.byte_len, sizeof msg);
  EXPECT_EQ(0, std::memcmp(dst.base, expect, sizeof msg));
}

TEST_F(Verbs, RdmaWriteAndWriteWithImm) {
  Pages src(2), dst(2);
  fill(src.base, src.size, 3);
  ibv_mr* smr = mr(src.base, src.size);
  ibv_mr* dmr = mr(dst.base, dst.size);
  Pair p = pair();
  ibv_sge s{reinterpret_cast<uint64_t>(src.base + 100), 5000, smr->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 3, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(dst.base + 7);
  w.wr.rdma.rkey = dmr->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ibv_wc c = poll1(p.scq);
  EXPECT_EQ(c.status, IBV_WC_SUCCESS);
  EXPECT_EQ(c.opcode, IBV_WC_RDMA_WRITE);
  EXPECT_EQ(0, std::memcmp(dst.base + 7, src.base + 100, 5000));
  EXPECT_TRUE(quiet(p.rcq, 50));  // a plain write consumes no receive

  ASSERT_EQ(post_recv(p.b, 9, {}), 0);
  w.opcode = IBV_WR_RDMA_WRITE_WITH_IMM;
  w.imm_data = htonl(42);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(dst.base + 6000);
  s.length = 1000;
  ASSERT_EQ(post(p.a, w), 0);
  EXPECT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  ibv_wc r = poll1(p.rcq);
  ASSERT_EQ(r.status, IBV_WC_SUCCESS);
  EXPECT_EQ(r.opcode, IBV_WC_RECV_RDMA_WITH_IMM);
  EXPECT_EQ(r.wr_id, 9u);
  EXPECT_EQ(r.byte_len, 1000u);
  EXPECT_EQ(ntohl(r.imm_data), 42u);
  EXPECT_EQ(0, std::memcmp(dst.base + 6000, src.base + 100, 1000));
}

TEST_F(Verbs, RdmaReadIntoSeveralSges) {
  Pages remote(3), local(3);
  fill(remote.base, remote.size, 5);
  ibv_mr* rmr = mr(remote.base, remote.size);
  ibv_mr* lmr = mr(local.base, local.size);
  Pair p = pair();
  ibv_sge s[2] = {{reinterpret_cast<uint64_t>(local.base + 1), 3000, lmr->lkey},
                  {reinterpret_cast<uint64_t>(local.base + 6000), 5000, lmr->lkey}};
  ibv_send_wr w = wr(IBV_WR_RDMA_READ, 4, s, 2);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(remote.base + 50);
  w.wr.rdma.rkey = rmr->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ibv_wc c = poll1(p.scq);
  ASSERT_EQ(c.status, IBV_WC_SUCCESS);
  EXPECT_EQ(c.opcode, IBV_WC_RDMA_READ);
  EXPECT_EQ(c.byte_len, 8000u);
  EXPECT_EQ(0, std::memcmp(local.base + 1, remote.base + 50, 3000));
  EXPECT_EQ(0, std::memcmp(local.base + 6000, remote.base + 3050, 5000));
}

TEST_F(Verbs, AtomicFetchAddAndCompareSwap) {
  Pages remote(1), local(1);
  auto* word = reinterpret_cast<uint64_t*>(remote.base + 64);
  *word = 1000;
  ibv_mr* rmr = mr(remote.base, remote.size);
  ibv_mr* lmr = mr(local.base, local.size);
  Pair p = pair();
  auto* result = reinterpret_cast<uint64_t*>(local.base);
  ibv_sge s{reinterpret_cast<uint64_t>(result), 8, lmr->lkey};
  ibv_send_wr w = wr(IBV_WR_ATOMIC_FETCH_AND_ADD, 5, &s, 1);
  w.wr.atomic.remote_addr = reinterpret_cast<uint64_t>(word);
  w.wr.atomic.rkey = rmr->rkey;
  w.wr.atomic.compare_add = 23;
  ASSERT_EQ(post(p.a, w), 0);
  ibv_wc c = poll1(p.scq);
  ASSERT_EQ(c.status, IBV_WC_SUCCESS);
  EXPECT_EQ(c.opcode, IBV_WC_FETCH_ADD);
  EXPECT_EQ(*result, 1000u);
  EXPECT_EQ(*word, 1023u);

  w.opcode = IBV_WR_ATOMIC_CMP_AND_SWP;
  w.wr.atomic.compare_add = 999;  // does not match: no swap
  w.wr.atomic.swap = 7;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(*result, 1023u);
  EXPECT_EQ(*word, 1023u);
  w.wr.atomic.compare_add = 1023;  // matches
  ASSERT_EQ(post(p.a, w), 0);
  c = poll1(p.scq);
  ASSERT_EQ(c.status, IBV_WC_SUCCESS);
  EXPECT_EQ(c.opcode, IBV_WC_COMP_SWAP);
  EXPECT_EQ(*result, 1023u);
  EXPECT_EQ(*word, 7u);
}

TEST_F(Verbs, AtomicsUnderContentionFromTwoQps) {
  Pages remote(1), local(2);
  auto* counter = reinterpret_cast<uint64_t*>(remote.base);
  ibv_mr* rmr = mr(remote.base, remote.size);
  ibv_mr* lmr = mr(local.base, local.size);
  Pair p1 = pair(), p2 = pair();
  constexpr int kEach = 500;
  auto* results = reinterpret_cast<uint64_t*>(local.base);  // 2 * kEach slots
  std::atomic<int> failures{0};
  auto hammer = [&](ibv_qp* q, ibv_cq* c, int slot0) {
    for (int i = 0; i < kEach; ++i) {
      ibv_sge s{reinterpret_cast<uint64_t>(&results[slot0 + i]), 8, lmr->lkey};
      ibv_send_wr w = wr(IBV_WR_ATOMIC_FETCH_AND_ADD, static_cast<uint64_t>(i), &s, 1);
      w.wr.atomic.remote_addr = reinterpret_cast<uint64_t>(counter);
      w.wr.atomic.rkey = rmr->rkey;
      w.wr.atomic.compare_add = 1;
      if (post(q, w) != 0 || poll1(c).status != IBV_WC_SUCCESS) ++failures;
    }
  };
  std::thread t1(hammer, p1.a, p1.scq, 0), t2(hammer, p2.a, p2.scq, kEach);
  t1.join();
  t2.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(*counter, 2u * kEach);
  std::set<uint64_t> seen(results, results + 2 * kEach);  // every old value exactly once
  EXPECT_EQ(seen.size(), 2u * kEach);
  EXPECT_EQ(*seen.rbegin(), 2u * kEach - 1);
}

TEST_F(Verbs, ZeroLengthSendAndWrite) {
  Pages dst(1);
  ibv_mr* dmr = mr(dst.base, dst.size);
  Pair p = pair();
  ASSERT_EQ(post_recv(p.b, 1, {{reinterpret_cast<uint64_t>(dst.base), 16, dmr->lkey}}), 0);
  ibv_send_wr w = wr(IBV_WR_SEND, 1, nullptr, 0);
  ASSERT_EQ(post(p.a, w), 0);
  EXPECT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  ibv_wc r = poll1(p.rcq);
  EXPECT_EQ(r.status, IBV_WC_SUCCESS);
  EXPECT_EQ(r.byte_len, 0u);
  w = wr(IBV_WR_RDMA_WRITE, 2, nullptr, 0);
  w.wr.rdma.rkey = 0xdeadbeef;  // not checked for a zero-length write
  ASSERT_EQ(post(p.a, w), 0);
  EXPECT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
}

TEST_F(Verbs, OneMegabyteMessageFromUnalignedBuffers) {
  constexpr size_t kLen = 1 << 20;
  std::vector<uint8_t> src(kLen + 13), dst(kLen + 29);
  fill(src.data(), src.size(), 11);
  ibv_mr* smr = mr(src.data() + 13, kLen);
  ibv_mr* dmr = mr(dst.data() + 29, kLen);
  Pair p = pair();
  ASSERT_EQ(post_recv(p.b, 1, {{reinterpret_cast<uint64_t>(dst.data() + 29), kLen, dmr->lkey}}), 0);
  ibv_sge s{reinterpret_cast<uint64_t>(src.data() + 13), kLen, smr->lkey};
  ibv_send_wr w = wr(IBV_WR_SEND, 1, &s, 1);
  ASSERT_EQ(post(p.a, w), 0);
  EXPECT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(poll1(p.rcq).byte_len, kLen);
  EXPECT_EQ(0, std::memcmp(dst.data() + 29, src.data() + 13, kLen));
}

// --- signaling, ordering, post lists ----------------------------------------

TEST_F(Verbs, UnsignaledWorkRequestsCompleteSilentlyAndInOrder) {
  Pages buf(2);
  ibv_mr* m = mr(buf.base, buf.size);
  Pair p = pair();
  std::vector<ibv_sge> sges(20);
  std::vector<ibv_send_wr> wrs(20);
  for (int i = 0; i < 20; ++i) {
    sges[static_cast<size_t>(i)] = {reinterpret_cast<uint64_t>(buf.base + i * 8), 8, m->lkey};
    wrs[static_cast<size_t>(i)] = wr(IBV_WR_RDMA_WRITE, static_cast<uint64_t>(i), &sges[static_cast<size_t>(i)], 1,
                                     i % 5 == 4 ? static_cast<unsigned>(IBV_SEND_SIGNALED) : 0u);
    wrs[static_cast<size_t>(i)].wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf.base + 4096 + i * 8);
    wrs[static_cast<size_t>(i)].wr.rdma.rkey = m->rkey;
    if (i > 0) wrs[static_cast<size_t>(i - 1)].next = &wrs[static_cast<size_t>(i)];
  }
  ASSERT_EQ(post(p.a, wrs[0]), 0);  // one post list
  for (uint64_t expect : {4u, 9u, 14u, 19u}) {
    ibv_wc c = poll1(p.scq);
    EXPECT_EQ(c.status, IBV_WC_SUCCESS);
    EXPECT_EQ(c.wr_id, expect);
  }
  EXPECT_TRUE(quiet(p.scq, 50));
}

TEST_F(Verbs, SqSigAllSignalsEverything) {
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  QpOptions sig;
  sig.sq_sig_all = true;
  Pair p = pair(sig);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 8, m->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 77, &s, 1, 0);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf.base + 64);
  w.wr.rdma.rkey = m->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  EXPECT_EQ(poll1(p.scq).wr_id, 77u);
}

TEST_F(Verbs, ExtendedPostSendApi) {
  Pages src(1), dst(1);
  fill(src.base, 256, 4);
  ibv_mr* smr = mr(src.base, src.size);
  ibv_mr* dmr = mr(dst.base, dst.size);
  ibv_cq* scq = cq();
  ibv_cq* rcq = cq();
  ibv_qp_init_attr_ex a{};
  a.send_cq = scq;
  a.recv_cq = rcq;
  a.qp_type = IBV_QPT_RC;
  a.cap = {16, 16, 1, 1, 64};
  a.comp_mask = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
  a.pd = pd;
  a.send_ops_flags = IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_SEND;
  ibv_qp* q = ibv_create_qp_ex(ctx, &a);
  ASSERT_NE(q, nullptr) << std::strerror(errno);
  ibv_qp* peer = qp(rcq, rcq);
  connect(q, peer);
  ibv_qp_ex* x = ibv_qp_to_qp_ex(q);
  ASSERT_NE(x, nullptr);
  ASSERT_EQ(post_recv(peer, 1, {{reinterpret_cast<uint64_t>(dst.base + 512), 512, dmr->lkey}}), 0);
  ibv_wr_start(x);
  x->wr_id = 10;
  x->wr_flags = IBV_SEND_SIGNALED;
  ibv_wr_rdma_write(x, dmr->rkey, reinterpret_cast<uint64_t>(dst.base));
  ibv_wr_set_sge(x, smr->lkey, reinterpret_cast<uint64_t>(src.base), 100);
  x->wr_id = 11;
  ibv_wr_send(x);
  ibv_wr_set_inline_data(x, src.base + 100, 50);
  ASSERT_EQ(ibv_wr_complete(x), 0);
  EXPECT_EQ(poll1(scq).wr_id, 10u);
  EXPECT_EQ(poll1(scq).wr_id, 11u);
  EXPECT_EQ(poll1(rcq).byte_len, 50u);
  EXPECT_EQ(0, std::memcmp(dst.base, src.base, 100));
  EXPECT_EQ(0, std::memcmp(dst.base + 512, src.base + 100, 50));
  ASSERT_EQ(ibv_destroy_qp(q), 0);
}

TEST_F(Verbs, ExtendedCqPolling) {
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_cq_init_attr_ex ca{};
  ca.cqe = 16;
  ca.wc_flags = IBV_WC_EX_WITH_BYTE_LEN | IBV_WC_EX_WITH_QP_NUM;
  ibv_cq_ex* cx = ibv_create_cq_ex(ctx, &ca);
  ASSERT_NE(cx, nullptr);
  ibv_cq* rcq = cq();
  ibv_qp* a = qp(ibv_cq_ex_to_cq(cx), rcq);
  ibv_qp* b = qp(rcq, rcq);
  connect(a, b);
  ibv_poll_cq_attr pa{};
  EXPECT_EQ(ibv_start_poll(cx, &pa), ENOENT);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 64, m->lkey};
  for (uint64_t id : {1u, 2u}) {
    ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, id, &s, 1);
    w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf.base + 1024);
    w.wr.rdma.rkey = m->rkey;
    ASSERT_EQ(post(a, w), 0);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int rc;
  while ((rc = ibv_start_poll(cx, &pa)) == ENOENT && std::chrono::steady_clock::now() < deadline) {
  }
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(cx->wr_id, 1u);
  EXPECT_EQ(cx->status, IBV_WC_SUCCESS);
  EXPECT_EQ(ibv_wc_read_opcode(cx), IBV_WC_RDMA_WRITE);
  EXPECT_EQ(ibv_wc_read_qp_num(cx), a->qp_num);
  while ((rc = ibv_next_poll(cx)) == ENOENT && std::chrono::steady_clock::now() < deadline) {
  }
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(cx->wr_id, 2u);
  ibv_end_poll(cx);
  ASSERT_EQ(destroy(a), 0);  // before its CQ
  ASSERT_EQ(ibv_destroy_cq(ibv_cq_ex_to_cq(cx)), 0);
}

// Eager-RDMA protocols poll the last bytes of a WRITE's target: once they
// show a message, the bytes before them are that message's (or a newer
// one's), never an older one's. Sequence numbers at the start, middle and end
// of 8 MiB messages (large copies are where a memcpy stores out of order).
TEST_F(Verbs, WriteDataNeverLandsTailFirst) {
  constexpr size_t kSize = 8u << 20;
  constexpr uint64_t kRounds = 24;
  Pages src(kSize / 4096), dst(kSize / 4096);
  ibv_mr* ms = mr(src.base, kSize);
  ibv_mr* md = mr(dst.base, kSize);
  Pair p = pair();
  const size_t spots[] = {0, kSize / 2, kSize - 8};
  auto at = [&](size_t off) { return reinterpret_cast<volatile uint64_t*>(dst.base + off); };
  std::atomic<bool> done{false};
  std::atomic<uint64_t> seen{0}, torn{0};
  std::thread watcher([&] {
    uint64_t expect = 1;
    while (!done.load(std::memory_order_relaxed)) {
      uint64_t last = *at(kSize - 8);
      if (last < expect) continue;
      if (*at(0) < last || *at(kSize / 2) < last) torn.fetch_add(1);
      seen.fetch_add(1);
      expect = last + 1;
    }
  });
  for (uint64_t n = 1; n <= kRounds; ++n) {
    for (size_t off : spots) std::memcpy(src.base + off, &n, 8);
    ibv_sge s{reinterpret_cast<uint64_t>(src.base), static_cast<uint32_t>(kSize), ms->lkey};
    ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, n, &s, 1);
    w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(dst.base);
    w.wr.rdma.rkey = md->rkey;
    ASSERT_EQ(post(p.a, w), 0);
    ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  }
  done = true;
  watcher.join();
  EXPECT_EQ(torn.load(), 0u) << "the end of a message was visible before its start or middle";
  EXPECT_GT(seen.load(), 0u);
  for (size_t off : spots) EXPECT_EQ(*at(off), kRounds);
}

}  // namespace
}  // namespace conformance
