/* XRC isolation probe (plain libibverbs; run with libffverbs preloaded).
 *
 *   ffv_xrc_isolation owner DOMAINFILE OUTFILE
 *                     opens the XRC domain of DOMAINFILE (O_CREAT), makes an
 *                     XRC SRQ with a receive posted and a receive QP in it,
 *                     writes "QPN SRQN" to OUTFILE, and after EOF on stdin
 *                     checks that nothing arrived.
 *   ffv_xrc_isolation intruder DOMAINFILE QPN SRQN
 *                     (another tenant) opens the domain of the same file with
 *                     O_CREAT | O_EXCL: its tenant's own, which must be new;
 *                     ibv_open_qp of QPN there must fail (EINVAL); then a
 *                     SEND through its own XRC send and receive QPs naming
 *                     SRQ number SRQN (the owner's) must fail with
 *                     IBV_WC_REM_INV_REQ_ERR, while one naming its own SRQ
 *                     arrives (the path works).
 * Exit 0 when the probe saw what isolation requires.
 */
#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rc_connect.h"

static void die(const char* what) {
  perror(what);
  exit(2);
}

// A context, PD, CQ, a registered buffer, the XRC domain of a file, an XRC
// SRQ completing on the CQ, and a receive QP in the domain.
struct node {
  struct ibv_context* ctx;
  struct ibv_pd* pd;
  struct ibv_cq* cq;
  char buf[4096];
  struct ibv_mr* mr;
  struct ibv_xrcd* xrcd;
  struct ibv_srq* srq;
  uint32_t srq_num;
  struct ibv_qp* receiver;
};

static void open_node(struct node* n, const char* domain_file, int oflags) {
  int count = 0;
  struct ibv_device** list = ibv_get_device_list(&count);
  if (list == NULL || count == 0) die("no RDMA device");
  n->ctx = ibv_open_device(list[0]);
  if (n->ctx == NULL) die("ibv_open_device");
  ibv_free_device_list(list);
  n->pd = ibv_alloc_pd(n->ctx);
  n->cq = ibv_create_cq(n->ctx, 16, NULL, NULL, 0);
  if (n->pd == NULL || n->cq == NULL) die("PD or CQ");
  n->mr = ibv_reg_mr(n->pd, n->buf, sizeof n->buf, IBV_ACCESS_LOCAL_WRITE);
  if (n->mr == NULL) die("ibv_reg_mr");
  int fd = open(domain_file, O_RDONLY | O_CREAT, 0600);
  if (fd < 0) die(domain_file);
  struct ibv_xrcd_init_attr xa = {.comp_mask = IBV_XRCD_INIT_ATTR_FD | IBV_XRCD_INIT_ATTR_OFLAGS, .fd = fd,
                                  .oflags = oflags};
  n->xrcd = ibv_open_xrcd(n->ctx, &xa);
  if (n->xrcd == NULL) die("ibv_open_xrcd (its tenant's own domain of the file)");
  struct ibv_srq_init_attr_ex sa = {0};
  sa.comp_mask = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_PD | IBV_SRQ_INIT_ATTR_XRCD | IBV_SRQ_INIT_ATTR_CQ;
  sa.srq_type = IBV_SRQT_XRC;
  sa.pd = n->pd;
  sa.xrcd = n->xrcd;
  sa.cq = n->cq;
  sa.attr.max_wr = 4;
  sa.attr.max_sge = 1;
  n->srq = ibv_create_srq_ex(n->ctx, &sa);
  if (n->srq == NULL || ibv_get_srq_num(n->srq, &n->srq_num) != 0) die("XRC SRQ");
  struct ibv_sge sge = {(uintptr_t)n->buf, 64, n->mr->lkey};
  struct ibv_recv_wr rw = {.wr_id = 7, .sg_list = &sge, .num_sge = 1}, *bad = NULL;
  if (ibv_post_srq_recv(n->srq, &rw, &bad) != 0) die("ibv_post_srq_recv");
  struct ibv_qp_init_attr_ex qa = {0};
  qa.comp_mask = IBV_QP_INIT_ATTR_XRCD;
  qa.xrcd = n->xrcd;
  qa.qp_type = IBV_QPT_XRC_RECV;
  n->receiver = ibv_create_qp_ex(n->ctx, &qa);
  if (n->receiver == NULL) die("XRC receive QP");
}

