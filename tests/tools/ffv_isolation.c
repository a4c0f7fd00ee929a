/* Tenant isolation probe (plain libibverbs; run with libffverbs preloaded).
 *
 *   ffv_isolation serve FILE   registers a 4 KiB buffer (remote write and
 *                              read), writes "ADDR RKEY" to FILE, waits for
 *                              EOF on stdin, then checks the buffer is intact.
 *   ffv_isolation attack ADDR RKEY
 *                              on an RC QP connected to itself: a WRITE to
 *                              its own MR must succeed (the path works), a
 *                              WRITE to ADDR with RKEY must fail with
 *                              IBV_WC_REM_ACCESS_ERR.
 * Exit 0 when the probe saw what isolation requires.
 */
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SIZE 4096

static void die(const char* what) {
  perror(what);
  exit(2);
}

static struct ibv_context* open_first(void) {
  int n = 0;
  struct ibv_device** list = ibv_get_device_list(&n);
  if (list == NULL || n == 0) die("no RDMA device");
  struct ibv_context* ctx = ibv_open_device(list[0]);
  if (ctx == NULL) die("ibv_open_device");
  ibv_free_device_list(list);
  return ctx;
}

static int serve(const char* file) {
  struct ibv_context* ctx = open_first();
  struct ibv_pd* pd = ibv_alloc_pd(ctx);
  char* buf = aligned_alloc(SIZE, SIZE);
  if (pd == NULL || buf == NULL) die("alloc");
  memset(buf, 'A', SIZE);
  struct ibv_mr* mr = ibv_reg_mr(pd, buf, SIZE,
                                 IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ);
  if (mr == NULL) die("ibv_reg_mr");
  FILE* f = fopen(file, "w");
  if (f == NULL) die(file);
  fprintf(f, "%llu %u\n", (unsigned long long)(uintptr_t)buf, mr->rkey);
  fclose(f);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  for (int i = 0; i < SIZE; ++i) {
    if (buf[i] != 'A') {
      fprintf(stderr, "serve: byte %d of the registered buffer changed to %#x\n", i, buf[i]);
      return 1;
    }
  }
  printf("serve: the registered buffer is intact\n");
  ibv_dereg_mr(mr);
  ibv_dealloc_pd(pd);
  ibv_close_device(ctx);
  return 0;
}

static enum ibv_wc_status write_and_wait(struct ibv_qp* qp, struct ibv_cq* cq, struct ibv_mr* local,
                                         uint64_t addr, uint32_t rkey) {
  struct ibv_sge sge = {(uintptr_t)local->addr, 64, local->lkey};
  struct ibv_send_wr wr = {0}, *bad = NULL;
  wr.wr_id = 1;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_RDMA_WRITE;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.rdma.remote_addr = addr;
  wr.wr.rdma.rkey = rkey;
  if (ibv_post_send(qp, &wr, &bad) != 0) die("ibv_post_send");
  struct ibv_wc wc;
  time_t deadline = time(NULL) + 30;
  for (;;) {
    int n = ibv_poll_cq(cq, 1, &wc);
    if (n < 0) die("ibv_poll_cq");
    if (n == 1) return wc.status;
    if (time(NULL) > deadline) {
      fprintf(stderr, "attack: no completion within 30 s\n");
      exit(2);
    }
  }
}

static int attack(uint64_t addr, uint32_t rkey) {
  struct ibv_context* ctx = open_first();
  struct ibv_pd* pd = ibv_alloc_pd(ctx);
  struct ibv_cq* cq = ibv_create_cq(ctx, 16, NULL, NULL, 0);
  char* buf = aligned_alloc(SIZE, SIZE);
  if (pd == NULL || cq == NULL || buf == NULL) die("alloc");
  memset(buf, 'B', SIZE);
  struct ibv_mr* mr = ibv_reg_mr(pd, buf, SIZE, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (mr == NULL) die("ibv_reg_mr");
  struct ibv_qp_init_attr ia = {0};
  ia.send_cq = ia.recv_cq = cq;
  ia.qp_type = IBV_QPT_RC;
  ia.cap.max_send_wr = ia.cap.max_recv_wr = 4;
  ia.cap.max_send_sge = ia.cap.max_recv_sge = 1;
  struct ibv_qp* qp = ibv_create_qp(pd, &ia);
  if (qp == NULL) die("ibv_create_qp");
  union ibv_gid gid;
  if (ibv_query_gid(ctx, 1, 0, &gid) != 0) die("ibv_query_gid");
  struct ibv_qp_attr a = {0};
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) die("INIT");
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = IBV_MTU_1024;
  a.dest_qp_num = qp->qp_num;
  a.max_dest_rd_atomic = 1;
  a.min_rnr_timer = 12;
  a.ah_attr.is_global = 1;
  a.ah_attr.grh.dgid = gid;
  a.ah_attr.grh.hop_limit = 1;
  a.ah_attr.port_num = 1;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
    die("RTR");
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTS;
  a.timeout = 14;
  a.retry_cnt = 7;
  a.rnr_retry = 7;
  a.max_rd_atomic = 1;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_SQ_PSN |
                                IBV_QP_MAX_QP_RD_ATOMIC))
    die("RTS");
  enum ibv_wc_status own = write_and_wait(qp, cq, mr, (uintptr_t)buf + 2048, mr->rkey);
  if (own != IBV_WC_SUCCESS) {
    fprintf(stderr, "attack: a WRITE to its own memory failed: %s\n", ibv_wc_status_str(own));
    return 2;
  }
  enum ibv_wc_status other = write_and_wait(qp, cq, mr, addr, rkey);
  printf("attack: WRITE with the other tenant's rkey %#x at %#llx: %s\n", rkey, (unsigned long long)addr,
         ibv_wc_status_str(other));
  return other == IBV_WC_REM_ACCESS_ERR ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(argv[2]);
  if (argc == 4 && strcmp(argv[1], "attack") == 0)
    return attack(strtoull(argv[2], NULL, 0), (uint32_t)strtoul(argv[3], NULL, 0));
  fprintf(stderr, "usage: ffv_isolation serve FILE | attack ADDR RKEY\n");
  return 2;
}
