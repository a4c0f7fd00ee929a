#include "router/control/handlers.h"
#include "router/router.h"

namespace ff::router {

// A shared receive queue. The reply carries its segment (the receive ring
// the app posts to with ibv_post_srq_recv).
HandlerStatus handle_create_srq(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                ReplyWriter& w) {
  const auto* r = req.body_as_CreateSrq();
  auto* pd = s.objects().find<PdObject>(r->pd(), ObjectKind::kPd);
  if (pd == nullptr) return HandlerStatus::fail(EINVAL, "no such protection domain");
  auto* ctx = find_context(s, pd->parents.empty() ? 0 : pd->parents.front());
  if (ctx == nullptr) return HandlerStatus::fail(EINVAL, "the PD's context is gone");
  FabricError err;
  auto srq = s.router().fabric().create_srq(*ctx->fabric, *pd->fabric, r->max_wr(), r->max_sge(),
                                            r->srq_limit(), s.objects().next_handle(), err);
  if (!srq) return HandlerStatus::fail(err.code, err.message);
  UniqueFd segment = dup_for_reply(srq->segment_fd());
  if (!segment) return HandlerStatus::fail(EMFILE, "cannot duplicate the SRQ's fd");
  uint32_t cap = srq->capacity(), sge = srq->max_sge();
  policy::Charge charge;
  if (!charge_segment(s, srq->segment_fd(), charge)) return quota_exceeded(s);
  auto object = std::make_unique<SrqObject>(std::move(srq));
  object->charge = std::move(charge);
  uint32_t handle = s.objects().add(std::move(object), {r->pd()});
  w.set_body(proto::CreateCreateSrqReply(w.fbb(), handle, cap, cap, sge));
  w.add_fd(std::move(segment));
  return HandlerStatus::ok();
}

HandlerStatus handle_modify_srq(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                ReplyWriter&) {
  const auto* r = req.body_as_ModifySrq();
  auto* srq = s.objects().find<SrqObject>(r->srq(), ObjectKind::kSrq);
  if (srq == nullptr) return HandlerStatus::fail(EINVAL, "no such shared receive queue");
  std::string why;
  int e = s.router().fabric().modify_srq(*srq->fabric, r->attr_mask(), r->srq_limit(), why);
  return e == 0 ? HandlerStatus::ok() : HandlerStatus::fail(e, why);
}

HandlerStatus handle_query_srq(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                               ReplyWriter& w) {
  auto* srq = s.objects().find<SrqObject>(req.body_as_QuerySrq()->srq(), ObjectKind::kSrq);
  if (srq == nullptr) return HandlerStatus::fail(EINVAL, "no such shared receive queue");
  w.set_body(proto::CreateQuerySrqReply(w.fbb(), srq->fabric->capacity(), srq->fabric->max_sge(),
                                        s.router().fabric().query_srq_limit(*srq->fabric)));
  return HandlerStatus::ok();
}

// EBUSY while QPs still use the SRQ.
HandlerStatus handle_destroy_srq(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                 ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_DestroySrq()->srq(), ObjectKind::kSrq),
                        "shared receive queue");
}

}  // namespace ff::router
