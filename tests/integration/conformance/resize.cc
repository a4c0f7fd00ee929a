// Changing objects in place: ibv_rereg_mr, ibv_resize_cq and resizing an SRQ
// (ibv_modify_srq with IBV_SRQ_MAX_WR), with what is queued in them kept.
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>

#include "fixture.h"

namespace conformance {
namespace {

// An RDMA WRITE of `len` bytes from `src` (lkey) to `dst` (rkey) on a
// connected QP; its completion status.
ibv_wc_status write_through(ibv_qp* q, ibv_cq* c, const void* src, uint32_t lkey, void* dst,
                            uint32_t rkey, uint32_t len) {
  ibv_sge s{reinterpret_cast<uint64_t>(src), len, lkey};
  ibv_send_wr w{};
  w.wr_id = 7;
  w.opcode = IBV_WR_RDMA_WRITE;
  w.sg_list = &s;
  w.num_sge = 1;
  w.send_flags = IBV_SEND_SIGNALED;
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(dst);
  w.wr.rdma.rkey = rkey;
  ibv_send_wr* bad = nullptr;
  EXPECT_EQ(ibv_post_send(q, &w, &bad), 0);
  ibv_wc wc{};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline)
    if (ibv_poll_cq(c, 1, &wc) == 1) return wc.status;
  ADD_FAILURE() << "no completion within 10 s";
  return IBV_WC_GENERAL_ERR;
}

TEST_F(Verbs, ReregMrChecksItsInputAndKeepsTheOldRegistrationOnError) {
  Pages buf(2), src(1);
  fill(src.base, 64, 51);
  ibv_mr* m = mr(buf.base, 4096);
  ibv_mr* sm = mr(src.base, src.size);
  errno = 0;
  EXPECT_EQ(ibv_rereg_mr(m, 1 << 3, nullptr, nullptr, 0, 0), IBV_REREG_MR_ERR_INPUT);  // unknown flag
  EXPECT_EQ(errno, EINVAL);
  errno = 0;
  EXPECT_EQ(ibv_rereg_mr(m, IBV_REREG_MR_CHANGE_TRANSLATION, nullptr, buf.base, 0, 0), IBV_REREG_MR_ERR_INPUT);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;  // access flags without IBV_REREG_MR_CHANGE_ACCESS
  EXPECT_EQ(ibv_rereg_mr(m, IBV_REREG_MR_CHANGE_PD, pd, nullptr, 0, IBV_ACCESS_LOCAL_WRITE),
            IBV_REREG_MR_ERR_INPUT);
  EXPECT_EQ(errno, EINVAL);
  errno = 0;  // remote write needs local write: the kernel refuses it
  int e = ibv_rereg_mr(m, IBV_REREG_MR_CHANGE_ACCESS, nullptr, nullptr, 0, IBV_ACCESS_REMOTE_WRITE);
  EXPECT_EQ(e, IBV_REREG_MR_ERR_CMD);
  EXPECT_NE(errno, 0);
  Pair p = pair();
  EXPECT_EQ(write_through(p.a, p.scq, src.base, sm->lkey, buf.base, m->rkey, 64), IBV_WC_SUCCESS)
      << "a refused re-registration broke the MR";
  EXPECT_EQ(0, std::memcmp(buf.base, src.base, 64));
}

TEST_F(Verbs, ReregMrMovesTheRegionToItsNewTranslation) {
  Pages old_buf(1), new_buf(2), src(1);
  fill(src.base, 256, 52);
  ibv_mr* m = mr(old_buf.base, 4096);
  ibv_mr* sm = mr(src.base, src.size);
  uint8_t* target = new_buf.base + 100;
  int e = ibv_rereg_mr(m, IBV_REREG_MR_CHANGE_TRANSLATION, nullptr, target, 5000, 0);
  if (e != 0 && errno == EOPNOTSUPP) GTEST_SKIP() << "the device does not re-register translations";
  ASSERT_EQ(e, 0) << std::strerror(errno);
  EXPECT_EQ(m->addr, target);
  EXPECT_EQ(m->length, 5000u);
  Pair p = pair();
  EXPECT_EQ(write_through(p.a, p.scq, src.base, sm->lkey, target + 4700, m->rkey, 256), IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(target + 4700, src.base, 256));
  // The old range is outside the region now.
  EXPECT_EQ(write_through(p.a, p.scq, src.base, sm->lkey, old_buf.base, m->rkey, 8),
            IBV_WC_REM_ACCESS_ERR);
}

TEST_F(Verbs, ReregMrChangesAccessAndProtectionDomain) {
  Pages buf(1), src(1);
  fill(src.base, 64, 53);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_mr* sm = mr(src.base, src.size);
  int e = ibv_rereg_mr(m, IBV_REREG_MR_CHANGE_ACCESS, nullptr, nullptr, 0, IBV_ACCESS_LOCAL_WRITE);
  if (e != 0 && errno == EOPNOTSUPP) GTEST_SKIP() << "the device does not re-register";
  ASSERT_EQ(e, 0) << std::strerror(errno);
  Pair p = pair();
  EXPECT_EQ(write_through(p.a, p.scq, src.base, sm->lkey, buf.base, m->rkey, 8), IBV_WC_REM_ACCESS_ERR)
      << "remote write still allowed after the access was taken away";
  ASSERT_EQ(ibv_rereg_mr(m, IBV_REREG_MR_CHANGE_ACCESS, nullptr, nullptr, 0, kAllAccess), 0);
  Pair q = pair();
  EXPECT_EQ(write_through(q.a, q.scq, src.base, sm->lkey, buf.base, m->rkey, 64), IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(buf.base, src.base, 64));
  // In another PD the key no longer serves this PD's QPs; back, it does.
  ibv_pd* other = ibv_alloc_pd(ctx);
  ASSERT_NE(other, nullptr);
  ASSERT_EQ(ibv_rereg_mr(m, IBV_REREG_MR_CHANGE_PD, other, nullptr, 0, 0), 0) << std::strerror(errno);
  EXPECT_EQ(m->pd, other);
  Pair r = pair();
  EXPECT_EQ(write_through(r.a, r.scq, src.base, sm->lkey, buf.base, m->rkey, 8), IBV_WC_REM_ACCESS_ERR);
  EXPECT_EQ(ibv_dealloc_pd(other), EBUSY);  // the MR is in it
  ASSERT_EQ(ibv_rereg_mr(m, IBV_REREG_MR_CHANGE_PD, pd, nullptr, 0, 0), 0);
  EXPECT_EQ(ibv_dealloc_pd(other), 0);
  Pair s = pair();
  EXPECT_EQ(write_through(s.a, s.scq, src.base, sm->lkey, buf.base, m->rkey, 64), IBV_WC_SUCCESS);
}

// --- ibv_resize_cq ----------------------------------------------------------

// `n` signaled RDMA WRITEs of 8 bytes, wr_ids first..first+n-1.
void post_writes(ibv_qp* q, ibv_mr* m, uint64_t first, int n) {
  for (int i = 0; i < n; ++i) {
    ibv_sge s{reinterpret_cast<uint64_t>(m->addr), 8, m->lkey};
    ibv_send_wr w{};
    w.wr_id = first + static_cast<uint64_t>(i);
    w.opcode = IBV_WR_RDMA_WRITE;
    w.sg_list = &s;
    w.num_sge = 1;
    w.send_flags = IBV_SEND_SIGNALED;
    w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(m->addr) + 64;
    w.wr.rdma.rkey = m->rkey;
    ibv_send_wr* bad = nullptr;
    ASSERT_EQ(ibv_post_send(q, &w, &bad), 0);
  }
}

TEST_F(Verbs, ResizeCqKeepsTheCompletionsNotYetPolled) {
  ibv_device_attr dev{};
  ASSERT_EQ(ibv_query_device(ctx, &dev), 0);
  ibv_cq* c = cq(16);
  ibv_qp* a = qp_with_peer(c);
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  EXPECT_EQ(ibv_resize_cq(c, 0), EINVAL);
  EXPECT_EQ(ibv_resize_cq(c, dev.max_cqe + 1), EINVAL);
  post_writes(a, m, 100, 10);
  usleep(1000 * 1000);  // ten local writes complete long before this
  EXPECT_EQ(ibv_resize_cq(c, 4), EINVAL) << "ten completions wait: four entries cannot hold them";
  ASSERT_EQ(ibv_resize_cq(c, 10), 0) << "exactly as many as wait fit";
  EXPECT_GE(c->cqe, 10);
  ASSERT_EQ(ibv_resize_cq(c, 300), 0);
  EXPECT_GE(c->cqe, 300);
  post_writes(a, m, 110, 110);  // more than the CQ first held, within the send queue
  for (uint64_t i = 100; i < 220; ++i) {
    ibv_wc wc = poll1(c);
    ASSERT_EQ(wc.status, IBV_WC_SUCCESS);
    ASSERT_EQ(wc.wr_id, i) << "a completion was lost or seen twice across the resize";
  }
  EXPECT_TRUE(quiet(c, 50));
  ASSERT_EQ(ibv_resize_cq(c, 4), 0) << "an empty CQ shrinks";
  post_writes(a, m, 400, 3);
  for (uint64_t i = 400; i < 403; ++i) EXPECT_EQ(poll1(c).wr_id, i);
}

TEST_F(Verbs, AnArmedCqStillFiresItsChannelAfterAResize) {
  ibv_comp_channel* ch = ibv_create_comp_channel(ctx);
  ASSERT_NE(ch, nullptr);
  ibv_cq* c = ibv_create_cq(ctx, 4, nullptr, ch, 0);
  ASSERT_NE(c, nullptr);
  ibv_qp* a = qp_with_peer(c);
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  ASSERT_EQ(ibv_req_notify_cq(c, 0), 0);
  ASSERT_EQ(ibv_resize_cq(c, 128), 0);
  post_writes(a, m, 1, 1);
  pollfd pf{ch->fd, POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, 10000), 1) << "the arm was lost in the resize";
  ibv_cq* got = nullptr;
  void* cq_ctx = nullptr;
  ASSERT_EQ(ibv_get_cq_event(ch, &got, &cq_ctx), 0);
  EXPECT_EQ(got, c);
  ibv_ack_cq_events(c, 1);
  EXPECT_EQ(poll1(c).wr_id, 1u);
  EXPECT_EQ(destroy(a), 0);
  EXPECT_EQ(ibv_destroy_cq(c), 0);
  EXPECT_EQ(ibv_destroy_comp_channel(ch), 0);
}

