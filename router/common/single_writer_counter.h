// A counter one thread writes and any thread reads (a poller's, read by
// the control thread for ffctl and /metrics): with a single writer, an
// increment needs no read-modify-write, only a relaxed load and store, so
// no locked instruction on the data path; readers see the value whole.
#pragma once

#include <atomic>
#include <cstdint>

namespace ff::router {

class SingleWriterCounter {
 public:
  void add(uint64_t n) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

}  // namespace ff::router
