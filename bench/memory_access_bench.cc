// How the router can reach an app's memory: the evaluation behind
// registration by copy-and-remap (libffverbs/page_sharing.cc).
//
//  * SharedMapping: the router copies through its own mapping of a memfd
//    the app's pages live in (what it does): a memcpy, no system call.
//  * ProcessVmReadv / ProcessVmWritev: the router copies straight out of
//    (into) another process's private memory: no registration cost, but a
//    system call per access, no atomics (a compare-and-swap would be a
//    read and a write), and no address a device could DMA to (the verbs
//    fabric registers the router's mapping with the HCA).
//  * RegisterMr: what registration by copy-and-remap costs the app once
//    per region (ibv_reg_mr + ibv_dereg_mr of private memory), and
//    RegisterMr_IbvMalloc the same of ffv_malloc memory (ffverbs.h: the
//    arena the router maps already, no copy); WriteStream(_IbvMalloc): a
//    stream of RDMA WRITEs from a buffer of each kind. Only through
//    libffverbs and a router (bench/through_router.sh runs them so).
//
//   bench/through_router.sh memory_access_bench   (or build/bin/memory_access_bench without a router)
#include <benchmark/benchmark.h>
#include <infiniband/verbs.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ffverbs.h"
#include "rc_connect.h"

