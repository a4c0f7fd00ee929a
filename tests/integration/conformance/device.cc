// The device and its port as programs probe them: a GID table longer than
// its populated entries, with the answers rdma-core gives for an empty entry
// and for one past the table; objects with any capabilities within the
// limits the device reports.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "fixture.h"

namespace conformance {
namespace {

TEST_F(Verbs, GidTableHasEmptyEntriesAnsweredAsRdmaCoreDoes) {
  ibv_port_attr port{};
  ASSERT_EQ(ibv_query_port(ctx, 1, &port), 0);
  ASSERT_GT(port.gid_tbl_len, 1);
  std::vector<ibv_gid_entry> valid;
  int empty = -1;
  for (int i = 0; i < port.gid_tbl_len; ++i) {
    ibv_gid_entry e{};
    int rc = ibv_query_gid_ex(ctx, 1, static_cast<uint32_t>(i), &e, 0);
    if (rc == ENODATA) {
      if (empty < 0) empty = i;
      continue;
    }
    ASSERT_EQ(rc, 0) << "entry " << i << ": " << std::strerror(rc);
    EXPECT_EQ(e.gid_index, static_cast<uint32_t>(i));
    EXPECT_EQ(e.port_num, 1u);
    valid.push_back(e);
  }
  ASSERT_GE(empty, 0) << "every one of the " << port.gid_tbl_len << " entries is populated";
  ASSERT_FALSE(valid.empty());
  // ibv_query_gid answers an empty entry with a zero GID.
  ibv_gid entry;
  std::memset(&entry, 0xab, sizeof entry);
  ASSERT_EQ(ibv_query_gid(ctx, 1, empty, &entry), 0);
  const ibv_gid zero{};
  EXPECT_EQ(0, std::memcmp(&entry, &zero, sizeof entry));
  // Past the table: an error from every call.
  ibv_gid_entry e{};
  EXPECT_EQ(ibv_query_gid_ex(ctx, 1, static_cast<uint32_t>(port.gid_tbl_len), &e, 0), EINVAL);
  EXPECT_EQ(ibv_query_gid(ctx, 1, port.gid_tbl_len, &entry), -1);
  // The table call gives exactly the valid entries, in order.
  std::vector<ibv_gid_entry> table(valid.size() + 4);
  ssize_t n = ibv_query_gid_table(ctx, table.data(), table.size(), 0);
  ASSERT_EQ(n, static_cast<ssize_t>(valid.size()));
  for (size_t i = 0; i < valid.size(); ++i) {
    EXPECT_EQ(table[i].gid_index, valid[i].gid_index);
    EXPECT_EQ(0, std::memcmp(&table[i].gid, &valid[i].gid, sizeof(ibv_gid)));
    EXPECT_EQ(table[i].gid_type, valid[i].gid_type);
  }
}

// What a device reports it can make, it makes: QPs of every type, CQs and
// SRQs with capabilities drawn at random within the reported limits (sizes
// spread evenly in log scale, so the limits themselves come up, and the
// first round at the limits exactly) all get created, with at least what
// was asked.
TEST_F(Verbs, ObjectsWithAnyCapabilitiesWithinTheReportedLimitsAreMade) {
  ibv_device_attr dev{};
  ASSERT_EQ(ibv_query_device(ctx, &dev), 0);
  const uint32_t seed = 20261203;
  std::mt19937 rng(seed);
  auto log_uniform = [&](int max) {  // 1..max, evenly in log scale
    double x = std::uniform_real_distribution<double>(0, std::log2(static_cast<double>(max) + 1))(rng);
    return std::clamp(static_cast<uint32_t>(std::exp2(x)), 1u, static_cast<uint32_t>(max));
  };
  auto uniform = [&](int max) { return std::uniform_int_distribution<uint32_t>(1, static_cast<uint32_t>(max))(rng); };
  const ibv_qp_type types[] = {IBV_QPT_RC, IBV_QPT_UC, IBV_QPT_UD};
  for (int round = 0; round < 300; ++round) {
    bool at_limits = round < 3;
    SCOPED_TRACE("round " + std::to_string(round) + " (seed " + std::to_string(seed) + ")");
    int cqe = at_limits ? dev.max_cqe : static_cast<int>(log_uniform(dev.max_cqe));
    ibv_cq* c = ibv_create_cq(ctx, cqe, nullptr, nullptr, 0);
    ASSERT_NE(c, nullptr) << "CQ of " << cqe << " (max_cqe " << dev.max_cqe << "): " << std::strerror(errno);
    EXPECT_GE(c->cqe, cqe);
    ibv_qp_init_attr a{};
    a.send_cq = a.recv_cq = c;
    a.qp_type = types[round % 3];
    a.cap.max_send_wr = at_limits ? static_cast<uint32_t>(dev.max_qp_wr) : log_uniform(dev.max_qp_wr);
    a.cap.max_recv_wr = at_limits ? static_cast<uint32_t>(dev.max_qp_wr) : log_uniform(dev.max_qp_wr);
    a.cap.max_send_sge = at_limits ? static_cast<uint32_t>(dev.max_sge) : uniform(dev.max_sge);
    a.cap.max_recv_sge = at_limits ? static_cast<uint32_t>(dev.max_sge) : uniform(dev.max_sge);
    const ibv_qp_cap asked = a.cap;
    ibv_qp* q = ibv_create_qp(pd, &a);
    ASSERT_NE(q, nullptr) << "QP type " << a.qp_type << " send " << asked.max_send_wr << "x" << asked.max_send_sge
                          << " recv " << asked.max_recv_wr << "x" << asked.max_recv_sge << ": " << std::strerror(errno);
    EXPECT_GE(a.cap.max_send_wr, asked.max_send_wr);
    EXPECT_GE(a.cap.max_recv_wr, asked.max_recv_wr);
    EXPECT_GE(a.cap.max_send_sge, asked.max_send_sge);
    EXPECT_GE(a.cap.max_recv_sge, asked.max_recv_sge);
    EXPECT_EQ(ibv_destroy_qp(q), 0);
    EXPECT_EQ(ibv_destroy_cq(c), 0);
    if (dev.max_srq == 0) continue;
    ibv_srq_init_attr sa{};
    sa.attr.max_wr = at_limits ? static_cast<uint32_t>(dev.max_srq_wr) : log_uniform(dev.max_srq_wr);
    sa.attr.max_sge = at_limits ? static_cast<uint32_t>(dev.max_srq_sge) : uniform(dev.max_srq_sge);
    const ibv_srq_attr srq_asked = sa.attr;
    ibv_srq* srq = ibv_create_srq(pd, &sa);
    ASSERT_NE(srq, nullptr) << "SRQ " << srq_asked.max_wr << "x" << srq_asked.max_sge << ": " << std::strerror(errno);
    EXPECT_GE(sa.attr.max_wr, srq_asked.max_wr);
    EXPECT_GE(sa.attr.max_sge, srq_asked.max_sge);
    EXPECT_EQ(ibv_destroy_srq(srq), 0);
  }
}

// Every capability the device reports works, and what it does not report
// is refused: programs choose their paths by these bits (UCX, MPI, NCCL).
TEST_F(Datagrams, EveryReportedCapabilityWorksAndTheOthersAreRefused) {
  ibv_device_attr_ex dev{};
  ASSERT_EQ(ibv_query_device_ex(ctx, nullptr, &dev), 0);
  const ibv_device_attr& a = dev.orig_attr;
  const auto has = [&](unsigned bit) { return (a.device_cap_flags & bit) != 0; };
  EXPECT_FALSE(has(IBV_DEVICE_N_NOTIFY_CQ)) << "no verb asks for N completions: nothing could use the bit";
  if (has(IBV_DEVICE_SYS_IMAGE_GUID)) {
    EXPECT_NE(a.sys_image_guid, 0u);
  }
  if (has(IBV_DEVICE_UD_AV_PORT_ENFORCE)) {
    ibv_ah_attr bad{};
    address_self(bad);
    bad.port_num = 2;
    EXPECT_EQ(ibv_create_ah(pd, &bad), nullptr) << "the AV's port is enforced";
  }
  if (has(IBV_DEVICE_CURR_QP_STATE_MOD)) {
    ibv_cq* c = cq();
    ibv_qp* q = ud_qp(c);
    ibv_qp_attr at{};
    at.qp_state = IBV_QPS_RTS;
    at.cur_qp_state = IBV_QPS_RTS;
    EXPECT_EQ(ibv_modify_qp(q, &at, IBV_QP_STATE | IBV_QP_CUR_STATE), 0) << "the current-state modifier is taken";
  }
  // Memory windows, XRC, multicast, device memory, CQ moderation: offered
  // exactly when they are reported.
  errno = 0;
  ibv_mw* mw = ibv_alloc_mw(pd, IBV_MW_TYPE_1);
  EXPECT_EQ(mw != nullptr, has(IBV_DEVICE_MEM_WINDOW)) << std::strerror(errno);
  if (mw != nullptr) {
    EXPECT_EQ(ibv_dealloc_mw(mw), 0);
  }
  mw = ibv_alloc_mw(pd, IBV_MW_TYPE_2);
  EXPECT_EQ(mw != nullptr, has(IBV_DEVICE_MEM_WINDOW_TYPE_2A) || has(IBV_DEVICE_MEM_WINDOW_TYPE_2B));
  if (mw != nullptr) {
    EXPECT_EQ(ibv_dealloc_mw(mw), 0);
  }
  ibv_xrcd_init_attr xa{};
  xa.comp_mask = IBV_XRCD_INIT_ATTR_FD | IBV_XRCD_INIT_ATTR_OFLAGS;
  xa.fd = -1;
  xa.oflags = O_CREAT;
  ibv_xrcd* x = ibv_open_xrcd(ctx, &xa);
  EXPECT_EQ(x != nullptr, has(IBV_DEVICE_XRC));
  if (x != nullptr) {
    EXPECT_EQ(ibv_close_xrcd(x), 0);
  }
  ibv_cq* c = cq();
  ibv_qp* ud = ud_qp(c);
  ibv_gid group{};
  group.raw[10] = group.raw[11] = 0xff;  // ::ffff:239.0.0.1, a multicast group of a RoCE v2 IPv4 port
  group.raw[12] = 239;
  group.raw[15] = 1;
  int attached = ibv_attach_mcast(ud, &group, 0);
  EXPECT_EQ(attached == 0, a.max_mcast_grp > 0 && a.max_mcast_qp_attach > 0);
  if (attached == 0) {
    EXPECT_EQ(ibv_detach_mcast(ud, &group, 0), 0);
  }
  ibv_alloc_dm_attr dm_attr{};
  dm_attr.length = 64;
  ibv_dm* dm = ibv_alloc_dm(ctx, &dm_attr);
  EXPECT_EQ(dm != nullptr, dev.max_dm_size >= 64);
  if (dm != nullptr) {
    EXPECT_EQ(ibv_free_dm(dm), 0);
  }
  ibv_modify_cq_attr mod{};
  mod.attr_mask = IBV_CQ_ATTR_MODERATE;
  mod.moderate.cq_count = 1;
  mod.moderate.cq_period = 1;
  EXPECT_EQ(ibv_modify_cq(c, &mod) == 0, dev.cq_mod_caps.max_cq_count > 0);
}

}  // namespace
}  // namespace conformance
