// Verbs conformance: the RC data path through the public verbs API only.
// It runs under LD_PRELOAD=libffverbs.so against a router (test_conformance.sh)
// and is written to run unchanged on a real device (rxe): it never includes
// anything of ffrouter's. Two QPs of one process are connected to each other;
// every byte is checked end to end.

//
// This header holds what the cases share: the Verbs fixture (one device and
// PD, RC QPs connected to each other), Datagrams (UD QPs, address handles)
// and small helpers. The cases are in this directory by topic; they all build
// into one executable, verbs_conformance_test (tests/CMakeLists.txt).
#pragma once

#include <gtest/gtest.h>
#include <infiniband/verbs.h>
#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

namespace conformance {

constexpr int kAllAccess = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                           IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;

// True when this run must find libffverbs (set by test_conformance.sh).
bool expect_shim();

// The GID index with the IPv4-mapped address: 0 on ffrouter's device; on a
// real RoCE device (rxe) index 0 is the IPv6 link-local GID, so the harness
// says which (tests/hw/vm.sh sets FF_RXE_GID_INDEX).
uint8_t gid_index();

// Page-aligned memory from mmap, so tests control what shares a page.
struct Pages {
  explicit Pages(size_t n) : size(n * 4096) {
    base = static_cast<uint8_t*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  }
  ~Pages() { munmap(base, size); }
  uint8_t* base;
  size_t size;
};

// Fills p[0, n) with a pattern that depends on the seed and the offset.
void fill(uint8_t* p, size_t n, uint32_t seed);

// One receive of one SGE posted to an SRQ; what ibv_post_srq_recv returns.
inline int post_srq_recv(ibv_srq* srq, uint64_t id, ibv_sge s) {
  ibv_recv_wr r{};
  r.wr_id = id;
  r.sg_list = &s;
  r.num_sge = 1;
  ibv_recv_wr* bad = nullptr;
  return ibv_post_srq_recv(srq, &r, &bad);
}

struct QpOptions {
  uint8_t rnr_retry = 7;
  uint8_t min_rnr_timer = 1;  // 0.01 ms
  uint8_t timeout = 10;
  uint8_t retry_cnt = 7;
  int access = kAllAccess;
  bool sq_sig_all = false;
};

class Verbs : public ::testing::Test {
 protected:
  void SetUp() override {
    int n = 0;
    list_ = ibv_get_device_list(&n);
    ASSERT_NE(list_, nullptr);
    ASSERT_GE(n, 1) << "no verbs device (router running? FFV_SOCKET set?)";
    ctx = ibv_open_device(list_[0]);
    ASSERT_NE(ctx, nullptr);
    pd = ibv_alloc_pd(ctx);
    ASSERT_NE(pd, nullptr);
    ASSERT_EQ(ibv_query_gid(ctx, 1, gid_index(), &gid), 0);
    ibv_port_attr port{};
    ASSERT_EQ(ibv_query_port(ctx, 1, &port), 0);
    global = port.link_layer == IBV_LINK_LAYER_ETHERNET;
    lid = port.lid;
  }
  void TearDown() override {
    for (ibv_qp* q : qps_) ibv_destroy_qp(q);
    for (ibv_mr* m : mrs_) ibv_dereg_mr(m);
    for (ibv_cq* c : cqs_) ibv_destroy_cq(c);
    if (pd != nullptr) ibv_dealloc_pd(pd);
    if (ctx != nullptr) ibv_close_device(ctx);
    if (list_ != nullptr) ibv_free_device_list(list_);
  }

