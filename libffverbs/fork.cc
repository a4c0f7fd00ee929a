// fork() support. Registered memory is shared with the router through
// MAP_SHARED memfd mappings, so a fork never copies-on-write a page under an
// RDMA operation: the parent stays correct without ibv_fork_init, which is
// what IBV_FORK_UNNEEDED means. The child gets private copies of those pages,
// as fork() promises for any memory (shared_memory_after_fork_child), and its
// inherited verbs objects are dead: it opens the device again
// (RouterLink::on_fork_child).
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "libffverbs/proc_maps.h"
#include "libffverbs/shared_memory.h"
#include "libffverbs/shim.h"

namespace {
std::atomic<bool> fork_init_called{false};

int madvise_range(void* base, size_t size, int advice) {
  if (!fork_init_called) return 0;
  auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t start = reinterpret_cast<uintptr_t>(base) & ~(page - 1);
  uintptr_t end = (reinterpret_cast<uintptr_t>(base) + size + page - 1) & ~(page - 1);
  if (::madvise(reinterpret_cast<void*>(start), end - start, advice) != 0) return errno;
  return 0;
}

// Whether a mapping is one of our memfds: ffv-mr are registered pages;
// ffr-* arenas and the router's rings (a child polling an inherited CQ must
// not take the parent's completions).
bool ours(const ff::verbs::MapsLine& m) {
  return std::strncmp(m.path, "/memfd:ffv-mr", 13) == 0 || std::strncmp(m.path, "/memfd:ffr-", 11) == 0;
}

// In a fork child: every mapping backed by one of our memfds (registered
// pages, ibv_malloc arenas, rings) becomes private memory holding the same
// bytes, as fork() promises. Without this the child would share those
// pages with the parent, its stack and heap included. The child is
// single-threaded here, and allocates nothing. Privatizing a mapping keeps
// its range, so reading the maps on resumes after it.
void privatize_shared_pages_in_child() {
  ff::verbs::for_each_mapping(
      [](const ff::verbs::MapsLine& m, void*) {
        if (ours(m)) ff::verbs::privatize(m.start, m.end);
        return true;
      },
      nullptr);
}

}  // namespace

namespace ff::verbs {

// fork() prepare (parent, forking thread): the parent goes on writing its
// own stack right after fork(), which would write into the child's copy
// while the page is still shared. So the forking thread's stack pages that
// are registered become private for the duration of the fork.
void SharedPages::before_fork() {
  mu_.lock();  // the table stays consistent across fork (unlocked in both)
  // The range the forking thread may write after fork(): its frames
  // below the stack pointer and everything above it up to the stack's
  // top. (The extent pthread_getattr_np reports for the main thread stops
  // at the first registered page inside [stack], so it cannot be used for
  // the lower bound.)
  auto sp = reinterpret_cast<uint64_t>(__builtin_frame_address(0));
  uint64_t lo = sp > (uint64_t{1} << 20) ? sp - (uint64_t{1} << 20) : 0;
  uint64_t hi = sp + (uint64_t{8} << 20);
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* stack = nullptr;
    size_t size = 0;
    if (pthread_attr_getstack(&attr, &stack, &size) == 0 && reinterpret_cast<uint64_t>(stack) + size > sp)
      hi = reinterpret_cast<uint64_t>(stack) + size;
    pthread_attr_destroy(&attr);
  }
  for (auto& [start, id] : live_) {
    const Region& reg = regions_.at(id);
    if (reg.apps_own) continue;  // the app's MAP_SHARED memory: shared with the child, as fork() does
    uint64_t a = std::max(start, lo), b = std::min(reg.end, hi);
    if (a >= b) continue;
    if (privatize(a, b) == 0) stack_pages_.push_back({a, b, id});
  }
}

// fork() parent: the stack pages go back to being shared with the router.
void SharedPages::after_fork_parent() {
  for (const auto& p : stack_pages_) {
    auto it = regions_.find(p.region);
    if (it != regions_.end()) reshare(p.start, p.end, it->second.fd(), it->second.offset + (p.start - it->second.start));
  }
  stack_pages_.clear();
  mu_.unlock();
}

// fork() child: the parent's regions are not ours (their segments belong
// to the parent's session), and their pages become private copies.
void SharedPages::after_fork_child() {
  stack_pages_.clear();
  regions_.clear();
  live_.clear();
  leases_.clear();
  pool_.reset();  // the parent's file: the child's registrations get their own
  mu_.unlock();
  privatize_shared_pages_in_child();
}

// The arenas' locks first: SharedPages' work may allocate (never the
// other way round).
void shared_memory_before_fork() {
  arenas::before_fork();
  SharedPages::get().before_fork();
}
void shared_memory_after_fork_parent() {
  SharedPages::get().after_fork_parent();
  arenas::after_fork_parent();
}
void shared_memory_after_fork_child() {
  SharedPages::get().after_fork_child();
  arenas::after_fork_child();
}

}  // namespace ff::verbs

extern "C" {

int ibv_fork_init(void) {
  fork_init_called = true;
  return 0;
}

ibv_fork_status ibv_is_fork_initialized(void) { return IBV_FORK_UNNEEDED; }

// Declared by rdma-core's ABI (not in the installed headers).
int ibv_dontfork_range(void* base, size_t size) { return madvise_range(base, size, MADV_DONTFORK); }
int ibv_dofork_range(void* base, size_t size) { return madvise_range(base, size, MADV_DOFORK); }

}  // extern "C"
