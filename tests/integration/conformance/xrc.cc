// XRC (ibv_open_xrcd(3), ibv_create_srq_ex(3), ibv_open_qp(3)): a domain
// groups XRC SRQs and XRC receive QPs; an XRC send QP's work request names
// the SRQ (by its number) that a receive QP of the SRQ's domain delivers
// to, its completion on that SRQ's CQ; one receive QP serves every SRQ of
// its domain. Where the device reports IBV_DEVICE_XRC (ffrouter's soft
// fabric); a device without it refuses the domain verbs (rxe, and the verbs
// fabric over it).
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "fixture.h"

namespace conformance {
namespace {

class Xrc : public Verbs {
 protected:
  void SetUp() override {
    Verbs::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    ibv_device_attr dev{};
    ASSERT_EQ(ibv_query_device(ctx, &dev), 0);
    offered_ = (dev.device_cap_flags & IBV_DEVICE_XRC) != 0;
  }
  void TearDown() override {
    for (ibv_qp* q : xrc_qps_) ibv_destroy_qp(q);
    for (ibv_srq* s : srqs_) ibv_destroy_srq(s);
    for (ibv_xrcd* d : domains_) ibv_close_xrcd(d);
    Verbs::TearDown();
  }
  ibv_xrcd* domain(int fd = -1, int oflags = O_CREAT) {
    ibv_xrcd_init_attr a{};
    a.comp_mask = IBV_XRCD_INIT_ATTR_FD | IBV_XRCD_INIT_ATTR_OFLAGS;
    a.fd = fd;
    a.oflags = oflags;
    ibv_xrcd* d = ibv_open_xrcd(ctx, &a);
    if (d != nullptr) domains_.push_back(d);
    return d;
  }
  int close_domain(ibv_xrcd* d) {
    int rc = ibv_close_xrcd(d);
    if (rc == 0) domains_.erase(std::find(domains_.begin(), domains_.end(), d));
    return rc;
  }
  ibv_srq* xrc_srq(ibv_xrcd* d, ibv_cq* c, uint32_t max_wr = 16) {
    ibv_srq_init_attr_ex a{};
    a.comp_mask = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_PD | IBV_SRQ_INIT_ATTR_XRCD | IBV_SRQ_INIT_ATTR_CQ;
    a.srq_type = IBV_SRQT_XRC;
    a.pd = pd;
    a.xrcd = d;
    a.cq = c;
    a.attr.max_wr = max_wr;
    a.attr.max_sge = 1;
    ibv_srq* s = ibv_create_srq_ex(ctx, &a);
    EXPECT_NE(s, nullptr) << std::strerror(errno);
    if (s != nullptr) srqs_.push_back(s);
    return s;
  }
  ibv_qp* keep(ibv_qp* q) {
    if (q != nullptr) xrc_qps_.push_back(q);
    return q;
  }
  ibv_qp* send_qp(ibv_cq* c) {
    ibv_qp_init_attr_ex a{};
    a.comp_mask = IBV_QP_INIT_ATTR_PD;
    a.pd = pd;
    a.qp_type = IBV_QPT_XRC_SEND;
    a.send_cq = c;
    a.cap = {16, 16, 1, 1, 0};  // the receive side is ignored: an XRC send QP has none
    ibv_qp* q = ibv_create_qp_ex(ctx, &a);
    EXPECT_NE(q, nullptr) << std::strerror(errno);
    if (q != nullptr) {
      EXPECT_EQ(a.cap.max_recv_wr, 0u);
    }
    return keep(q);
  }
  ibv_qp* receive_qp(ibv_xrcd* d) {
    ibv_qp_init_attr_ex a{};
    a.comp_mask = IBV_QP_INIT_ATTR_XRCD;
    a.xrcd = d;
    a.qp_type = IBV_QPT_XRC_RECV;
    ibv_qp* q = ibv_create_qp_ex(ctx, &a);
    EXPECT_NE(q, nullptr) << std::strerror(errno);
    return keep(q);
  }
  // ibv_open_qp of receive QP `qp_num` through domain d.
  ibv_qp* open_receive_qp(ibv_xrcd* d, uint32_t qp_num) {
    ibv_qp_open_attr oa{};
    oa.comp_mask = IBV_QP_OPEN_ATTR_NUM | IBV_QP_OPEN_ATTR_XRCD | IBV_QP_OPEN_ATTR_TYPE;
    oa.qp_num = qp_num;
    oa.xrcd = d;
    oa.qp_type = IBV_QPT_XRC_RECV;
    return ibv_open_qp(ctx, &oa);
  }
  static uint32_t number_of(ibv_srq* s) {
    uint32_t n = 0;
    EXPECT_EQ(ibv_get_srq_num(s, &n), 0);
    return n;
  }
  // A send naming SRQ `srq_num` through XRC send QP q.
  static int send_to(ibv_qp* q, uint32_t srq_num, uint64_t id, ibv_sge* s, ibv_wr_opcode op = IBV_WR_SEND) {
    ibv_send_wr w = wr(op, id, s, 1);
    w.qp_type.xrc.remote_srqn = srq_num;
    return post(q, w);
  }

