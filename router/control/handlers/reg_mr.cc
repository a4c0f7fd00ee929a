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
  uint32_t handle = req.body_as_DeregMr()->mr();
  // rdma-core's rule (rxe, mlx5): not while memory windows are bound to it.
  if (auto* mr = s.objects().find<MrObject>(handle, ObjectKind::kMr); mr != nullptr && mr->fabric->windows_bound() > 0)
    return Error{EINVAL, "memory windows are bound to this memory region: invalidate or deallocate them first"};
  return destroy_status(s.objects().remove(handle, ObjectKind::kMr), "memory region");
}

// A memory window of a PD (the PD then cannot go before it).
Status handle_alloc_mw(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_AllocMw();
  auto* pd = s.objects().find<PdObject>(r->pd(), ObjectKind::kPd);
  if (pd == nullptr) return Error{EINVAL, "no such protection domain"};
  auto made = s.fabric().alloc_mw(*pd->fabric, r->type());
  if (!made) return made.error();
  uint32_t rkey = (*made)->rkey();
  uint32_t handle = s.objects().add(std::make_unique<MwObject>(std::move(*made)), {r->pd()});
  w.set_body(proto::CreateAllocMwReply(w.fbb(), handle, rkey));
  return Status{};
}

// Always succeeds on a window of the client's, bound or not (the bind goes with it).
Status handle_dealloc_mw(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_DeallocMw()->mw(), ObjectKind::kMw), "memory window");
}

}  // namespace ff::router
