#include "router/control/handlers.h"

namespace ff::router {

// A completion channel. The reply carries two fds: the read end of the pipe
// the app polls (channel->fd) and the segment holding the ring of CQ events.
Status handle_create_comp_channel(Session& s, const proto::Request& req,
                                         std::vector<UniqueFd>&, ReplyWriter& w) {
  uint32_t ctx = req.body_as_CreateCompChannel()->context();
  if (find_context(s, ctx) == nullptr) return Error{EINVAL, "no such context"};
  auto made = s.fabric().create_channel();
  if (!made) return made.error();
  auto ch = std::move(*made);
  UniqueFd event_fd = ch->take_client_event_fd();
  UniqueFd segment = dup_for_reply(ch->segment_fd());
  if (!event_fd || !segment) return Error{EMFILE, "cannot duplicate the channel's fds"};
  uint32_t capacity = ch->capacity();
  policy::Charge charge;
  if (!charge_segment(s, ch->segment_fd(), charge)) return quota_exceeded(s);
  auto object = std::make_unique<ChannelObject>(std::move(ch));
  object->charge = std::move(charge);
  uint32_t handle = s.objects().add(std::move(object), {ctx});
  w.set_body(proto::CreateCreateCompChannelReply(w.fbb(), handle, capacity));
  w.add_fd(std::move(event_fd));
  w.add_fd(std::move(segment));
  return Status{};
}

// EBUSY while CQs still use the channel.
Status handle_destroy_comp_channel(Session& s, const proto::Request& req,
                                          std::vector<UniqueFd>&, ReplyWriter&) {
  return destroy_status(
      s.objects().remove(req.body_as_DestroyCompChannel()->channel(), ObjectKind::kChannel),
      "completion channel");
}

}  // namespace ff::router
