// Verbs through the router on one host, each row beside its floor measured
// in the same run, printed as a markdown table with the ratio
// (docs/PERFORMANCE.md, "Verbs micro-benchmarks"). One process; RC QPs
// connected to each other. Run it through bench/verbs_micro.sh: the router
// on CPU 1, this program on CPU 0, libffverbs preloaded. Without the shim it
// measures the device it finds (rxe in the guest, for comparison).
//
//   build/bin/verbs_micro [--quick | --data-path]   (--data-path: the latency and
//                                                   message-rate rows only, run long, for a profiler)
#include <infiniband/verbs.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ffverbs.h"
#include "floors.h"
#include "rc_connect.h"
#include "shm/descriptors.h"
#include "shm/ring.h"
#include "shm/segment.h"

namespace {

using namespace ff::bench;

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::exit(2);
}

struct Row {
  std::string measure, result, floor, ratio, goal;
};
std::vector<Row> rows;

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

double percentile(std::vector<double>& v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// A measure taken in blocks, each beside its floor measured right before
// it (the VM's vCPUs move between physical cores, and the floors with
// them): the median block by its ratio to its floor, and the range of the
// ratios as "R× (N blocks: LO–HI×)". `digits`: decimals of the ratios.
struct FloorBlock {
  double value, floor, extra;  // extra: what the row shows beside (a p99)
  double ratio() const { return value / floor; }
};
struct MedianBlock {
  FloorBlock median;
  std::string ratio;
};
MedianBlock median_block(std::vector<FloorBlock> blocks, int digits) {
  std::sort(blocks.begin(), blocks.end(), [](const FloorBlock& x, const FloorBlock& y) { return x.ratio() < y.ratio(); });
  const FloorBlock& m = blocks[blocks.size() / 2];
  char text[96];
  std::snprintf(text, sizeof text, "%.*f× (%zu blocks: %.*f–%.*f×)", digits, m.ratio(), blocks.size(), digits,
                blocks.front().ratio(), digits, blocks.back().ratio());
  return {m, text};
}

// Descriptors per second through one shm ring from CPU 0 to CPU 1, pushed
// and popped in batches of 32: the floor of a message rate that moves one
// work request descriptor per message (a one-SGE WRITE's: the ring moves
// its header and its SGE, shm/descriptors.h).
// Timed over the second half of `total` (the first warms up: the router's
// poller on CPU 1 takes a moment to see its core shared and sleep).
double ring_batch32_per_s(uint64_t total = 4'000'000) {
  using ff::shm::SendWqe;
  constexpr uint32_t kCap = 1024;
  const uint64_t kTotal = total / 64 * 64;
  auto seg = ff::shm::Mapping::create("floor", ff::shm::SegmentKind::kRing,
                                      sizeof(ff::shm::SegmentHeader) + ff::shm::ring_bytes<SendWqe>(kCap));
  std::byte* at = seg.base() + sizeof(ff::shm::SegmentHeader);
  ff::shm::init_ring<SendWqe>(at, kCap);
  std::thread consumer([at, kTotal] {
    pin(1);
    ff::shm::RingConsumer<SendWqe> in(at, kCap);
    std::vector<SendWqe> batch(32);
    for (uint64_t got = 0; got < kTotal;) got += in.sc_pop_burst(batch);
  });
  pin(0);
  ff::shm::RingProducer<SendWqe> out(at, kCap);
  SendWqe write{};
  write.opcode = IBV_WR_RDMA_WRITE;
  write.num_sge = 1;
  std::vector<SendWqe> batch(32, write);
  auto t0 = Clock::now();
  for (uint64_t sent = 0; sent < kTotal; sent += 32) {
    if (sent == kTotal / 2) t0 = Clock::now();
    while (!out.sp_push_bulk(batch)) {
    }
  }
  consumer.join();
  return static_cast<double>(kTotal / 2) / seconds_since(t0);
}

struct Device {
  ibv_context* ctx = nullptr;
  ibv_pd* pd = nullptr;
  ibv_gid gid{};
};

Device open_device() {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list == nullptr || n == 0) die("no RDMA device");
  Device d;
  d.ctx = ibv_open_device(list[0]);
  ibv_free_device_list(list);
  if (d.ctx == nullptr) die("ibv_open_device");
  d.pd = ibv_alloc_pd(d.ctx);
  if (d.pd == nullptr || ibv_query_gid(d.ctx, 1, 0, &d.gid) != 0) die("PD or GID");
  return d;
}