// --- resizing an SRQ (IBV_SRQ_MAX_WR) -----------------------------------------

int post_srq_receive(ibv_srq* srq, ibv_mr* m, uint64_t id) {
  return post_srq_recv(srq, id, {reinterpret_cast<uint64_t>(m->addr) + 64 * id, 64, m->lkey});
}

TEST_F(Verbs, ResizingAnSrqKeepsTheReceivesWaitingInIt) {
  ibv_device_attr dev{};
  ASSERT_EQ(ibv_query_device(ctx, &dev), 0);
  EXPECT_NE(dev.device_cap_flags & IBV_DEVICE_SRQ_RESIZE, 0u) << "an SRQ that resizes says so";
  Pages buf(2);
  ibv_mr* m = mr(buf.base, buf.size);
  uint32_t made = 0;
  ibv_srq* srq = one_sge_srq(8, &made);
  ASSERT_NE(srq, nullptr);  // filled (a post past it is ENOMEM: AFullReceiveQueueIsEnomem...)
  for (uint64_t i = 0; i < made; ++i) ASSERT_EQ(post_srq_receive(srq, m, i), 0);
  ibv_srq_attr at{};
  at.max_wr = 2;
  EXPECT_EQ(ibv_modify_srq(srq, &at, IBV_SRQ_MAX_WR), EINVAL) << "more receives wait than two";
  at.max_wr = 0;
  EXPECT_EQ(ibv_modify_srq(srq, &at, IBV_SRQ_MAX_WR), EINVAL);
  at.max_wr = static_cast<uint32_t>(dev.max_srq_wr) + 1;
  EXPECT_EQ(ibv_modify_srq(srq, &at, IBV_SRQ_MAX_WR), EINVAL);
  at.max_wr = 48;
  ASSERT_EQ(ibv_modify_srq(srq, &at, IBV_SRQ_MAX_WR), 0) << std::strerror(errno);
  ibv_srq_attr q{};
  ASSERT_EQ(ibv_query_srq(srq, &q), 0);
  EXPECT_GE(q.max_wr, 48u);
  for (uint64_t i = made; i < 48; ++i) ASSERT_EQ(post_srq_receive(srq, m, i), 0) << "receive " << i;
  // Every receive, the ones that waited through the resize first, in order.
  auto [cs, cr, sq, rq] = srq_pair(srq);
  ASSERT_NE(rq, nullptr);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base + 4096), 16, m->lkey};
  for (uint64_t i = 0; i < 48; ++i) {
    ibv_send_wr w = wr(IBV_WR_SEND, i, &s, 1);
    ASSERT_EQ(post(sq, w), 0);
    ASSERT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
    ibv_wc wc = poll1(cr);
    ASSERT_EQ(wc.status, IBV_WC_SUCCESS);
    ASSERT_EQ(wc.wr_id, i) << "a receive was lost or reordered across the resize";
  }
  EXPECT_EQ(ibv_destroy_qp(rq), 0);
  EXPECT_EQ(ibv_destroy_srq(srq), 0);
}

TEST_F(Verbs, AnSrqDoesNotShrinkBelowItsArmedLimit) {
  ibv_srq* srq = one_sge_srq(32);
  ASSERT_NE(srq, nullptr);
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  for (uint64_t i = 0; i < 20; ++i) ASSERT_EQ(post_srq_receive(srq, m, i), 0);
  ibv_srq_attr at{};
  at.srq_limit = 16;  // armed: 20 receives wait
  ASSERT_EQ(ibv_modify_srq(srq, &at, IBV_SRQ_LIMIT), 0);
  at.max_wr = 8;
  EXPECT_EQ(ibv_modify_srq(srq, &at, IBV_SRQ_MAX_WR), EINVAL);
  at.max_wr = 64;
  EXPECT_EQ(ibv_modify_srq(srq, &at, IBV_SRQ_MAX_WR), 0);
  EXPECT_EQ(ibv_destroy_srq(srq), 0);
}

}  // namespace
}  // namespace conformance
