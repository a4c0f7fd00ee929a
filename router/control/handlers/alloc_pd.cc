#include "router/control/handlers.h"

namespace ff::router {

Status handle_alloc_pd(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                              ReplyWriter& w) {
  uint32_t ctx = req.body_as_AllocPd()->context();
  if (find_context(s, ctx) == nullptr) return Error{EINVAL, "no such context"};
  auto made = s.fabric().alloc_pd(s.owner());
  if (!made) return made.error();
  auto pd = std::move(*made);
  uint32_t handle = s.objects().add(std::make_unique<PdObject>(std::move(pd)), {ctx});
  w.set_body(proto::CreateAllocPdReply(w.fbb(), handle));
  return Status{};
}

}  // namespace ff::router
