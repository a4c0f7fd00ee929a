/* Conformance across two routers: every RC operation and the error statuses
 * a requester must see, with every byte checked, between a "server"
 * (responder) and a "client" (requester) that are two processes, normally on
 * two hosts. Plain verbs; the two exchange QP numbers, GIDs, addresses and
 * rkeys over TCP, like perftest.
 *   ffv_crosshost [-p PORT] [-r]            server
 *   ffv_crosshost [-p PORT] [-r] SERVER_IP  client
 * -r: a SEND longer than its receive fails with the statuses rxe (Linux
 * 6.1) reports, REM_OP_ERR at the requester and LOC_QP_OP_ERR at the
 * responder, which the verbs fabric passes on (docs/RXE-REFERENCE.md);
 * verbs says REM_INV_REQ_ERR and LOC_LEN_ERR.
 * Exit 0 when every check on both sides held; each failure is printed. */
#include <arpa/inet.h>
#include <infiniband/verbs.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rc_connect.h"

/* What a SEND longer than its receive completes with (-r: rxe's). */
static enum ibv_wc_status short_send_status = IBV_WC_REM_INV_REQ_ERR;
static enum ibv_wc_status short_recv_status = IBV_WC_LOC_LEN_ERR;
enum { GOOD, BADKEY, RNR, SHORTRECV, NOREAD, NQP };
#define MIB (1u << 20)
#define BUF (10 * MIB)
/* Server buffer layout */
#define R1 0                 /* three receive regions for the 3-SGE SEND */
#define R2 (1 * MIB)         /* the 1 MiB SEND */
#define W1 (3 * MIB)         /* the 1 MiB WRITE */
#define W2 (5 * MIB)         /* WRITE_WITH_IMM */
#define RD (6 * MIB)         /* the READ source */
#define AT (8 * MIB)         /* the atomic word */
#define UW (8 * MIB + 4096)  /* 64 unsignaled 1 KiB WRITEs */
#define SR (9 * MIB)         /* small receives */
#define WIN (9 * MIB + 8192) /* written through a memory window */

struct info {
  uint32_t qpn[NQP];
  uint8_t gid[16];
  uint64_t addr;
  uint32_t rkey;
  uint32_t window_rkey; /* the server's type 1 window over [WIN, WIN + 4096) once bound; 0: none */
};

static int failures;
#define CHECK(cond, ...)                 \
  do {                                   \
    if (!(cond)) {                       \
      printf("FAIL: " __VA_ARGS__);      \
      printf("\n");                      \
      ++failures;                        \
    }                                    \
  } while (0)

static void fill(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; ++i) p[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 8)) & 0xff);
}
static int same(const uint8_t* p, size_t n, uint32_t seed, size_t skip) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != (uint8_t)(((i + skip) * 131 + seed * 7 + ((i + skip) >> 8)) & 0xff)) return 0;
  return 1;
}

static struct ibv_context* ctx;
static struct ibv_pd* pd;
static struct ibv_cq* cq;
static struct ibv_mr* mr;
static uint8_t* buf;

/* ATOMIC WRITE, where the device reports it (device_cap_flags_ex bit 40,
   IB_UVERBS_DEVICE_ATOMIC_WRITE): to the word after the atomic one. */
static int atomic_write_reported(void) {
  struct ibv_device_attr_ex a;
  memset(&a, 0, sizeof a);
  return ibv_query_device_ex(ctx, NULL, &a) == 0 && (a.device_cap_flags_ex & (1ull << 40)) != 0;
}
static struct ibv_qp* qp[NQP];
/* Memory windows, where the device reports them: the server binds a type 1
   window through its QP to the client (a bind on a QP whose peer is behind
   another router) and the client writes through it. */
static int windows_reported(void) {
  struct ibv_device_attr a;
  memset(&a, 0, sizeof a);
  return ibv_query_device(ctx, &a) == 0 && (a.device_cap_flags & IBV_DEVICE_MEM_WINDOW) != 0;
}
static struct ibv_mw* window;

