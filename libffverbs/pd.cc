// Protection domains, thread domains and parent domains (a PD's stand-in
// with a thread domain and allocators, as UCX and others use them).
#include <new>

#include "libffverbs/request.h"

using namespace ff::verbs;
namespace proto = ff::proto;

namespace ff::verbs {

void hold_parent_domain(ibv_pd* pd) {
  if (to_ff(pd)->protection != nullptr) to_ff(pd)->refs.fetch_add(1, std::memory_order_relaxed);
}
void release_parent_domain(ibv_pd* pd) {
  if (to_ff(pd)->protection != nullptr) to_ff(pd)->refs.fetch_sub(1, std::memory_order_relaxed);
}

ibv_td* ffv_alloc_td(ibv_context* context, ibv_td_init_attr* attr) {
  if (attr == nullptr || attr->comp_mask != 0) return fail_ptr<ibv_td>(EINVAL);
  if (context_is_stale(*to_ff(context))) return fail_ptr<ibv_td>(EIO);
  auto* td = new (std::nothrow) FfTd();
  if (td == nullptr) return fail_ptr<ibv_td>(ENOMEM);
  td->td.context = context;
  return &td->td;
}

int ffv_dealloc_td(ibv_td* ibtd) {
  FfTd* td = to_ff(ibtd);
  if (td->refs.load(std::memory_order_relaxed) > 1) return EBUSY;  // parent domains hold it
  delete td;
  return 0;
}

ibv_pd* ffv_alloc_parent_domain(ibv_context* context, ibv_parent_domain_init_attr* attr) {
  constexpr uint32_t kKnown = IBV_PARENT_DOMAIN_INIT_ATTR_ALLOCATORS | IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT;
  if (attr == nullptr || attr->pd == nullptr || (attr->comp_mask & ~kKnown) != 0) return fail_ptr<ibv_pd>(EINVAL);
  FfPd* contained = to_ff(attr->pd);
  // A parent domain holds a PD, not another parent domain, of this context.
  if (contained->protection != nullptr || attr->pd->context != context ||
      (attr->td != nullptr && attr->td->context != context))
    return fail_ptr<ibv_pd>(EINVAL);
  auto* pd = new (std::nothrow) FfPd();
  if (pd == nullptr) return fail_ptr<ibv_pd>(ENOMEM);
  pd->pd.context = context;
  pd->pd.handle = contained->pd.handle;
  pd->handle = contained->handle;
  pd->protection = contained;
  contained->refs.fetch_add(1, std::memory_order_relaxed);
  if (attr->td != nullptr) {
    pd->td = to_ff(attr->td);
    pd->td->refs.fetch_add(1, std::memory_order_relaxed);
  }
  if ((attr->comp_mask & IBV_PARENT_DOMAIN_INIT_ATTR_PD_CONTEXT) != 0) pd->pd_context = attr->pd_context;
  return &pd->pd;
}

}  // namespace ff::verbs

extern "C" {

ibv_pd* ibv_alloc_pd(ibv_context* context) {
  FfContext* ctx = to_ff(context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_pd>(EIO);
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::AllocPdReply>(fbb, proto::CreateAllocPd(fbb, ctx->handle));
  if (!reply) return fail_ptr<ibv_pd>(reply.error);
  auto* pd = new (std::nothrow) FfPd();
  if (pd == nullptr) return fail_ptr<ibv_pd>(ENOMEM);
  pd->pd.context = context;
  pd->pd.handle = reply->pd();
  pd->handle = reply->pd();
  return &pd->pd;
}

// EBUSY while something holds it: for a PD, its parent domains (then the
// router: its MRs, QPs, ...); for a parent domain, the MRs, QPs and CQs
// made with it.
int ibv_dealloc_pd(ibv_pd* ibpd) {
  FfPd* pd = to_ff(ibpd);
  if (pd->refs.load(std::memory_order_relaxed) > 1) return EBUSY;
  if (pd->protection != nullptr) {
    pd->protection->refs.fetch_sub(1, std::memory_order_relaxed);
    if (pd->td != nullptr) pd->td->refs.fetch_sub(1, std::memory_order_relaxed);
    delete pd;
    return 0;
  }
  if (!context_is_stale(*to_ff(ibpd->context))) {
    flatbuffers::FlatBufferBuilder fbb;
    int e = request<void>(fbb, proto::CreateDeallocPd(fbb, pd->handle)).error;
    if (e == EBUSY || e == EINVAL) return e;  // the PD stays valid
  }
  delete pd;
  return 0;
}

}  // extern "C"
