/* A verbs program that never links libibverbs: like NCCL it dlopens
 * libibverbs.so (then libibverbs.so.1), resolves every verb it calls with
 * dlvsym(handle, name, version) and runs an RC ping-pong between two QPs of
 * its own, every byte checked, then an RDMA WRITE. It also dlopens
 * librdmacm.so.1 the same way, and a plugin found only through its own
 * RUNPATH (a preloaded dlopen must not lose the caller's search path).
 * Prints "dlopen ping-pong: N round trips" and exits 0 when all checks out. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIZE 4096
#define ROUNDS 200

static struct {
  struct ibv_device** (*get_device_list)(int*);
  void (*free_device_list)(struct ibv_device**);
  const char* (*get_device_name)(struct ibv_device*);
  struct ibv_context* (*open_device)(struct ibv_device*);
  int (*close_device)(struct ibv_context*);
  int (*query_gid)(struct ibv_context*, uint8_t, int, union ibv_gid*);
  struct ibv_pd* (*alloc_pd)(struct ibv_context*);
  int (*dealloc_pd)(struct ibv_pd*);
  struct ibv_mr* (*reg_mr)(struct ibv_pd*, void*, size_t, int);
  struct ibv_mr* (*reg_mr_iova2)(struct ibv_pd*, void*, size_t, uint64_t, unsigned);
  int (*dereg_mr)(struct ibv_mr*);
  struct ibv_cq* (*create_cq)(struct ibv_context*, int, void*, struct ibv_comp_channel*, int);
  int (*destroy_cq)(struct ibv_cq*);
  struct ibv_qp* (*create_qp)(struct ibv_pd*, struct ibv_qp_init_attr*);
  int (*modify_qp)(struct ibv_qp*, struct ibv_qp_attr*, int);
  int (*destroy_qp)(struct ibv_qp*);
  const char* (*wc_status_str)(enum ibv_wc_status);
} v;

static void* handle;

static void* need(const char* name, const char* version) {
  void* f = dlvsym(handle, name, version);
  if (f == NULL) {
    fprintf(stderr, "dlvsym(%s, %s): %s\n", name, version, dlerror());
    exit(1);
  }
  return f;
}

static void resolve(void) {
  v.get_device_list = need("ibv_get_device_list", "IBVERBS_1.1");
  v.free_device_list = need("ibv_free_device_list", "IBVERBS_1.1");
  v.get_device_name = need("ibv_get_device_name", "IBVERBS_1.1");
  v.open_device = need("ibv_open_device", "IBVERBS_1.1");
  v.close_device = need("ibv_close_device", "IBVERBS_1.1");
  v.query_gid = need("ibv_query_gid", "IBVERBS_1.1");
  v.alloc_pd = need("ibv_alloc_pd", "IBVERBS_1.1");
  v.dealloc_pd = need("ibv_dealloc_pd", "IBVERBS_1.1");
  v.reg_mr = need("ibv_reg_mr", "IBVERBS_1.1");
  v.reg_mr_iova2 = need("ibv_reg_mr_iova2", "IBVERBS_1.8");
  v.dereg_mr = need("ibv_dereg_mr", "IBVERBS_1.1");
  v.create_cq = need("ibv_create_cq", "IBVERBS_1.1");
  v.destroy_cq = need("ibv_destroy_cq", "IBVERBS_1.1");
  v.create_qp = need("ibv_create_qp", "IBVERBS_1.1");
  v.modify_qp = need("ibv_modify_qp", "IBVERBS_1.1");
  v.destroy_qp = need("ibv_destroy_qp", "IBVERBS_1.1");
  v.wc_status_str = need("ibv_wc_status_str", "IBVERBS_1.1");
}

static void die(const char* what) {
  fprintf(stderr, "%s failed\n", what);
  exit(1);
}

/* rc_connect.h's INIT, RTR, RTS through the resolved ibv_modify_qp. */
#define ibv_modify_qp v.modify_qp
#include "rc_connect.h"
#undef ibv_modify_qp

static void connect_qp(struct ibv_qp* qp, uint32_t dest, const union ibv_gid* gid) {
  const struct ffv_rc_path path = {IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE, IBV_MTU_1024, 1, 12, 7};
  const char* step = "connect";
  if (ffv_connect_rc(qp, dest, gid, &path, &step) != 0) die(step);
}

static void post_recv(struct ibv_qp* qp, struct ibv_mr* mr) {
  struct ibv_sge sge = {(uintptr_t)mr->addr, SIZE, mr->lkey};
  struct ibv_recv_wr wr = {.wr_id = 2, .sg_list = &sge, .num_sge = 1}, *bad;
  if (ibv_post_recv(qp, &wr, &bad)) die("ibv_post_recv");
}

static void post_send(struct ibv_qp* qp, struct ibv_mr* mr, enum ibv_wr_opcode op, struct ibv_mr* remote) {
  struct ibv_sge sge = {(uintptr_t)mr->addr, SIZE, mr->lkey};
  struct ibv_send_wr wr = {.wr_id = 1, .sg_list = &sge, .num_sge = 1, .opcode = op, .send_flags = IBV_SEND_SIGNALED},
                     *bad;
  if (remote != NULL) {
    wr.wr.rdma.remote_addr = (uintptr_t)remote->addr;
    wr.wr.rdma.rkey = remote->rkey;
  }
  if (ibv_post_send(qp, &wr, &bad)) die("ibv_post_send");
}