static struct ibv_wc poll1(void) {
  struct ibv_wc wc;
  memset(&wc, 0, sizeof wc);
  time_t deadline = time(NULL) + 20;
  while (time(NULL) < deadline) {
    int n = ibv_poll_cq(cq, 1, &wc);
    if (n == 1) return wc;
    if (n < 0) break;
  }
  printf("FAIL: no completion within 20 s\n");
  ++failures;
  wc.status = IBV_WC_GENERAL_ERR;
  wc.wr_id = ~0ull;
  return wc;
}

static void post_recv(struct ibv_qp* q, uint64_t id, struct ibv_sge* sges, int n) {
  struct ibv_recv_wr wr = {.wr_id = id, .sg_list = sges, .num_sge = n}, *bad;
  if (ibv_post_recv(q, &wr, &bad) != 0) {
    printf("FAIL: post_recv\n");
    ++failures;
  }
}

static void post(struct ibv_qp* q, uint64_t id, enum ibv_wr_opcode op, struct ibv_sge* sges, int n, unsigned flags,
                 uint64_t raddr, uint32_t rkey) {
  struct ibv_send_wr wr, *bad;
  memset(&wr, 0, sizeof wr);
  wr.wr_id = id;
  wr.opcode = op;
  wr.sg_list = sges;
  wr.num_sge = n;
  wr.send_flags = flags;
  wr.imm_data = htonl(0x12345678);
  wr.wr.rdma.remote_addr = raddr;
  wr.wr.rdma.rkey = rkey;
  if (ibv_post_send(q, &wr, &bad) != 0) {
    printf("FAIL: post_send %llu\n", (unsigned long long)id);
    ++failures;
  }
}

static struct ibv_sge sge(size_t off, uint32_t len) {
  struct ibv_sge s = {.addr = (uintptr_t)(buf + off), .length = len, .lkey = mr->lkey};
  return s;
}

static void connect_qp(struct ibv_qp* q, int access, uint32_t dest, const uint8_t* gid, uint8_t rnr_retry) {
  const struct ffv_rc_path path = {(unsigned)access, IBV_MTU_1024, 16, 1, rnr_retry};
  union ibv_gid g;
  memcpy(g.raw, gid, 16);
  int rc = ffv_connect_rc(q, dest, &g, &path, NULL);
  if (rc != 0) {
    printf("FAIL: connecting QP %u to %u\n", q->qp_num, dest);
    exit(1);
  }
}

static int exchange(int fd, const void* out, void* in, size_t n) {
  if (write(fd, out, n) != (ssize_t)n) return -1;
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char*)in + got, n - got);
    if (r <= 0) return -1;
    got += (size_t)r;
  }
  return 0;
}

static const int kAll = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                        IBV_ACCESS_REMOTE_ATOMIC;

static void server_posts(void) {
  struct ibv_sge r1[3] = {sge(R1, 100), sge(R1 + 8192, 4000), sge(R1 + 65536, 70000)};
  post_recv(qp[GOOD], 1, r1, 3);
  struct ibv_sge r2 = sge(R2, MIB + 200);
  post_recv(qp[GOOD], 2, &r2, 1);
  post_recv(qp[GOOD], 3, NULL, 0); /* WRITE_WITH_IMM */
  post_recv(qp[GOOD], 4, NULL, 0); /* zero-length SEND */
  struct ibv_sge r5 = sge(SR, 64);
  post_recv(qp[GOOD], 5, &r5, 1); /* the signaled SEND after 64 unsignaled WRITEs */
  struct ibv_sge small = sge(SR + 4096, 16);
  post_recv(qp[SHORTRECV], 6, &small, 1);
  fill(buf + RD, MIB, 9);
  uint64_t word = 100;
  memcpy(buf + AT, &word, 8);
}

