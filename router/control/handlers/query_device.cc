#include "proto/verbs_codec.h"
#include "router/control/handlers.h"
#include "shm/descriptors.h"

namespace ff::router {

Status handle_query_device(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  if (find_context(s, req.body_as_QueryDevice()->context()) == nullptr)
    return Error{EINVAL, "no such context"};
  const FabricDeviceLimits& limits = s.fabric().device_limits();
  ibv_device_attr_ex attr = limits.attr;
  attr.orig_attr.node_guid = policy::node_guid_for(s.virtual_ip());
  attr.orig_attr.sys_image_guid = attr.orig_attr.node_guid;
  // Completion timestamps are the router's, on either fabric.
  attr.hca_core_clock = shm::kCompletionClockKhz;
  attr.completion_timestamp_mask = ~uint64_t{0};
  auto& fbb = w.fbb();
  auto wire = proto::to_wire(attr.orig_attr, attr, limits.max_inline_data);
  w.set_body(proto::CreateQueryDeviceReply(fbb, &wire, fbb.CreateString(attr.orig_attr.fw_ver)));
  return Status{};
}

}  // namespace ff::router
