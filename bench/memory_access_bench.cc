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
//    per region (ibv_reg_mr + ibv_dereg_mr of private memory); only through
//    libffverbs and a router (bench/through_router.sh runs it so).
//
//   bench/through_router.sh memory_access_bench   (or build/bin/memory_access_bench without a router)
#include <benchmark/benchmark.h>
#include <infiniband/verbs.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>

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

void BM_RegisterMr(benchmark::State& state) {
  int count = 0;
  ibv_device** list = ibv_get_device_list(&count);
  if (count == 0) {
    if (list != nullptr) ibv_free_device_list(list);
    return state.SkipWithError("no device: run through libffverbs and a router (bench/through_router.sh memory_access_bench)");
  }
  ibv_context* ctx = ibv_open_device(list[0]);
  ibv_pd* pd = ctx != nullptr ? ibv_alloc_pd(ctx) : nullptr;
  auto n = static_cast<size_t>(state.range(0));
  void* buf = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (pd != nullptr && buf != MAP_FAILED) {
    std::memset(buf, 7, n);
    for (auto _ : state) {
      ibv_mr* mr = ibv_reg_mr(pd, buf, n, IBV_ACCESS_LOCAL_WRITE);
      if (mr == nullptr || ibv_dereg_mr(mr) != 0) {
        state.SkipWithError("ibv_reg_mr/ibv_dereg_mr failed");
        break;
      }
    }
    state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(n));
  } else {
    state.SkipWithError("open device / alloc pd / mmap");
  }
  if (buf != MAP_FAILED) ::munmap(buf, n);
  if (pd != nullptr) ibv_dealloc_pd(pd);
  if (ctx != nullptr) ibv_close_device(ctx);
  ibv_free_device_list(list);
}

BENCHMARK(BM_SharedMapping_Read)->RangeMultiplier(16)->Range(64, kMax);
BENCHMARK(BM_ProcessVmReadv)->RangeMultiplier(16)->Range(64, kMax);
BENCHMARK(BM_ProcessVmWritev)->RangeMultiplier(16)->Range(64, kMax);
BENCHMARK(BM_RegisterMr)->RangeMultiplier(16)->Range(4096, kMax)->Arg(64 << 20);

}  // namespace

BENCHMARK_MAIN();