  ibv_cq* cq(int depth = 256, ibv_comp_channel* ch = nullptr) {
    ibv_cq* c = ibv_create_cq(ctx, depth, nullptr, ch, 0);
    EXPECT_NE(c, nullptr);
    if (c != nullptr) cqs_.push_back(c);
    return c;
  }
  ibv_mr* mr(void* addr, size_t len, int access = kAllAccess) {
    ibv_mr* m = ibv_reg_mr(pd, addr, len, static_cast<unsigned>(access));
    EXPECT_NE(m, nullptr) << "reg_mr: " << std::strerror(errno);
    if (m != nullptr) mrs_.push_back(m);
    return m;
  }
  void dereg(ibv_mr* m) {
    mrs_.erase(std::find(mrs_.begin(), mrs_.end(), m));
    ASSERT_EQ(ibv_dereg_mr(m), 0);
  }
  // Destroys a QP made by qp() (TearDown then leaves it alone).
  int destroy(ibv_qp* q) {
    qps_.erase(std::find(qps_.begin(), qps_.end(), q));
    return ibv_destroy_qp(q);
  }
  ibv_qp* qp(ibv_cq* scq, ibv_cq* rcq, bool sig_all = false, uint32_t depth = 128) {
    ibv_qp_init_attr a{};
    a.send_cq = scq;
    a.recv_cq = rcq;
    a.qp_type = IBV_QPT_RC;
    a.sq_sig_all = sig_all ? 1 : 0;
    a.cap.max_send_wr = depth;
    a.cap.max_recv_wr = depth;
    a.cap.max_send_sge = 4;
    a.cap.max_recv_sge = 4;
    a.cap.max_inline_data = 64;
    ibv_qp* q = ibv_create_qp(pd, &a);
    EXPECT_NE(q, nullptr) << std::strerror(errno);
    if (q != nullptr) {
      qps_.push_back(q);
      EXPECT_GE(a.cap.max_inline_data, 64u);  // reported truthfully, at least what was asked
    }
    return q;
  }
  // An SRQ of at least `max_wr` receives of one SGE; `made` gets the
  // max_wr it reports.
  ibv_srq* one_sge_srq(uint32_t max_wr, uint32_t* made = nullptr) {
    ibv_srq_init_attr sa{};
    sa.attr.max_wr = max_wr;
    sa.attr.max_sge = 1;
    ibv_srq* s = ibv_create_srq(pd, &sa);
    EXPECT_NE(s, nullptr) << std::strerror(errno);
    EXPECT_GE(sa.attr.max_wr, max_wr);
    if (made != nullptr) *made = sa.attr.max_wr;
    return s;
  }
  // An RC QP on `c` taking its receives from `srq` (the caller destroys it).
  ibv_qp* srq_qp(ibv_cq* c, ibv_srq* srq) {
    ibv_qp_init_attr a{};
    a.send_cq = a.recv_cq = c;
    a.srq = srq;
    a.qp_type = IBV_QPT_RC;
    a.cap = {8, 0, 1, 0, 0};
    ibv_qp* q = ibv_create_qp(pd, &a);
    EXPECT_NE(q, nullptr) << std::strerror(errno);
    return q;
  }
  // A sender (its own CQ) connected to a receiver on `srq` (its own CQ; the
  // caller destroys the receiver).
  struct SrqPair {
    ibv_cq *scq, *rcq;
    ibv_qp *sender, *receiver;
  };
  SrqPair srq_pair(ibv_srq* srq) {
    SrqPair p{cq(), cq(), nullptr, nullptr};
    p.receiver = srq_qp(p.rcq, srq);
    p.sender = qp(p.scq, p.scq);
    if (p.receiver != nullptr && p.sender != nullptr) connect(p.sender, p.receiver);
    return p;
  }
  // This port's own address: its GID on a RoCE port (every address there
  // carries a GRH), its LID on InfiniBand.
  void address_self(ibv_ah_attr& a) const {
    a.port_num = 1;
    a.dlid = lid;
    if (global) {
      a.is_global = 1;
      a.grh.dgid = gid;
      a.grh.hop_limit = 1;
      a.grh.sgid_index = gid_index();
    }
  }
  int to_init(ibv_qp* q, const QpOptions& o = {}) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.pkey_index = 0;
    a.qp_access_flags = static_cast<unsigned>(o.access);
    return ibv_modify_qp(q, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
  }
  int to_rtr(ibv_qp* q, uint32_t dest, const QpOptions& o = {}) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_1024;
    a.dest_qp_num = dest;
    a.rq_psn = 0;
    a.max_dest_rd_atomic = 16;
    a.min_rnr_timer = o.min_rnr_timer;
    address_self(a.ah_attr);
    return ibv_modify_qp(q, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                    IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
  }
  int to_rts(ibv_qp* q, const QpOptions& o = {}) {
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_RTS;
    a.sq_psn = 0;
    a.timeout = o.timeout;
    a.retry_cnt = o.retry_cnt;
    a.rnr_retry = o.rnr_retry;
    a.max_rd_atomic = 16;
    return ibv_modify_qp(q, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                    IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC);
  }
  void connect(ibv_qp* a, ibv_qp* b, const QpOptions& oa = {}, const QpOptions& ob = {}) {
    ASSERT_EQ(to_init(a, oa), 0);
    ASSERT_EQ(to_init(b, ob), 0);
    ASSERT_EQ(to_rtr(a, b->qp_num, oa), 0);
    ASSERT_EQ(to_rtr(b, a->qp_num, ob), 0);
    ASSERT_EQ(to_rts(a, oa), 0);
    ASSERT_EQ(to_rts(b, ob), 0);
  }
  // An RC QP on `c`, connected to a peer QP with a CQ of its own.
  ibv_qp* qp_with_peer(ibv_cq* c) {
    ibv_cq* other = cq();
    ibv_qp* a = qp(c, c);
    ibv_qp* b = qp(other, other);
    connect(a, b);
    return a;
  }
  // A connected pair with its own CQs.
  struct Pair {
    ibv_cq *scq, *rcq;
    ibv_qp *a, *b;
  };
  Pair pair(const QpOptions& oa = {}, const QpOptions& ob = {}) {
    Pair p{cq(), cq(), nullptr, nullptr};
    p.a = qp(p.scq, p.scq, oa.sq_sig_all);
    p.b = qp(p.rcq, p.rcq, ob.sq_sig_all);
    connect(p.a, p.b, oa, ob);
    return p;
  }

