#include "router/control/cm_wire.h"
#include "router/control/handlers.h"

namespace ff::router {

// The connection handshake: rdma_connect (REQ), rdma_accept (REP),
// rdma_establish (RTU), rdma_reject (REJ), rdma_disconnect (DREQ/DREP).
// The connection manager keeps the rules; these only find the id.

Status handle_cm_connect(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  const auto* r = req.body_as_CmConnect();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return s.services().connection_manager().connect(*id->id, from_wire(r->param()), bytes_of(r->private_data()));
}

Status handle_cm_accept(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  const auto* r = req.body_as_CmAccept();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return s.services().connection_manager().accept(*id->id, from_wire(r->param()), bytes_of(r->private_data()));
}

Status handle_cm_reject(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  const auto* r = req.body_as_CmReject();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return s.services().connection_manager().reject(*id->id, bytes_of(r->private_data()));
}

Status handle_cm_establish(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  auto* id = find_cm_id(s, req.body_as_CmEstablish()->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return s.services().connection_manager().establish(*id->id);
}

Status handle_cm_disconnect(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  auto* id = find_cm_id(s, req.body_as_CmDisconnect()->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return s.services().connection_manager().disconnect(*id->id);
}

}  // namespace ff::router