static int owner(const char* domain_file, const char* out) {
  struct node n;
  open_node(&n, domain_file, O_CREAT);
  FILE* f = fopen(out, "w");
  if (f == NULL) die(out);
  fprintf(f, "%u %u\n", n.receiver->qp_num, n.srq_num);
  fclose(f);
  char line[16];
  while (fgets(line, sizeof line, stdin) != NULL) {
  }
  struct ibv_wc wc;
  if (ibv_poll_cq(n.cq, 1, &wc) != 0) {
    fprintf(stderr, "owner: something reached its SRQ (wr_id %llu, status %d)\n", (unsigned long long)wc.wr_id,
            wc.status);
    return 1;
  }
  printf("owner: nothing arrived\n");
  return 0;
}

// A SEND through XRC send QP `q` naming SRQ `srq_num`; its status.
static enum ibv_wc_status send_to(struct node* n, struct ibv_qp* q, uint32_t srq_num) {
  struct ibv_sge sge = {(uintptr_t)n->buf + 1024, 16, n->mr->lkey};
  struct ibv_send_wr wr = {0}, *bad = NULL;
  wr.wr_id = 1;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = IBV_WR_SEND;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.qp_type.xrc.remote_srqn = srq_num;
  if (ibv_post_send(q, &wr, &bad) != 0) die("ibv_post_send");
  struct ibv_wc wc;
  time_t deadline = time(NULL) + 30;
  for (;;) {
    int got = ibv_poll_cq(n->cq, 1, &wc);
    if (got < 0) die("ibv_poll_cq");
    if (got == 1 && wc.wr_id == 1) return wc.status;
    if (time(NULL) > deadline) {
      fprintf(stderr, "intruder: no completion within 30 s\n");
      exit(2);
    }
  }
}

static int intruder(const char* domain_file, uint32_t qpn, uint32_t srq_num) {
  struct node n;
  open_node(&n, domain_file, O_CREAT | O_EXCL);  // the owner's domain of this file is not this tenant's
  struct ibv_qp_open_attr oa = {.comp_mask = IBV_QP_OPEN_ATTR_NUM | IBV_QP_OPEN_ATTR_XRCD | IBV_QP_OPEN_ATTR_TYPE,
                                .qp_num = qpn, .xrcd = n.xrcd, .qp_type = IBV_QPT_XRC_RECV};
  errno = 0;
  if (ibv_open_qp(n.ctx, &oa) != NULL || errno != EINVAL) {
    fprintf(stderr, "intruder: opened the other tenant's receive QP (or not with EINVAL: %s)\n", strerror(errno));
    return 1;
  }
  struct ibv_qp_init_attr_ex qa = {0};
  qa.comp_mask = IBV_QP_INIT_ATTR_PD;
  qa.pd = n.pd;
  qa.qp_type = IBV_QPT_XRC_SEND;
  qa.send_cq = n.cq;
  qa.cap.max_send_wr = 4;
  qa.cap.max_send_sge = 1;
  struct ibv_qp* sender = ibv_create_qp_ex(n.ctx, &qa);
  if (sender == NULL) die("XRC send QP");
  union ibv_gid gid;
  if (ibv_query_gid(n.ctx, 1, 0, &gid) != 0) die("ibv_query_gid");
  const struct ffv_rc_path path = {0, IBV_MTU_1024, 1, 12, 7};
  if (ffv_connect_rc(sender, n.receiver->qp_num, &gid, &path, NULL) != 0 ||
      ffv_connect_rc(n.receiver, sender->qp_num, &gid, &path, NULL) != 0)
    die("connect the XRC QPs");
  enum ibv_wc_status st = send_to(&n, sender, n.srq_num);
  if (st != IBV_WC_SUCCESS) {
    fprintf(stderr, "intruder: a SEND to its own SRQ failed (%s)\n", ibv_wc_status_str(st));
    return 2;
  }
  st = send_to(&n, sender, srq_num);
  if (st != IBV_WC_REM_INV_REQ_ERR) {
    fprintf(stderr, "intruder: a SEND naming the other tenant's SRQ completed with %s\n", ibv_wc_status_str(st));
    return 1;
  }
  printf("intruder: its own domain of the file, no open of the other's QP, REM_INV_REQ_ERR naming its SRQ\n");
  return 0;
}

int main(int argc, char** argv) {
  if (argc == 4 && strcmp(argv[1], "owner") == 0) return owner(argv[2], argv[3]);
  if (argc == 5 && strcmp(argv[1], "intruder") == 0)
    return intruder(argv[2], (uint32_t)strtoul(argv[3], NULL, 0), (uint32_t)strtoul(argv[4], NULL, 0));
  fprintf(stderr, "usage: ffv_xrc_isolation owner DOMAINFILE OUTFILE | intruder DOMAINFILE QPN SRQN\n");
  return 2;
}
