#include "router/control/handlers.h"

namespace ff::router {

Status handle_query_pkey(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* q = req.body_as_QueryPkey();
  if (find_context(s, q->context()) == nullptr) return Error{EINVAL, "no such context"};
  if (q->port_num() != 1 || q->index() != 0)
    return Error{EINVAL, "the virtual port has one P_Key, index 0 of port 1"};
  w.set_body(proto::CreateQueryPkeyReply(w.fbb(), 0xffff));
  return Status{};
}

}  // namespace ff::router
