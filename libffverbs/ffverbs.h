/* libffverbs' own API, for apps that want zero-copy buffers.
 *
 * ibv_malloc() returns page-aligned (for a page or more, else 64-byte
 * aligned) memory from a shared arena the router already maps: registering
 * it with ibv_reg_mr costs no copy and no remap. Free it with ibv_free().
 * The arena grows in FFV_ARENA_MB chunks (default 64).
 *
 * One binary runs with and without the router: call ffv_malloc() and
 * ffv_free() instead. They are inline and refer to ibv_malloc/ibv_free
 * weakly, so the app links against nothing new: with libffverbs preloaded
 * they are its arena; without it, ordinary aligned memory (ffv_zero_copy()
 * says which). Build with `pkg-config --cflags ffverbs`, as a PIE (Debian's
 * default): in a non-PIE executable the linker resolves the weak references
 * to 0 for good, and ffv_malloc always gives ordinary memory. */
#ifndef FFVERBS_H
#define FFVERBS_H
/* Plain C inline code: a C++ includer's warnings (old-style casts) are not for it. */
#pragma GCC system_header
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>
#ifdef __cplusplus
extern "C" {
#endif

#ifdef FFVERBS_BUILDING_SHIM
void* ibv_malloc(size_t size);
void ibv_free(void* ptr);
#else
void* ibv_malloc(size_t size) __attribute__((weak));
void ibv_free(void* ptr) __attribute__((weak));

/* 1 when libffverbs is loaded: ffv_malloc memory needs no copy to register. */
static inline int ffv_zero_copy(void) { return ibv_malloc != NULL && ibv_free != NULL; }

/* ibv_malloc with libffverbs; else page-aligned (a page or more) or
 * 64-byte aligned memory from posix_memalign. NULL (errno set) on failure. */
static inline void* ffv_malloc(size_t size) {
  if (ffv_zero_copy()) return ibv_malloc(size);
  void* p = NULL;
  long page = sysconf(_SC_PAGESIZE);
  size_t align = page > 0 && size >= (size_t)page ? (size_t)page : 64;
  int rc = posix_memalign(&p, align, size == 0 ? 1 : size);
  if (rc != 0) {
    errno = rc;
    return NULL;
  }
  return p;
}

/* Frees what ffv_malloc returned (within one run of the program: whether
 * libffverbs is loaded does not change while it runs). */
static inline void ffv_free(void* ptr) {
  if (ffv_zero_copy()) {
    ibv_free(ptr);
  } else {
    free(ptr);
  }
}
#endif

#ifdef __cplusplus
}
#endif
#endif