ibv_qp* rc_qp(Device& d, ibv_cq* cq, uint32_t depth) {
  ibv_qp_init_attr a{};
  a.send_cq = a.recv_cq = cq;
  a.qp_type = IBV_QPT_RC;
  a.cap = {depth, 16, 1, 1, 64};
  ibv_qp* q = ibv_create_qp(d.pd, &a);
  if (q == nullptr) die("ibv_create_qp");
  return q;
}

void connect(Device& d, ibv_qp* q, uint32_t dest) {
  const ffv_rc_path path = {IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE, IBV_MTU_4096, 16, 1, 7};
  if (ffv_connect_rc(q, dest, &d.gid, &path, nullptr) != 0) die("connect");
}

// Waits for `n` completions, all successful.
void poll_n(ibv_cq* cq, int n) {
  ibv_wc wc[32];
  while (n > 0) {
    int got = ibv_poll_cq(cq, std::min(n, 32), wc);
    if (got < 0) die("ibv_poll_cq");
    for (int i = 0; i < got; ++i)
      if (wc[i].status != IBV_WC_SUCCESS) {
        std::fprintf(stderr, "completion: %s\n", ibv_wc_status_str(wc[i].status));
        std::exit(2);
      }
    n -= got;
  }
}

// ibv_create_qp and the three moves to RTS, per QP, and each part alone.
void qp_setup(Device& d, int rounds, double socket_rtt) {
  ibv_cq* cq = ibv_create_cq(d.ctx, 64, nullptr, nullptr, 0);
  std::vector<double> setup, create, moves, teardown;
  for (int i = 0; i < rounds; ++i) {
    auto t0 = Clock::now();
    ibv_qp* q = rc_qp(d, cq, 16);
    create.push_back(seconds_since(t0) * 1e6);
    auto t1 = Clock::now();
    connect(d, q, q->qp_num);
    moves.push_back(seconds_since(t1) * 1e6);
    setup.push_back(seconds_since(t0) * 1e6);
    t0 = Clock::now();
    if (ibv_destroy_qp(q) != 0) die("ibv_destroy_qp");
    teardown.push_back(seconds_since(t0) * 1e6);
  }
  ibv_destroy_cq(cq);
  double rtt = socket_rtt / 1000;
  auto row = [&](const char* what, std::vector<double>& v, int trips, const char* goal) {
    double p50 = percentile(v, 0.5);
    rows.push_back({what, fmt("%.0f µs", p50), fmt("%.1f µs", trips * rtt) + " (" + std::to_string(trips) +
                                                    (trips == 1 ? " socket round trip)" : " socket round trips)"),
                    fmt("%.1f×", p50 / (trips * rtt)), goal});
  };
  row("`ibv_create_qp` + INIT + RTR + RTS, per QP (p50)", setup, 4, "≤ 2.5×");
  row("... `ibv_create_qp` alone (p50)", create, 1, "");
  row("... the three `ibv_modify_qp` (p50)", moves, 3, "");
  row("`ibv_destroy_qp` (p50)", teardown, 1, "");
}

