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
 *   ffv_isolation preconnect FILE
 *                              connects an RC QP to the QP number the device
 *                              will hand out next (predicted: its own + 1),
 *                              writes that number to FILE, and once stdin
 *                              gives a line (the other tenant's QP now has
 *                              it), SENDs there: the SEND must not arrive
 *                              (IBV_WC_RETRY_EXC_ERR, as toward no QP).
 *   ffv_isolation victim FILE  creates QPs until one has the number in FILE,
 *                              posts a receive on it, connects it to itself,
 *                              says "ready" on stdout, and after EOF on stdin
 *                              checks that nothing arrived.
 *   ffv_isolation target FILE  (across hosts) an RC QP connected to itself
 *                              with a receive posted, a UD QP (Q_Key
 *                              0x11111111) with a receive posted, and a
 *                              4 KiB buffer registered for remote write;
 *                              writes "QPN ADDR RKEY UDQPN" to FILE, and
 *                              after EOF on stdin checks that nothing
 *                              arrived and the buffer is intact.
 *   ffv_isolation intrude QPN ADDR RKEY VIP [UDQPN]
 *                              connects RC QPs to QP QPN at virtual IP VIP
 *                              (another tenant's QP, its number observed)
 *                              and SENDs, then WRITEs to ADDR with RKEY:
 *                              both must fail as toward no QP
 *                              (IBV_WC_RETRY_EXC_ERR), unless the connection
 *                              is refused outright (EINVAL: VIP is not in
 *                              the tenant's network); with UDQPN, also
 *                              sends datagrams to UD QP UDQPN at VIP with
 *                              its Q_Key (they complete, as a datagram to
 *                              nobody does, and must not arrive).
 * Exit 0 when the probe saw what isolation requires.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rc_connect.h"

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

// INIT, RTR toward QP `dest` at `gid` (PSN 0), RTS: 0, or the error of RTR.
static int connect_rc_at(struct ibv_qp* qp, uint32_t dest, union ibv_gid gid) {
  const struct ffv_rc_path path = {IBV_ACCESS_REMOTE_WRITE, IBV_MTU_1024, 1, 12, 7};
  const char* step = NULL;
  int rc = ffv_connect_rc(qp, dest, &gid, &path, &step);
  if (rc != 0 && strcmp(step, "RTR") != 0) die(step);
  return rc;
}

// connect_rc_at toward QP `dest` on this device.
static void connect_rc(struct ibv_context* ctx, struct ibv_qp* qp, uint32_t dest) {
  union ibv_gid gid;
  if (ibv_query_gid(ctx, 1, 0, &gid) != 0) die("ibv_query_gid");
  int rc = connect_rc_at(qp, dest, gid);
  if (rc != 0) {
    fprintf(stderr, "RTR: %s\n", strerror(rc));
    exit(2);
  }
}

static enum ibv_wc_status post_and_wait(struct ibv_qp* qp, struct ibv_cq* cq, struct ibv_mr* local,
                                        enum ibv_wr_opcode opcode, uint64_t addr, uint32_t rkey) {
  struct ibv_sge sge = {(uintptr_t)local->addr, 64, local->lkey};
  struct ibv_send_wr wr = {0}, *bad = NULL;
  wr.wr_id = 1;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  wr.opcode = opcode;
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

// A context, PD, CQ, a registered buffer and an RC QP.
struct node {
  struct ibv_context* ctx;
  struct ibv_pd* pd;
  struct ibv_cq* cq;
  char* buf;
  struct ibv_mr* mr;
  struct ibv_qp* qp;
};

static struct ibv_qp* make_qp_of(struct node* n, enum ibv_qp_type type) {
  struct ibv_qp_init_attr ia = {0};
  ia.send_cq = ia.recv_cq = n->cq;
  ia.qp_type = type;
  ia.cap.max_send_wr = ia.cap.max_recv_wr = 4;
  ia.cap.max_send_sge = ia.cap.max_recv_sge = 1;
  struct ibv_qp* qp = ibv_create_qp(n->pd, &ia);
  if (qp == NULL) die("ibv_create_qp");
  return qp;
}

static struct ibv_qp* make_qp(struct node* n) { return make_qp_of(n, IBV_QPT_RC); }

static struct node make_node(char fill) {
  struct node n;
  n.ctx = open_first();
  n.pd = ibv_alloc_pd(n.ctx);
  n.cq = ibv_create_cq(n.ctx, 16, NULL, NULL, 0);
  n.buf = aligned_alloc(SIZE, SIZE);
  if (n.pd == NULL || n.cq == NULL || n.buf == NULL) die("alloc");
  memset(n.buf, fill, SIZE);
  n.mr = ibv_reg_mr(n.pd, n.buf, SIZE, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (n.mr == NULL) die("ibv_reg_mr");
  n.qp = make_qp(&n);
  return n;
}

static int attack(uint64_t addr, uint32_t rkey) {
  struct node n = make_node('B');
  connect_rc(n.ctx, n.qp, n.qp->qp_num);
  enum ibv_wc_status own = post_and_wait(n.qp, n.cq, n.mr, IBV_WR_RDMA_WRITE, (uintptr_t)n.buf + 2048, n.mr->rkey);
  if (own != IBV_WC_SUCCESS) {
    fprintf(stderr, "attack: a WRITE to its own memory failed: %s\n", ibv_wc_status_str(own));
    return 2;
  }
  enum ibv_wc_status other = post_and_wait(n.qp, n.cq, n.mr, IBV_WR_RDMA_WRITE, addr, rkey);
  printf("attack: WRITE with the other tenant's rkey %#x at %#llx: %s\n", rkey, (unsigned long long)addr,
         ibv_wc_status_str(other));
  return other == IBV_WC_REM_ACCESS_ERR ? 0 : 1;
}

// A receive for the whole buffer.
static void post_receive(struct node* n) {
  struct ibv_sge sge = {(uintptr_t)n->buf, SIZE, n->mr->lkey};
  struct ibv_recv_wr rr = {0}, *bad = NULL;
  rr.sg_list = &sge;
  rr.num_sge = 1;
  if (ibv_post_recv(n->qp, &rr, &bad) != 0) die("ibv_post_recv");
}

static int preconnect(const char* file) {
  struct node n = make_node('P');
  uint32_t target = n.qp->qp_num + 1;
  connect_rc(n.ctx, n.qp, target);  // no such QP yet: the device must never connect it to another tenant's
  FILE* f = fopen(file, "w");
  if (f == NULL) die(file);
  fprintf(f, "%u\n", target);
  fclose(f);
  char line[16];
  if (fgets(line, sizeof line, stdin) == NULL) die("preconnect: no go");
  enum ibv_wc_status st = post_and_wait(n.qp, n.cq, n.mr, IBV_WR_SEND, 0, 0);
  printf("preconnect: SEND to QP %#x, connected before the other tenant created it: %s\n", target,
         ibv_wc_status_str(st));
  return st == IBV_WC_RETRY_EXC_ERR ? 0 : 1;
}

static int victim(const char* file) {
  FILE* f = fopen(file, "r");
  unsigned target = 0;
  if (f == NULL || fscanf(f, "%u", &target) != 1) die(file);
  fclose(f);
  struct node n = make_node('V');
  for (int i = 0; i < 64 && n.qp->qp_num < target; ++i) n.qp = make_qp(&n);  // the earlier ones stay
  if (n.qp->qp_num != target) {
    fprintf(stderr, "victim: the device handed out QP %#x, not the predicted %#x: nothing tested\n", n.qp->qp_num,
            target);
    return 2;
  }
  connect_rc(n.ctx, n.qp, n.qp->qp_num);
  post_receive(&n);
  printf("ready\n");
  fflush(stdout);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  struct ibv_wc wc;
  int got = ibv_poll_cq(n.cq, 1, &wc);
  if (got != 0) {
    fprintf(stderr, "victim: QP %#x received another tenant's message (status %s)\n", target,
            ibv_wc_status_str(wc.status));
    return 1;
  }
  fprintf(stderr, "victim: nothing arrived at QP %#x\n", target);
  return 0;
}

#define UD_QKEY 0x11111111u

// A UD QP on n's CQ, ready to send and receive.
static struct ibv_qp* make_ud_qp(struct node* n) {
  struct ibv_qp* qp = make_qp_of(n, IBV_QPT_UD);
  struct ibv_qp_attr a = {0};
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  a.qkey = UD_QKEY;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY)) die("UD INIT");
  a.qp_state = IBV_QPS_RTR;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE)) die("UD RTR");
  a.qp_state = IBV_QPS_RTS;
  a.sq_psn = 0;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN)) die("UD RTS");
  return qp;
}

