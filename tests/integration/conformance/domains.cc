// Thread domains and parent domains: a parent domain stands in for its PD
// (MRs, QPs, CQs made with it work with the PD's objects) and holds its PD
// and thread domain until it goes, as mlx5 does. Devices without them (rxe)
// say EOPNOTSUPP, and the cases skip.
#include <cstring>

#include "fixture.h"

namespace conformance {
namespace {

void* never_alloc(ibv_pd*, void*, size_t, size_t, uint64_t) { return IBV_ALLOCATOR_USE_DEFAULT; }
void never_free(ibv_pd*, void*, void*, uint64_t) {}

TEST_F(Verbs, AParentDomainStandsInForItsPdAndHoldsItAndItsThreadDomain) {
  ibv_td_init_attr ta{};
  ibv_td* td = ibv_alloc_td(ctx, &ta);
  if (td == nullptr && errno == EOPNOTSUPP) GTEST_SKIP() << "the device has no thread domains";
  ASSERT_NE(td, nullptr) << std::strerror(errno);
  int app_context = 0;
  ibv_parent_domain_init_attr pa{};
  pa.pd = pd;
  pa.td = td;
  pa.comp_mask = IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS | IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT;
  pa.alloc = never_alloc;
  pa.free = never_free;
  pa.pd_context = &app_context;
  ibv_pd* parent = ibv_alloc_parent_domain(ctx, &pa);
  ASSERT_NE(parent, nullptr) << std::strerror(errno);
  EXPECT_EQ(parent->context, ctx);
  EXPECT_EQ(ibv_dealloc_td(td), EBUSY) << "the parent domain holds the thread domain";
  EXPECT_EQ(ibv_dealloc_pd(pd), EBUSY) << "the parent domain holds the PD";

  // A CQ and a QP made with the parent domain; an MR in it; a peer QP and
  // an MR in the plain PD: they all meet, the PD's keys serving the parent's
  // QP and the parent's keys the PD's QP.
  ibv_cq_init_attr_ex ca{};
  ca.cqe = 64;
  ca.comp_mask = IBV_CQ_INIT_ATTR_MASK_PD;
  ca.parent_domain = parent;
  ibv_cq_ex* pcq = ibv_create_cq_ex(ctx, &ca);
  ASSERT_NE(pcq, nullptr) << std::strerror(errno);
  ca.parent_domain = pd;  // a plain PD is not a parent domain
  errno = 0;
  EXPECT_EQ(ibv_create_cq_ex(ctx, &ca), nullptr);
  EXPECT_EQ(errno, EINVAL);
  ibv_qp_init_attr_ex qa{};
  qa.qp_type = IBV_QPT_RC;
  qa.send_cq = ibv_cq_ex_to_cq(pcq);
  qa.recv_cq = ibv_cq_ex_to_cq(pcq);
  qa.cap = {16, 16, 1, 1, 0};
  qa.comp_mask = IBV_QP_INIT_ATTR_PD;
  qa.pd = parent;
  ibv_qp* a = ibv_create_qp_ex(ctx, &qa);
  ASSERT_NE(a, nullptr) << std::strerror(errno);
  EXPECT_EQ(a->pd, parent);
  ibv_cq* c = cq();
  ibv_qp* b = qp(c, c);
  connect(a, b);
  Pages src(1), dst(1);
  fill(src.base, 256, 61);
  ibv_mr* in_parent = ibv_reg_mr(parent, src.base, src.size, kAllAccess);
  ASSERT_NE(in_parent, nullptr) << std::strerror(errno);
  ibv_mr* in_pd = mr(dst.base, dst.size);
  ibv_sge s{reinterpret_cast<uint64_t>(src.base), 256, in_parent->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 1, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(dst.base);
  w.wr.rdma.rkey = in_pd->rkey;
  ASSERT_EQ(post(a, w), 0);
  EXPECT_EQ(poll1(ibv_cq_ex_to_cq(pcq)).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(dst.base, src.base, 256));

  EXPECT_EQ(ibv_dealloc_pd(parent), EBUSY) << "its QP, CQ and MR hold the parent domain";
  EXPECT_EQ(ibv_destroy_qp(a), 0);
  EXPECT_EQ(ibv_destroy_cq(ibv_cq_ex_to_cq(pcq)), 0);
  EXPECT_EQ(ibv_dealloc_pd(parent), EBUSY) << "its MR holds the parent domain";
  EXPECT_EQ(ibv_dereg_mr(in_parent), 0);
  EXPECT_EQ(ibv_dealloc_pd(parent), 0);
  EXPECT_EQ(ibv_dealloc_td(td), 0);
}

TEST_F(Verbs, ParentDomainAndThreadDomainCheckTheirAttributes) {
  ibv_td_init_attr ta{};
  ta.comp_mask = 1;  // no such attribute
  errno = 0;
  ibv_td* bad_td = ibv_alloc_td(ctx, &ta);
  if (bad_td == nullptr && errno == EOPNOTSUPP) GTEST_SKIP() << "the device has no thread domains";
  EXPECT_EQ(bad_td, nullptr);
  EXPECT_EQ(errno, EINVAL);
  ibv_parent_domain_init_attr pa{};
  errno = 0;
  EXPECT_EQ(ibv_alloc_parent_domain(ctx, &pa), nullptr) << "a parent domain needs a PD";
  EXPECT_EQ(errno, EINVAL);
  pa.pd = pd;
  pa.comp_mask = 1u << 7;
  errno = 0;
  EXPECT_EQ(ibv_alloc_parent_domain(ctx, &pa), nullptr);
  EXPECT_EQ(errno, EINVAL);
  pa.comp_mask = 0;
  ibv_pd* parent = ibv_alloc_parent_domain(ctx, &pa);  // no thread domain: allowed
  ASSERT_NE(parent, nullptr) << std::strerror(errno);
  EXPECT_EQ(ibv_dealloc_pd(parent), 0);
}

}  // namespace
}  // namespace conformance
