// fork() support. Registered memory is shared with the router through
// MAP_SHARED memfd mappings, so a fork never copies-on-write a page under an
// RDMA operation: the parent stays correct without ibv_fork_init, which is
// what IBV_FORK_UNNEEDED means. The child gets private copies of those pages
// (mr.cc, shared_memory_after_fork_child), and its inherited verbs objects
// are dead: it opens the device again (RouterLink::on_fork_child).
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

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
}  // namespace

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
