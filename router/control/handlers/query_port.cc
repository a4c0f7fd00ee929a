#include "proto/verbs_codec.h"
#include "router/control/handlers.h"

namespace ff::router {

Status handle_query_port(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* q = req.body_as_QueryPort();
  if (find_context(s, q->context()) == nullptr) return Error{EINVAL, "no such context"};
  if (q->port_num() != 1) return Error{EINVAL, "the virtual device has only port 1"};
  auto wire = proto::to_wire(s.fabric().port_attr());
  w.set_body(proto::CreateQueryPortReply(w.fbb(), &wire));
  return Status{};
}

}  // namespace ff::router
