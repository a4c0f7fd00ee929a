#include "router/control/cm_wire.h"
#include "router/control/handlers.h"

namespace ff::router {

// rdma_create_event_channel: the reply carries the read end of its pipe.
Status handle_cm_create_channel(Session& s, const proto::Request&, std::vector<UniqueFd>&, ReplyWriter& w) {
  auto made = cm::Channel::create();
  if (!made) return made.error();
  auto [channel, read_end] = std::move(*made);
  uint32_t handle = s.objects().add(std::make_unique<CmChannelObject>(std::move(channel)));
  w.set_body(proto::CreateCmCreateChannelReply(w.fbb(), handle));
  w.add_fd(std::move(read_end));
  return Status{};
}

Status handle_cm_destroy_channel(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_CmDestroyChannel()->channel(), ObjectKind::kCmChannel),
                        "event channel");
}

// rdma_get_cm_event, once the client took the channel's byte.
Status handle_cm_get_event(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  auto* ch = find_cm_channel(s, req.body_as_CmGetEvent()->channel());
  if (ch == nullptr) return Error{EINVAL, "no such event channel"};
  auto e = s.services().connection_manager().take_event(*ch->channel);
  if (!e) return Error{EAGAIN, "no event"};
  auto& fbb = w.fbb();
  auto src = to_wire(e->src), dst = to_wire(e->dst);
  auto param = to_wire(e->param);
  auto data = fbb.CreateVector(e->private_data);
  w.set_body(proto::CreateCmEventReply(fbb, e->id, e->listen_id, e->type, e->status, &src, &dst, &param, data,
                                       e->remote_qp_num, e->remote_psn, e->local_psn, e->port_space, e->qp_type));
  return Status{};
}

}  // namespace ff::router
