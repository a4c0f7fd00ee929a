/* An attacking tenant for the isolation measurements (bench/qos.sh,
 * tests/e2e/test_qos_isolation.sh): one storm for SECONDS, then it prints
 * how many rounds it did.
 *
 *   ffv_storm qp SECONDS   create and destroy an RC QP (with its CQ), again and again
 *   ffv_storm mr SECONDS   register and deregister 4 MiB, again and again
 *   ffv_storm rnr SECONDS  RC SENDs, 32 at a time, to a QP that posts no receive
 *                          (rnr_retry 7: they retry for ever), QPs refreshed as
 *                          they fail
 *   ffv_storm ops SECONDS  64-byte RDMA WRITEs in post lists of 32 to itself,
 *                          1024 in flight
 * Exit 0 when it ran the whole time; 1 when a verb failed (said on stderr). */
#include <infiniband/verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rc_connect.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int die(const char* what) {
  perror(what);
  return 1;
}

struct ctx {
  struct ibv_context* dev;
  struct ibv_pd* pd;
  union ibv_gid gid;
};

static struct ibv_qp* rc_qp(struct ctx* c, struct ibv_cq* cq, uint32_t depth) {
  struct ibv_qp_init_attr a;
  memset(&a, 0, sizeof a);
  a.send_cq = cq;
  a.recv_cq = cq;
  a.qp_type = IBV_QPT_RC;
  a.cap.max_send_wr = depth;
  a.cap.max_recv_wr = 1;
  a.cap.max_send_sge = 1;
  a.cap.max_recv_sge = 1;
  return ibv_create_qp(c->pd, &a);
}

static int storm_qp(struct ctx* c, double end, unsigned long* rounds) {
  while (now_s() < end) {
    struct ibv_cq* cq = ibv_create_cq(c->dev, 16, NULL, NULL, 0);
    if (cq == NULL) return die("ibv_create_cq");
    struct ibv_qp* qp = rc_qp(c, cq, 16);
    if (qp == NULL) return die("ibv_create_qp");
    if (ibv_destroy_qp(qp) != 0 || ibv_destroy_cq(cq) != 0) return die("destroy");
    ++*rounds;
  }
  return 0;
}

static int storm_mr(struct ctx* c, double end, unsigned long* rounds) {
  size_t len = 4u << 20;
  char* buf = malloc(len);
  if (buf == NULL) return die("malloc");
  memset(buf, 1, len);
  while (now_s() < end) {
    struct ibv_mr* mr = ibv_reg_mr(c->pd, buf, len, IBV_ACCESS_LOCAL_WRITE);
    if (mr == NULL) return die("ibv_reg_mr");
    if (ibv_dereg_mr(mr) != 0) return die("ibv_dereg_mr");
    ++*rounds;
  }
  free(buf);
  return 0;
}

/* A sender connected to a receiver in this process. */
struct pair {
  struct ibv_cq* cq;
  struct ibv_qp* tx;
  struct ibv_qp* rx;
};

static int make_pair(struct ctx* c, struct pair* p, uint32_t depth, uint8_t rnr_retry) {
  struct ffv_rc_path path = {IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE, IBV_MTU_1024, 1, 1, rnr_retry};
  p->cq = ibv_create_cq(c->dev, (int)depth * 2 + 2, NULL, NULL, 0);
  if (p->cq == NULL) return die("ibv_create_cq");
  p->tx = rc_qp(c, p->cq, depth);
  p->rx = rc_qp(c, p->cq, depth);
  if (p->tx == NULL || p->rx == NULL) return die("ibv_create_qp");
  const char* step = "";
  if (ffv_connect_rc(p->tx, p->rx->qp_num, &c->gid, &path, &step) != 0 ||
      ffv_connect_rc(p->rx, p->tx->qp_num, &c->gid, &path, &step) != 0) {
    fprintf(stderr, "connect: %s\n", step);
    return 1;
  }
  return 0;
}

static void free_pair(struct pair* p) {
  ibv_destroy_qp(p->tx);
  ibv_destroy_qp(p->rx);
  ibv_destroy_cq(p->cq);
}

