/* Example: a verbs program whose buffers come from ffv_malloc (ffverbs.h),
 * zero-copy when libffverbs is preloaded, ordinary memory otherwise: one
 * binary for both. It writes 1 MiB with RDMA WRITE from one RC QP to
 * another on the first device and checks every byte.
 *
 *   cc ffv_zero_copy.c $(pkg-config --cflags ffverbs) -libverbs
 *   LD_PRELOAD=libffverbs.so ./a.out     # "zero-copy: yes", through the router
 *   ./a.out                              # "zero-copy: no", on a real device
 *
 * Exit: 0 the bytes arrived; 1 a verb failed (the message says which);
 * 2 no RDMA device. */
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ffverbs.h"

#define LEN (1u << 20)

static int fail(const char* what) {
  fprintf(stderr, "ffv_zero_copy: %s failed\n", what);
  return 1;
}

static int connect_to(struct ibv_qp* qp, uint32_t dest_qpn, const union ibv_gid* gid) {
  struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT, .port_num = 1,
                          .qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE};
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) return -1;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = IBV_MTU_1024;
  a.dest_qp_num = dest_qpn;
  a.max_dest_rd_atomic = 1;
  a.min_rnr_timer = 12;
  a.ah_attr.is_global = 1;
  a.ah_attr.grh.dgid = *gid;
  a.ah_attr.grh.hop_limit = 1;
  a.ah_attr.port_num = 1;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
    return -1;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTS;
  a.timeout = 14;
  a.retry_cnt = 7;
  a.rnr_retry = 7;
  a.max_rd_atomic = 1;
  return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                   IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

int main(void) {
  unsigned char* src = ffv_malloc(LEN);
  unsigned char* dst = ffv_malloc(LEN);
  if (src == NULL || dst == NULL) return fail("ffv_malloc");
  printf("zero-copy: %s\n", ffv_zero_copy() ? "yes (libffverbs' arena)" : "no (ordinary memory)");
  for (uint32_t i = 0; i < LEN; ++i) src[i] = (unsigned char)(i * 7 + 1);
  memset(dst, 0, LEN);

  int n = 0;
  struct ibv_device** list = ibv_get_device_list(&n);
  if (list == NULL || n == 0) {
    fprintf(stderr, "ffv_zero_copy: no RDMA device (preload libffverbs.so with a router, or run on a host with one)\n");
    ffv_free(src);
    ffv_free(dst);
    return 2;
  }
  struct ibv_context* ctx = ibv_open_device(list[0]);
  if (ctx == NULL) return fail("ibv_open_device");
  union ibv_gid gid;
  if (ibv_query_gid(ctx, 1, 0, &gid)) return fail("ibv_query_gid");
  struct ibv_pd* pd = ibv_alloc_pd(ctx);
  struct ibv_cq* cq = pd != NULL ? ibv_create_cq(ctx, 4, NULL, NULL, 0) : NULL;
  if (cq == NULL) return fail("ibv_alloc_pd/ibv_create_cq");
  struct ibv_mr* smr = ibv_reg_mr(pd, src, LEN, IBV_ACCESS_LOCAL_WRITE);
  struct ibv_mr* dmr = ibv_reg_mr(pd, dst, LEN, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (smr == NULL || dmr == NULL) return fail("ibv_reg_mr");
  struct ibv_qp_init_attr init = {.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_RC,
                                  .cap = {.max_send_wr = 1, .max_recv_wr = 1, .max_send_sge = 1, .max_recv_sge = 1}};
  struct ibv_qp* a = ibv_create_qp(pd, &init);
  struct ibv_qp* b = ibv_create_qp(pd, &init);
  if (a == NULL || b == NULL) return fail("ibv_create_qp");
  if (connect_to(a, b->qp_num, &gid) || connect_to(b, a->qp_num, &gid)) return fail("ibv_modify_qp");

  struct ibv_sge sge = {.addr = (uintptr_t)src, .length = LEN, .lkey = smr->lkey};
  struct ibv_send_wr wr = {.wr_id = 1, .sg_list = &sge, .num_sge = 1, .opcode = IBV_WR_RDMA_WRITE,
                           .send_flags = IBV_SEND_SIGNALED,
                           .wr.rdma = {.remote_addr = (uintptr_t)dst, .rkey = dmr->rkey}};
  struct ibv_send_wr* bad = NULL;
  if (ibv_post_send(a, &wr, &bad)) return fail("ibv_post_send");
  struct ibv_wc wc;
  int got;
  while ((got = ibv_poll_cq(cq, 1, &wc)) == 0) {
  }
  if (got < 0 || wc.status != IBV_WC_SUCCESS) {
    fprintf(stderr, "ffv_zero_copy: the WRITE completed with %s\n", got < 0 ? "a poll error" : ibv_wc_status_str(wc.status));
    return 1;
  }
  if (memcmp(src, dst, LEN) != 0) {
    fprintf(stderr, "ffv_zero_copy: the bytes written differ\n");
    return 1;
  }
  printf("1 MiB written by RDMA WRITE, every byte checked\n");
  ibv_destroy_qp(a);
  ibv_destroy_qp(b);
  ibv_dereg_mr(smr);
  ibv_dereg_mr(dmr);
  ibv_destroy_cq(cq);
  ibv_dealloc_pd(pd);
  ibv_close_device(ctx);
  ibv_free_device_list(list);
  ffv_free(src);
  ffv_free(dst);
  return 0;
}
