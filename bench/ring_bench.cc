// Ring round trip and one-way throughput, ffrouter's shm rings against
// boost::lockfree::spsc_queue in the same run.
//
//   build/bin/ring_bench [--benchmark_filter=...]
// Pinning: FF_BENCH_CPUS=a,b pins the benchmark thread to CPU a and the peer
// thread to CPU b (default 0,1; "none" disables pinning).
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <array>
#include <atomic>
#include <boost/lockfree/spsc_queue.hpp>
#include <cstdlib>
#include <string>
#include <thread>

#include "shm/ring.h"
#include "shm/segment.h"

namespace {

using namespace ff::shm;

struct Desc {  // the size of a work request descriptor
  uint64_t words[8];
};

std::pair<int, int> pin_cpus() {
  const char* env = std::getenv("FF_BENCH_CPUS");
  std::string s = env != nullptr ? env : "0,1";
  if (s == "none") return {-1, -1};
  auto comma = s.find(',');
  return {std::stoi(s.substr(0, comma)), std::stoi(s.substr(comma + 1))};
}

void pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<size_t>(cpu), &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

constexpr uint32_t kCap = 1024;

struct ShmRingPair {
  Mapping seg = Mapping::create("bench", SegmentKind::kRing,
                                sizeof(SegmentHeader) + 2 * ring_bytes<Desc>(kCap));
  std::byte* a = seg.base() + sizeof(SegmentHeader);
  std::byte* b = a + ring_bytes<Desc>(kCap);
  ShmRingPair() {
    init_ring<Desc>(a, kCap);
    init_ring<Desc>(b, kCap);
  }
};

void BM_RoundTrip_ShmRing(benchmark::State& state) {
  auto [mine, peer] = pin_cpus();
  pin(mine);
  ShmRingPair rings;
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    pin(peer);
    RingConsumer<Desc> in(rings.a, kCap);
    RingProducer<Desc> out(rings.b, kCap);
    Desc d{};
    while (!stop.load(std::memory_order_relaxed)) {
      if (in.sc_try_pop(d)) {
        while (!out.sp_try_push(d)) {
        }
      }
    }
  });
  RingProducer<Desc> out(rings.a, kCap);
  RingConsumer<Desc> in(rings.b, kCap);
  Desc d{};
  for (auto _ : state) {
    d.words[0]++;
    while (!out.sp_try_push(d)) {
    }
    while (!in.sc_try_pop(d)) {
    }
    benchmark::DoNotOptimize(d);
  }
  stop = true;
  echo.join();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RoundTrip_ShmRing)->UseRealTime();

void BM_RoundTrip_BoostSpsc(benchmark::State& state) {
  auto [mine, peer] = pin_cpus();
  pin(mine);
  boost::lockfree::spsc_queue<Desc, boost::lockfree::capacity<kCap>> a, b;
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    pin(peer);
    Desc d{};
    while (!stop.load(std::memory_order_relaxed)) {
      if (a.pop(d)) {
        while (!b.push(d)) {
        }
      }
    }
  });
  Desc d{};
  for (auto _ : state) {
    d.words[0]++;
    while (!a.push(d)) {
    }
    while (!b.pop(d)) {
    }
    benchmark::DoNotOptimize(d);
  }
  stop = true;
  echo.join();
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RoundTrip_BoostSpsc)->UseRealTime();

// One-way: the benchmark thread produces in batches of range(0); a peer
// thread consumes (copying each descriptor out) and counts.
void BM_Throughput_ShmRing(benchmark::State& state) {
  auto [mine, peer] = pin_cpus();
  pin(mine);
  ShmRingPair rings;
  const auto batch = static_cast<size_t>(state.range(0));
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> consumed{0};
  std::thread consumer([&] {
    pin(peer);
    RingConsumer<Desc> in(rings.a, kCap);
    std::array<Desc, 64> buf{};
    uint64_t n = 0;
    while (!stop.load(std::memory_order_relaxed) || !in.empty_guess()) {
      n += in.sc_pop_burst(std::span<Desc>(buf.data(), batch));
    }
    consumed = n;
  });
  RingProducer<Desc> out(rings.a, kCap);
  std::array<Desc, 64> buf{};
  uint64_t produced = 0;
  for (auto _ : state) {
    produced += out.sp_push_burst(std::span<const Desc>(buf.data(), batch));
  }
  stop = true;
  consumer.join();
  state.SetItemsProcessed(static_cast<int64_t>(produced));
}
BENCHMARK(BM_Throughput_ShmRing)->Arg(1)->Arg(8)->Arg(32)->UseRealTime();

void BM_Throughput_BoostSpsc(benchmark::State& state) {
  auto [mine, peer] = pin_cpus();
  pin(mine);
  boost::lockfree::spsc_queue<Desc, boost::lockfree::capacity<kCap>> q;
  const auto batch = static_cast<size_t>(state.range(0));
  std::atomic<bool> stop{false};
  std::thread consumer([&] {
    pin(peer);
    std::array<Desc, 64> buf{};
    while (!stop.load(std::memory_order_relaxed) || q.read_available() > 0) {
      benchmark::DoNotOptimize(q.pop(buf.data(), batch));
    }
  });
  std::array<Desc, 64> buf{};
  uint64_t produced = 0;
  for (auto _ : state) {
    produced += q.push(buf.data(), batch);
  }
  stop = true;
  consumer.join();
  state.SetItemsProcessed(static_cast<int64_t>(produced));
}
BENCHMARK(BM_Throughput_BoostSpsc)->Arg(1)->Arg(8)->Arg(32)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
