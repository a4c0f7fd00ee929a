// The shared arena behind ibv_malloc/ibv_free: one page-aligned memfd segment
// that the router creates, maps (and, on a real HCA, registers once), and
// passes to the client. Buffers carved from it need no copy and no remap when
// they are registered.
//
// Layout: page 0 holds the SegmentHeader; usable memory starts at page 1, so
// offset 0 of the allocator is page-aligned in both processes.
#pragma once

#include <cstddef>
#include <map>
#include <mutex>
#include <optional>

#include "shm/segment.h"

namespace ff::shm {

// First-fit allocator with coalescing over the offsets [0, size). Pure
// bookkeeping: it never touches the memory. Not thread-safe.
class ArenaAllocator {
 public:
  explicit ArenaAllocator(size_t size);

  // Offset of a block of at least `size` bytes aligned to `alignment` (a power
  // of two, at least 64), or nullopt when no free block fits.
  std::optional<size_t> allocate(size_t size, size_t alignment);
  // Returns a block; false when `offset` is not the start of a live block.
  bool release(size_t offset);
  // Size of the live block starting at `offset`, or 0.
  size_t block_size(size_t offset) const;

  size_t bytes_in_use() const { return in_use_; }
  size_t capacity() const { return size_; }
  size_t free_fragments() const { return free_.size(); }

 private:
  size_t size_;
  size_t in_use_ = 0;
  std::map<size_t, size_t> free_;  // offset -> length, never adjacent (coalesced)
  std::map<size_t, size_t> live_;  // offset -> length
};

// A mapped arena segment plus its allocator. Thread-safe.
class SharedArena {
 public:
  static constexpr size_t kDataOffset = kPageSize;

  // Router side: creates a segment with `usable_bytes` of buffer space.
  static Mapping create_segment(size_t usable_bytes);

  // Client side: takes a mapping that passed Mapping::attach(fd, kArena).
  explicit SharedArena(Mapping mapping);

  // Page-aligned for requests of a page or more, 64-byte aligned otherwise.
  // nullptr when the arena is full.
  void* allocate(size_t size);
  // false when `p` was not returned by allocate() (or was already freed).
  bool free(void* p);
  bool contains(const void* p) const;
  // Bytes usable from `p` (the start of a live block), or 0.
  size_t usable_size(const void* p) const;
  // Offset of `p` from the start of the segment (what the router uses).
  size_t segment_offset(const void* p) const;

  const Mapping& mapping() const { return mapping_; }
  size_t bytes_in_use() const;
  // Held across fork() by the forking thread (pthread_atfork), so that the
  // child inherits the allocator whole and unlocked.
  void lock_for_fork();
  void unlock_after_fork();

 private:
  Mapping mapping_;
  mutable std::mutex mu_;
  ArenaAllocator alloc_;
};

}  // namespace ff::shm
