// The shared heap: the app's page-aligned allocations of FFV_SHARED_HEAP_MIN
// bytes or more (posix_memalign, aligned_alloc, memalign, valloc, pvalloc:
// how verbs programs allocate the buffers they register) come from the
// shared arenas (arena.cc), so that registering them later copies nothing:
// the router maps the arena where the pages already are. What FreeFlow did
// by interposing the allocator, for the allocations that are buffers.
// Everything else goes to the allocator the app would have had without
// the shim, untouched: the next definition in lookup order (glibc's, or
// jemalloc's or tcmalloc's when the app links one: calloc, which is not
// interposed, comes from that one too, so every block is freed where it
// came from). free/realloc/malloc_usable_size tell the two apart by
// address (arenas::owns, lock-free).
//
// FFV_SHARED_HEAP picks what comes from the arenas: `aligned` (the
// default), `all` (malloc and realloc too, at FFV_SHARED_HEAP_MIN and up),
// or `off`. Not the default for malloc: arena memory is shmem, which gets
// no transparent huge pages, and a fork() copies it eagerly into the child
// (fork.cc); the app's ordinary arrays should not pay that. calloc always
// stays with glibc (its fresh pages are zero without a memset).
//
// Not built into sanitized shims: the sanitizer runtime owns malloc there,
// and would report a free of an arena block as a bad free.
#include <dlfcn.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "libffverbs/shared_memory.h"
#include "shm/segment.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FFV_NO_SHARED_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define FFV_NO_SHARED_HEAP 1
#endif
#endif

#ifndef FFV_NO_SHARED_HEAP

extern "C" {
void* __libc_malloc(size_t size);
void __libc_free(void* p);
void* __libc_realloc(void* p, size_t size);
void* __libc_memalign(size_t alignment, size_t size);
}

