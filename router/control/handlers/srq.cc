#include "router/control/handlers.h"

namespace ff::router {

// A shared receive queue. The reply carries its segment (the receive ring
// the app posts to with ibv_post_srq_recv).
Status handle_create_srq(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                ReplyWriter& w) {
  const auto* r = req.body_as_CreateSrq();
  auto* pd = s.objects().find<PdObject>(r->pd(), ObjectKind::kPd);
  if (pd == nullptr) return Error{EINVAL, "no such protection domain"};
  auto* ctx = find_context(s, pd->parents.empty() ? 0 : pd->parents.front());
  if (ctx == nullptr) return Error{EINVAL, "the PD's context is gone"};
  // XRC: its domain and CQ, both held while it lives.
  XrcdObject* xrcd = nullptr;
  CqObject* cq = nullptr;
  if (r->xrcd() != 0 || r->cq() != 0) {
    xrcd = s.objects().find<XrcdObject>(r->xrcd(), ObjectKind::kXrcd);
    cq = s.objects().find<CqObject>(r->cq(), ObjectKind::kCq);
    if (xrcd == nullptr || cq == nullptr) return Error{EINVAL, "an XRC SRQ needs an XRC domain and a CQ of this process"};
  }
  XrcSrqInit xrc{xrcd != nullptr ? xrcd->fabric->number() : 0, cq != nullptr ? cq->fabric.get() : nullptr};
  auto made = s.fabric().create_srq(*ctx->fabric, *pd->fabric, r->max_wr(), r->max_sge(), r->srq_limit(),
                                    s.objects().next_handle(), xrcd != nullptr ? &xrc : nullptr);
  if (!made) return made.error();
  auto srq = std::move(*made);
  UniqueFd segment = dup_for_reply(srq->segment_fd());
  if (!segment) return Error{EMFILE, "cannot duplicate the SRQ's fd"};
  uint32_t cap = srq->capacity(), sge = srq->max_sge(), number = srq->srq_num();
  policy::Charge charge;
  if (!charge_segment(s, srq->segment_fd(), charge)) return quota_exceeded(s);
  auto object = std::make_unique<SrqObject>(std::move(srq));
  object->charge = std::move(charge);
  uint32_t handle = s.objects().add(std::move(object), {r->pd(), r->xrcd(), r->cq()});
  w.set_body(proto::CreateCreateSrqReply(w.fbb(), handle, cap, cap, sge, number));
  w.add_fd(std::move(segment));
  return Status{};
}

// A resize (IBV_SRQ_MAX_WR) moves the SRQ to a new segment, charged before
// the move, passed to the app with the receives waiting in it.
Status handle_modify_srq(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_ModifySrq();
  auto* srq = s.objects().find<SrqObject>(r->srq(), ObjectKind::kSrq);
  if (srq == nullptr) return Error{EINVAL, "no such shared receive queue"};
  SegmentCharge next(s);
  Status st = s.fabric().modify_srq(*srq->fabric, r->attr_mask(), r->max_wr(), r->srq_limit(), next.admit());
  if (next.refusal()) return *next.refusal();
  if (!st) return st;
  w.set_body(proto::CreateModifySrqReply(w.fbb(), srq->fabric->capacity()));
  if ((r->attr_mask() & IBV_SRQ_MAX_WR) == 0) return Status{};
  srq->charge = next.take_charge();
  w.add_fd(next.take_fd());
  return Status{};
}

Status handle_query_srq(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                               ReplyWriter& w) {
  auto* srq = s.objects().find<SrqObject>(req.body_as_QuerySrq()->srq(), ObjectKind::kSrq);
  if (srq == nullptr) return Error{EINVAL, "no such shared receive queue"};
  w.set_body(proto::CreateQuerySrqReply(w.fbb(), srq->fabric->capacity(), srq->fabric->max_sge(),
                                        s.fabric().query_srq_limit(*srq->fabric)));
  return Status{};
}

// EBUSY while QPs still use the SRQ.
Status handle_destroy_srq(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                 ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_DestroySrq()->srq(), ObjectKind::kSrq),
                        "shared receive queue");
}

}  // namespace ff::router