// ibv_reg_mr of 1 MiB of touched memory: private pages (mmap), the app's
// page-aligned allocation (posix_memalign: the shim's shared heap gives it
// shared pages from the start), and ibv_malloc's.
void registration(Device& d, int rounds, double remap) {
  constexpr size_t kBytes = 1 << 20;
  enum class Kind { kPrivate, kAligned, kIbvMalloc };
  for (Kind kind : {Kind::kPrivate, Kind::kAligned, Kind::kIbvMalloc}) {
    std::vector<double> reg;
    for (int i = 0; i < rounds; ++i) {
      void* p = nullptr;
      if (kind == Kind::kIbvMalloc) p = ffv_malloc(kBytes);
      else if (kind == Kind::kAligned && posix_memalign(&p, 4096, kBytes) != 0) p = nullptr;
      else if (kind == Kind::kPrivate)
        p = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == nullptr || p == MAP_FAILED) die("allocate");
      std::memset(p, i, kBytes);
      auto t0 = Clock::now();
      ibv_mr* mr = ibv_reg_mr(d.pd, p, kBytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
      reg.push_back(seconds_since(t0) * 1e6);
      if (mr == nullptr) die("ibv_reg_mr");
      ibv_dereg_mr(mr);
      if (kind == Kind::kIbvMalloc) ffv_free(p);
      else if (kind == Kind::kAligned) free(p);
      else munmap(p, kBytes);
    }
    double p50 = percentile(reg, 0.5);
    const char* what = kind == Kind::kPrivate   ? "`ibv_reg_mr` 1 MiB of private touched memory (`mmap`) (p50)"
                       : kind == Kind::kAligned ? "`ibv_reg_mr` 1 MiB of touched `posix_memalign` memory (p50)"
                                                : "`ibv_reg_mr` 1 MiB of `ibv_malloc` memory (p50)";
    rows.push_back({what, fmt("%.0f µs", p50), fmt("%.0f µs (memfd + copy + MAP_FIXED)", remap),
                    fmt("%.2f×", p50 / remap), kind == Kind::kAligned ? "≤ 0.5×" : ""});
  }
}

// A connected pair of RC QPs, a's sends completing on `cq`, and a buffer
// of b's registered for remote writes.
struct Pair {
  ibv_cq* cq = nullptr;
  ibv_qp *a = nullptr, *b = nullptr;
  Pair(Device& d, uint32_t depth) {
    cq = ibv_create_cq(d.ctx, static_cast<int>(depth) + 64, nullptr, nullptr, 0);
    if (cq == nullptr) die("ibv_create_cq");
    a = rc_qp(d, cq, depth);
    b = rc_qp(d, cq, 16);
    connect(d, a, b->qp_num);
    connect(d, b, a->qp_num);
  }
  ~Pair() {
    ibv_destroy_qp(a);
    ibv_destroy_qp(b);
    ibv_destroy_cq(cq);
  }
};

ibv_mr* registered(Device& d, size_t bytes) {
  void* p = ffv_malloc(bytes);
  if (p == nullptr) die("ffv_malloc");
  std::memset(p, 1, bytes);
  ibv_mr* mr = ibv_reg_mr(d.pd, p, bytes, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE);
  if (mr == nullptr) die("ibv_reg_mr");
  return mr;
}

void release(ibv_mr* mr) {
  void* p = mr->addr;
  ibv_dereg_mr(mr);
  ffv_free(p);
}

