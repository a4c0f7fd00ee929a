// ibv_malloc/ibv_free: zero-copy buffers carved from shared arenas that the
// router maps once (see shared_memory.h).
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

#include "libffverbs/ffverbs.h"
#include "libffverbs/shared_memory.h"
#include "libffverbs/shim.h"
#include "shm/arena.h"

using namespace ff::verbs;
namespace shm = ff::shm;

namespace {

// The ibv_malloc arenas.
class Arenas {
 public:
  static Arenas& get() {
    static Arenas* a = new Arenas();
    return *a;
  }
  // Fork child: see forget_arenas_after_fork.
  void forget_after_fork() {
    new (&mu_) std::mutex();
    for (auto& a : arenas_) a.release();  // leaked on purpose: their mappings became the child's private memory
    arenas_.clear();
  }
  void* allocate(size_t size) {
    std::lock_guard lock(mu_);
    for (auto& a : arenas_)
      if (void* p = a->allocate(size)) return p;
    size_t bytes = std::max(arena_bytes(), shm::round_up(size, shm::kPageSize) + shm::kPageSize);
    try {
      auto arena = std::make_unique<shm::SharedArena>(shm::SharedArena::create_segment(bytes));
      const auto& m = arena->mapping();
      auto base = reinterpret_cast<uint64_t>(m.base());
      if (int e = SharedPages::get().add_pinned(base, base + m.size(), m.fd()); e != 0) {
        errno = e;
        return nullptr;
      }
      arenas_.push_back(std::move(arena));
      return arenas_.back()->allocate(size);
    } catch (const std::exception& e) {
      debug("ibv_malloc: cannot create an arena: %s", e.what());
      errno = ENOMEM;
      return nullptr;
    }
  }
  bool free(void* p) {
    std::lock_guard lock(mu_);
    for (auto& a : arenas_)
      if (a->contains(p)) return a->free(p);
    return false;
  }

 private:
  static size_t arena_bytes() {
    const char* mb = std::getenv("FFV_ARENA_MB");
    long v = mb != nullptr ? std::atol(mb) : 0;
    return (v > 0 ? static_cast<size_t>(v) : 64) << 20;
  }
  std::mutex mu_;
  std::vector<std::unique_ptr<shm::SharedArena>> arenas_;
};

}  // namespace

namespace ff::verbs {

void forget_arenas_after_fork() { Arenas::get().forget_after_fork(); }

}  // namespace ff::verbs

extern "C" {

// Zero-copy buffers: memory from a shared arena that the router already
// maps, so registering it costs no copy and no remap. Declared in
// libffverbs/ffverbs.h.
void* ibv_malloc(size_t size) {
  if (size == 0) return nullptr;
  if (int e = RouterLink::get().ensure_connected(); e != 0) {
    errno = e;
    return nullptr;
  }
  return Arenas::get().allocate(size);
}

void ibv_free(void* ptr) {
  if (ptr != nullptr && !Arenas::get().free(ptr)) debug("ibv_free: %p was not returned by ibv_malloc", ptr);
}

}  // extern "C"
