// Protection domains.
#include <cstdlib>

#include "libffverbs/request.h"

using namespace ff::verbs;
namespace proto = ff::proto;

extern "C" {

ibv_pd* ibv_alloc_pd(ibv_context* context) {
  FfContext* ctx = to_ff(context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_pd>(EIO);
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::AllocPdReply>(fbb, proto::CreateAllocPd(fbb, ctx->handle));
  if (!reply) return fail_ptr<ibv_pd>(reply.error);
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
    int e = request<void>(fbb, proto::CreateDeallocPd(fbb, pd->handle)).error;
    if (e == EBUSY || e == EINVAL) return e;  // the PD stays valid
  }
  std::free(pd);
  return 0;
}

}  // extern "C"