// A 2-byte inline WRITE, posted and its completion polled, one at a time,
// in `blocks` blocks of `rounds`, each beside the cache-line round trip
// measured right before it. Interleaved because on a virtual machine the
// two vCPUs move between physical cores: the same binary measured a 67 ns
// and a 350 ns floor minutes apart, so a floor taken once at the start and
// a latency taken later give any ratio. The row is the median block's.
// The floor's second thread runs on the router's CPU, whose poller then
// sleeps (its idle spin sees its core shared) until the next post wakes it.
void write_latency(Device& d, int blocks, int rounds) {
  Pair p(d, 16);
  ibv_mr* dst = registered(d, 4096);
  char src[2] = {1, 2};
  ibv_sge s{reinterpret_cast<uint64_t>(src), 2, 0};
  ibv_send_wr w{};
  w.opcode = IBV_WR_RDMA_WRITE;
  w.sg_list = &s;
  w.num_sge = 1;
  w.send_flags = IBV_SEND_SIGNALED | IBV_SEND_INLINE;
  w.wr.rdma = {reinterpret_cast<uint64_t>(dst->addr), dst->rkey};
  std::vector<FloorBlock> measured, means;
  std::vector<double> ns;
  ns.reserve(static_cast<size_t>(rounds));
  auto round_trip = [&] {
    ibv_send_wr* bad = nullptr;
    if (ibv_post_send(p.a, &w, &bad) != 0) die("ibv_post_send");
    poll_n(p.cq, 1);
  };
  for (int b = 0; b < blocks; ++b) {
    double floor = cacheline_rtt_ns(0, 1, 20000);
    ns.clear();
    for (int i = 0; i < rounds + 1000; ++i) {
      auto t0 = Clock::now();
      round_trip();
      if (i >= 1000) ns.push_back(seconds_since(t0) * 1e9);  // after the router woke and warmed up
    }
    // As the floor is taken: the mean of round trips in a row, no clock
    // read among them (the clock here steps by 10 ns, and a read costs 20).
    auto t0 = Clock::now();
    for (int i = 0; i < rounds; ++i) round_trip();
    means.push_back({seconds_since(t0) * 1e9 / rounds, floor, 0});
    measured.push_back({percentile(ns, 0.5), floor, percentile(ns, 0.99)});
  }
  release(dst);
  auto [m, ratio] = median_block(std::move(measured), 1);
  rows.push_back({"2 B inline WRITE, post → CQE polled (p50)", fmt("%.0f ns", m.value),
                  fmt("%.0f ns (cache line round trip, same block)", m.floor), ratio, "≤ 1.5×"});
  rows.push_back({"... (p99)", fmt("%.0f ns", m.extra), "", fmt("%.1f×", m.extra / m.floor), ""});
  auto [mean, mean_ratio] = median_block(std::move(means), 1);
  rows.push_back({"... (mean of round trips in a row, as the floor)", fmt("%.0f ns", mean.value),
                  fmt("%.0f ns", mean.floor), mean_ratio, ""});
}

// 64-byte WRITEs in lists of 32 (the last of each signaled), 16 lists in
// flight, in `blocks` blocks of `per_block`, each beside the ring's rate
// measured right before it (interleaved, as write_latency: the ring's rate
// on this VM ranged 13-110 M/s with where its vCPUs ran). The row is the
// median block's; the goal, 25 M/s against a 110 M/s ring, is
// 0.23× the ring.
void message_rate(Device& d, int blocks, long per_block) {
  constexpr int kList = 32, kInFlight = 16;
  Pair p(d, kList * kInFlight);
  ibv_mr* src = registered(d, 4096);
  ibv_mr* dst = registered(d, 4096);
  std::vector<ibv_sge> sges(kList, ibv_sge{reinterpret_cast<uint64_t>(src->addr), 64, src->lkey});
  std::vector<ibv_send_wr> list(kList);
  for (int i = 0; i < kList; ++i) {
    ibv_send_wr& w = list[static_cast<size_t>(i)];
    w = ibv_send_wr{};
    w.opcode = IBV_WR_RDMA_WRITE;
    w.sg_list = &sges[static_cast<size_t>(i)];
    w.num_sge = 1;
    w.wr.rdma = {reinterpret_cast<uint64_t>(dst->addr), dst->rkey};
    w.next = i + 1 < kList ? &list[static_cast<size_t>(i) + 1] : nullptr;
  }
  list.back().send_flags = IBV_SEND_SIGNALED;
  std::vector<FloorBlock> measured;
  for (int b = 0; b < blocks; ++b) {
    double ring = ring_batch32_per_s(2'000'000);
    // The first tenth wakes the router and is not timed.
    long posted = 0, done = 0, warm = per_block / 10;
    int in_flight = 0;
    auto t0 = Clock::now();
    bool timing = false;
    while (done < per_block) {
      if (!timing && done >= warm) {
        t0 = Clock::now();
        warm = done;
        timing = true;
      }
      while (in_flight < kInFlight && posted < per_block) {
        ibv_send_wr* bad = nullptr;
        if (ibv_post_send(p.a, list.data(), &bad) != 0) die("ibv_post_send");
        posted += kList;
        ++in_flight;
      }
      ibv_wc wc[kInFlight];
      int got = ibv_poll_cq(p.cq, kInFlight, wc);
      if (got < 0) die("ibv_poll_cq");
      in_flight -= got;
      done += static_cast<long>(got) * kList;
    }
    measured.push_back({static_cast<double>(done - warm) / seconds_since(t0), ring, 0});
  }
  release(src);
  release(dst);
  auto [m, ratio] = median_block(std::move(measured), 2);
  rows.push_back({"64 B WRITE, post lists of 32", fmt("%.1f M msg/s", m.value / 1e6),
                  fmt("%.0f M desc/s (ring, batches of 32, same block)", m.floor / 1e6), ratio,
                  "≥ 25 M msg/s (0.23× a 110 M ring)"});
}

