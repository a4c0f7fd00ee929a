// A peer process killed with SIGKILL in the middle of a transfer.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>

#include "fixture.h"

namespace conformance {
namespace {

// --- a peer killed mid-transfer ----------------------------------------------

// A child process owns one end; the parent streams writes to it and kills it
// with SIGKILL: the parent's outstanding and new work requests must complete
// with errors, never hang.
TEST_F(Verbs, PeerKilledMidTransferFailsOutstandingAndNewWork) {
  int to_child[2], to_parent[2];
  ASSERT_EQ(pipe(to_child), 0);
  ASSERT_EQ(pipe(to_parent), 0);
  Pages buf(16);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_cq* c = cq(1024);
  QpOptions quick;
  quick.timeout = 8;
  quick.retry_cnt = 3;
  ibv_qp* q = qp(c, c, false, 512);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // A fresh verbs session of its own (inherited objects belong to the parent's).
    ibv_device** l = ibv_get_device_list(nullptr);
    ibv_context* cctx = l != nullptr && l[0] != nullptr ? ibv_open_device(l[0]) : nullptr;
    ibv_pd* cpd = cctx != nullptr ? ibv_alloc_pd(cctx) : nullptr;
    auto* mem = static_cast<uint8_t*>(mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    ibv_mr* cm = cpd != nullptr ? ibv_reg_mr(cpd, mem, 1 << 20, kAllAccess) : nullptr;
    ibv_cq* ccq = cctx != nullptr ? ibv_create_cq(cctx, 16, nullptr, nullptr, 0) : nullptr;
    ibv_qp_init_attr a{};
    a.send_cq = ccq;
    a.recv_cq = ccq;
    a.qp_type = IBV_QPT_RC;
    a.cap = {16, 16, 1, 1, 0};
    ibv_qp* cq_ = cm != nullptr && ccq != nullptr ? ibv_create_qp(cpd, &a) : nullptr;
    uint32_t msg[3] = {cq_ != nullptr ? cq_->qp_num : 0, cm != nullptr ? cm->rkey : 0, 0};
    uint64_t addr = reinterpret_cast<uint64_t>(mem);
    uint32_t peer = 0;
    if (write(to_parent[1], msg, sizeof msg) != sizeof msg || write(to_parent[1], &addr, 8) != 8 ||
        read(to_child[0], &peer, 4) != 4 || cq_ == nullptr)
      _exit(1);
    ibv_qp_attr at{};
    at.qp_state = IBV_QPS_INIT;
    at.port_num = 1;
    at.qp_access_flags = kAllAccess;
    ibv_modify_qp(cq_, &at, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
    at = {};
    at.qp_state = IBV_QPS_RTR;
    at.path_mtu = IBV_MTU_1024;
    at.dest_qp_num = peer;
    at.max_dest_rd_atomic = 16;
    at.min_rnr_timer = 1;
    address_self(at.ah_attr);
    ibv_modify_qp(cq_, &at, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    char ready = 'r';
    if (write(to_parent[1], &ready, 1) != 1) _exit(1);
    for (;;) pause();
  }
  uint32_t msg[3];
  uint64_t remote_addr = 0;
  ASSERT_EQ(read(to_parent[0], msg, sizeof msg), static_cast<ssize_t>(sizeof msg));
  ASSERT_EQ(read(to_parent[0], &remote_addr, 8), 8);
  ASSERT_NE(msg[0], 0u) << "child could not set up its QP";
  ASSERT_EQ(write(to_child[1], &q->qp_num, 4), 4);
  char ready;
  ASSERT_EQ(read(to_parent[0], &ready, 1), 1);
  ASSERT_EQ(to_init(q, quick), 0);
  ibv_qp_attr at{};
  at.qp_state = IBV_QPS_RTR;
  at.path_mtu = IBV_MTU_1024;
  at.dest_qp_num = msg[0];
  at.max_dest_rd_atomic = 16;
  at.min_rnr_timer = 1;
  address_self(at.ah_attr);
  ASSERT_EQ(ibv_modify_qp(q, &at, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                      IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER),
            0);
  ASSERT_EQ(to_rts(q, quick), 0);
  // Writes flow while the peer lives.
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 64 << 10, m->lkey};
  auto post_write = [&](uint64_t id) {
    ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, id, &s, 1);
    w.wr.rdma.remote_addr = remote_addr;
    w.wr.rdma.rkey = msg[1];
    return post(q, w);
  };
  for (uint64_t i = 0; i < 50; ++i) ASSERT_EQ(post_write(i), 0);
  for (int i = 0; i < 50; ++i) ASSERT_EQ(poll1(c).status, IBV_WC_SUCCESS);
  // Kill it with batches in flight: every work request still completes; once
  // one fails, all that follow fail too; and failure comes within seconds.
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  bool failed = false;
  int after_failure = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (uint64_t batch = 0; !failed || after_failure < 20; ++batch) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no error completion after the peer died";
    for (uint64_t i = 0; i < 20; ++i) ASSERT_EQ(post_write(1000 + batch * 20 + i), 0);
    for (int i = 0; i < 20; ++i) {
      ibv_wc wc = poll1(c);
      ASSERT_NE(wc.wr_id, ~0ull);  // poll1 reported a hang
      if (wc.status == IBV_WC_SUCCESS) {
        EXPECT_FALSE(failed) << "a success after an error completion";
        continue;
      }
      if (!failed) {
        EXPECT_EQ(wc.status, IBV_WC_RETRY_EXC_ERR);  // the peer does not answer
        failed = true;
      } else {
        EXPECT_EQ(wc.status, IBV_WC_WR_FLUSH_ERR);
        ++after_failure;
      }
    }
  }
  close(to_child[0]);
  close(to_child[1]);
  close(to_parent[0]);
  close(to_parent[1]);
}

}  // namespace
}  // namespace conformance
