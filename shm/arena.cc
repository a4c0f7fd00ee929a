#include "shm/arena.h"

#include <iterator>

namespace ff::shm {

ArenaAllocator::ArenaAllocator(size_t size) : size_(size) {
  if (size > 0) free_.emplace(0, size);
}

std::optional<size_t> ArenaAllocator::allocate(size_t size, size_t alignment) {
  if (size == 0 || size > size_ || alignment < kCacheLine || (alignment & (alignment - 1)) != 0) return std::nullopt;
  size = round_up(size, kCacheLine);  // (no overflow: size <= size_)
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    auto [start, len] = *it;
    size_t aligned = round_up(start, alignment);
    if (aligned < start || aligned - start > len || len - (aligned - start) < size) continue;
    size_t end = aligned + size;
    size_t free_end = start + len;
    free_.erase(it);
    if (aligned > start) free_.emplace(start, aligned - start);
    if (free_end > end) free_.emplace(end, free_end - end);
    live_.emplace(aligned, size);
    in_use_ += size;
    return aligned;
  }
  return std::nullopt;
}

bool ArenaAllocator::release(size_t offset) {
  auto live = live_.find(offset);
  if (live == live_.end()) return false;
  size_t start = offset;
  size_t len = live->second;
  in_use_ -= len;
  live_.erase(live);
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == start + len) {  // merge with the block after
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {  // merge with the block before
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      len += prev->second;
      free_.erase(prev);
    }
  }
  free_.emplace(start, len);
  return true;
}

size_t ArenaAllocator::block_size(size_t offset) const {
  auto it = live_.find(offset);
  return it == live_.end() ? 0 : it->second;
}

Mapping SharedArena::create_segment(size_t usable_bytes) {
  return Mapping::create("ffr-arena", SegmentKind::kArena,
                         kDataOffset + round_up(usable_bytes, kPageSize));
}

SharedArena::SharedArena(Mapping mapping)
    : mapping_(std::move(mapping)), alloc_(mapping_.size() - kDataOffset) {}

void* SharedArena::allocate(size_t size) {
  size_t alignment = size >= kPageSize ? kPageSize : kCacheLine;
  std::lock_guard lock(mu_);
  auto off = alloc_.allocate(size, alignment);
  if (!off) return nullptr;
  return mapping_.base() + kDataOffset + *off;
}

void SharedArena::lock_for_fork() { mu_.lock(); }
void SharedArena::unlock_after_fork() { mu_.unlock(); }

bool SharedArena::contains(const void* p) const {
  auto* b = static_cast<const std::byte*>(p);
  return b >= mapping_.base() + kDataOffset && b < mapping_.base() + mapping_.size();
}

size_t SharedArena::usable_size(const void* p) const {
  if (!contains(p)) return 0;
  std::lock_guard lock(mu_);
  return alloc_.block_size(segment_offset(p) - kDataOffset);
}

size_t SharedArena::segment_offset(const void* p) const {
  return static_cast<size_t>(static_cast<const std::byte*>(p) - mapping_.base());
}

bool SharedArena::free(void* p) {
  if (!contains(p)) return false;
  std::lock_guard lock(mu_);
  return alloc_.release(segment_offset(p) - kDataOffset);
}

size_t SharedArena::bytes_in_use() const {
  std::lock_guard lock(mu_);
  return alloc_.bytes_in_use();
}

}  // namespace ff::shm
