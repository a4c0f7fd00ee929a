#include "proto/verbs_codec.h"
#include "router/control/handlers.h"
#include "router/fabric/qp_transitions.h"

namespace ff::router {

namespace {

// Hands a QP to the session (a new one, or an XRC receive QP it opened):
// its segment charged and passed, its handle under `parents`.
Status reply_qp(Session& s, ReplyWriter& w, std::shared_ptr<FabricQp> qp, std::initializer_list<uint32_t> parents) {
  UniqueFd segment = dup_for_reply(qp->segment_fd());
  if (!segment) return Error{EMFILE, "cannot duplicate the QP's fd"};
  auto cap = proto::to_wire(qp->cap());
  uint32_t qpn = qp->qp_num(), send_cap = qp->send_capacity(), recv_cap = qp->recv_capacity();
  policy::Charge charge;
  if (!charge_segment(s, qp->segment_fd(), charge)) return quota_exceeded(s);
  auto object = std::make_unique<QpObject>(std::move(qp));
  object->charge = std::move(charge);
  uint32_t handle = s.objects().add(std::move(object), parents);
  w.set_body(proto::CreateCreateQpReply(w.fbb(), handle, qpn, &cap, send_cap, recv_cap));
  w.add_fd(std::move(segment));
  return Status{};
}

// An XRC receive QP: its domain's, not the process's (XrcDomain).
Status create_xrc_receive_qp(Session& s, const proto::CreateQp& r, ReplyWriter& w) {
  auto* xrcd = s.objects().find<XrcdObject>(r.xrcd(), ObjectKind::kXrcd);
  if (xrcd == nullptr) return Error{EINVAL, "no such XRC domain"};
  auto qp = xrcd->fabric->create_qp(s.fabric(), s.owner(), s.objects().next_handle());
  if (!qp) return qp.error();
  return reply_qp(s, w, std::move(*qp), {r.xrcd()});
}

}  // namespace

// A queue pair. The reply carries the QP segment (send and receive rings).
Status handle_create_qp(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                               ReplyWriter& w) {
  const auto* r = req.body_as_CreateQp();
  auto type = static_cast<ibv_qp_type>(r->qp_type());
  if (type == IBV_QPT_XRC_RECV) return create_xrc_receive_qp(s, *r, w);
  auto* pd = s.objects().find<PdObject>(r->pd(), ObjectKind::kPd);
  auto* scq = s.objects().find<CqObject>(r->send_cq(), ObjectKind::kCq);
  auto* rcq = s.objects().find<CqObject>(r->recv_cq(), ObjectKind::kCq);
  if (pd == nullptr) return Error{EINVAL, "no such protection domain"};
  if (scq == nullptr || (rcq == nullptr && type != IBV_QPT_XRC_SEND)) return Error{EINVAL, "no such completion queue"};
  SrqObject* srq = nullptr;
  if (r->srq() != 0) {
    srq = s.objects().find<SrqObject>(r->srq(), ObjectKind::kSrq);
    if (srq == nullptr) return Error{EINVAL, "no such shared receive queue"};
    if (srq->fabric->srq_num() != 0) return Error{EINVAL, "an XRC SRQ serves XRC receive QPs only"};
  }
  if (r->cap() == nullptr) return Error{EINVAL, "missing QP capabilities"};
  auto* ctx = find_context(s, pd->parents.empty() ? 0 : pd->parents.front());
  if (ctx == nullptr) return Error{EINVAL, "the PD's context is gone"};
  QpInit init;
  init.type = type;
  init.cap = proto::from_wire(*r->cap());
  init.sq_sig_all = r->sq_sig_all();
  init.atomic_write = r->atomic_write();
  auto made = s.fabric().create_qp(*ctx->fabric, *pd->fabric, scq->fabric.get(),
                                   rcq != nullptr ? rcq->fabric.get() : nullptr,
                                   srq != nullptr ? srq->fabric.get() : nullptr, init, s.objects().next_handle());
  if (!made) return made.error();
  return reply_qp(s, w, std::move(*made), {r->pd(), r->send_cq(), rcq != nullptr ? r->recv_cq() : 0, r->srq()});
}

// ibv_open_qp: an XRC receive QP of a domain this session has open.
Status handle_open_qp(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_OpenQp();
  auto* xrcd = s.objects().find<XrcdObject>(r->xrcd(), ObjectKind::kXrcd);
  if (xrcd == nullptr) return Error{EINVAL, "no such XRC domain"};
  auto qp = xrcd->fabric->open_qp(r->qp_num());
  if (!qp) return qp.error();
  return reply_qp(s, w, std::move(*qp), {r->xrcd()});
}

Status handle_modify_qp(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                               ReplyWriter& w) {
  const auto* r = req.body_as_ModifyQp();
  auto* qp = s.objects().find<QpObject>(r->qp(), ObjectKind::kQp);
  if (qp == nullptr) return Error{EINVAL, "no such QP"};
  if (r->attr() == nullptr) return Error{EINVAL, "missing QP attributes"};
  ibv_qp_attr attr = proto::from_wire(*r->attr());
  // What does not apply to the QP's type is dropped first (XRC).
  int mask = applicable_qp_mask(qp->fabric->qp_type(), static_cast<int>(r->attr_mask()));
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
