#include "router/control/handlers.h"
#include "router/router.h"

namespace ff::router {

HandlerStatus handle_alloc_pd(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                              ReplyWriter& w) {
  uint32_t ctx = req.body_as_AllocPd()->context();
  if (find_context(s, ctx) == nullptr) return HandlerStatus::fail(EINVAL, "no such context");
  FabricError err;
  auto pd = s.router().fabric().alloc_pd(s.owner(), err);
  if (!pd) return HandlerStatus::fail(err.code, err.message);
  uint32_t handle = s.objects().add(std::make_unique<PdObject>(std::move(pd)), {ctx});
  w.set_body(proto::CreateAllocPdReply(w.fbb(), handle));
  return HandlerStatus::ok();
}

}  // namespace ff::router
