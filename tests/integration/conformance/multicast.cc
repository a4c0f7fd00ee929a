// UD multicast (ibv_attach_mcast(3)): a datagram to a group reaches every
// UD QP attached to it, with the group as the GRH's destination, and not
// the QPs that are not attached (nor, here, the sending QP); detaching
// stops it. On a RoCE v2 IPv4 port a group is an IPv4-mapped multicast GID
// (::ffff:239.x.y.z, as rdma_cm makes them). Served where the device reports
// max_mcast_grp (ffrouter's soft fabric; rxe); elsewhere skipped.
#include <cstring>

#include "fixture.h"

namespace conformance {
namespace {

class Multicast : public Datagrams {
 protected:
  void SetUp() override {
    Datagrams::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ibv_device_attr dev{};
    ASSERT_EQ(ibv_query_device(ctx, &dev), 0);
    if (dev.max_mcast_grp == 0 || !global) GTEST_SKIP() << "the device has no multicast (or is not RoCE)";
    limits_ = dev;
    group_.raw[10] = group_.raw[11] = 0xff;
    group_.raw[12] = 239;
    group_.raw[13] = 7;
    group_.raw[14] = 7;
    group_.raw[15] = 1;
  }
  ibv_ah* ah_to_group() {
    ibv_ah_attr a{};
    address_self(a);
    a.grh.dgid = group_;
    ibv_ah* ah = ibv_create_ah(pd, &a);
    EXPECT_NE(ah, nullptr) << std::strerror(errno);
    if (ah != nullptr) ahs_.push_back(ah);
    return ah;
  }
  ibv_device_attr limits_{};
  ibv_gid group_{};
};

constexpr uint32_t kMulticastQpn = 0xffffff;

TEST_F(Multicast, ReachesEveryAttachedQpAndStopsOnDetach) {
  EXPECT_GT(limits_.max_mcast_qp_attach, 0);
  EXPECT_GE(limits_.max_total_mcast_qp_attach, limits_.max_mcast_qp_attach);
  Pages buf(2);
  ibv_mr* m = mr(buf.base, buf.size);
  fill(buf.base, 64, 3);
  ibv_cq* cs = cq();
  ibv_cq* cr[3] = {cq(), cq(), cq()};
  ibv_qp* s = ud_qp(cs);
  ibv_qp* r[3] = {ud_qp(cr[0]), ud_qp(cr[1]), ud_qp(cr[2])};
  ASSERT_EQ(ibv_attach_mcast(r[0], &group_, 0), 0);
  ASSERT_EQ(ibv_attach_mcast(r[1], &group_, 0), 0);
  for (uint64_t i = 0; i < 3; ++i)
    for (uint64_t k = 0; k < 2; ++k)
      ASSERT_EQ(post_recv(r[i], 10 * i + k, {{reinterpret_cast<uint64_t>(buf.base + 4096 + 512 * (2 * i + k)), 40 + 64,
                                               m->lkey}}),
                0);
  ibv_sge sg{reinterpret_cast<uint64_t>(buf.base), 64, m->lkey};
  ibv_ah* ah = ah_to_group();
  ASSERT_NE(ah, nullptr);
  ibv_send_wr w = ud_wr(1, &sg, ah, kMulticastQpn, kQkey);
  ASSERT_EQ(post(s, w), 0);
  EXPECT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
  for (int i = 0; i < 2; ++i) {
    ibv_wc wc = poll1(cr[i]);
    ASSERT_EQ(wc.status, IBV_WC_SUCCESS) << "receiver " << i;
    EXPECT_EQ(wc.byte_len, 40u + 64u);
    EXPECT_EQ(wc.src_qp, s->qp_num);
    EXPECT_TRUE(wc.wc_flags & IBV_WC_GRH);
    const uint8_t* got = buf.base + 4096 + 512 * (2 * i);
    EXPECT_EQ(std::memcmp(got + 40, buf.base, 64), 0);
    // RoCE v2 over IPv4: the GRH's last 20 bytes are the IPv4 header, sent to the group.
    EXPECT_EQ(std::memcmp(got + 20 + 16, group_.raw + 12, 4), 0) << "the destination is the group";
  }
  EXPECT_TRUE(quiet(cr[2], 200)) << "a QP not attached gets nothing";
  // r[1] leaves: the next datagram reaches r[0] only.
  ASSERT_EQ(ibv_detach_mcast(r[1], &group_, 0), 0);
  w.wr_id = 2;
  ASSERT_EQ(post(s, w), 0);
  EXPECT_EQ(poll1(cs).status, IBV_WC_SUCCESS);
  EXPECT_EQ(poll1(cr[0]).status, IBV_WC_SUCCESS);
  EXPECT_TRUE(quiet(cr[1], 200)) << "a detached QP gets nothing";
  EXPECT_TRUE(quiet(cr[2], 0));
  ASSERT_EQ(ibv_detach_mcast(r[0], &group_, 0), 0);
}

TEST_F(Multicast, OnlyAttachedUdQpsDetach) {
  ibv_cq* c = cq();
  ibv_qp* u = ud_qp(c);
  EXPECT_EQ(ibv_detach_mcast(u, &group_, 0), EINVAL) << "not attached";
  ASSERT_EQ(ibv_attach_mcast(u, &group_, 0), 0);
  EXPECT_EQ(ibv_detach_mcast(u, &group_, 0), 0);
  EXPECT_EQ(ibv_detach_mcast(u, &group_, 0), EINVAL) << "detached already";
  // A QP destroyed while attached leaves its groups.
  ASSERT_EQ(ibv_attach_mcast(u, &group_, 0), 0);
}

}  // namespace
}  // namespace conformance