// 64 KiB WRITEs streaming from `src` (16 in flight), the source walking
// `src` and the destination walking `dst` piece by piece.
double write_stream_gbps(Device& d, ibv_mr* src, ibv_mr* dst, long writes) {
  constexpr uint32_t kPiece = 65536;
  constexpr int kInFlight = 16;
  Pair p(d, kInFlight);
  size_t pieces = std::min(src->length, dst->length) / kPiece;
  long posted = 0, done = 0;
  int in_flight = 0;
  auto t0 = Clock::now();
  while (done < writes) {
    while (in_flight < kInFlight && posted < writes) {
      size_t at = static_cast<size_t>(posted) % pieces * kPiece;
      ibv_sge s{reinterpret_cast<uint64_t>(src->addr) + at, kPiece, src->lkey};
      ibv_send_wr w{};
      w.opcode = IBV_WR_RDMA_WRITE;
      w.sg_list = &s;
      w.num_sge = 1;
      w.send_flags = IBV_SEND_SIGNALED;
      w.wr.rdma = {reinterpret_cast<uint64_t>(dst->addr) + at, dst->rkey};
      ibv_send_wr* bad = nullptr;
      if (ibv_post_send(p.a, &w, &bad) != 0) die("ibv_post_send");
      ++posted;
      ++in_flight;
    }
    ibv_wc wc[kInFlight];
    int got = ibv_poll_cq(p.cq, kInFlight, wc);
    if (got < 0) die("ibv_poll_cq");
    in_flight -= got;
    done += got;
  }
  return static_cast<double>(done) * kPiece / seconds_since(t0) / 1e9;
}

