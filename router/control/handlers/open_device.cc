#include <fcntl.h>

#include "router/control/handlers.h"
#include "router/router.h"

namespace ff::router {

// Creates a context. The reply carries the context's async-event eventfd.
HandlerStatus handle_open_device(Session& s, const proto::Request& req, ReplyWriter& w) {
  if (req.body_as_OpenDevice()->device_index() != 0)
    return HandlerStatus::fail(ENODEV, "no such device index");
  auto ctx = std::make_unique<ContextObject>();
  UniqueFd async_fd(::fcntl(ctx->async_events.fd(), F_DUPFD_CLOEXEC, 0));
  if (!async_fd) return HandlerStatus::fail(errno, "cannot duplicate the async event fd");
  uint32_t handle = s.objects().add(std::move(ctx), 0);
  auto& fbb = w.fbb();
  auto entry = proto::CreateDeviceEntry(fbb, fbb.CreateString(s.router().options().device_name),
                                        policy::node_guid_for(s.virtual_ip()), 0);
  w.set_body(proto::CreateOpenDeviceReply(fbb, handle, entry, /*num_comp_vectors=*/1));
  w.add_fd(std::move(async_fd));
  return HandlerStatus::ok();
}

}  // namespace ff::router
