/* Which allocations come from libffverbs' shared heap (libffverbs/
 * shared_heap.cc): prints, for each kind of allocation, "arena" when its
 * pages are a shared arena's (a /memfd:ffr-arena mapping) and "private"
 * otherwise; then checks that realloc and free of each keep working. Run
 * with and without the shim, under each FFV_SHARED_HEAP
 * (tests/e2e/test_shared_heap.sh); a fork child's writes must stay its
 * own. Exit 1 if a byte was lost or crossed. */
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char* where(const void* p) {
  FILE* f = fopen("/proc/self/maps", "r");
  char line[512];
  const char* kind = "unmapped";
  while (f != NULL && fgets(line, sizeof line, f) != NULL) {
    unsigned long lo = 0, hi = 0;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && (uintptr_t)p >= lo && (uintptr_t)p < hi) {
      kind = strstr(line, "ffr-arena") != NULL ? "arena" : "private";
      break;
    }
  }
  if (f != NULL) fclose(f);
  return kind;
}

static int filled(const unsigned char* p, size_t n, unsigned char v) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != v) return 0;
  return 1;
}

/* A fork child's writes stay its own (the arenas are MAP_SHARED memfds:
 * the shim's fork handlers give the child private copies, whether or not
 * the program ever used verbs), and it can allocate and free, inherited
 * blocks too. First thing in main: nothing else may have set the shim up. */
static int fork_keeps_memory_apart(void) {
  const size_t big = 1u << 20;
  unsigned char* a = NULL;
  if (posix_memalign((void**)&a, 4096, big) != 0) return 0;
  memset(a, 0x22, big);
  pid_t child = fork();
  if (child == 0) {
    memset(a, 0x77, big);
    __asm__ volatile("" : : "r"(a) : "memory");  /* a store before free() is not dead here */
    void* more = NULL;
    int fine = posix_memalign(&more, 4096, big) == 0;
    if (fine) memset(more, 1, big);
    free(more);
    free(a);
    _exit(fine ? 0 : 1);
  }
  int status = 0;
  int ok = child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!filled(a, big, 0x22)) {
    fprintf(stderr, "a fork child wrote into the parent's memory\n");
    ok = 0;
  }
  free(a);
  return ok;
}

int main(void) {
  int forked_ok = fork_keeps_memory_apart();
  const size_t big = 1u << 20;
  void* m = malloc(big);
  void* a = NULL;
  void* s = NULL;
  void* al = aligned_alloc(4096, big);
  void* c = calloc(1, big);
  if (m == NULL || posix_memalign(&a, 4096, big) != 0 || posix_memalign(&s, 4096, 4096) != 0 || al == NULL ||
      c == NULL) {
    fprintf(stderr, "an allocation failed\n");
    return 1;
  }
  printf("malloc %s\nposix_memalign %s\nsmall %s\naligned_alloc %s\ncalloc %s\n", where(m), where(a), where(s),
         where(al), where(c));
  int ok = forked_ok && filled(c, big, 0);
  memset(m, 0x11, big);
  memset(a, 0x22, big);

  memset(al, 0x33, big);
  ok &= malloc_usable_size(a) >= big && malloc_usable_size(m) >= big;
  unsigned char* grown = realloc(a, 3 * big);
  unsigned char* shrunk = realloc(m, big / 4);
  ok &= grown != NULL && filled(grown, big, 0x22) && shrunk != NULL && filled(shrunk, big / 4, 0x11);
  free(grown);
  free(shrunk);
  free(s);
  free(al);
  free(c);
  printf("bytes kept: %s\n", ok ? "yes" : "no");
  return ok ? 0 : 1;
}