  bool offered_ = false;
  std::vector<ibv_qp*> xrc_qps_;
  std::vector<ibv_srq*> srqs_;
  std::vector<ibv_xrcd*> domains_;
};

#define REQUIRE_XRC() \
  if (!offered_) GTEST_SKIP() << "the device has no XRC (IBV_DEVICE_XRC)"

TEST_F(Xrc, WithoutTheCapabilityTheDomainVerbsAreRefused) {
  if (offered_) GTEST_SKIP() << "the device has XRC";
  errno = 0;
  EXPECT_EQ(domain(), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
}

TEST_F(Xrc, DomainsOfAFileAreSharedAsTheKernelKeysThem) {
  REQUIRE_XRC();
  char path[] = "/tmp/ffxrc.XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  unlink(path);
  errno = 0;
  EXPECT_EQ(domain(fd, 0), nullptr) << "no domain of the file yet, no O_CREAT";
  EXPECT_EQ(errno, EAGAIN);
  ibv_xrcd* first = domain(fd, O_CREAT);
  ASSERT_NE(first, nullptr) << std::strerror(errno);
  ibv_xrcd* again = domain(fd, 0);
  ASSERT_NE(again, nullptr) << "the file's domain exists now";
  errno = 0;
  EXPECT_EQ(domain(fd, O_CREAT | O_EXCL), nullptr) << "O_EXCL: it exists";
  EXPECT_EQ(errno, EINVAL);
  EXPECT_NE(domain(fd, O_RDWR), nullptr) << "oflags beyond O_CREAT and O_EXCL mean nothing";
  ibv_xrcd* lone = domain(-1, 0);
  ASSERT_NE(lone, nullptr) << "without a file: a private domain";
  // The two handles of the file's domain are one domain: a receive QP of
  // one opens through the other.
  ibv_qp* r = receive_qp(first);
  ASSERT_NE(r, nullptr);
  ibv_qp* opened = keep(open_receive_qp(again, r->qp_num));
  ASSERT_NE(opened, nullptr) << std::strerror(errno);
  EXPECT_EQ(opened->qp_num, r->qp_num);
  errno = 0;
  EXPECT_EQ(open_receive_qp(lone, r->qp_num), nullptr) << "another domain has no such receive QP";
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(close_domain(first), EBUSY) << "its receive QP uses it";
  close(fd);
}

TEST_F(Xrc, OneReceiveQpDeliversToTheSrqEachRequestNames) {
  REQUIRE_XRC();
  ibv_xrcd* d = domain();
  ASSERT_NE(d, nullptr) << std::strerror(errno);
  ibv_cq* scq = cq();
  ibv_cq* rcq = cq();
  ibv_srq* s1 = xrc_srq(d, rcq);
  ibv_srq* s2 = xrc_srq(d, rcq);
  ASSERT_TRUE(s1 != nullptr && s2 != nullptr);
  EXPECT_NE(number_of(s1), number_of(s2));
  ibv_qp* ini = send_qp(scq);
  ibv_qp* tgt = receive_qp(d);
  ASSERT_TRUE(ini != nullptr && tgt != nullptr);
  connect(ini, tgt);  // RC's masks: what does not apply to each is dropped
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  fill(buf.base, 256, 3);
  ASSERT_EQ(post_srq_recv(s1, 11, {reinterpret_cast<uint64_t>(buf.base) + 1024, 64, m->lkey}), 0);
  ASSERT_EQ(post_srq_recv(s2, 22, {reinterpret_cast<uint64_t>(buf.base) + 2048, 64, m->lkey}), 0);
  ibv_sge a{reinterpret_cast<uint64_t>(buf.base), 64, m->lkey};
  ibv_sge b{reinterpret_cast<uint64_t>(buf.base) + 64, 64, m->lkey};
  ASSERT_EQ(send_to(ini, number_of(s2), 1, &b), 0);
  ASSERT_EQ(send_to(ini, number_of(s1), 2, &a), 0);
  EXPECT_EQ(poll1(scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(poll1(scq).status, IBV_WC_SUCCESS);
  for (uint64_t expected : {22u, 11u}) {
    ibv_wc wc = poll1(rcq);
    EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
    EXPECT_EQ(wc.wr_id, expected) << "in order, each on the SRQ it named";
    EXPECT_EQ(wc.qp_num, tgt->qp_num) << "the receive QP's number";
    EXPECT_EQ(wc.byte_len, 64u);
  }
  EXPECT_EQ(std::memcmp(buf.base + 1024, buf.base, 64), 0);
  EXPECT_EQ(std::memcmp(buf.base + 2048, buf.base + 64, 64), 0);
  // A WRITE names an SRQ too: its PD is the one the key is checked against.
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 3, &a, 1);
  w.wr.rdma = {reinterpret_cast<uint64_t>(buf.base) + 3072, m->rkey};
  w.qp_type.xrc.remote_srqn = number_of(s1);
  ASSERT_EQ(post(ini, w), 0);
  EXPECT_EQ(poll1(scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(buf.base + 3072, buf.base, 64), 0);
  EXPECT_TRUE(quiet(rcq, 50)) << "a WRITE consumes no receive";
}

TEST_F(Xrc, ARequestNamingNoSrqOfTheDomainFails) {
  REQUIRE_XRC();
  ibv_xrcd* d = domain();
  ibv_xrcd* other = domain();
  ASSERT_TRUE(d != nullptr && other != nullptr);
  ibv_cq* scq = cq();
  ibv_cq* rcq = cq();
  ibv_srq* elsewhere = xrc_srq(other, rcq);
  ASSERT_NE(elsewhere, nullptr);
  ibv_qp* ini = send_qp(scq);
  ibv_qp* tgt = receive_qp(d);
  ASSERT_TRUE(ini != nullptr && tgt != nullptr);
  connect(ini, tgt);
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  ASSERT_EQ(post_srq_recv(elsewhere, 1, {reinterpret_cast<uint64_t>(buf.base), 64, m->lkey}), 0);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base) + 512, 8, m->lkey};
  ASSERT_EQ(send_to(ini, number_of(elsewhere), 5, &s), 0);
  ibv_wc wc = poll1(scq);
  EXPECT_EQ(wc.wr_id, 5u);
  EXPECT_EQ(wc.status, IBV_WC_REM_INV_REQ_ERR) << "the SRQ is in another domain";
  EXPECT_TRUE(quiet(rcq, 50)) << "nothing reached the other domain's SRQ";
}

TEST_F(Xrc, CreationRulesOfSrqsQpsAndDomains) {
  REQUIRE_XRC();
  ibv_xrcd* d = domain();
  ASSERT_NE(d, nullptr);
  ibv_cq* c = cq();
  ibv_srq_init_attr_ex a{};
  a.comp_mask = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_PD | IBV_SRQ_INIT_ATTR_XRCD;
  a.srq_type = IBV_SRQT_XRC;
  a.pd = pd;
  a.xrcd = d;
  a.attr.max_wr = 4;
  a.attr.max_sge = 1;
  errno = 0;
  EXPECT_EQ(ibv_create_srq_ex(ctx, &a), nullptr) << "an XRC SRQ needs its CQ";
  EXPECT_EQ(errno, EINVAL);
  ibv_srq* basic = one_sge_srq(4);
  ASSERT_NE(basic, nullptr);
  uint32_t n = 0;
  EXPECT_NE(ibv_get_srq_num(basic, &n), 0) << "a basic SRQ has no number";
  EXPECT_EQ(ibv_destroy_srq(basic), 0);
  ibv_srq* x = xrc_srq(d, c);
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(close_domain(d), EBUSY) << "its SRQ uses it";
  EXPECT_EQ(ibv_destroy_cq(c), EBUSY) << "the SRQ completes on it";
  ibv_qp_init_attr_ex q{};
  q.comp_mask = IBV_QP_INIT_ATTR_PD;
  q.pd = pd;
  q.qp_type = IBV_QPT_XRC_RECV;
  errno = 0;
  EXPECT_EQ(ibv_create_qp_ex(ctx, &q), nullptr) << "an XRC receive QP needs its domain";
  EXPECT_EQ(errno, EINVAL);
  ibv_qp* ini = send_qp(c);
  ASSERT_NE(ini, nullptr);
  Pages buf(1);
  ibv_mr* m = mr(buf.base, buf.size);
  EXPECT_EQ(post_recv(ini, 1, {{reinterpret_cast<uint64_t>(buf.base), 8, m->lkey}}), EINVAL)
      << "an XRC send QP has no receive queue";
  ibv_qp* tgt = receive_qp(d);
  ASSERT_NE(tgt, nullptr);
  // Opened, it is one QP with two handles: each destroy succeeds, and the
  // opened handle still serves once the creator's is gone.
  ibv_qp* opened = open_receive_qp(d, tgt->qp_num);
  ASSERT_NE(opened, nullptr) << std::strerror(errno);
  xrc_qps_.erase(std::find(xrc_qps_.begin(), xrc_qps_.end(), tgt));
  EXPECT_EQ(ibv_destroy_qp(tgt), 0);
  keep(opened);
  connect(ini, opened);
  ASSERT_EQ(post_srq_recv(x, 9, {reinterpret_cast<uint64_t>(buf.base) + 256, 16, m->lkey}), 0);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 16, m->lkey};
  ASSERT_EQ(send_to(ini, number_of(x), 4, &s), 0);
  ibv_wc first = poll1(c), second = poll1(c);
  EXPECT_EQ(first.status, IBV_WC_SUCCESS);
  EXPECT_EQ(second.status, IBV_WC_SUCCESS);
  EXPECT_EQ(first.wr_id + second.wr_id, 13u) << "the send's and the receive's, on one CQ";
}

}  // namespace
}  // namespace conformance