static void server_checks(void) {
  struct ibv_wc wc;
  wc = poll1();
  CHECK(wc.wr_id == 1 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RECV && wc.byte_len == 74100 &&
            (wc.wc_flags & IBV_WC_WITH_IMM) && ntohl(wc.imm_data) == 0x12345678,
        "3-SGE SEND_WITH_IMM: wr_id %llu status %d len %u", (unsigned long long)wc.wr_id, wc.status, wc.byte_len);
  CHECK(same(buf + R1, 100, 1, 0) && same(buf + R1 + 8192, 4000, 1, 100) && same(buf + R1 + 65536, 70000, 1, 4100),
        "3-SGE SEND: bytes differ");
  wc = poll1();
  CHECK(wc.wr_id == 2 && wc.status == IBV_WC_SUCCESS && wc.byte_len == MIB + 123, "1 MiB SEND: status %d len %u",
        wc.status, wc.byte_len);
  CHECK(same(buf + R2, MIB + 123, 2, 7), "1 MiB SEND: bytes differ");
  wc = poll1();
  CHECK(wc.wr_id == 3 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RECV_RDMA_WITH_IMM &&
            ntohl(wc.imm_data) == 0x12345678 && wc.byte_len == 4096,
        "WRITE_WITH_IMM receive: status %d opcode %d len %u", wc.status, wc.opcode, wc.byte_len);
  CHECK(same(buf + W1, MIB, 3, 0), "1 MiB WRITE: bytes differ");
  CHECK(same(buf + W2, 4096, 4, 0), "WRITE_WITH_IMM: bytes differ");
  wc = poll1();
  CHECK(wc.wr_id == 4 && wc.status == IBV_WC_SUCCESS && wc.byte_len == 0, "zero-length SEND: status %d len %u",
        wc.status, wc.byte_len);
  wc = poll1();
  CHECK(wc.wr_id == 5 && wc.status == IBV_WC_SUCCESS && wc.byte_len == 8, "SEND after unsignaled WRITEs");
  for (int i = 0; i < 64; ++i) CHECK(same(buf + UW + i * 1024u, 1024, 10u + (uint32_t)i, 0), "unsignaled WRITE %d", i);
  if (window != NULL) CHECK(same(buf + WIN + 16, 64, 11, 0), "WRITE through the window: bytes differ");
  uint64_t word;
  memcpy(&word, buf + AT, 8);
  CHECK(word == 7, "atomics: the word is %llu, expected 7", (unsigned long long)word);
  if (atomic_write_reported()) {
    memcpy(&word, buf + AT + 8, 8);
    CHECK(word == 0x1122334455667788ull, "ATOMIC WRITE: the word is %llx", (unsigned long long)word);
  }
  /* The SEND longer than its receive failed here too. */
  wc = poll1();
  CHECK(wc.wr_id == 6 && wc.status == short_recv_status, "short receive: wr_id %llu status %d, expected %s",
        (unsigned long long)wc.wr_id, wc.status, ibv_wc_status_str(short_recv_status));
}

