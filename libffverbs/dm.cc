// Device memory (ibv_alloc_dm, ibv_memcpy_to_dm/from_dm, ibv_reg_dm_mr,
// ibv_free_dm), on either fabric: the shim serves it from its shared arena
// (the ibv_malloc memory the router already maps, counted against the
// tenant's shared-memory quota like any registered memory). A DM MR is
// zero-based (IBV_ACCESS_ZERO_BASED, as mlx5 requires): local and remote
// addresses are offsets from the MR's start, which is registered with iova 0.
// The registered range must start on a page of the DM (dm_offset a multiple
// of 4096), since a device translates whole pages.
#include <cstdlib>
#include <cstring>

#include "libffverbs/ffverbs.h"
#include "libffverbs/shim.h"
#include "shm/segment.h"

using namespace ff::verbs;
namespace shm = ff::shm;

namespace {

struct FfDm {
  ibv_dm dm;  // first: apps hold &dm
  std::byte* base;
  uint64_t length;
  std::atomic<uint32_t> mrs{0};
};

FfDm* to_ff(ibv_dm* dm) { return reinterpret_cast<FfDm*>(dm); }

bool inside(const FfDm& dm, uint64_t offset, size_t length) {
  return offset <= dm.length && length <= dm.length - offset;
}

int memcpy_to_dm(ibv_dm* ibdm, uint64_t offset, const void* host, size_t length) {
  FfDm* dm = to_ff(ibdm);
  if (!inside(*dm, offset, length)) return EINVAL;
  std::memcpy(dm->base + offset, host, length);
  return 0;
}

int memcpy_from_dm(void* host, ibv_dm* ibdm, uint64_t offset, size_t length) {
  FfDm* dm = to_ff(ibdm);
  if (!inside(*dm, offset, length)) return EINVAL;
  std::memcpy(host, dm->base + offset, length);
  return 0;
}

ibv_dm* alloc_dm(ibv_context* context, ibv_alloc_dm_attr* attr) {
  if (attr == nullptr || attr->comp_mask != 0 || attr->length == 0 || attr->log_align_req > 12)
    return fail_ptr<ibv_dm>(EINVAL);
  if (attr->length > kMaxDmSize) return fail_ptr<ibv_dm>(ENOMEM);
  auto* dm = new (std::nothrow) FfDm();
  if (dm == nullptr) return fail_ptr<ibv_dm>(ENOMEM);
  // Whole pages: page-aligned, so that any page of it can start an MR.
  dm->length = attr->length;
  dm->base = static_cast<std::byte*>(ibv_malloc(shm::round_up(attr->length, shm::kPageSize)));
  if (dm->base == nullptr) {
    delete dm;
    return fail_ptr<ibv_dm>(ENOMEM);
  }
  std::memset(dm->base, 0, attr->length);
  dm->dm.context = context;
  dm->dm.memcpy_to_dm = memcpy_to_dm;
  dm->dm.memcpy_from_dm = memcpy_from_dm;
  dm->dm.comp_mask = 0;
  return &dm->dm;
}

// EBUSY while an MR is registered on it.
int free_dm(ibv_dm* ibdm) {
  FfDm* dm = to_ff(ibdm);
  if (dm->mrs.load(std::memory_order_relaxed) != 0) return EBUSY;
  ibv_free(dm->base);
  delete dm;
  return 0;
}

ibv_mr* reg_dm_mr(ibv_pd* pd, ibv_dm* ibdm, uint64_t dm_offset, size_t length, unsigned int access) {
  FfDm* dm = to_ff(ibdm);
  if (ibdm == nullptr || (access & IBV_ACCESS_ZERO_BASED) == 0 || length == 0 || !inside(*dm, dm_offset, length) ||
      dm_offset % shm::kPageSize != 0)
    return fail_ptr<ibv_mr>(EINVAL);
  ibv_mr* mr = register_range(pd, dm->base + dm_offset, length, 0, access & ~static_cast<unsigned>(IBV_ACCESS_ZERO_BASED));
  if (mr == nullptr) return nullptr;
  dm->mrs.fetch_add(1, std::memory_order_relaxed);
  reinterpret_cast<FfMr*>(mr)->on_dm = &dm->mrs;
  return mr;
}

}  // namespace

namespace ff::verbs {

void init_dm_ops(verbs_context& v) {
  v.alloc_dm = alloc_dm;
  v.free_dm = free_dm;
  v.reg_dm_mr = reg_dm_mr;
}

}  // namespace ff::verbs
