// Shared arenas: memfd segments the shim maps from the start, which the
// router maps whole the first time memory in one is registered, so buffers
// carved from them register with no copy and no remap (see
// shared_memory.h). ibv_malloc/ibv_free hand them out on request; the
// shared heap (shared_heap.cc) hands out the app's page-aligned allocations
// from them.
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>

#include "libffverbs/ffverbs.h"
#include "libffverbs/shared_memory.h"
#include "libffverbs/shim.h"
#include "shm/arena.h"

using namespace ff::verbs;
namespace shm = ff::shm;

namespace {

// The arenas, in a table that free() can search without a lock: free()
// asks it about every pointer the app frees once the shared heap is in
// use. A slot is filled under the lock and published by `count_`
// (release; the readers' acquire), and never changes after that except
// for `retired`. Arenas are never unmapped: a fork child keeps its
// parent's (as private memory, `retired`), so that blocks it inherited can
// still be freed.
class Arenas {
 public:
  static Arenas& get() {
    static Arenas* a = new Arenas();  // never destroyed: free() may run during exit
    return *a;
  }

  void* allocate(size_t size) {
    if (size > kLargest) return nullptr;
    // fork() must give the child private copies of the arenas and their
    // allocators unlocked (fork.cc) whether or not the app ever talks to
    // the router: the handlers come with the router link.
    if (count_.load(std::memory_order_acquire) == 0) RouterLink::get();
    std::lock_guard lock(mu_);
    size_t n = count_.load(std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i)
      if (!slots_[i].retired.load(std::memory_order_relaxed))
        if (void* p = slots_[i].arena->allocate(size)) return p;
    if (n == slots_.size()) return nullptr;
    size_t bytes = std::max(arena_bytes(), shm::round_up(size, shm::kPageSize) + shm::kPageSize);
    try {
      auto arena = std::make_unique<shm::SharedArena>(shm::SharedArena::create_segment(bytes));
      Slot& s = slots_[n];
      const auto& m = arena->mapping();
      s.start.store(reinterpret_cast<uintptr_t>(m.base()), std::memory_order_relaxed);
      s.end.store(reinterpret_cast<uintptr_t>(m.base()) + m.size(), std::memory_order_relaxed);
      s.arena = arena.release();
      count_.store(n + 1, std::memory_order_release);
      return s.arena->allocate(size);
    } catch (const std::exception& e) {
      debug("shared arena: cannot create one of %zu bytes: %s", bytes, e.what());
      return nullptr;
    }
  }

  // The slot holding `p`, or null. Lock-free.
  shm::SharedArena* holding(const void* p, bool* retired = nullptr) const {
    auto a = reinterpret_cast<uintptr_t>(p);
    size_t n = count_.load(std::memory_order_acquire);
    for (size_t i = 0; i < n; ++i) {
      const Slot& s = slots_[i];
      if (a >= s.start.load(std::memory_order_relaxed) && a < s.end.load(std::memory_order_relaxed)) {
        if (retired != nullptr) *retired = s.retired.load(std::memory_order_relaxed);
        return s.arena;
      }
    }
    return nullptr;
  }

  // Frees a block. A very large one gives its whole pages back to the
  // system first, while it is still ours (once released, another thread
  // may be handed those pages): as glibc's free unmaps its chunks of 32 MiB
  // and more (below that, its mmap threshold rises to keep the chunks an
  // app frees and allocates again; a registered buffer reused keeps its
  // pages in the router's mapping too).
  bool free(void* p) {
    bool retired = false;
    shm::SharedArena* arena = holding(p, &retired);
    if (arena == nullptr) return false;
    size_t size = arena->usable_size(p);
    if (size >= kGiveBackBytes && !retired) {
      auto from = shm::round_up(reinterpret_cast<uintptr_t>(p), shm::kPageSize);
      auto to = (reinterpret_cast<uintptr_t>(p) + size) & ~(shm::kPageSize - 1);
      if (from < to) ::madvise(reinterpret_cast<void*>(from), to - from, MADV_REMOVE);
    }
    return arena->free(p);
  }

