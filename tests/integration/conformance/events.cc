// Events: completion channels (blocking, non-blocking, poll(), solicited
// only), a CQ overrun reported as an asynchronous error, and completion
// timestamps.
#include <fcntl.h>
#include <time.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "fixture.h"

namespace conformance {
namespace {

// --- completion channels ----------------------------------------------------

TEST_F(Verbs, CompletionChannelBlockingNonblockingPollAndSolicited) {
  ibv_comp_channel* ch = ibv_create_comp_channel(ctx);
  ASSERT_NE(ch, nullptr);
  EXPECT_EQ(fcntl(ch->fd, F_GETFL) & O_NONBLOCK, 0) << "channel fds start out blocking";
  ibv_cq* rcq = cq(64, ch);
  ibv_cq* scq = cq();
  ibv_qp* a = qp(scq, scq);
  ibv_qp* b = qp(rcq, rcq);
  connect(a, b);
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  for (uint64_t i = 0; i < 4; ++i)
    ASSERT_EQ(post_recv(b, i, {{reinterpret_cast<uint64_t>(buf.base + 1024 * i), 64, m->lkey}}), 0);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 8, m->lkey};

  // Blocking: a thread waits in ibv_get_cq_event until a completion arrives.
  ASSERT_EQ(ibv_req_notify_cq(rcq, 0), 0);
  std::atomic<bool> woke{false};
  std::thread waiter([&] {
    ibv_cq* got = nullptr;
    void* cq_ctx = nullptr;
    if (ibv_get_cq_event(ch, &got, &cq_ctx) == 0 && got == rcq) woke = true;
  });
  usleep(50 * 1000);
  EXPECT_FALSE(woke);
  ibv_send_wr w = wr(IBV_WR_SEND, 1, &s, 1, 0);
  ASSERT_EQ(post(a, w), 0);
  waiter.join();
  EXPECT_TRUE(woke);
  ibv_ack_cq_events(rcq, 1);
  EXPECT_EQ(poll1(rcq).wr_id, 0u);

  // Non-blocking and poll(): nothing pending gives EAGAIN, then the fd turns readable.
  ASSERT_EQ(fcntl(ch->fd, F_SETFL, fcntl(ch->fd, F_GETFL) | O_NONBLOCK), 0);
  ibv_cq* got = nullptr;
  void* cq_ctx = nullptr;
  errno = 0;
  EXPECT_EQ(ibv_get_cq_event(ch, &got, &cq_ctx), -1);
  EXPECT_EQ(errno, EAGAIN);
  ASSERT_EQ(ibv_req_notify_cq(rcq, 0), 0);
  ASSERT_EQ(post(a, w), 0);
  pollfd pf{ch->fd, POLLIN, 0};
  ASSERT_EQ(poll(&pf, 1, 5000), 1);
  ASSERT_EQ(ibv_get_cq_event(ch, &got, &cq_ctx), 0);
  EXPECT_EQ(got, rcq);
  ibv_ack_cq_events(rcq, 1);
  EXPECT_EQ(poll1(rcq).wr_id, 1u);

  // Solicited-only: an unsolicited completion raises no event, a solicited one does.
  ASSERT_EQ(ibv_req_notify_cq(rcq, 1), 0);
  ASSERT_EQ(post(a, w), 0);
  EXPECT_EQ(poll1(rcq).wr_id, 2u);
  EXPECT_EQ(poll(&pf, 1, 100), 0);
  w.send_flags = IBV_SEND_SOLICITED;
  ASSERT_EQ(post(a, w), 0);
  ASSERT_EQ(poll(&pf, 1, 5000), 1);
  ASSERT_EQ(ibv_get_cq_event(ch, &got, &cq_ctx), 0);
  ibv_ack_cq_events(rcq, 1);
  EXPECT_EQ(poll1(rcq).wr_id, 3u);

  // Not armed: no event.
  EXPECT_EQ(ibv_destroy_comp_channel(ch), EBUSY);  // a CQ still uses it
}

TEST_F(Verbs, CompletionQueueOverrunIsAnAsyncError) {
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_cq* tiny = ibv_create_cq(ctx, 1, nullptr, nullptr, 0);
  ASSERT_NE(tiny, nullptr);
  ibv_qp* a = qp_with_peer(tiny);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 8, m->lkey};
  for (int i = 0; i < tiny->cqe + 4; ++i) {
    ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, static_cast<uint64_t>(i), &s, 1);
    w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf.base + 64);
    w.wr.rdma.rkey = m->rkey;
    ASSERT_EQ(post(a, w), 0);
  }
  ibv_async_event ev{};
  ASSERT_TRUE(await_async(ctx, IBV_EVENT_CQ_ERR, ev, 5000));
  EXPECT_EQ(ev.element.cq, tiny);
}

