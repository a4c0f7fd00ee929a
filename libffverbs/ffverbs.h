/* libffverbs' own API, for apps that want zero-copy buffers.
 *
 * ibv_malloc() returns page-aligned (for a page or more, else 64-byte
 * aligned) memory from a shared arena the router already maps: registering
 * it with ibv_reg_mr costs no copy and no remap. Free it with ibv_free().
 * Resolve these with dlsym(RTLD_DEFAULT, "ibv_malloc") to stay runnable
 * without libffverbs. The arena grows in FFV_ARENA_MB chunks (default 64). */
#ifndef FFVERBS_H
#define FFVERBS_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
void* ibv_malloc(size_t size);
void ibv_free(void* ptr);
#ifdef __cplusplus
}
#endif
#endif
