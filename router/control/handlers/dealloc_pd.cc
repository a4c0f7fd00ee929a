#include "router/control/handlers.h"

namespace ff::router {

// EBUSY while MRs, QPs or AHs still use the PD, as verbs specifies.
HandlerStatus handle_dealloc_pd(Session& s, const proto::Request& req, ReplyWriter&) {
  int e = s.objects().remove(req.body_as_DeallocPd()->pd(), ObjectKind::kPd);
  if (e == ENOENT) return HandlerStatus::fail(EINVAL, "no such protection domain");
  if (e == EBUSY) return HandlerStatus::fail(EBUSY, "protection domain still in use");
  return HandlerStatus::ok();
}

}  // namespace ff::router