// --- completion timestamps ----------------------------------------------------

// A CQ made with IBV_WC_EX_WITH_COMPLETION_TIMESTAMP(_WALLCLOCK) stamps each
// completion in the device's clock (hca_core_clock kHz; now is
// ibv_query_rt_values_ex) and in wall-clock nanoseconds.
TEST_F(Verbs, CompletionsCarryTimestampsInTheDevicesClockAndTheWallClock) {
  ibv_device_attr_ex dev{};
  ASSERT_EQ(ibv_query_device_ex(ctx, nullptr, &dev), 0);
  ibv_cq_init_attr_ex ca{};
  ca.cqe = 16;
  ca.wc_flags = IBV_WC_EX_WITH_COMPLETION_TIMESTAMP | IBV_WC_EX_WITH_COMPLETION_TIMESTAMP_WALLCLOCK;
  ibv_cq_ex* c = ibv_create_cq_ex(ctx, &ca);
  if (c == nullptr && errno == EOPNOTSUPP) GTEST_SKIP() << "the device has no completion timestamps";
  ASSERT_NE(c, nullptr) << std::strerror(errno);
  EXPECT_GT(dev.hca_core_clock, 0u);
  EXPECT_NE(dev.completion_timestamp_mask, 0u);
  ibv_values_ex before{};
  before.comp_mask = IBV_VALUES_MASK_RAW_CLOCK;
  ASSERT_EQ(ibv_query_rt_values_ex(ctx, &before), 0);
  EXPECT_EQ(before.comp_mask, static_cast<uint32_t>(IBV_VALUES_MASK_RAW_CLOCK));
  timespec wall_before{};
  clock_gettime(CLOCK_REALTIME, &wall_before);
  ibv_qp* a = qp_with_peer(ibv_cq_ex_to_cq(c));
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 8, m->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 5, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf.base + 64);
  w.wr.rdma.rkey = m->rkey;
  ASSERT_EQ(post(a, w), 0);
  ibv_poll_cq_attr pa{};
  int rc = ENOENT;
  for (int i = 0; i < 10000000 && rc == ENOENT; ++i) rc = ibv_start_poll(c, &pa);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(c->wr_id, 5u);
  uint64_t stamp = ibv_wc_read_completion_ts(c);
  uint64_t wall = ibv_wc_read_completion_wallclock_ns(c);
  ibv_end_poll(c);
  ibv_values_ex after{};
  after.comp_mask = IBV_VALUES_MASK_RAW_CLOCK;
  ASSERT_EQ(ibv_query_rt_values_ex(ctx, &after), 0);
  timespec wall_after{};
  clock_gettime(CLOCK_REALTIME, &wall_after);
  auto cycles = [](const ibv_values_ex& v) {
    return static_cast<uint64_t>(v.raw_clock.tv_sec) * 1000000000ull + static_cast<uint64_t>(v.raw_clock.tv_nsec);
  };
  EXPECT_LE(cycles(before), stamp) << "stamped before the work was posted";
  EXPECT_LE(stamp, cycles(after)) << "stamped after it was polled";
  auto ns = [](const timespec& t) { return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + static_cast<uint64_t>(t.tv_nsec); };
  constexpr uint64_t kSlack = 10'000'000;  // the wall clock is derived: allow 10 ms of skew
  EXPECT_LE(ns(wall_before), wall + kSlack);
  EXPECT_LE(wall, ns(wall_after) + kSlack);
  EXPECT_EQ(destroy(a), 0);
  EXPECT_EQ(ibv_destroy_cq(ibv_cq_ex_to_cq(c)), 0);
}

TEST_F(Verbs, RealTimeValuesRefuseUnknownMaskBits) {
  ibv_values_ex v{};
  v.comp_mask = IBV_VALUES_MASK_RESERVED;
  int e = ibv_query_rt_values_ex(ctx, &v);
  if (e == EOPNOTSUPP) GTEST_SKIP() << "the device reports no clock";
  EXPECT_EQ(e, EINVAL);
}

}  // namespace
}  // namespace conformance