  static int post_recv(ibv_qp* q, uint64_t id, std::vector<ibv_sge> sges) {
    ibv_recv_wr wr{};
    wr.wr_id = id;
    wr.sg_list = sges.data();
    wr.num_sge = static_cast<int>(sges.size());
    ibv_recv_wr* bad = nullptr;
    return ibv_post_recv(q, &wr, &bad);
  }
  static int post(ibv_qp* q, ibv_send_wr& wr) {
    ibv_send_wr* bad = nullptr;
    return ibv_post_send(q, &wr, &bad);
  }
  static ibv_send_wr wr(ibv_wr_opcode op, uint64_t id, ibv_sge* sges, int n,
                        unsigned flags = IBV_SEND_SIGNALED) {
    ibv_send_wr w{};
    w.wr_id = id;
    w.opcode = op;
    w.sg_list = sges;
    w.num_sge = n;
    w.send_flags = flags;
    return w;
  }
  // Polls one completion, failing the test after 10 s.
  static ibv_wc poll1(ibv_cq* c) {
    ibv_wc wc{};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline) {
      int n = ibv_poll_cq(c, 1, &wc);
      if (n == 1) return wc;
      EXPECT_GE(n, 0);
      if (n < 0) break;
    }
    ADD_FAILURE() << "no completion within 10 s";
    wc.status = IBV_WC_GENERAL_ERR;
    wc.wr_id = ~0ull;
    return wc;
  }
  // True when no completion shows up within `ms`.
  static bool quiet(ibv_cq* c, int ms) {
    ibv_wc wc{};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (std::chrono::steady_clock::now() < deadline)
      if (ibv_poll_cq(c, 1, &wc) != 0) return false;
    return true;
  }
  ibv_qp_state state_of(ibv_qp* q) {
    ibv_qp_attr a{};
    ibv_qp_init_attr init{};
    EXPECT_EQ(ibv_query_qp(q, &a, IBV_QP_STATE, &init), 0);
    return a.qp_state;
  }

  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ibv_gid gid{};
  bool global = false;
  uint16_t lid = 0;

 private:
  ibv_device** list_ = nullptr;
  std::vector<ibv_qp*> qps_;
  std::vector<ibv_mr*> mrs_;
  std::vector<ibv_cq*> cqs_;
};

// UD QPs in RTS with a Q_Key, and address handles to this port.
class Datagrams : public Verbs {
 protected:
  static constexpr uint32_t kQkey = 0x11111111;
  // On `on` (default: the fixture's PD).
  ibv_qp* ud_qp(ibv_cq* c, uint32_t qkey = kQkey, ibv_pd* on = nullptr) {
    ibv_qp_init_attr a{};
    a.send_cq = c;
    a.recv_cq = c;
    a.qp_type = IBV_QPT_UD;
    a.cap = {16, 16, 1, 2, 0};
    ibv_qp* q = ibv_create_qp(on != nullptr ? on : pd, &a);
    EXPECT_NE(q, nullptr) << std::strerror(errno);
    if (q == nullptr) return nullptr;
    owned_.push_back(q);
    ibv_qp_attr at{};
    at.qp_state = IBV_QPS_INIT;
    at.port_num = 1;
    at.qkey = qkey;
    EXPECT_EQ(ibv_modify_qp(q, &at, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY), 0);
    at = {};
    at.qp_state = IBV_QPS_RTR;
    EXPECT_EQ(ibv_modify_qp(q, &at, IBV_QP_STATE), 0);
    at.qp_state = IBV_QPS_RTS;
    at.sq_psn = 0;
    EXPECT_EQ(ibv_modify_qp(q, &at, IBV_QP_STATE | IBV_QP_SQ_PSN), 0);
    return q;
  }
  // A sender and a receiver, each on a CQ of its own.
  struct UdPair {
    ibv_cq* send_cq;
    ibv_cq* recv_cq;
    ibv_qp* sender;
    ibv_qp* receiver;
  };
  UdPair ud_pair() {
    ibv_cq* cs = cq();
    ibv_cq* cr = cq();
    return {cs, cr, ud_qp(cs), ud_qp(cr)};
  }
  ibv_ah* ah_to_self(ibv_pd* on = nullptr) {
    ibv_ah_attr a{};
    address_self(a);
    ibv_ah* ah = ibv_create_ah(on != nullptr ? on : pd, &a);
    EXPECT_NE(ah, nullptr) << std::strerror(errno);
    if (ah != nullptr) ahs_.push_back(ah);
    return ah;
  }
  static ibv_send_wr ud_wr(uint64_t id, ibv_sge* s, ibv_ah* ah, uint32_t qpn, uint32_t qkey) {
    ibv_send_wr w = wr(IBV_WR_SEND, id, s, 1);
    w.wr.ud.ah = ah;
    w.wr.ud.remote_qpn = qpn;
    w.wr.ud.remote_qkey = qkey;
    return w;
  }
  void TearDown() override {
    for (ibv_qp* q : owned_) ibv_destroy_qp(q);
    for (ibv_ah* a : ahs_) ibv_destroy_ah(a);
    Verbs::TearDown();
  }
  std::vector<ibv_qp*> owned_;
  std::vector<ibv_ah*> ahs_;
};

// Waits up to `ms` for one async event of `type`.
bool await_async(ibv_context* ctx, ibv_event_type type, ibv_async_event& out, int ms);

}  // namespace conformance
