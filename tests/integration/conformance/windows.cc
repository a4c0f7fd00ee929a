// Memory windows (IBA 10.6.7; rdma-core's ibv_alloc_mw(3), ibv_bind_mw(3)):
// type 1 bound with ibv_bind_mw, type 2 with a BIND_MW work request;
// access through a window's rkey; LOCAL_INV and SEND_WITH_INV; the bind
// errors; dereg and dealloc while bound. Served where the device reports
// IBV_DEVICE_MEM_WINDOW (ffrouter's soft fabric, rxe); elsewhere skipped
// (device.cc checks that windows are then refused).
#include <cstring>
#include <vector>

#include "fixture.h"

namespace conformance {
namespace {

constexpr unsigned kBindable = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_MW_BIND;
constexpr unsigned kRemote = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;

class Windows : public Verbs {
 protected:
  void SetUp() override {
    Verbs::SetUp();
    ibv_device_attr dev{};
    ASSERT_EQ(ibv_query_device(ctx, &dev), 0);
    if ((dev.device_cap_flags & IBV_DEVICE_MEM_WINDOW) == 0) GTEST_SKIP() << "the device has no memory windows";
    type2_ = (dev.device_cap_flags & (IBV_DEVICE_MEM_WINDOW_TYPE_2A | IBV_DEVICE_MEM_WINDOW_TYPE_2B)) != 0;
  }
  void TearDown() override {
    for (ibv_mw* w : windows_) EXPECT_EQ(ibv_dealloc_mw(w), 0);
    Verbs::TearDown();
  }
  ibv_mw* window(ibv_mw_type type) {
    ibv_mw* w = ibv_alloc_mw(pd, type);
    EXPECT_NE(w, nullptr) << std::strerror(errno);
    if (w != nullptr) windows_.push_back(w);
    return w;
  }
  void dealloc(ibv_mw* w) {
    windows_.erase(std::find(windows_.begin(), windows_.end(), w));
    EXPECT_EQ(ibv_dealloc_mw(w), 0);
  }
  // Binds type 1 window `w` through `q` (polled on `c`): its completion status.
  ibv_wc_status bind1(ibv_qp* q, ibv_cq* c, ibv_mw* w, ibv_mr* m, uint64_t addr, uint64_t len, unsigned access) {
    ibv_mw_bind b{};
    b.wr_id = 11;
    b.send_flags = IBV_SEND_SIGNALED;
    b.bind_info = {m, addr, len, access};
    EXPECT_EQ(ibv_bind_mw(q, w, &b), 0);
    ibv_wc wc = poll1(c);
    if (wc.status == IBV_WC_SUCCESS) {
      EXPECT_EQ(wc.opcode, IBV_WC_BIND_MW);
    }
    return wc.status;
  }
  // Binds type 2 window `w` with rkey `rkey` by ibv_post_send.
  ibv_wc_status bind2(ibv_qp* q, ibv_cq* c, ibv_mw* w, uint32_t rkey, ibv_mr* m, uint64_t addr, uint64_t len,
                      unsigned access) {
    ibv_send_wr b = wr(IBV_WR_BIND_MW, 12, nullptr, 0);
    b.bind_mw.mw = w;
    b.bind_mw.rkey = rkey;
    b.bind_mw.bind_info = {m, addr, len, access};
    EXPECT_EQ(post(q, b), 0);
    ibv_wc wc = poll1(c);
    if (wc.status == IBV_WC_SUCCESS) {
      EXPECT_EQ(wc.opcode, IBV_WC_BIND_MW);
    }
    return wc.status;
  }
  // A one-sided op of `q` (polled on `c`) on [addr, addr + len) under `rkey`, from/to `local`.
  ibv_wc_status remote(ibv_qp* q, ibv_cq* c, ibv_wr_opcode op, uint32_t rkey, uint64_t addr, ibv_mr* local,
                       uint32_t len) {
    ibv_sge s{reinterpret_cast<uint64_t>(local->addr), len, local->lkey};
    ibv_send_wr w = wr(op, 21, &s, 1);
    w.wr.rdma = {addr, rkey};
    EXPECT_EQ(post(q, w), 0);
    return poll1(c).status;
  }
  // A connected pair, an MR over target_ that windows may bind, one over
  // source_ for local data, and a type 2 window with the rkey its bind gives.
  struct Type2 {
    ibv_mr *bindable, *local;
    Pair p;
    ibv_mw* w;
    uint64_t at;  // target_'s address
    uint32_t rkey;
  };
  Type2 type2() {
    Type2 t{mr(target_.base, target_.size, kBindable), mr(source_.base, source_.size, IBV_ACCESS_LOCAL_WRITE), pair(),
            window(IBV_MW_TYPE_2), reinterpret_cast<uint64_t>(target_.base), 0};
    if (t.w != nullptr) t.rkey = ibv_inc_rkey(t.w->rkey);
    return t;
  }
  bool type2_ = false;
  std::vector<ibv_mw*> windows_;
  Pages target_{1}, source_{1};
};

TEST_F(Windows, Type1GrantsItsAccessOnItsRangeThroughItsRkey) {
  Pages target(2), source(1);
  ibv_mr* m = mr(target.base, target.size, kBindable);  // no remote access of its own
  ibv_mr* src = mr(source.base, source.size, IBV_ACCESS_LOCAL_WRITE);
  Pair p = pair();
  ibv_mw* w = window(IBV_MW_TYPE_1);
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->type, IBV_MW_TYPE_1);
  const uint32_t before = w->rkey;
  auto at = reinterpret_cast<uint64_t>(target.base) + 4096;
  ASSERT_EQ(bind1(p.a, p.scq, w, m, at, 4096, kRemote), IBV_WC_SUCCESS);
  EXPECT_NE(w->rkey, before) << "a bind gives the window a new rkey (ibv_inc_rkey)";
  EXPECT_EQ(w->rkey >> 8, before >> 8);
  fill(source.base, 64, 5);
  // The peer writes and reads through the window (its rkey, its range).
  EXPECT_EQ(remote(p.b, p.rcq, IBV_WR_RDMA_WRITE, w->rkey, at + 100, src, 64), IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(target.base + 4096 + 100, source.base, 64), 0);
  std::memset(source.base, 0, 64);
  EXPECT_EQ(remote(p.b, p.rcq, IBV_WR_RDMA_READ, w->rkey, at + 100, src, 64), IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(target.base + 4096 + 100, source.base, 64), 0);
  // Its former rkey grants nothing.
  EXPECT_EQ(remote(p.b, p.rcq, IBV_WR_RDMA_WRITE, before, at, src, 8), IBV_WC_REM_ACCESS_ERR);
}

TEST_F(Windows, Type1UnbindsAndBindsAgain) {
  Pages target(1), source(1);
  ibv_mr* m = mr(target.base, target.size, kBindable);
  ibv_mr* src = mr(source.base, source.size, IBV_ACCESS_LOCAL_WRITE);
  Pair p = pair();
  ibv_mw* w = window(IBV_MW_TYPE_1);
  ASSERT_NE(w, nullptr);
  auto at = reinterpret_cast<uint64_t>(target.base);
  ASSERT_EQ(bind1(p.a, p.scq, w, m, at, 4096, IBV_ACCESS_REMOTE_READ), IBV_WC_SUCCESS);
  ASSERT_EQ(bind1(p.a, p.scq, w, m, at, 4096, IBV_ACCESS_REMOTE_WRITE), IBV_WC_SUCCESS);  // bound again
  EXPECT_EQ(remote(p.b, p.rcq, IBV_WR_RDMA_WRITE, w->rkey, at, src, 8), IBV_WC_SUCCESS);
  ASSERT_EQ(bind1(p.a, p.scq, w, nullptr, 0, 0, 0), IBV_WC_SUCCESS);  // unbound
  EXPECT_EQ(remote(p.b, p.rcq, IBV_WR_RDMA_WRITE, w->rkey, at, src, 8), IBV_WC_REM_ACCESS_ERR);
}

TEST_F(Windows, Type2IsBoundByAWorkRequestAndInvalidatedLocally) {
  if (!type2_) GTEST_SKIP() << "no type 2 windows";
  Type2 t = type2();
  ASSERT_NE(t.w, nullptr);
  Pair& p = t.p;
  ibv_mw_bind b{};
  b.bind_info = {t.bindable, t.at, 4096, kRemote};
  EXPECT_EQ(ibv_bind_mw(p.a, t.w, &b), EINVAL) << "ibv_bind_mw is for type 1";
  // Bound by (and usable through) p.a, the peer's responder.
  ASSERT_EQ(bind2(p.a, p.scq, t.w, t.rkey, t.bindable, t.at, 4096, kRemote), IBV_WC_SUCCESS);
  fill(source_.base, 32, 9);
  EXPECT_EQ(remote(p.b, p.rcq, IBV_WR_RDMA_WRITE, t.rkey, t.at + 8, t.local, 32), IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(target_.base + 8, source_.base, 32), 0);
  ibv_send_wr inv = wr(IBV_WR_LOCAL_INV, 13, nullptr, 0);
  inv.invalidate_rkey = t.rkey;
  ASSERT_EQ(post(p.a, inv), 0);
  ibv_wc wc = poll1(p.scq);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_EQ(wc.opcode, IBV_WC_LOCAL_INV);
  EXPECT_EQ(remote(p.b, p.rcq, IBV_WR_RDMA_WRITE, t.rkey, t.at + 8, t.local, 32), IBV_WC_REM_ACCESS_ERR);
}

TEST_F(Windows, SendWithInvalidateFreesTheReceiversWindow) {
  if (!type2_) GTEST_SKIP() << "no type 2 windows";
  Type2 t = type2();
  ASSERT_NE(t.w, nullptr);
  Pair& p = t.p;
  const uint32_t rkey = t.rkey;
  ASSERT_EQ(bind2(p.a, p.scq, t.w, rkey, t.bindable, t.at, 4096, kRemote), IBV_WC_SUCCESS);
  ASSERT_EQ(post_recv(p.a, 31, {{reinterpret_cast<uint64_t>(source_.base) + 2048, 64, t.local->lkey}}), 0);
  ibv_sge s{reinterpret_cast<uint64_t>(source_.base), 16, t.local->lkey};
  ibv_send_wr send = wr(IBV_WR_SEND_WITH_INV, 32, &s, 1);
  send.invalidate_rkey = rkey;
  ASSERT_EQ(post(p.b, send), 0);
  ibv_wc sent = poll1(p.rcq);
  EXPECT_EQ(sent.status, IBV_WC_SUCCESS);
  EXPECT_EQ(sent.opcode, IBV_WC_SEND);
  ibv_wc got = poll1(p.scq);
  EXPECT_EQ(got.status, IBV_WC_SUCCESS);
  EXPECT_EQ(got.opcode, IBV_WC_RECV);
  EXPECT_EQ(got.byte_len, 16u);
  EXPECT_NE(got.wc_flags & IBV_WC_WITH_INV, 0u);
  EXPECT_EQ(got.invalidated_rkey, rkey);
  EXPECT_EQ(remote(p.b, p.rcq, IBV_WR_RDMA_WRITE, rkey, t.at, t.local, 8), IBV_WC_REM_ACCESS_ERR);
}

TEST_F(Windows, ABindTheRulesRefuseFailsWithMwBindErr) {
  Pages target(2);
  ibv_mr* bindable = mr(target.base, 4096, kBindable);
  ibv_mr* plain = mr(target.base + 4096, 4096, IBV_ACCESS_LOCAL_WRITE);
  ibv_mr* read_only = mr(target.base + 4096, 4096, IBV_ACCESS_MW_BIND);
  auto at = reinterpret_cast<uint64_t>(target.base);
  struct Case {
    const char* what;
    ibv_mr* mr;
    uint64_t addr, len;
    unsigned access;
  } cases[] = {
      {"MR without IBV_ACCESS_MW_BIND", plain, at + 4096, 64, IBV_ACCESS_REMOTE_READ},
      {"range beyond the MR", bindable, at + 4000, 200, IBV_ACCESS_REMOTE_READ},
      {"remote write on an MR without local write", read_only, at + 4096, 64, IBV_ACCESS_REMOTE_WRITE},
  };
  for (const Case& k : cases) {
    ibv_cq* c = cq();
    ibv_qp* q = qp_with_peer(c);
    ibv_mw* w = window(IBV_MW_TYPE_1);
    ASSERT_NE(w, nullptr);
    EXPECT_EQ(bind1(q, c, w, k.mr, k.addr, k.len, k.access), IBV_WC_MW_BIND_ERR) << k.what;
    EXPECT_EQ(state_of(q), IBV_QPS_ERR) << k.what;
  }
}

TEST_F(Windows, AnMrWithBoundWindowsStaysAndAWindowAlwaysGoes) {
  Pages target(1);
  ibv_mr* m = ibv_reg_mr(pd, target.base, target.size, kBindable);
  ASSERT_NE(m, nullptr);
  ibv_cq* c = cq();
  ibv_qp* q = qp_with_peer(c);
  ibv_mw* w = window(IBV_MW_TYPE_1);
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(bind1(q, c, w, m, reinterpret_cast<uint64_t>(target.base), 4096, kRemote), IBV_WC_SUCCESS);
  EXPECT_EQ(ibv_dereg_mr(m), EINVAL) << "a window is bound to it";
  EXPECT_EQ(ibv_dealloc_pd(pd), EBUSY);
  dealloc(w);  // bound: it goes all the same
  EXPECT_EQ(ibv_dereg_mr(m), 0);
}

}  // namespace
}  // namespace conformance
