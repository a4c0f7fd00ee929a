#include "proto/verbs_codec.h"
#include "router/control/handlers.h"

namespace ff::router {

// A queue pair. The reply carries the QP segment (send and receive rings).
Status handle_create_qp(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                               ReplyWriter& w) {
  const auto* r = req.body_as_CreateQp();
  auto* pd = s.objects().find<PdObject>(r->pd(), ObjectKind::kPd);
  auto* scq = s.objects().find<CqObject>(r->send_cq(), ObjectKind::kCq);
  auto* rcq = s.objects().find<CqObject>(r->recv_cq(), ObjectKind::kCq);
  if (pd == nullptr) return Error{EINVAL, "no such protection domain"};
  if (scq == nullptr || rcq == nullptr) return Error{EINVAL, "no such completion queue"};
  SrqObject* srq = nullptr;
  if (r->srq() != 0) {
    srq = s.objects().find<SrqObject>(r->srq(), ObjectKind::kSrq);
    if (srq == nullptr) return Error{EINVAL, "no such shared receive queue"};
  }
  if (r->cap() == nullptr) return Error{EINVAL, "missing QP capabilities"};
  auto* ctx = find_context(s, pd->parents.empty() ? 0 : pd->parents.front());
  if (ctx == nullptr) return Error{EINVAL, "the PD's context is gone"};
  QpInit init;
  init.type = static_cast<ibv_qp_type>(r->qp_type());
  init.cap = proto::from_wire(*r->cap());
  init.sq_sig_all = r->sq_sig_all();
  init.atomic_write = r->atomic_write();
  auto made = s.fabric().create_qp(*ctx->fabric, *pd->fabric, *scq->fabric, *rcq->fabric,
                                          srq != nullptr ? srq->fabric.get() : nullptr, init,
                                          s.objects().next_handle());
  if (!made) return made.error();
  auto qp = std::move(*made);
  UniqueFd segment = dup_for_reply(qp->segment_fd());
  if (!segment) return Error{EMFILE, "cannot duplicate the QP's fd"};
  auto cap = proto::to_wire(qp->cap());
  uint32_t qpn = qp->qp_num(), send_cap = qp->send_capacity(), recv_cap = qp->recv_capacity();
  policy::Charge charge;
  if (!charge_segment(s, qp->segment_fd(), charge)) return quota_exceeded(s);
  auto object = std::make_unique<QpObject>(std::move(qp));
  object->charge = std::move(charge);
  uint32_t handle = s.objects().add(std::move(object), {r->pd(), r->send_cq(), r->recv_cq(), r->srq()});
  w.set_body(proto::CreateCreateQpReply(w.fbb(), handle, qpn, &cap, send_cap, recv_cap));
  w.add_fd(std::move(segment));
  return Status{};
}

Status handle_modify_qp(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                               ReplyWriter& w) {
  const auto* r = req.body_as_ModifyQp();
  auto* qp = s.objects().find<QpObject>(r->qp(), ObjectKind::kQp);
  if (qp == nullptr) return Error{EINVAL, "no such QP"};
  if (r->attr() == nullptr) return Error{EINVAL, "missing QP attributes"};
  ibv_qp_attr attr = proto::from_wire(*r->attr());
  auto mask = static_cast<int>(r->attr_mask());
  auto router = s.fabric().modify_route(*qp->fabric, attr, mask);
  if (!router) return router.error();
  if (router->empty()) return s.fabric().modify_qp(*qp->fabric, attr, mask);
  s.fabric().modify_qp_via_peer(*qp->fabric, attr, mask, *router, s.answer_later(w, req.id()));
  return Status{};
}

Status handle_query_qp(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                              ReplyWriter& w) {
  auto* qp = s.objects().find<QpObject>(req.body_as_QueryQp()->qp(), ObjectKind::kQp);
  if (qp == nullptr) return Error{EINVAL, "no such QP"};
  ibv_qp_attr attr = s.fabric().query_qp(*qp->fabric);
  auto wire = proto::to_wire(attr);
  auto cap = proto::to_wire(qp->fabric->cap());
  w.set_body(proto::CreateQueryQpReply(w.fbb(), &wire, &cap, false));
  return Status{};
}

Status handle_destroy_qp(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_DestroyQp()->qp(), ObjectKind::kQp), "QP");
}

}  // namespace ff::router
