#include "router/control/handlers.h"

namespace ff::router {

// Creates a context. The reply carries three fds: the read end of the
// context's async-event pipe (the app's context->async_fd), the write end of
// the doorbell pipe that wakes the fabric's poller, and the segment holding
// the ring of async events.
Status handle_open_device(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                 ReplyWriter& w) {
  if (req.body_as_OpenDevice()->device_index() != 0)
    return Error{ENODEV, "no such device index"};
  auto made = s.fabric().open_context(s.tenant()->name);
  if (!made) return made.error();
  auto fabric_ctx = std::move(*made);
  policy::Charge charge;
  if (!charge_segment(s, fabric_ctx->async_segment_fd(), charge)) return quota_exceeded(s);
  fabric_ctx->keep_spare_segments(&s.services().quota(*s.tenant()), &s.services().handles(*s.tenant()));
  auto ctx = std::make_unique<ContextObject>(std::move(fabric_ctx));
  ctx->charge = std::move(charge);
  UniqueFd async_fd = ctx->fabric->take_client_async_fd();
  UniqueFd doorbell = ctx->fabric->take_client_doorbell();
  UniqueFd async_segment = dup_for_reply(ctx->fabric->async_segment_fd());
  if (!async_fd || !doorbell || !async_segment)
    return Error{EMFILE, "cannot duplicate the context's fds"};
  uint32_t handle = s.objects().add(std::move(ctx));
  auto& fbb = w.fbb();
  auto entry = proto::CreateDeviceEntry(fbb, fbb.CreateString(s.services().limits().device_name),
                                        policy::node_guid_for(s.virtual_ip()), 0);
  w.set_body(proto::CreateOpenDeviceReply(fbb, handle, entry, /*num_comp_vectors=*/1));
  w.add_fd(std::move(async_fd));
  w.add_fd(std::move(doorbell));
  w.add_fd(std::move(async_segment));
  return Status{};
}

}  // namespace ff::router
