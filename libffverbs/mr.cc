// Memory registration: the ibv_reg_mr* and ibv_dereg_mr entry points. The
// registered pages are shared with the router first (page_sharing.cc, see
// shared_memory.h); ibv_malloc memory (arena.cc) already is.
#include <cstdlib>

#include "libffverbs/request.h"
#include "libffverbs/shared_memory.h"

using namespace ff::verbs;
namespace proto = ff::proto;

namespace {

ibv_mr* register_mr(ibv_pd* ibpd, void* addr, size_t length, uint64_t iova, unsigned access) {
  FfPd* pd = to_ff(ibpd);
  if (context_is_stale(*to_ff(ibpd->context))) return fail_ptr<ibv_mr>(EIO);
  if (length == 0) return fail_ptr<ibv_mr>(EINVAL);
  auto a = reinterpret_cast<uint64_t>(addr);
  auto* mr = static_cast<FfMr*>(std::calloc(1, sizeof(FfMr)));
  if (mr == nullptr) return fail_ptr<ibv_mr>(ENOMEM);
  uint64_t pages = 0;
  if (int e = acquire_shared_pages(a, length, pages); e != 0) {
    std::free(mr);
    return fail_ptr<ibv_mr>(e);
  }
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::RegMrReply>(fbb, proto::CreateRegMr(fbb, pd->handle, a, length, iova, access),
                                          "reg_mr failed");
  if (!reply) {
    release_shared_pages(pages);
    std::free(mr);
    return fail_ptr<ibv_mr>(reply.error);
  }
  mr->mr.context = ibpd->context;
  mr->mr.pd = ibpd;
  mr->mr.addr = addr;
  mr->mr.length = length;
  mr->mr.handle = reply->mr();
  mr->mr.lkey = reply->lkey();
  mr->mr.rkey = reply->rkey();
  mr->handle = reply->mr();
  mr->pages = pages;
  return &mr->mr;
}

}  // namespace

#undef ibv_reg_mr
#undef ibv_reg_mr_iova

extern "C" {

ibv_mr* ibv_reg_mr(ibv_pd* pd, void* addr, size_t length, int access) {
  return register_mr(pd, addr, length, reinterpret_cast<uint64_t>(addr), static_cast<unsigned>(access));
}

ibv_mr* ibv_reg_mr_iova(ibv_pd* pd, void* addr, size_t length, uint64_t iova, int access) {
  return register_mr(pd, addr, length, iova, static_cast<unsigned>(access));
}

ibv_mr* ibv_reg_mr_iova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova, unsigned int access) {
  return register_mr(pd, addr, length, iova, access);
}

int ibv_dereg_mr(ibv_mr* ibmr) {
  FfMr* mr = to_ff(ibmr);
  if (!context_is_stale(*to_ff(ibmr->context))) {
    flatbuffers::FlatBufferBuilder fbb;
    int e = request<void>(fbb, proto::CreateDeregMr(fbb, mr->handle)).error;
    if (e == EBUSY || e == EINVAL) return e;  // the MR stays valid
  }
  release_shared_pages(mr->pages);
  std::free(mr);
  return 0;
}

// Re-registration would change keys and ranges in place; apps can
// deregister and register instead.
int ibv_rereg_mr(ibv_mr*, int, ibv_pd*, void*, size_t, int) { return fail_int(EOPNOTSUPP); }

}  // extern "C"
