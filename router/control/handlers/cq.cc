#include "router/control/handlers.h"

namespace ff::router {

// A completion queue. The reply carries the CQ segment (control block and
// completion ring) that the app polls without the router.
Status handle_create_cq(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                               ReplyWriter& w) {
  const auto* r = req.body_as_CreateCq();
  auto* ctx = find_context(s, r->context());
  if (ctx == nullptr) return Error{EINVAL, "no such context"};
  ChannelObject* ch = nullptr;
  if (r->channel() != 0) {
    ch = s.objects().find<ChannelObject>(r->channel(), ObjectKind::kChannel);
    if (ch == nullptr) return Error{EINVAL, "no such completion channel"};
  }
  if (r->comp_vector() != 0) return Error{EINVAL, "comp_vector must be 0 (num_comp_vectors is 1)"};
  auto made = s.fabric().create_cq(*ctx->fabric, r->cqe(), ch != nullptr ? ch->fabric.get() : nullptr,
                                   r->timestamps(), s.objects().next_handle());
  if (!made) return made.error();
  auto cq = std::move(*made);
  UniqueFd segment = dup_for_reply(cq->segment_fd());
  if (!segment) return Error{EMFILE, "cannot duplicate the CQ's fd"};
  uint32_t capacity = cq->capacity();
  policy::Charge charge;
  if (!charge_segment(s, cq->segment_fd(), charge)) return quota_exceeded(s);
  auto object = std::make_unique<CqObject>(std::move(cq));
  object->charge = std::move(charge);
  uint32_t handle = s.objects().add(std::move(object), {r->context(), r->channel()});
  w.set_body(proto::CreateCreateCqReply(w.fbb(), handle, capacity));
  w.add_fd(std::move(segment));
  return Status{};
}

// ibv_resize_cq: the CQ moves to a new segment (charged before anything
// moves, the old one's charge given back after), passed to the app.
Status handle_resize_cq(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_ResizeCq();
  auto* cq = s.objects().find<CqObject>(r->cq(), ObjectKind::kCq);
  if (cq == nullptr) return Error{EINVAL, "no such completion queue"};
  SegmentCharge next(s);
  Status st = s.fabric().resize_cq(*cq->fabric, r->cqe(), next.admit());
  if (next.refusal()) return *next.refusal();
  if (!st) return st;
  cq->charge = next.take_charge();
  w.set_body(proto::CreateResizeCqReply(w.fbb(), cq->fabric->capacity()));
  w.add_fd(next.take_fd());
  return Status{};
}

// EBUSY while QPs still use the CQ.
Status handle_destroy_cq(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_DestroyCq()->cq(), ObjectKind::kCq),
                        "completion queue");
}

}  // namespace ff::router
