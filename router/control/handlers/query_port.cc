#include "proto/verbs_codec.h"
#include "router/control/handlers.h"

namespace ff::router {

Status handle_query_port(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* q = req.body_as_QueryPort();
  if (find_context(s, q->context()) == nullptr) return Error{EINVAL, "no such context"};
  if (q->port_num() != 1) return Error{EINVAL, "the virtual device has only port 1"};
  ibv_port_attr port = s.fabric().port_attr();  // the link: state, MTU, speed
  port.gid_tbl_len = kVirtualGidTableLength;
  port.pkey_tbl_len = 1;
  port.port_cap_flags = IBV_PORT_CM_SUP;
  port.lid = port.sm_lid = 0;
  port.lmc = 0;
  port.link_layer = IBV_LINK_LAYER_ETHERNET;  // RoCE, whatever the device is
  auto wire = proto::to_wire(port);
  w.set_body(proto::CreateQueryPortReply(w.fbb(), &wire));
  return Status{};
}

}  // namespace ff::router