namespace {

constexpr size_t kMax = size_t{1} << 20;

// The app's buffer, and the router's view of it.
struct SharedBuffer {
  int fd = ::memfd_create("bench", MFD_CLOEXEC);
  void* app = nullptr;
  void* router = nullptr;
  SharedBuffer() {
    if (fd < 0 || ::ftruncate(fd, kMax) != 0) return;
    app = ::mmap(nullptr, kMax, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    router = ::mmap(nullptr, kMax, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    std::memset(app, 7, kMax);
  }
  ~SharedBuffer() {
    ::munmap(app, kMax);
    ::munmap(router, kMax);
    ::close(fd);
  }
};

void BM_SharedMapping_Read(benchmark::State& state) {
  SharedBuffer b;
  if (b.app == MAP_FAILED || b.router == MAP_FAILED) return state.SkipWithError("memfd");
  auto n = static_cast<size_t>(state.range(0));
  static char out[kMax];
  for (auto _ : state) {
    std::memcpy(out, b.router, n);
    benchmark::DoNotOptimize(out);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
}

// A child process holds private memory at `buf` (the same address in both:
// it was mapped before the fork) and waits to be killed.
struct OtherProcess {
  void* buf = ::mmap(nullptr, kMax, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  pid_t pid = -1;
  OtherProcess() {
    if (buf == MAP_FAILED) return;
    std::memset(buf, 7, kMax);
    pid = ::fork();
    if (pid == 0) {
      for (;;) ::pause();
    }
  }
  ~OtherProcess() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    ::munmap(buf, kMax);
  }
};

void process_vm(benchmark::State& state, bool write) {
  OtherProcess other;
  if (other.pid <= 0) return state.SkipWithError("fork");
  auto n = static_cast<size_t>(state.range(0));
  static char local_buf[kMax];
  for (auto _ : state) {
    iovec local{local_buf, n}, remote{other.buf, n};
    ssize_t done = write ? ::process_vm_writev(other.pid, &local, 1, &remote, 1, 0)
                         : ::process_vm_readv(other.pid, &local, 1, &remote, 1, 0);
    if (done != static_cast<ssize_t>(n)) return state.SkipWithError("process_vm_readv/writev");
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
}
void BM_ProcessVmReadv(benchmark::State& state) { process_vm(state, false); }
void BM_ProcessVmWritev(benchmark::State& state) { process_vm(state, true); }

// The first device, a PD, a CQ and two RC QPs connected to each other.
struct Verbs {
  ibv_device** list = nullptr;
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ibv_cq* cq = nullptr;
  ibv_qp* a = nullptr;
  ibv_qp* b = nullptr;
  std::string error;

  explicit Verbs(bool connect) {
    int count = 0;
    list = ibv_get_device_list(&count);
    if (count == 0) {
      error = "no device: run through libffverbs and a router (bench/through_router.sh memory_access_bench)";
      return;
    }
    ctx = ibv_open_device(list[0]);
    pd = ctx != nullptr ? ibv_alloc_pd(ctx) : nullptr;
    cq = pd != nullptr ? ibv_create_cq(ctx, 256, nullptr, nullptr, 0) : nullptr;
    if (cq == nullptr) {
      error = "open device / alloc pd / create cq";
      return;
    }
    if (!connect) return;
    ibv_qp_init_attr init{};
    init.send_cq = cq;
    init.recv_cq = cq;
    init.qp_type = IBV_QPT_RC;
    init.cap = ibv_qp_cap{128, 1, 1, 1, 0};
    a = ibv_create_qp(pd, &init);
    b = ibv_create_qp(pd, &init);
    ibv_gid gid{};
    if (a == nullptr || b == nullptr || ibv_query_gid(ctx, 1, 0, &gid) != 0 || !to(a, b->qp_num, gid) ||
        !to(b, a->qp_num, gid))
      error = "create and connect two QPs";
  }
  ~Verbs() {
    if (a != nullptr) ibv_destroy_qp(a);
    if (b != nullptr) ibv_destroy_qp(b);
    if (cq != nullptr) ibv_destroy_cq(cq);
    if (pd != nullptr) ibv_dealloc_pd(pd);
    if (ctx != nullptr) ibv_close_device(ctx);
    if (list != nullptr) ibv_free_device_list(list);
  }
  static bool to(ibv_qp* qp, uint32_t dest, const ibv_gid& gid) {
    const ffv_rc_path path{IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE, IBV_MTU_4096, 1, 12, 7};
    return ffv_connect_rc(qp, dest, &gid, &path, nullptr) == 0;
  }
};

// Where the app's buffer comes from: private memory (malloc's mmap), or
// ffv_malloc (libffverbs' arena, which the router maps already).
enum class Memory { kPrivate, kArena };
void* allocate(Memory m, size_t n) {
  if (m == Memory::kArena) return ffv_zero_copy() ? ffv_malloc(n) : nullptr;
  void* p = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}
void release(Memory m, void* p, size_t n) {
  if (p == nullptr) return;
  if (m == Memory::kArena) {
    ffv_free(p);
  } else {
    ::munmap(p, n);
  }
}

// ibv_reg_mr + ibv_dereg_mr of touched memory.
void register_mr(benchmark::State& state, Memory m) {
  Verbs v(false);
  if (!v.error.empty()) return state.SkipWithError(v.error.c_str());
  auto n = static_cast<size_t>(state.range(0));
  void* buf = allocate(m, n);
  if (buf == nullptr) return state.SkipWithError("allocation (ffv_malloc needs libffverbs preloaded)");
  std::memset(buf, 7, n);
  for (auto _ : state) {
    ibv_mr* mr = ibv_reg_mr(v.pd, buf, n, IBV_ACCESS_LOCAL_WRITE);
    if (mr == nullptr || ibv_dereg_mr(mr) != 0) {
      state.SkipWithError("ibv_reg_mr/ibv_dereg_mr failed");
      break;
    }
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
  release(m, buf, n);
}
void BM_RegisterMr(benchmark::State& state) { register_mr(state, Memory::kPrivate); }
void BM_RegisterMr_IbvMalloc(benchmark::State& state) { register_mr(state, Memory::kArena); }

// A stream of signaled RDMA WRITEs of range(0) bytes from a buffer of
// each kind, 32 in flight, into an ffv_malloc'd target.
void write_stream(benchmark::State& state, Memory m) {
  Verbs v(true);
  if (!v.error.empty()) return state.SkipWithError(v.error.c_str());
  auto n = static_cast<size_t>(state.range(0));
  void* src = allocate(m, n);
  void* dst = allocate(Memory::kArena, n);
  ibv_mr* smr = src != nullptr ? ibv_reg_mr(v.pd, src, n, IBV_ACCESS_LOCAL_WRITE) : nullptr;
  ibv_mr* dmr = dst != nullptr ? ibv_reg_mr(v.pd, dst, n, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE) : nullptr;
  if (smr == nullptr || dmr == nullptr) {
    state.SkipWithError("buffers (ffv_malloc needs libffverbs preloaded) or their registration");
  } else {
    constexpr int kDepth = 32;
    ibv_sge sge{reinterpret_cast<uintptr_t>(src), static_cast<uint32_t>(n), smr->lkey};
    ibv_send_wr wr{};
    wr.sg_list = &sge;
    wr.num_sge = 1;
    wr.opcode = IBV_WR_RDMA_WRITE;
    wr.send_flags = IBV_SEND_SIGNALED;
    wr.wr.rdma.remote_addr = reinterpret_cast<uintptr_t>(dst);
    wr.wr.rdma.rkey = dmr->rkey;
    int in_flight = 0;
    ibv_wc wc[kDepth];
    for (auto _ : state) {
      while (in_flight == kDepth) {
        int got = ibv_poll_cq(v.cq, kDepth, wc);
        for (int i = 0; i < got; ++i)
          if (wc[i].status != IBV_WC_SUCCESS) state.SkipWithError("a WRITE failed");
        in_flight -= got;
      }
      ibv_send_wr* bad = nullptr;
      if (ibv_post_send(v.a, &wr, &bad) != 0) {
        state.SkipWithError("ibv_post_send");
        break;
      }
      ++in_flight;
    }
    while (in_flight > 0) in_flight -= std::max(ibv_poll_cq(v.cq, kDepth, wc), 0);
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
  }
  if (smr != nullptr) ibv_dereg_mr(smr);
  if (dmr != nullptr) ibv_dereg_mr(dmr);
  release(m, src, n);
  release(Memory::kArena, dst, n);
}
void BM_WriteStream(benchmark::State& state) { write_stream(state, Memory::kPrivate); }
void BM_WriteStream_IbvMalloc(benchmark::State& state) { write_stream(state, Memory::kArena); }

BENCHMARK(BM_SharedMapping_Read)->RangeMultiplier(16)->Range(64, kMax);
BENCHMARK(BM_ProcessVmReadv)->RangeMultiplier(16)->Range(64, kMax);
BENCHMARK(BM_ProcessVmWritev)->RangeMultiplier(16)->Range(64, kMax);
BENCHMARK(BM_RegisterMr)->RangeMultiplier(16)->Range(4096, kMax)->Arg(64 << 20);
BENCHMARK(BM_RegisterMr_IbvMalloc)->RangeMultiplier(16)->Range(4096, kMax)->Arg(64 << 20);
BENCHMARK(BM_WriteStream)->Arg(4096)->Arg(65536);
BENCHMARK(BM_WriteStream_IbvMalloc)->Arg(4096)->Arg(65536);

}  // namespace

BENCHMARK_MAIN();