void bandwidth(Device& d, size_t pool, double first_floor, double cold_floor, double hot_floor) {
  ibv_mr* src = registered(d, pool);
  ibv_mr* dst = registered(d, pool);
  long pass = static_cast<long>(pool / 65536);
  // The router's first pass touches every page of its mappings for the first
  // time; the passes after it are what a long-lived registration costs.
  double first = write_stream_gbps(d, src, dst, pass);
  double cold = write_stream_gbps(d, src, dst, 4 * pass);
  rows.push_back({fmt("64 KiB WRITE, first pass over freshly registered %.0f MiB", static_cast<double>(pool >> 20)),
                  fmt("%.1f GB/s", first), fmt("%.1f GB/s (memcpy, first touch of shared pages)", first_floor),
                  fmt("%.2f×", first / first_floor), ""});
  rows.push_back({fmt("64 KiB WRITE, cold buffers (%.0f MiB pools, passes 2-5)", static_cast<double>(pool >> 20)),
                  fmt("%.1f GB/s", cold), fmt("%.1f GB/s (memcpy, same pools)", cold_floor),
                  fmt("%.2f×", cold / cold_floor), "≥ 0.9×"});
  release(src);
  release(dst);
  // One hot 1 MiB source: ibv_malloc memory, then ordinary memory.
  ibv_mr* target = registered(d, 1 << 20);
  ibv_mr* shared = registered(d, 1 << 20);
  double from_shared = write_stream_gbps(d, shared, target, 20000);
  release(shared);
  void* plain = mmap(nullptr, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  std::memset(plain, 3, 1 << 20);
  ibv_mr* ordinary = ibv_reg_mr(d.pd, plain, 1 << 20, IBV_ACCESS_LOCAL_WRITE);
  if (ordinary == nullptr) die("ibv_reg_mr");
  double from_ordinary = write_stream_gbps(d, ordinary, target, 20000);
  ibv_dereg_mr(ordinary);
  munmap(plain, 1 << 20);
  release(target);
  rows.push_back({"64 KiB WRITE stream from `ibv_malloc` memory (hot)", fmt("%.1f GB/s", from_shared),
                  fmt("%.1f GB/s (memcpy 64 KiB, hot)", hot_floor), fmt("%.2f×", from_shared / hot_floor), ""});
  rows.push_back({"64 KiB WRITE stream from ordinary registered memory (hot)", fmt("%.1f GB/s", from_ordinary),
                  fmt("%.1f GB/s (memcpy 64 KiB, hot)", hot_floor), fmt("%.2f×", from_ordinary / hot_floor), ""});
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const bool data_path = argc > 1 && std::strcmp(argv[1], "--data-path") == 0;
  const bool rate_only = argc > 1 && std::strcmp(argv[1], "--message-rate") == 0;
  const bool latency_only = argc > 1 && std::strcmp(argv[1], "--latency") == 0;
  // Floors first, while the router is idle.
  double socket_rtt = socket_rtt_ns();
  double remap = remap_us(1 << 20);
  size_t pool = quick ? size_t{32} << 20 : size_t{256} << 20;
  double first_floor = memcpy_first_touch_gbps(65536, pool);
  double cold_floor = memcpy_cold_gbps(65536, pool);
  double hot_floor = memcpy_gbps(65536);
  pin(0);
  Device d = open_device();
  std::printf("device %s, libffverbs %s\n\n", ibv_get_device_name(d.ctx->device),
              ffv_zero_copy() ? "loaded" : "not loaded");
  if (rate_only) {  // a long run of one row alone, for a profiler
    message_rate(d, 50, 2'000'000);
  } else if (latency_only) {
    write_latency(d, 250, 20000);
  } else if (data_path) {  // long runs of the two rows a profiler looks at
    write_latency(d, 15, 20000);
    message_rate(d, 5, 1'000'000);
  } else {
    qp_setup(d, quick ? 20 : 200, socket_rtt);
    registration(d, quick ? 10 : 50, remap);
    write_latency(d, quick ? 3 : 11, quick ? 2000 : 20000);
    message_rate(d, quick ? 3 : 9, quick ? 200'000 : 1'000'000);
    bandwidth(d, pool, first_floor, cold_floor, hot_floor);
  }
  std::printf("| measure | result | floor (same run) | ratio | goal |\n| --- | --- | --- | --- | --- |\n");
  for (const Row& r : rows)
    std::printf("| %s | %s | %s | %s | %s |\n", r.measure.c_str(), r.result.c_str(), r.floor.c_str(),
                r.ratio.c_str(), r.goal.c_str());
  ibv_dealloc_pd(d.pd);
  ibv_close_device(d.ctx);
  return 0;
}
