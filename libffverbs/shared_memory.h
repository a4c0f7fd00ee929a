// libffverbs internals: memory the router shares with the app.
//
// The router must reach every byte an RDMA operation touches. Ordinary app
// memory is made shared page by page (page_sharing.cc): the pages covering a
// registration are copied into a sealed memfd, the memfd is mapped over the
// very same addresses (MAP_FIXED|MAP_SHARED), and the memfd goes to the
// router as a segment. Whole pages are copied, so data sharing a page with
// the buffer survives; a page is shared once, however many registrations
// cover it (regions are reference-counted), and becomes private memory again
// when its last registration goes. ibv_malloc memory and the shared heap's
// (the app's page-aligned allocations: shared_heap.cc) live in shared
// arenas from the start (arena.cc) and are registered with no copy at all.
// At fork() (fork.cc) the child gets private copies of all of it.
//
// Other threads may keep writing to the pages while they move: their
// writes wait in a userfaultfd write-protection fault until the new pages
// are in place (page_sharing.cc, HeldWrites). Caveats (README): where
// userfaultfd is unavailable those writes can be lost; memory the app
// itself mapped MAP_SHARED, and huge pages, are refused (EINVAL) rather than
// copied away from their other users.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "libffverbs/shim.h"

namespace ff::verbs {

// Shares the pages of [addr, addr + length) with the router; `lease` names
// what the registration holds. 0 or an errno; every successful acquire is
// paired with a release of its lease.
int acquire_shared_pages(uint64_t addr, uint64_t length, uint64_t& lease);
void release_shared_pages(uint64_t lease);

// Page remapping (page_sharing.cc). Each runs on a private stack, so the
// range may hold the caller's own stack, and holds other threads' writes to
// the range while it runs (userfaultfd), so none is lost. 0 or an errno.
// Turns [start, end) (a MAP_SHARED memfd mapping) into private anonymous
// memory with the same bytes.
int privatize(uint64_t start, uint64_t end);
// The reverse: writes the bytes of private [start, end) into `fd` at
// `offset` and maps the memfd back over the range.
int reshare(uint64_t start, uint64_t end, int fd, uint64_t offset);
// True when [start, end) is still mapped from `fd` at `offset`.
bool still_mapped_from(uint64_t start, uint64_t end, int fd, uint64_t offset);

// Process-wide table of shared page ranges: shared_pages.cc, and its fork()
// handlers in fork.cc. Thread-safe.
//
// A region is a page range shared from one file at one offset. The app may
// unmap registered memory and map new memory at the same addresses before
// it deregisters (UCX deregisters lazily): the old MRs keep the old pages,
// as a device's would, and a new registration there must share the new
// ones. So a region found at acquire to be no longer mapped as it was is
// split into runs: those still mapped stay the app's pages (live), the
// others are detached and wait only for the MRs that hold them. An MR holds
// its regions by a lease, which a split keeps up to date.
class SharedPages {
 public:
  static SharedPages& get();

  // Shares the page-aligned [start, end) and takes a reference on every
  // region covering it, named by `lease`. 0 or an errno.
  int acquire(uint64_t start, uint64_t end, uint64_t& lease);
  // Drops the lease's references; a region left without any goes.
  void release(uint64_t lease);

  // pthread_atfork handlers (fork.cc).
  void before_fork();
  void after_fork_parent();
  void after_fork_child();

 private:
  // Regions live at increasing offsets of one growing memfd (a new one
  // after kPoolSpan bytes), so the app holds a few fds however many
  // registrations it makes; a region's pages are punched out of the file
  // when it goes.
  static constexpr uint64_t kPoolSpan = uint64_t{1} << 40;
  using File = std::shared_ptr<ff::UniqueFd>;
  struct Region {
    uint64_t start = 0, end = 0;
    File file;            // the memfd (shared with the pool and other regions)
    uint64_t inode = 0;   // of the file, to recognize its mappings
    uint64_t offset = 0;  // of the region's first page in it
    int fd() const { return file->get(); }
    uint32_t segment = 0;  // router handle, valid for `epoch`
    uint64_t epoch = 0;
    uint32_t refs = 0;      // leases holding it
    bool live = true;       // the app's pages at [start, end) are these (in live_)
    bool pinned = false;    // arenas: never released
    bool apps_own = false;  // the app's MAP_SHARED memfd, shared in place: never moved
  };
  struct AppFile {
    File file;
    uint64_t offset = 0;
  };
  struct StackPages {
    uint64_t start, end, region;
  };

  SharedPages() = default;
  std::map<uint64_t, uint64_t>::iterator first_live_in(uint64_t start);
  uint64_t add(Region reg);
  int create(uint64_t start, uint64_t end);
  int adopt_arena(uint64_t start, uint64_t end, int fd);
  static int examine(uint64_t start, uint64_t end, AppFile& shared);
  int ensure_registered(Region& reg);
  void forget_segment(Region& reg);
  static bool intact(const Region& reg, uint64_t from, uint64_t to);
  void split(uint64_t id);
  void drop(uint64_t id);

  std::mutex mu_;
  std::map<uint64_t, Region> regions_;                // by id
  std::map<uint64_t, uint64_t> live_;                 // start -> id; disjoint, page-aligned
  std::map<uint64_t, std::vector<uint64_t>> leases_;  // lease -> the regions it holds
  uint64_t next_id_ = 1;
  File pool_;                            // where the next region goes
  uint64_t pool_next_ = 0;               // ... at this offset
  std::vector<StackPages> stack_pages_;  // privatized for the fork in progress
};

// Shared arenas (arena.cc): memfd segments mapped from the start, from
// which ibv_malloc and the shared heap carve buffers. The router maps an
// arena whole when memory in it is first registered (SharedPages adopts
// it as a pinned region), so such memory registers with no copy.
namespace arenas {
// A block of at least `size` bytes (page-aligned from a page up), or null
// when no arena has room and no new one can be made.
void* allocate(size_t size);
// Whether `p` lies in an arena, this process's or (in a fork child) its
// parent's. Lock-free: free() asks it about every pointer.
bool owns(const void* p);
// Frees a live block; false when `p` is not one.
bool free(void* p);
// Bytes usable from a live block, or 0.
size_t usable_size(const void* p);
// The lowest shared (not retired) arena that overlaps [from, to): its
// mapping and memfd.
bool find_live(uint64_t from, uint64_t to, uint64_t& start, uint64_t& end, int& fd);
// fork() (fork.cc): every allocator lock is held across it; in the child
// the arenas' pages are private copies now, blocks it holds stay usable
// memory and can be freed, and new blocks come from fresh arenas.
void before_fork();
void after_fork_parent();
void after_fork_child();
}  // namespace arenas

// pthread_atfork handlers for shared memory (fork.cc): the child gets
// private copies of registered pages and arenas; the forking thread's
// registered stack pages are private while fork() runs.
void shared_memory_before_fork();
void shared_memory_after_fork_parent();
void shared_memory_after_fork_child();

}  // namespace ff::verbs