/* Posts `n` work requests of `op` as one list; 0 or the error. */
static int post_list(struct ibv_qp* qp, struct ibv_mr* mr, enum ibv_wr_opcode op, uint32_t len, int n) {
  struct ibv_sge sge[32];
  struct ibv_send_wr wr[32];
  struct ibv_send_wr* bad = NULL;
  for (int i = 0; i < n; ++i) {
    sge[i] = (struct ibv_sge){(uintptr_t)mr->addr, len, mr->lkey};
    memset(&wr[i], 0, sizeof wr[i]);
    wr[i].wr_id = (uint64_t)i;
    wr[i].sg_list = &sge[i];
    wr[i].num_sge = 1;
    wr[i].opcode = op;
    wr[i].send_flags = i == n - 1 ? IBV_SEND_SIGNALED : 0;
    wr[i].wr.rdma.remote_addr = (uintptr_t)mr->addr + 4096;
    wr[i].wr.rdma.rkey = mr->rkey;
    wr[i].next = i + 1 < n ? &wr[i + 1] : NULL;
  }
  return ibv_post_send(qp, wr, &bad);
}

/* ops: 64-byte WRITEs, signaled once per list, 1024 in flight. rnr: SENDs
 * nobody receives; each list's signaled completion never comes until the
 * QP is torn down, so a fresh pair replaces it every 100 ms. */
static int storm_traffic(struct ctx* c, double end, unsigned long* rounds, int rnr) {
  char* buf = calloc(1, 8192);
  struct ibv_mr* mr = ibv_reg_mr(c->pd, buf, 8192, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (mr == NULL) return die("ibv_reg_mr");
  const uint32_t depth = 1024;
  struct pair p;
  if (make_pair(c, &p, depth, 7) != 0) return 1;
  uint32_t outstanding = 0;
  double refresh = now_s() + 0.1;
  while (now_s() < end) {
    if (outstanding + 32 <= depth) {
      if (post_list(p.tx, mr, rnr ? IBV_WR_SEND : IBV_WR_RDMA_WRITE, 64, 32) != 0) return die("ibv_post_send");
      outstanding += 32;
      *rounds += 32;
    }
    struct ibv_wc wc[16];
    int n = ibv_poll_cq(p.cq, 16, wc);
    if (n < 0) return die("ibv_poll_cq");
    for (int i = 0; i < n; ++i) {
      if (wc[i].status != IBV_WC_SUCCESS) {
        fprintf(stderr, "completion: %s\n", ibv_wc_status_str(wc[i].status));
        return 1;
      }
      outstanding -= 32;
    }
    if (rnr && now_s() > refresh) {
      free_pair(&p);
      if (make_pair(c, &p, depth, 7) != 0) return 1;
      outstanding = 0;
      refresh = now_s() + 0.1;
    }
  }
  free_pair(&p);
  ibv_dereg_mr(mr);
  free(buf);
  return 0;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: ffv_storm qp|mr|rnr|ops SECONDS\n");
    return 2;
  }
  double end = now_s() + atof(argv[2]);
  int n = 0;
  struct ibv_device** list = ibv_get_device_list(&n);
  if (list == NULL || n == 0) return die("no RDMA device");
  struct ctx c;
  c.dev = ibv_open_device(list[0]);
  if (c.dev == NULL) return die("ibv_open_device");
  c.pd = ibv_alloc_pd(c.dev);
  if (c.pd == NULL || ibv_query_gid(c.dev, 1, 0, &c.gid) != 0) return die("pd/gid");
  unsigned long rounds = 0;
  int rc;
  if (strcmp(argv[1], "qp") == 0) {
    rc = storm_qp(&c, end, &rounds);
  } else if (strcmp(argv[1], "mr") == 0) {
    rc = storm_mr(&c, end, &rounds);
  } else if (strcmp(argv[1], "rnr") == 0 || strcmp(argv[1], "ops") == 0) {
    rc = storm_traffic(&c, end, &rounds, strcmp(argv[1], "rnr") == 0);
  } else {
    fprintf(stderr, "unknown storm '%s' (qp, mr, rnr, ops)\n", argv[1]);
    return 2;
  }
  printf("%s storm: %lu rounds\n", argv[1], rounds);
  ibv_dealloc_pd(c.pd);
  ibv_close_device(c.dev);
  ibv_free_device_list(list);
  return rc;
}
