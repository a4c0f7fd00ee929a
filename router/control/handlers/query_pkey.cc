#include "router/control/handlers.h"

namespace ff::router {

HandlerStatus handle_query_pkey(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* q = req.body_as_QueryPkey();
  if (find_context(s, q->context()) == nullptr) return HandlerStatus::fail(EINVAL, "no such context");
  if (q->port_num() != 1 || q->index() != 0)
    return HandlerStatus::fail(EINVAL, "the virtual port has one P_Key, index 0 of port 1");
  w.set_body(proto::CreateQueryPkeyReply(w.fbb(), 0xffff));
  return HandlerStatus::ok();
}

}  // namespace ff::router