namespace {

using ff::shm::kPageSize;

// The allocator behind the shim: the next definitions after ours, looked
// up once (at the first allocation, while the process starts). dlsym may
// allocate while it looks: those few go to glibc's own entry points.
struct Next {
  void* (*malloc)(size_t) = __libc_malloc;
  void (*free)(void*) = __libc_free;
  void* (*realloc)(void*, size_t) = __libc_realloc;
  void* (*memalign)(size_t, size_t) = __libc_memalign;
  size_t (*usable_size)(void*) = nullptr;
};

const Next& next() {
  static Next resolved;
  static std::atomic<int> state{0};  // 0: not yet, 1: looking, 2: resolved
  int expected = 0;
  if (state.load(std::memory_order_acquire) == 2) return resolved;
  static const Next bootstrap;
  if (!state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) return bootstrap;
  Next n;
  auto look = [](const char* name, auto fallback) {
    void* f = ::dlsym(RTLD_NEXT, name);
    return f != nullptr ? reinterpret_cast<decltype(fallback)>(f) : fallback;
  };
  n.malloc = look("malloc", n.malloc);
  n.free = look("free", n.free);
  n.realloc = look("realloc", n.realloc);
  n.memalign = look("memalign", n.memalign);
  n.usable_size = reinterpret_cast<size_t (*)(void*)>(::dlsym(RTLD_NEXT, "malloc_usable_size"));
  resolved = n;
  state.store(2, std::memory_order_release);
  return resolved;
}

enum class Mode : int { kUnread = 0, kOff, kAligned, kAll };

struct Policy {
  Mode mode;
  size_t min_bytes;
};

// Read once, from the environment (getenv allocates nothing; the first
// allocations may come before any constructor of ours has run).
Policy policy() {
  static std::atomic<int> mode{static_cast<int>(Mode::kUnread)};
  static std::atomic<size_t> min_bytes{0};
  auto m = static_cast<Mode>(mode.load(std::memory_order_acquire));
  if (m == Mode::kUnread) {
    const char* v = std::getenv("FFV_SHARED_HEAP");
    m = v == nullptr || std::strcmp(v, "aligned") == 0 ? Mode::kAligned
        : std::strcmp(v, "all") == 0                    ? Mode::kAll
                                                        : Mode::kOff;  // "off", or anything else
    const char* min = std::getenv("FFV_SHARED_HEAP_MIN");
    char* end = nullptr;
    unsigned long long n = min != nullptr ? std::strtoull(min, &end, 10) : 0;
    // At least 64 KiB: the shim's own allocations (its tables, an arena's
    // bookkeeping) stay below that, and must not come back here.
    constexpr size_t kLeast = 64 << 10;
    min_bytes.store(min != nullptr && end != min && *end == '\0' && n > kLeast ? n : kLeast,
                    std::memory_order_relaxed);
    mode.store(static_cast<int>(m), std::memory_order_release);
  }
  return {m, min_bytes.load(std::memory_order_relaxed)};
}

// An arena block for an allocation the policy gives the shared heap, or
// null (the caller then asks glibc). Arena blocks are page-aligned from a
// page up; larger alignments stay with glibc.
void* shared_block(size_t size, size_t alignment, bool aligned_call) {
  Policy p = policy();
  if (p.mode == Mode::kOff || size < p.min_bytes || alignment > kPageSize) return nullptr;
  if (p.mode == Mode::kAligned && !(aligned_call && alignment == kPageSize)) return nullptr;
  return ff::verbs::arenas::allocate(size);
}

bool power_of_two(size_t n) { return n != 0 && (n & (n - 1)) == 0; }

void* aligned(size_t alignment, size_t size) {
  if (void* p = shared_block(size, alignment, true)) return p;
  return next().memalign(alignment, size);
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* malloc(size_t size) {
  if (void* p = shared_block(size, kPageSize, false)) return p;
  return next().malloc(size);
}

__attribute__((visibility("default"))) void free(void* p) {
  if (p == nullptr) return;
  if (ff::verbs::arenas::owns(p)) {
    ff::verbs::arenas::free(p);
    return;
  }
  next().free(p);
}

__attribute__((visibility("default"))) void* realloc(void* p, size_t size) {
  if (p == nullptr || !ff::verbs::arenas::owns(p)) return next().realloc(p, size);
  if (size == 0) {
    ff::verbs::arenas::free(p);
    return nullptr;
  }
  size_t old = ff::verbs::arenas::usable_size(p);
  if (size <= old && size >= old / 2) return p;
  void* q = malloc(size);
  if (q == nullptr) return nullptr;  // p stays the caller's, as realloc promises
  std::memcpy(q, p, size < old ? size : old);
  ff::verbs::arenas::free(p);
  return q;
}

__attribute__((visibility("default"))) void* reallocarray(void* p, size_t n, size_t size) {
  size_t bytes = 0;
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, bytes);
}

__attribute__((visibility("default"))) int posix_memalign(void** out, size_t alignment, size_t size) {
  if (alignment < sizeof(void*) || !power_of_two(alignment)) return EINVAL;
  int saved = errno;
  void* p = aligned(alignment, size);
  if (p == nullptr) return ENOMEM;
  errno = saved;  // posix_memalign reports by its result only
  *out = p;
  return 0;
}

__attribute__((visibility("default"))) void* aligned_alloc(size_t alignment, size_t size) {
  if (!power_of_two(alignment)) {
    errno = EINVAL;
    return nullptr;
  }
  return aligned(alignment, size);
}

__attribute__((visibility("default"))) void* memalign(size_t alignment, size_t size) {
  return aligned(alignment, size);
}

__attribute__((visibility("default"))) void* valloc(size_t size) { return aligned(kPageSize, size); }

__attribute__((visibility("default"))) void* pvalloc(size_t size) {
  if (size > SIZE_MAX - kPageSize) {
    errno = ENOMEM;
    return nullptr;
  }
  size_t rounded = (size + kPageSize - 1) & ~(kPageSize - 1);
  return aligned(kPageSize, rounded == 0 ? kPageSize : rounded);
}

__attribute__((visibility("default"))) size_t malloc_usable_size(void* p) {
  if (p != nullptr && ff::verbs::arenas::owns(p)) return ff::verbs::arenas::usable_size(p);
  auto usable = next().usable_size;
  return usable != nullptr ? usable(p) : 0;
}

}  // extern "C"

#endif  // FFV_NO_SHARED_HEAP
