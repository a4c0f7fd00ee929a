// Device memory (ibv_alloc_dm(3)): memory of the device's, copied to and
// from with ibv_memcpy_to_dm/from_dm, registered zero-based with
// ibv_reg_dm_mr (addresses are offsets from the MR's start, locally and
// remotely), freed with ibv_free_dm (EBUSY while an MR is on it). Where
// the device reports max_dm_size (ffrouter, either fabric: the shim's);
// elsewhere (rxe) skipped.
#include <cstring>

#include "fixture.h"

namespace conformance {
namespace {

class DeviceMemory : public Verbs {
 protected:
  void SetUp() override {
    Verbs::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ibv_device_attr_ex dev{};
    ASSERT_EQ(ibv_query_device_ex(ctx, nullptr, &dev), 0);
    if (dev.max_dm_size < 8192) GTEST_SKIP() << "the device has no device memory";
    max_ = dev.max_dm_size;
  }
  ibv_dm* alloc(uint64_t length) {
    ibv_alloc_dm_attr a{};
    a.length = length;
    return ibv_alloc_dm(ctx, &a);
  }
  uint64_t max_ = 0;
};

constexpr unsigned kDmAccess = IBV_ACCESS_ZERO_BASED | IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                               IBV_ACCESS_REMOTE_READ;

TEST_F(DeviceMemory, CopiesInAndOutWithinItsLength) {
  ibv_dm* dm = alloc(8192);
  ASSERT_NE(dm, nullptr) << std::strerror(errno);
  uint8_t in[256], out[256] = {};
  fill(in, sizeof in, 5);
  EXPECT_EQ(ibv_memcpy_to_dm(dm, 4000, in, sizeof in), 0);
  EXPECT_EQ(ibv_memcpy_from_dm(out, dm, 4000, sizeof out), 0);
  EXPECT_EQ(std::memcmp(in, out, sizeof in), 0);
  EXPECT_NE(ibv_memcpy_to_dm(dm, 8192 - 16, in, 32), 0) << "past its end";
  EXPECT_NE(ibv_memcpy_from_dm(out, dm, 8192, 1), 0);
  EXPECT_EQ(ibv_free_dm(dm), 0);
  errno = 0;
  EXPECT_EQ(alloc(max_ + 1), nullptr) << "larger than max_dm_size";
  EXPECT_NE(errno, 0);
}

TEST_F(DeviceMemory, AZeroBasedMrServesRemoteAndLocalAccess) {
  ibv_dm* dm = alloc(8192);
  ASSERT_NE(dm, nullptr) << std::strerror(errno);
  errno = 0;
  EXPECT_EQ(ibv_reg_dm_mr(pd, dm, 0, 8192, IBV_ACCESS_LOCAL_WRITE), nullptr) << "DM MRs are zero-based";
  EXPECT_EQ(errno, EINVAL);
  ibv_mr* dmr = ibv_reg_dm_mr(pd, dm, 0, 8192, kDmAccess);
  ASSERT_NE(dmr, nullptr) << std::strerror(errno);
  EXPECT_EQ(ibv_free_dm(dm), EBUSY) << "an MR is on it";
  Pages host(1);
  ibv_mr* hmr = mr(host.base, host.size);
  fill(host.base, 128, 9);
  Pair p = pair();
  // The peer WRITEs to offset 100 of the DM MR (its zero-based address).
  ibv_sge s{reinterpret_cast<uint64_t>(host.base), 128, hmr->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 1, &s, 1);
  w.wr.rdma = {100, dmr->rkey};
  ASSERT_EQ(post(p.b, w), 0);
  EXPECT_EQ(poll1(p.rcq).status, IBV_WC_SUCCESS);
  uint8_t out[128];
  ASSERT_EQ(ibv_memcpy_from_dm(out, dm, 100, sizeof out), 0);
  EXPECT_EQ(std::memcmp(out, host.base, sizeof out), 0);
  // A SEND from the DM (local SGE at offset 100 of the DM MR) lands in the peer's buffer.
  ASSERT_EQ(post_recv(p.b, 2, {{reinterpret_cast<uint64_t>(host.base) + 2048, 128, hmr->lkey}}), 0);
  ibv_sge from_dm{100, 128, dmr->lkey};
  ibv_send_wr send = wr(IBV_WR_SEND, 3, &from_dm, 1);
  ASSERT_EQ(post(p.a, send), 0);
  EXPECT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(poll1(p.rcq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(host.base + 2048, host.base, 128), 0);
  EXPECT_EQ(ibv_dereg_mr(dmr), 0);
  EXPECT_EQ(ibv_free_dm(dm), 0);
}

}  // namespace
}  // namespace conformance
