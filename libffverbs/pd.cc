// Protection domains.
#include <cstdlib>

#include "libffverbs/shim.h"

using namespace ff::verbs;

extern "C" {

ibv_pd* ibv_alloc_pd(ibv_context* context) {
  FfContext* ctx = to_ff(context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_pd>(EIO);
  flatbuffers::FlatBufferBuilder fbb;
  auto r = RouterLink::get().call(fbb, ff::proto::RequestBody::AllocPd,
                                  ff::proto::CreateAllocPd(fbb, ctx->handle).Union());
  const auto* reply = r.error == 0 ? r.reply()->body_as_AllocPdReply() : nullptr;
  if (reply == nullptr) return fail_ptr<ibv_pd>(r.error != 0 ? r.error : EPROTO);
  auto* pd = static_cast<FfPd*>(std::calloc(1, sizeof(FfPd)));
  if (pd == nullptr) return fail_ptr<ibv_pd>(ENOMEM);
  pd->pd.context = context;
  pd->pd.handle = reply->pd();
  pd->handle = reply->pd();
  return &pd->pd;
}

int ibv_dealloc_pd(ibv_pd* ibpd) {
  FfPd* pd = to_ff(ibpd);
  if (!context_is_stale(*to_ff(ibpd->context))) {
    flatbuffers::FlatBufferBuilder fbb;
    auto r = RouterLink::get().call(fbb, ff::proto::RequestBody::DeallocPd,
                                    ff::proto::CreateDeallocPd(fbb, pd->handle).Union());
    if (r.error == EBUSY || r.error == EINVAL) return r.error;  // the PD stays valid
  }
  std::free(pd);
  return 0;
}

}  // extern "C"
