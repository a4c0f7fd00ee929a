// The machine's floors, measured in the same run as what they anchor: what
// no design that posts on one core and executes on another, copies bytes,
// or talks over a Unix socket can beat on this machine. Header-only, for
// bench/floors.cc and bench/verbs_micro.cc.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <vector>

namespace ff::bench {

using Clock = std::chrono::steady_clock;

inline void pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(static_cast<size_t>(cpu), &s);
  pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// GB/s of memcpy of `size` bytes between two hot buffers.
inline double memcpy_gbps(size_t size) {
  std::vector<char> a(size, 1), b(size, 2);
  size_t iters = std::max<size_t>(1000, (size_t{4} << 30) / size / 4);
  auto t0 = Clock::now();
  for (size_t i = 0; i < iters; ++i) {
    std::memcpy(b.data(), a.data(), size);
    asm volatile("" : : "r"(b.data()) : "memory");
  }
  return static_cast<double>(size * iters) / seconds_since(t0) / 1e9;
}

// GB/s of memcpy of `size`-byte pieces walking two `pool`-byte buffers (out
// of cache: what a transfer from buffers the app did not just touch costs).
inline double memcpy_cold_gbps(size_t size, size_t pool) {
  std::vector<char> a(pool, 1), b(pool, 2);
  size_t pieces = pool / size, total = 0;
  auto t0 = Clock::now();
  for (int round = 0; round < 4; ++round)
    for (size_t i = 0; i < pieces; ++i) {
      std::memcpy(b.data() + i * size, a.data() + i * size, size);
      total += size;
    }
  asm volatile("" : : "r"(b.data()) : "memory");
  return static_cast<double>(total) / seconds_since(t0) / 1e9;
}

// GB/s of one pass of memcpy of `size`-byte pieces between two `pool`-byte
// shared buffers that another mapping filled and this one never touched:
// what the router's first pass over freshly registered memory costs at best
// (each page's first touch in a process is a fault, and on a virtual
// machine with shadow paging a much dearer one).
inline double memcpy_first_touch_gbps(size_t size, size_t pool) {
  int fd = memfd_create("floor", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(2 * pool)) != 0) throw std::runtime_error("memfd");
  auto map = [&] {
    void* p = mmap(nullptr, 2 * pool, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    return static_cast<char*>(p);
  };
  char* filler = map();
  std::memset(filler, 1, 2 * pool);
  munmap(filler, 2 * pool);
  char* fresh = map();
  auto t0 = Clock::now();
  for (size_t at = 0; at + size <= pool; at += size) std::memcpy(fresh + pool + at, fresh + at, size);
  asm volatile("" : : "r"(fresh) : "memory");
  double gbps = static_cast<double>(pool / size * size) / seconds_since(t0) / 1e9;
  munmap(fresh, 2 * pool);
  close(fd);
  return gbps;
}

// Mean round trip (ns) of one cache line flipped between CPUs `a` and `b`,
// over `rounds` after as many to warm up (a thread spinning on CPU `b`, a
// router's poller, takes a while to see it shares its core and sleep).
inline double cacheline_rtt_ns(int a = 0, int b = 1, uint64_t rounds = 200000) {
  alignas(64) static std::atomic<uint64_t> line{0};
  line.store(0);
  const uint64_t kRounds = 2 * rounds;
  std::thread peer([b, kRounds] {
    pin(b);
    for (uint64_t i = 0; i < kRounds; ++i) {
      while (line.load(std::memory_order_acquire) != 2 * i + 1) {
      }
      line.store(2 * i + 2, std::memory_order_release);
    }
  });
  pin(a);
  auto t0 = Clock::now();
  for (uint64_t i = 0; i < kRounds; ++i) {
    if (i == rounds) t0 = Clock::now();
    line.store(2 * i + 1, std::memory_order_release);
    while (line.load(std::memory_order_acquire) != 2 * i + 2) {
    }
  }
  double ns = seconds_since(t0) * 1e9;
  peer.join();
  return ns / static_cast<double>(rounds);
}

// Mean round trip (ns) of a small message over a Unix stream socket
// between CPUs `a` and `b` (the control path's transport).
inline double socket_rtt_ns(int a = 0, int b = 1) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) throw std::runtime_error("socketpair");
  constexpr int kRounds = 20000;
  std::thread peer([b, fd = sv[1]] {
    pin(b);
    char m[64];
    for (int i = 0; i < kRounds; ++i) {
      if (read(fd, m, sizeof m) <= 0 || write(fd, m, sizeof m) != static_cast<ssize_t>(sizeof m)) return;
    }
  });
  pin(a);
  char m[64] = {};
  auto t0 = Clock::now();
  for (int i = 0; i < kRounds; ++i) {
    if (write(sv[0], m, sizeof m) != static_cast<ssize_t>(sizeof m) || read(sv[0], m, sizeof m) <= 0) break;
  }
  double ns = seconds_since(t0) * 1e9;
  peer.join();
  close(sv[0]);
  close(sv[1]);
  return ns / kRounds;
}

// Mean µs to move `bytes` of touched private memory into a new memfd and
// map it over the same range (memfd_create, ftruncate, copy, MAP_FIXED):
// what sharing pages after the fact costs when the data is copied.
inline double remap_us(size_t bytes) {
  constexpr int kRounds = 50;
  auto* region = static_cast<char*>(mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (region == MAP_FAILED) throw std::runtime_error("mmap");
  double total = 0;
  for (int i = 0; i < kRounds; ++i) {
    std::memset(region, i, bytes);
    auto t0 = Clock::now();
    int fd = memfd_create("floor", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(bytes)) != 0) throw std::runtime_error("memfd");
    void* staging = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    std::memcpy(staging, region, bytes);
    munmap(staging, bytes);
    if (mmap(region, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) != region)
      throw std::runtime_error("MAP_FIXED");
    close(fd);
    total += seconds_since(t0);
    // Back to private memory for the next round.
    mmap(region, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  }
  munmap(region, bytes);
  return total / kRounds * 1e6;
}

}  // namespace ff::bench
