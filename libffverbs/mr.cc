// Memory registration: the ibv_reg_mr* and ibv_dereg_mr entry points. The
// registered pages are shared with the router first (page_sharing.cc, see
// shared_memory.h); ibv_malloc memory (arena.cc) already is.
#include <cstdlib>

#include "libffverbs/request.h"
#include "libffverbs/shared_memory.h"

using namespace ff::verbs;
namespace proto = ff::proto;

namespace {

// Registers [addr, addr + length) into `out` (its ibv_mr and lease); 0 or
// an errno. `out` is untouched on failure.
int register_into(FfMr& out, ibv_pd* ibpd, void* addr, size_t length, uint64_t iova, unsigned access) {
  FfPd* pd = to_ff(ibpd);
  if (context_is_stale(*to_ff(ibpd->context))) return EIO;
  if (length == 0) return EINVAL;
  auto a = reinterpret_cast<uint64_t>(addr);
  uint64_t pages = 0;
  if (int e = acquire_shared_pages(a, length, pages); e != 0) return e;
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::RegMrReply>(fbb, proto::CreateRegMr(fbb, pd->handle, a, length, iova, access),
                                          "reg_mr failed");
  if (!reply) {
    release_shared_pages(pages);
    return reply.error;
  }
  out.mr.context = ibpd->context;
  out.mr.pd = ibpd;
  out.mr.addr = addr;
  out.mr.length = length;
  out.mr.handle = reply->mr();
  out.mr.lkey = reply->lkey();
  out.mr.rkey = reply->rkey();
  out.handle = reply->mr();
  out.pages = pages;
  out.iova = iova;
  out.access = access;
  hold_parent_domain(ibpd);
  return 0;
}

ibv_mr* register_mr(ibv_pd* pd, void* addr, size_t length, uint64_t iova, unsigned access) {
  auto* mr = static_cast<FfMr*>(std::calloc(1, sizeof(FfMr)));
  if (mr == nullptr) return fail_ptr<ibv_mr>(ENOMEM);
  if (int e = register_into(*mr, pd, addr, length, iova, access); e != 0) {
    std::free(mr);
    return fail_ptr<ibv_mr>(e);
  }
  return &mr->mr;
}

// The router's half of ibv_dereg_mr; EBUSY or EINVAL leave the MR valid.
int deregister(FfMr& mr) {
  if (!context_is_stale(*to_ff(mr.mr.context))) {
    flatbuffers::FlatBufferBuilder fbb;
    int e = request<void>(fbb, proto::CreateDeregMr(fbb, mr.handle)).error;
    if (e == EBUSY || e == EINVAL) return e;
  }
  release_shared_pages(mr.pages);
  release_parent_domain(mr.mr.pd);
  return 0;
}

}  // namespace

namespace ff::verbs {
ibv_mr* register_range(ibv_pd* pd, void* addr, size_t length, uint64_t iova, unsigned access) {
  return register_mr(pd, addr, length, iova, access);
}
}  // namespace ff::verbs

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
  if (int e = deregister(*mr); e != 0) return e;
  if (mr->on_dm != nullptr) mr->on_dm->fetch_sub(1, std::memory_order_relaxed);
  std::free(mr);
  return 0;
}

// A new registration with what changes, then the old one goes: the MR
// keeps its address (the app's ibv_mr) and gets new keys, as the kernel may
// give. Errors follow rdma-core: the input checks libibverbs makes are
// IBV_REREG_MR_ERR_INPUT, what the kernel (here the router) refuses is
// IBV_REREG_MR_ERR_CMD with errno set; either way the old registration
// still works.
int ibv_rereg_mr(ibv_mr* ibmr, int flags, ibv_pd* pd, void* addr, size_t length, int access) {
  FfMr* mr = to_ff(ibmr);
  bool translation = (flags & IBV_REREG_MR_CHANGE_TRANSLATION) != 0;
  bool new_access = (flags & IBV_REREG_MR_CHANGE_ACCESS) != 0;
  if ((flags & ~IBV_REREG_MR_FLAGS_SUPPORTED) != 0 || (translation && (length == 0 || addr == nullptr)) ||
      (access != 0 && !new_access) || mr->on_dm != nullptr) {  // a DM MR is registered anew with ibv_reg_dm_mr
    errno = EINVAL;
    return IBV_REREG_MR_ERR_INPUT;
  }
  // The kernel's uverbs refuses a re-registration that changes nothing, and
  // a PD it cannot find.
  if (flags == 0 || ((flags & IBV_REREG_MR_CHANGE_PD) != 0 && pd == nullptr)) {
    errno = EINVAL;
    return IBV_REREG_MR_ERR_CMD;
  }
  FfMr fresh{};
  int e = register_into(fresh, (flags & IBV_REREG_MR_CHANGE_PD) != 0 ? pd : ibmr->pd,
                        translation ? addr : ibmr->addr, translation ? length : ibmr->length,
                        translation ? reinterpret_cast<uint64_t>(addr) : mr->iova,
                        new_access ? static_cast<unsigned>(access) : mr->access);
  if (e == 0) {
    e = deregister(*mr);
    if (e != 0) (void)deregister(fresh);  // the old one is in use (windows bound): it stays
  }
  if (e != 0) {
    errno = e;
    return IBV_REREG_MR_ERR_CMD;
  }
  *mr = fresh;
  return 0;
}

}  // extern "C"