static int target(const char* file) {
  struct node n = make_node('T');
  connect_rc(n.ctx, n.qp, n.qp->qp_num);
  post_receive(&n);
  struct ibv_qp* ud = make_ud_qp(&n);
  struct ibv_sge sge = {(uintptr_t)n.buf + 1024, 1024, n.mr->lkey};  // never written: the check below sees
  struct ibv_recv_wr wr = {0}, *bad;
  wr.sg_list = &sge;
  wr.num_sge = 1;
  if (ibv_post_recv(ud, &wr, &bad)) die("ibv_post_recv (UD)");
  FILE* f = fopen(file, "w");
  if (f == NULL) die(file);
  fprintf(f, "%u %llu %u %u\n", n.qp->qp_num, (unsigned long long)(uintptr_t)n.buf, n.mr->rkey, ud->qp_num);
  fclose(f);
  char c;
  while (read(0, &c, 1) > 0) {
  }
  struct ibv_wc wc;
  if (ibv_poll_cq(n.cq, 1, &wc) != 0) {
    fprintf(stderr, "target: QP %#x received another tenant's message (status %s)\n", n.qp->qp_num,
            ibv_wc_status_str(wc.status));
    return 1;
  }
  for (int i = 0; i < SIZE; ++i) {
    if (n.buf[i] != 'T') {
      fprintf(stderr, "target: byte %d of the registered buffer changed to %#x\n", i, n.buf[i]);
      return 1;
    }
  }
  printf("target: nothing arrived at QP %#x nor UD QP %#x, and its buffer is intact\n", n.qp->qp_num, ud->qp_num);
  return 0;
}