static void await(struct ibv_cq* cq, int n) {
  struct ibv_wc wc;
  while (n > 0) {
    int got = ibv_poll_cq(cq, 1, &wc);
    if (got < 0) die("ibv_poll_cq");
    if (got == 0) continue;
    if (wc.status != IBV_WC_SUCCESS) {
      fprintf(stderr, "completion: %s\n", v.wc_status_str(wc.status));
      exit(1);
    }
    n--;
  }
}

static void check_runpath_plugin(void) {
  void* plugin = dlopen("libffv_dlopen_plugin.so", RTLD_NOW);
  int (*answer)(void) = plugin != NULL ? (int (*)(void))dlsym(plugin, "ffv_plugin_answer") : NULL;
  if (answer == NULL || answer() != 42) {
    fprintf(stderr, "the plugin beside this program (RUNPATH) did not load: %s\n", dlerror());
    exit(3);
  }
  printf("RUNPATH plugin: loaded\n");
}

static void check_rdmacm(void) {
  void* cm = dlopen("librdmacm.so.1", RTLD_NOW);
  if (cm == NULL || dlvsym(cm, "rdma_create_event_channel", "RDMACM_1.0") == NULL) {
    fprintf(stderr, "librdmacm.so.1 through dlopen: %s\n", dlerror());
    exit(1);
  }
  printf("librdmacm.so.1: rdma_create_event_channel resolved\n");
}

int main(void) {
  /* Under ASan its dlopen interceptor loses the RUNPATH (test_dlopen.sh). */
  const char* preload = getenv("LD_PRELOAD");
  if (preload == NULL || strstr(preload, "libasan") == NULL) check_runpath_plugin();
  handle = dlopen("libibverbs.so", RTLD_NOW);
  if (handle == NULL) handle = dlopen("libibverbs.so.1", RTLD_NOW);
  if (handle == NULL) die("dlopen(libibverbs)");
  resolve();
  check_rdmacm();
  int n = 0;
  struct ibv_device** list = v.get_device_list(&n);
  if (list == NULL || n == 0) die("ibv_get_device_list");
  printf("device: %s\n", v.get_device_name(list[0]));
  struct ibv_context* ctx = v.open_device(list[0]);
  if (ctx == NULL) die("ibv_open_device");
  union ibv_gid gid;
  if (v.query_gid(ctx, 1, 0, &gid)) die("ibv_query_gid");
  struct ibv_pd* pd = v.alloc_pd(ctx);
  struct ibv_cq* cq[2];
  struct ibv_qp* qp[2];
  struct ibv_mr* mr[2];
  char* buf[2];
  for (int i = 0; i < 2; i++) {
    cq[i] = v.create_cq(ctx, 16, NULL, NULL, 0);
    struct ibv_qp_init_attr init = {.send_cq = cq[i], .recv_cq = cq[i], .qp_type = IBV_QPT_RC,
                                    .cap = {.max_send_wr = 4, .max_recv_wr = 4, .max_send_sge = 1, .max_recv_sge = 1}};
    qp[i] = v.create_qp(pd, &init);
    buf[i] = aligned_alloc(4096, SIZE);
    if (pd == NULL || cq[i] == NULL || qp[i] == NULL || buf[i] == NULL) die("setup");
    int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
    mr[i] = i == 0 ? v.reg_mr(pd, buf[i], SIZE, access) : v.reg_mr_iova2(pd, buf[i], SIZE, (uintptr_t)buf[i], access);
    if (mr[i] == NULL) die("ibv_reg_mr");
  }
  connect_qp(qp[0], qp[1]->qp_num, &gid);
  connect_qp(qp[1], qp[0]->qp_num, &gid);
  for (int r = 0; r < ROUNDS; r++) {
    int from = r % 2, to = 1 - from;
    for (int k = 0; k < SIZE; k++) buf[from][k] = (char)(r * 31 + k);
    post_recv(qp[to], mr[to]);
    post_send(qp[from], mr[from], IBV_WR_SEND, NULL);
    await(cq[from], 1);
    await(cq[to], 1);
    if (memcmp(buf[from], buf[to], SIZE) != 0) die("the data received");
  }
  memset(buf[0], 0x5a, SIZE);
  post_send(qp[0], mr[0], IBV_WR_RDMA_WRITE, mr[1]);
  await(cq[0], 1);
  if (memcmp(buf[0], buf[1], SIZE) != 0) die("the data written");
  printf("dlopen ping-pong: %d round trips and an RDMA WRITE of %d B, every byte checked\n", ROUNDS / 2, SIZE);
  for (int i = 0; i < 2; i++) {
    v.destroy_qp(qp[i]);
    v.dereg_mr(mr[i]);
    v.destroy_cq(cq[i]);
    free(buf[i]);
  }
  v.dealloc_pd(pd);
  v.close_device(ctx);
  v.free_device_list(list);
  return 0;
}