static void client_runs(const struct info* peer) {
  struct ibv_wc wc;
  uint64_t raddr = peer->addr;
  /* 1. SEND_WITH_IMM from three SGEs (two chunks on the wire). */
  {
    uint8_t* tmp = malloc(74100);
    fill(tmp, 74100, 1);
    memcpy(buf, tmp, 100);
    memcpy(buf + 8192, tmp + 100, 4000);
    memcpy(buf + 65536, tmp + 4100, 70000);
    free(tmp);
  }
  struct ibv_sge s3[3] = {sge(0, 100), sge(8192, 4000), sge(65536, 70000)};
  post(qp[GOOD], 11, IBV_WR_SEND_WITH_IMM, s3, 3, IBV_SEND_SIGNALED, 0, 0);
  wc = poll1();
  CHECK(wc.wr_id == 11 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_SEND, "SEND_WITH_IMM completion %d",
        wc.status);
  /* 2. 1 MiB + 123 from an unaligned address. */
  {
    uint8_t* tmp = malloc(MIB + 130);
    fill(tmp, MIB + 130, 2);
    memcpy(buf + MIB + 7, tmp + 7, MIB + 123);
    free(tmp);
  }
  struct ibv_sge big = sge(MIB + 7, MIB + 123);
  post(qp[GOOD], 12, IBV_WR_SEND, &big, 1, IBV_SEND_SIGNALED, 0, 0);
  wc = poll1();
  CHECK(wc.wr_id == 12 && wc.status == IBV_WC_SUCCESS, "1 MiB SEND completion %d", wc.status);
  /* 3. WRITE 1 MiB, WRITE_WITH_IMM. */
  fill(buf + 3 * MIB, MIB, 3);
  fill(buf + 5 * MIB, 4096, 4);
  struct ibv_sge w1 = sge(3 * MIB, MIB), w2 = sge(5 * MIB, 4096);
  post(qp[GOOD], 13, IBV_WR_RDMA_WRITE, &w1, 1, IBV_SEND_SIGNALED, raddr + W1, peer->rkey);
  post(qp[GOOD], 14, IBV_WR_RDMA_WRITE_WITH_IMM, &w2, 1, IBV_SEND_SIGNALED, raddr + W2, peer->rkey);
  wc = poll1();
  CHECK(wc.wr_id == 13 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RDMA_WRITE && wc.byte_len == MIB,
        "WRITE completion %d", wc.status);
  wc = poll1();
  CHECK(wc.wr_id == 14 && wc.status == IBV_WC_SUCCESS, "WRITE_WITH_IMM completion %d", wc.status);
  /* 4. READ 1 MiB into three SGEs. */
  memset(buf + 6 * MIB, 0, 2 * MIB);
  struct ibv_sge r3[3] = {sge(6 * MIB, 1000), sge(6 * MIB + 4096, 300000), sge(7 * MIB, MIB - 301000)};
  post(qp[GOOD], 15, IBV_WR_RDMA_READ, r3, 3, IBV_SEND_SIGNALED, raddr + RD, peer->rkey);
  wc = poll1();
  CHECK(wc.wr_id == 15 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_RDMA_READ && wc.byte_len == MIB,
        "READ completion %d len %u", wc.status, wc.byte_len);
  CHECK(same(buf + 6 * MIB, 1000, 9, 0) && same(buf + 6 * MIB + 4096, 300000, 9, 1000) &&
            same(buf + 7 * MIB, MIB - 301000, 9, 301000),
        "READ: bytes differ");
  /* 5. Atomics, then READ the word back. */
  struct ibv_sge a8 = sge(9 * MIB, 8);
  struct ibv_send_wr wr, *bad;
  memset(&wr, 0, sizeof wr);
  wr.wr_id = 16;
  wr.opcode = IBV_WR_ATOMIC_FETCH_AND_ADD;
  wr.sg_list = &a8;
  wr.num_sge = 1;
  wr.send_flags = IBV_SEND_SIGNALED;
  wr.wr.atomic.remote_addr = raddr + AT;
  wr.wr.atomic.rkey = peer->rkey;
  wr.wr.atomic.compare_add = 5;
  CHECK(ibv_post_send(qp[GOOD], &wr, &bad) == 0, "post FETCH_ADD");
  wc = poll1();
  uint64_t old;
  memcpy(&old, buf + 9 * MIB, 8);
  CHECK(wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_FETCH_ADD && old == 100, "FETCH_ADD: status %d old %llu",
        wc.status, (unsigned long long)old);
  wr.wr_id = 17;
  wr.opcode = IBV_WR_ATOMIC_CMP_AND_SWP;
  wr.wr.atomic.compare_add = 105;
  wr.wr.atomic.swap = 7;
  CHECK(ibv_post_send(qp[GOOD], &wr, &bad) == 0, "post CMP_AND_SWP");
  wc = poll1();
  memcpy(&old, buf + 9 * MIB, 8);
  CHECK(wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_COMP_SWAP && old == 105, "CMP_AND_SWP: status %d old %llu",
        wc.status, (unsigned long long)old);
  if (atomic_write_reported()) { /* ibv_post_send's form: the value in wr.atomic.swap */
    memset(&wr, 0, sizeof wr);
    wr.wr_id = 21;
    wr.opcode = IBV_WR_ATOMIC_WRITE;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.atomic.remote_addr = raddr + AT + 8;
    wr.wr.atomic.rkey = peer->rkey;
    wr.wr.atomic.swap = 0x1122334455667788ull;
    CHECK(ibv_post_send(qp[GOOD], &wr, &bad) == 0, "post ATOMIC_WRITE");
    wc = poll1();
    CHECK(wc.wr_id == 21 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_ATOMIC_WRITE, "ATOMIC_WRITE: status %d",
          wc.status);
  }
  /* 6. Zero-length SEND and WRITE. */
  post(qp[GOOD], 18, IBV_WR_SEND, NULL, 0, IBV_SEND_SIGNALED, 0, 0);
  post(qp[GOOD], 19, IBV_WR_RDMA_WRITE, NULL, 0, IBV_SEND_SIGNALED, raddr, peer->rkey);
  wc = poll1();
  CHECK(wc.wr_id == 18 && wc.status == IBV_WC_SUCCESS && wc.byte_len == 0, "zero-length SEND %d", wc.status);
  wc = poll1();
  CHECK(wc.wr_id == 19 && wc.status == IBV_WC_SUCCESS, "zero-length WRITE %d", wc.status);
  /* 6b. A WRITE through the server's memory window (its rkey, inside its range). */
  if (peer->window_rkey != 0) {
    fill(buf + 2 * MIB + 512 * 1024, 64, 11);
    struct ibv_sge ws = sge(2 * MIB + 512 * 1024, 64);
    post(qp[GOOD], 22, IBV_WR_RDMA_WRITE, &ws, 1, IBV_SEND_SIGNALED, raddr + WIN + 16, peer->window_rkey);
    wc = poll1();
    CHECK(wc.wr_id == 22 && wc.status == IBV_WC_SUCCESS, "WRITE through a memory window: status %d", wc.status);
  }
  /* 7. 64 unsignaled WRITEs, then one signaled SEND: one completion, after all of them. */
  for (uint32_t i = 0; i < 64; ++i) {
    fill(buf + 4 * MIB + i * 1024, 1024, 10 + i);
    struct ibv_sge s = sge(4 * MIB + i * 1024, 1024);
    post(qp[GOOD], 100 + i, IBV_WR_RDMA_WRITE, &s, 1, 0, raddr + UW + i * 1024, peer->rkey);
  }
  struct ibv_sge s8 = sge(9 * MIB + 64, 8);
  post(qp[GOOD], 20, IBV_WR_SEND, &s8, 1, IBV_SEND_SIGNALED, 0, 0);
  wc = poll1();
  CHECK(wc.wr_id == 20 && wc.status == IBV_WC_SUCCESS, "signaled SEND after unsignaled WRITEs: wr_id %llu",
        (unsigned long long)wc.wr_id);

  /* Errors, each on its own connection. */
  struct ibv_sge e = sge(0, 64);
  post(qp[BADKEY], 30, IBV_WR_RDMA_WRITE, &e, 1, IBV_SEND_SIGNALED, raddr, peer->rkey ^ 0x5a5a00);
  post(qp[BADKEY], 31, IBV_WR_SEND, &e, 1, IBV_SEND_SIGNALED, 0, 0);
  wc = poll1();
  CHECK(wc.wr_id == 30 && wc.status == IBV_WC_REM_ACCESS_ERR, "bad rkey: status %d, expected REM_ACCESS_ERR", wc.status);
  wc = poll1();
  CHECK(wc.wr_id == 31 && wc.status == IBV_WC_WR_FLUSH_ERR, "after the error: status %d, expected WR_FLUSH_ERR",
        wc.status);
  post(qp[RNR], 32, IBV_WR_SEND, &e, 1, IBV_SEND_SIGNALED, 0, 0);
  wc = poll1();
  CHECK(wc.wr_id == 32 && wc.status == IBV_WC_RNR_RETRY_EXC_ERR, "no receive: status %d, expected RNR_RETRY_EXC_ERR",
        wc.status);
  post(qp[SHORTRECV], 33, IBV_WR_SEND, &e, 1, IBV_SEND_SIGNALED, 0, 0);
  wc = poll1();
  CHECK(wc.wr_id == 33 && wc.status == short_send_status, "SEND longer than the receive: status %d, expected %s",
        wc.status, ibv_wc_status_str(short_send_status));
  post(qp[NOREAD], 34, IBV_WR_RDMA_READ, &e, 1, IBV_SEND_SIGNALED, raddr + RD, peer->rkey);
  wc = poll1();
  CHECK(wc.wr_id == 34 && wc.status == IBV_WC_REM_INV_REQ_ERR,
        "READ from a QP without remote read: status %d, expected REM_INV_REQ_ERR", wc.status);
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int port = 18515, opt;
  while ((opt = getopt(argc, argv, "p:r")) != -1) {
    if (opt == 'r') {
      short_send_status = IBV_WC_REM_OP_ERR;
      short_recv_status = IBV_WC_LOC_QP_OP_ERR;
    } else {
      port = atoi(optarg);
    }
  }
  const char* server = optind < argc ? argv[optind] : NULL;
  struct ibv_device** list = ibv_get_device_list(NULL);
  if (list == NULL || list[0] == NULL) {
    printf("FAIL: no verbs device\n");
    return 1;
  }
  ctx = ibv_open_device(list[0]);
  pd = ibv_alloc_pd(ctx);
  cq = ibv_create_cq(ctx, 1024, NULL, NULL, 0);
  buf = mmap(NULL, BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  mr = ibv_reg_mr(pd, buf, BUF, kAll | (windows_reported() ? IBV_ACCESS_MW_BIND : 0));
  if (ctx == NULL || pd == NULL || cq == NULL || mr == NULL) {
    printf("FAIL: setting up verbs objects\n");
    return 1;
  }
  for (int i = 0; i < NQP; ++i) {
    struct ibv_qp_init_attr a;
    memset(&a, 0, sizeof a);
    a.send_cq = cq;
    a.recv_cq = cq;
    a.qp_type = IBV_QPT_RC;
    a.cap.max_send_wr = 128;
    a.cap.max_recv_wr = 16;
    a.cap.max_send_sge = 3;
    a.cap.max_recv_sge = 3;
    qp[i] = ibv_create_qp(pd, &a);
    if (qp[i] == NULL) {
      printf("FAIL: create_qp\n");
      return 1;
    }
  }
  struct info mine, theirs;
  memset(&mine, 0, sizeof mine);
  for (int i = 0; i < NQP; ++i) mine.qpn[i] = qp[i]->qp_num;
  union ibv_gid gid;
  ibv_query_gid(ctx, 1, 0, &gid);
  memcpy(mine.gid, gid.raw, 16);
  mine.addr = (uintptr_t)buf;
  mine.rkey = mr->rkey;
  if (server == NULL && windows_reported()) {
    window = ibv_alloc_mw(pd, IBV_MW_TYPE_1);
    CHECK(window != NULL, "alloc_mw");
    if (window != NULL) mine.window_rkey = ibv_inc_rkey(window->rkey); /* what the bind below makes it */
  }

  int fd;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (server == NULL) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr*)&sa, sizeof sa) != 0 || listen(l, 1) != 0) return 1;
    fd = accept(l, NULL, NULL);
    close(l);
  } else {
    inet_pton(AF_INET, server, &sa.sin_addr);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr*)&sa, sizeof sa) != 0) {
      perror("connect");
      return 1;
    }
  }
  if (exchange(fd, &mine, &theirs, sizeof mine) != 0) return 1;
  for (int i = 0; i < NQP; ++i) {
    int access = server == NULL && i == NOREAD ? (IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE) : kAll;
    connect_qp(qp[i], access, theirs.qpn[i], theirs.gid, i == RNR ? 1 : 7);
  }
  if (server == NULL) server_posts(); /* receives before the client may send */
  if (window != NULL) {
    struct ibv_mw_bind b = {.wr_id = 40, .send_flags = IBV_SEND_SIGNALED,
                            .bind_info = {mr, (uintptr_t)(buf + WIN), 4096, IBV_ACCESS_REMOTE_WRITE}};
    CHECK(ibv_bind_mw(qp[GOOD], window, &b) == 0, "bind_mw");
    struct ibv_wc wc = poll1();
    CHECK(wc.wr_id == 40 && wc.status == IBV_WC_SUCCESS && wc.opcode == IBV_WC_BIND_MW &&
              window->rkey == mine.window_rkey,
          "bind_mw completion: status %d opcode %d", wc.status, wc.opcode);
  }
  char go = 'g', peer_result = 0;
  if (exchange(fd, &go, &peer_result, 1) != 0) return 1; /* both sides connected */
  if (server == NULL) {
    server_checks();
  } else {
    client_runs(&theirs);
  }
  char result = failures == 0 ? 'y' : 'n';
  if (exchange(fd, &result, &peer_result, 1) != 0) peer_result = 'n';
  printf("%s: %d failed check(s) here, peer %s\n", server == NULL ? "server" : "client", failures,
         peer_result == 'y' ? "passed" : "failed");
  return failures == 0 && peer_result == 'y' ? 0 : 1;
}