// Datagrams to UD QP `qpn` at `gid` with the target's Q_Key: each completes.
static int send_datagrams(uint32_t qpn, union ibv_gid gid, const char* vip) {
  struct node n = make_node('D');
  struct ibv_qp* ud = make_ud_qp(&n);
  struct ibv_ah_attr aa = {0};
  aa.is_global = 1;
  aa.grh.dgid = gid;
  aa.grh.hop_limit = 64;
  aa.port_num = 1;
  struct ibv_ah* ah = ibv_create_ah(n.pd, &aa);
  if (ah == NULL) die("ibv_create_ah");
  for (int i = 0; i < 3; ++i) {
    struct ibv_sge sge = {(uintptr_t)n.buf, 64, n.mr->lkey};
    struct ibv_send_wr wr = {0}, *bad;
    wr.opcode = IBV_WR_SEND;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.wr.ud.ah = ah;
    wr.wr.ud.remote_qpn = qpn;
    wr.wr.ud.remote_qkey = UD_QKEY;
    if (ibv_post_send(ud, &wr, &bad)) die("ibv_post_send (UD)");
    struct ibv_wc wc;
    int got;
    for (int t = 0; (got = ibv_poll_cq(n.cq, 1, &wc)) == 0 && t < 10000; ++t) usleep(1000);
    if (got != 1 || wc.status != IBV_WC_SUCCESS) {
      fprintf(stderr, "intrude: a datagram to UD QP %#x at %s did not complete (%s)\n", qpn, vip,
              got == 1 ? ibv_wc_status_str(wc.status) : "no completion in 10 s");
      return 1;
    }
  }
  printf("intrude: 3 datagrams to UD QP %#x at %s completed\n", qpn, vip);
  return 0;
}

static int intrude(uint32_t qpn, uint64_t addr, uint32_t rkey, const char* vip, uint32_t ud_qpn) {
  union ibv_gid gid = {0};
  gid.raw[10] = gid.raw[11] = 0xff;
  if (inet_pton(AF_INET, vip, &gid.raw[12]) != 1) die("intrude: VIP");
  if (ud_qpn != 0 && send_datagrams(ud_qpn, gid, vip) != 0) return 1;
  struct node n = make_node('I');
  int rc = connect_rc_at(n.qp, qpn, gid);
  if (rc != 0) {  // refused outright: an address outside the tenant's network
    printf("intrude: connecting to QP %#x at %s: %s\n", qpn, vip, strerror(rc));
    return rc == EINVAL ? 0 : 1;
  }
  enum ibv_wc_status sent = post_and_wait(n.qp, n.cq, n.mr, IBV_WR_SEND, 0, 0);
  n.qp = make_qp(&n);  // the first is in ERR now
  if (connect_rc_at(n.qp, qpn, gid) != 0) die("RTR");
  enum ibv_wc_status wrote = post_and_wait(n.qp, n.cq, n.mr, IBV_WR_RDMA_WRITE, addr, rkey);
  printf("intrude: SEND to QP %#x at %s: %s; WRITE with its rkey %#x: %s\n", qpn, vip, ibv_wc_status_str(sent),
         rkey, ibv_wc_status_str(wrote));
  return sent == IBV_WC_RETRY_EXC_ERR && wrote == IBV_WC_RETRY_EXC_ERR ? 0 : 1;
}

int main(int argc, char** argv) {
  if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(argv[2]);
  if (argc == 3 && strcmp(argv[1], "preconnect") == 0) return preconnect(argv[2]);
  if (argc == 3 && strcmp(argv[1], "victim") == 0) return victim(argv[2]);
  if (argc == 3 && strcmp(argv[1], "target") == 0) return target(argv[2]);
  if ((argc == 6 || argc == 7) && strcmp(argv[1], "intrude") == 0)
    return intrude((uint32_t)strtoul(argv[2], NULL, 0), strtoull(argv[3], NULL, 0), (uint32_t)strtoul(argv[4], NULL, 0),
                   argv[5], argc == 7 ? (uint32_t)strtoul(argv[6], NULL, 0) : 0);
  if (argc == 4 && strcmp(argv[1], "attack") == 0)
    return attack(strtoull(argv[2], NULL, 0), (uint32_t)strtoul(argv[3], NULL, 0));
  fprintf(stderr,
          "usage: ffv_isolation serve FILE | attack ADDR RKEY | preconnect FILE | victim FILE | target FILE |\n"
          "       intrude QPN ADDR RKEY VIP [UDQPN]\n");
  return 2;
}
