#include "router/control/handlers.h"

namespace ff::router {

// EBUSY while MRs or QPs still use the PD, as verbs specifies.
Status handle_dealloc_pd(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_DeallocPd()->pd(), ObjectKind::kPd),
                        "protection domain");
}

}  // namespace ff::router
