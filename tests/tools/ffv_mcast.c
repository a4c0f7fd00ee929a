/* UD multicast between containers: `ffv_mcast recv GROUP N` attaches a UD
 * QP to GROUP (an IPv4 multicast address, the group ::ffff:GROUP), prints
 * "ready" and waits for N datagrams (20 s at most), checking each byte,
 * its GRH destination (the group) and sender; `ffv_mcast send GROUP N`
 * sends N datagrams to the group (QP 0xffffff), 100 ms apart; `recv GROUP
 * 0` succeeds when no datagram comes within 3 s (another tenant's). A plain
 * verbs program: it runs with libffverbs preloaded like any app. Exit 0
 * when every check held. */
#include <arpa/inet.h>
#include <infiniband/verbs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define QKEY 0x11111111u
#define LEN 256

static void fill(uint8_t* p, uint32_t seq) {
  for (uint32_t i = 0; i < LEN; ++i) p[i] = (uint8_t)(i * 7 + seq * 13);
}

static int fail(const char* what) {
  printf("FAIL: %s\n", what);
  return 1;
}

static int to_rts(struct ibv_qp* qp) {
  struct ibv_qp_attr a;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  a.qkey = QKEY;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY) != 0) return -1;
  a.qp_state = IBV_QPS_RTR;
  if (ibv_modify_qp(qp, &a, IBV_QP_STATE) != 0) return -1;
  a.qp_state = IBV_QPS_RTS;
  return ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN);
}

static int poll_one(struct ibv_cq* cq, struct ibv_wc* wc, int seconds) {
  time_t deadline = time(NULL) + seconds;
  while (time(NULL) < deadline) {
    int n = ibv_poll_cq(cq, 1, wc);
    if (n != 0) return n;
    usleep(100);
  }
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  struct in_addr group;
  if (argc != 4 || inet_pton(AF_INET, argv[2], &group) != 1) {
    fprintf(stderr, "usage: ffv_mcast send|recv GROUP N\n");
    return 2;
  }
  const int sender = strcmp(argv[1], "send") == 0, n = atoi(argv[3]);
  union ibv_gid mgid;
  memset(&mgid, 0, sizeof mgid);
  mgid.raw[10] = mgid.raw[11] = 0xff;
  memcpy(mgid.raw + 12, &group.s_addr, 4);
  struct ibv_device** list = ibv_get_device_list(NULL);
  if (list == NULL || list[0] == NULL) return fail("no verbs device");
  struct ibv_context* ctx = ibv_open_device(list[0]);
  struct ibv_pd* pd = ctx ? ibv_alloc_pd(ctx) : NULL;
  struct ibv_cq* cq = ctx ? ibv_create_cq(ctx, 64, NULL, NULL, 0) : NULL;
  static uint8_t buf[64 * (40 + LEN)];
  struct ibv_mr* mr = pd ? ibv_reg_mr(pd, buf, sizeof buf, IBV_ACCESS_LOCAL_WRITE) : NULL;
  struct ibv_qp_init_attr init = {.send_cq = cq, .recv_cq = cq, .qp_type = IBV_QPT_UD,
                                  .cap = {.max_send_wr = 16, .max_recv_wr = 64, .max_send_sge = 1, .max_recv_sge = 1}};
  struct ibv_qp* qp = mr ? ibv_create_qp(pd, &init) : NULL;
  if (qp == NULL || to_rts(qp) != 0) return fail("setting up a UD QP");
  if (!sender) {
    if (ibv_attach_mcast(qp, &mgid, 0) != 0) return fail("attach_mcast");
    for (int i = 0; i < 64; ++i) {
      struct ibv_sge s = {(uintptr_t)(buf + i * (40 + LEN)), 40 + LEN, mr->lkey};
      struct ibv_recv_wr wr = {.wr_id = (uint64_t)i, .sg_list = &s, .num_sge = 1}, *bad;
      if (ibv_post_recv(qp, &wr, &bad) != 0) return fail("post_recv");
    }
    printf("ready\n");
    int got = 0, bad_bytes = 0;
    struct ibv_wc wc;
    if (n == 0) {
      if (poll_one(cq, &wc, 3) != 0) return fail("a datagram arrived where none may");
      printf("received nothing, as expected\n");
      return 0;
    }
    while (got < n && poll_one(cq, &wc, 20) == 1) {
      if (wc.status != IBV_WC_SUCCESS || wc.byte_len != 40 + LEN) return fail("a datagram completed badly");
      const uint8_t* p = buf + wc.wr_id * (40 + LEN);
      uint8_t want[LEN];
      uint32_t seq = p[40] == 0 ? 0 : (uint32_t)(p[40] / 13); /* byte 0 is seq * 13 */
      fill(want, seq);
      if (memcmp(p + 40, want, LEN) != 0) ++bad_bytes;
      if (memcmp(p + 36, mgid.raw + 12, 4) != 0) return fail("the GRH's destination is not the group");
      ++got;
    }
    if (ibv_detach_mcast(qp, &mgid, 0) != 0) return fail("detach_mcast");
    printf("received %d of %d datagrams, %d with wrong bytes\n", got, n, bad_bytes);
    return got == n && bad_bytes == 0 ? 0 : 1;
  }
  struct ibv_ah_attr a = {.is_global = 1, .port_num = 1};
  a.grh.dgid = mgid;
  a.grh.hop_limit = 1;
  struct ibv_ah* ah = ibv_create_ah(pd, &a);
  if (ah == NULL) return fail("create_ah to the group");
  for (int i = 0; i < n; ++i) {
    fill(buf, (uint32_t)i);
    struct ibv_sge s = {(uintptr_t)buf, LEN, mr->lkey};
    struct ibv_send_wr wr = {.wr_id = (uint64_t)i, .sg_list = &s, .num_sge = 1, .opcode = IBV_WR_SEND,
                             .send_flags = IBV_SEND_SIGNALED}, *bad;
    wr.wr.ud.ah = ah;
    wr.wr.ud.remote_qpn = 0xffffff;
    wr.wr.ud.remote_qkey = QKEY;
    if (ibv_post_send(qp, &wr, &bad) != 0) return fail("post_send");
    struct ibv_wc wc;
    if (poll_one(cq, &wc, 10) != 1 || wc.status != IBV_WC_SUCCESS) return fail("a send did not complete");
    usleep(100000);
  }
  printf("sent %d datagrams to %s\n", n, argv[2]);
  return 0;
}
