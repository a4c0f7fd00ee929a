// The machine's floors, measured in the same run as the end-to-end numbers
// (bench/perftest_table.sh): memcpy bandwidth at the sizes the transport
// copies, and the cross-core round trip of one cache line (the least any
// "post on one core, execute on the other" design pays per operation).
//
//   build/bin/floors            prints key=value lines
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

void pin(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(static_cast<size_t>(cpu), &s);
  pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

// GB/s of memcpy of `size` bytes between two hot buffers.
double memcpy_gbps(size_t size) {
  std::vector<char> a(size, 1), b(size, 2);
  size_t iters = std::max<size_t>(1000, (size_t{4} << 30) / size / 4);
  auto t0 = Clock::now();
  for (size_t i = 0; i < iters; ++i) {
    std::memcpy(b.data(), a.data(), size);
    asm volatile("" : : "r"(b.data()) : "memory");
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  return static_cast<double>(size * iters) / s / 1e9;
}

// Median round trip (ns) of one cache line flipped between CPU 0 and CPU 1.
double pingpong_rtt_ns() {
  alignas(64) static std::atomic<uint64_t> line{0};
  constexpr uint64_t kRounds = 200000;
  std::thread peer([] {
    pin(1);
    for (uint64_t i = 0; i < kRounds; ++i) {
      while (line.load(std::memory_order_acquire) != 2 * i + 1) {
      }
      line.store(2 * i + 2, std::memory_order_release);
    }
  });
  pin(0);
  auto t0 = Clock::now();
  for (uint64_t i = 0; i < kRounds; ++i) {
    line.store(2 * i + 1, std::memory_order_release);
    while (line.load(std::memory_order_acquire) != 2 * i + 2) {
    }
  }
  double ns = std::chrono::duration<double, std::nano>(Clock::now() - t0).count();
  peer.join();
  return ns / kRounds;
}

}  // namespace

int main() {
  std::printf("memcpy_4KiB_GBps=%.1f\n", memcpy_gbps(4096));
  std::printf("memcpy_64KiB_GBps=%.1f\n", memcpy_gbps(65536));
  std::printf("cacheline_rtt_ns=%.0f\n", pingpong_rtt_ns());
  return 0;
}
