#include "router/control/handlers.h"

namespace ff::router {

// Registers [addr, addr + length) of the client's memory, which must lie in
// its registered segments; remote peers address it as [iova, iova + length).
Status handle_reg_mr(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                            ReplyWriter& w) {
  const auto* r = req.body_as_RegMr();
  auto* pd = s.objects().find<PdObject>(r->pd(), ObjectKind::kPd);
  if (pd == nullptr) return Error{EINVAL, "no such protection domain"};
  uint64_t addr = r->addr(), len = r->length();
  if (len == 0 || addr + len < addr) return Error{EINVAL, "bad MR range"};
  // The segments covering the range, in address order.
  std::vector<std::shared_ptr<FabricSegment>> covering;
  auto& index = s.segments_by_base();
  auto it = index.upper_bound(addr);
  if (it != index.begin()) --it;
  for (; it != index.end() && it->first < addr + len; ++it) {
    auto* seg = s.objects().find<SegmentObject>(it->second, ObjectKind::kSegment);
    if (seg != nullptr && seg->fabric->app_base() + seg->fabric->length() > addr)
      covering.push_back(seg->fabric);
  }
  auto made = s.fabric().reg_mr(*pd->fabric, covering, addr, len, r->iova(), r->access());
  if (!made) return made.error();
  auto mr = std::move(*made);
  uint32_t lkey = mr->lkey(), rkey = mr->rkey();
  uint32_t handle = s.objects().add(std::make_unique<MrObject>(std::move(mr)), {r->pd()});
  w.set_body(proto::CreateRegMrReply(w.fbb(), handle, lkey, rkey));
  return Status{};
}

Status handle_dereg_mr(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                              ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_DeregMr()->mr(), ObjectKind::kMr),
                        "memory region");
}

}  // namespace ff::router
