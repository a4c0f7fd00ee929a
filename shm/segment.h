// Shared-memory segments: a memfd mapped MAP_SHARED, starting with a versioned
// header. The router creates and initializes segments; clients only attach and
// reject anything whose magic, version, kind or size is wrong.
//
// Everything inside a segment is found by offset: no pointers, no std::
// containers, no ibv_* structs ever live in shared memory.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace ff::shm {

inline constexpr uint64_t kSegmentMagic = 0x31474553'52464646ULL;  // "FFFRSEG1" little-endian
inline constexpr uint32_t kLayoutVersion = 1;
inline constexpr size_t kCacheLine = 64;
inline constexpr size_t kPageSize = 4096;

enum class SegmentKind : uint32_t { kRing = 1, kArena = 2 };

struct alignas(kCacheLine) SegmentHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t kind;      // SegmentKind
  uint64_t size;      // whole segment, header included
  uint32_t creator_pid;
  uint32_t reserved;
  uint64_t epoch;     // creator's monotonic nanoseconds at creation, tells segments apart in dumps
};
static_assert(sizeof(SegmentHeader) == kCacheLine, "header is exactly one cache line");
static_assert(std::atomic<uint64_t>::is_always_lock_free,
              "atomics in shared memory must be lock-free to be safe across processes");
static_assert(std::atomic<uint32_t>::is_always_lock_free,
              "atomics in shared memory must be lock-free to be safe across processes");

inline constexpr size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

// Owns one mapping of a memfd (and the fd). Move-only. Thread-safe to read.
class Mapping {
 public:
  Mapping() = default;
  ~Mapping();
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  // Creates a sealed-size memfd of `size` bytes (rounded up to pages), maps it
  // and writes the header. Throws std::system_error on failure.
  static Mapping create(const std::string& name, SegmentKind kind, size_t size);

  // Maps an fd received from the other side (the fd is duplicated; the caller
  // keeps its own). Throws std::system_error(EPROTO) when the header does not
  // describe a segment of `kind` of exactly the fd's size.
  static Mapping attach(int fd, SegmentKind kind);

  // Maps [offset, offset + size) of an fd with no header at all (memory
  // registrations). The fd is duplicated.
  static Mapping map_raw(int fd, size_t size, uint64_t offset = 0);

  // Writes a new header over whatever the segment holds (create, and a
  // segment made again for a new queue: router/fabric/core/spare_segments.h).
  void stamp_header(SegmentKind kind);

  // Faults every page in now, so that whoever fills it later (the poller,
  // moving a resized queue's entries) does not stall on page faults.
  void prefault() const;

  std::byte* base() const { return base_; }
  size_t size() const { return size_; }
  int fd() const { return fd_; }
  const SegmentHeader& header() const { return *reinterpret_cast<const SegmentHeader*>(base_); }

  template <typename T>
  T* at(size_t offset) const { return reinterpret_cast<T*>(base_ + offset); }

 private:
  Mapping(int fd, std::byte* base, size_t size) : fd_(fd), base_(base), size_(size) {}
  void reset() noexcept;
  int fd_ = -1;
  std::byte* base_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ff::shm