  bool find_live(uint64_t from, uint64_t to, uint64_t& start, uint64_t& end, int& fd) const {
    bool found = false;
    size_t n = count_.load(std::memory_order_acquire);
    for (size_t i = 0; i < n; ++i) {
      const Slot& s = slots_[i];
      uint64_t a = s.start.load(std::memory_order_relaxed), b = s.end.load(std::memory_order_relaxed);
      if (s.retired.load(std::memory_order_relaxed) || b <= from || a >= to || (found && a >= start)) continue;
      found = true;
      start = a;
      end = b;
      fd = s.arena->mapping().fd();
    }
    return found;
  }

  // fork(): the forking thread holds every allocator lock across it, so
  // that no other thread is inside one when the child is made.
  void before_fork() {
    mu_.lock();
    size_t n = count_.load(std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i) slots_[i].arena->lock_for_fork();
  }
  void after_fork_parent() { unlock_all(); }
  // Fork child: the arenas' pages are the child's private memory now
  // (fork.cc); they stay in the table for free() and are no longer
  // shared or allocated from.
  void after_fork_child() {
    size_t n = count_.load(std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i) slots_[i].retired.store(true, std::memory_order_relaxed);
    unlock_all();
  }

 private:
  void unlock_all() {
    size_t n = count_.load(std::memory_order_relaxed);
    for (size_t i = 0; i < n; ++i) slots_[i].arena->unlock_after_fork();
    mu_.unlock();
  }
  static constexpr size_t kGiveBackBytes = 32 << 20;
  static constexpr size_t kLargest = size_t{1} << 46;  // no rounding overflows below it
  struct Slot {
    std::atomic<uintptr_t> start{0}, end{0};
    shm::SharedArena* arena = nullptr;
    std::atomic<bool> retired{false};
  };
  static size_t arena_bytes() {
    const char* mb = std::getenv("FFV_ARENA_MB");
    long v = mb != nullptr ? std::atol(mb) : 0;
    return (v > 0 ? static_cast<size_t>(v) : 64) << 20;
  }
  std::mutex mu_;
  std::array<Slot, 1024> slots_;
  std::atomic<size_t> count_{0};
};

}  // namespace

namespace ff::verbs::arenas {

void* allocate(size_t size) { return Arenas::get().allocate(size); }
bool owns(const void* p) { return Arenas::get().holding(p) != nullptr; }
bool free(void* p) { return Arenas::get().free(p); }
size_t usable_size(const void* p) {
  const shm::SharedArena* arena = Arenas::get().holding(p);
  return arena == nullptr ? 0 : arena->usable_size(p);
}
bool find_live(uint64_t from, uint64_t to, uint64_t& start, uint64_t& end, int& fd) {
  return Arenas::get().find_live(from, to, start, end, fd);
}
void before_fork() { Arenas::get().before_fork(); }
void after_fork_parent() { Arenas::get().after_fork_parent(); }
void after_fork_child() { Arenas::get().after_fork_child(); }

}  // namespace ff::verbs::arenas

extern "C" {

// Zero-copy buffers: memory from a shared arena, so registering it costs no
// copy and no remap. Declared in libffverbs/ffverbs.h.
void* ibv_malloc(size_t size) {
  if (size == 0) return nullptr;
  if (int e = RouterLink::get().ensure_connected(); e != 0) {
    errno = e;
    return nullptr;
  }
  void* p = arenas::allocate(size);
  if (p == nullptr) errno = ENOMEM;
  return p;
}

void ibv_free(void* ptr) {
  if (ptr != nullptr && !arenas::free(ptr)) debug("ibv_free: %p was not returned by ibv_malloc", ptr);
}

}  // extern "C"
