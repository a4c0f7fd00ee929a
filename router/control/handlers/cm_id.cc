#include "router/control/cm_wire.h"
#include "router/control/handlers.h"

namespace ff::router {

// rdma_create_id: port spaces TCP and IB (connected, RC) are served;
// UDP and IPOIB ids can be made but not connected yet (EOPNOTSUPP there).
Status handle_cm_create_id(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_CmCreateId();
  auto* ch = find_cm_channel(s, r->channel());
  if (ch == nullptr) return Error{EINVAL, "no such event channel"};
  switch (r->port_space()) {
    case RDMA_PS_TCP: case RDMA_PS_UDP: case RDMA_PS_IB: case RDMA_PS_IPOIB: break;
    default: return Error{EINVAL, "unknown port space"};
  }
  auto& manager = s.services().connection_manager();
  auto id = manager.create_id(s.tenant()->name, s.virtual_ip(), s, ch->channel, r->port_space(), r->qp_type());
  uint32_t handle = s.objects().add(std::make_unique<CmIdObject>(manager, id));
  manager.set_handle(*id, handle);
  w.set_body(proto::CreateCmCreateIdReply(w.fbb(), handle));
  return Status{};
}

Status handle_cm_destroy_id(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_CmDestroyId()->id(), ObjectKind::kCmId), "rdma_cm id");
}

Status handle_cm_migrate_id(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  const auto* r = req.body_as_CmMigrateId();
  auto* id = find_cm_id(s, r->id());
  auto* ch = find_cm_channel(s, r->channel());
  if (id == nullptr || ch == nullptr) return Error{EINVAL, "no such rdma_cm id or event channel"};
  s.services().connection_manager().migrate(*id->id, ch->channel);
  return Status{};
}

namespace {

// Replies with the id's addresses once `done` went well.
Status with_addresses(Status done, const cm::Id& id, ReplyWriter& w) {
  if (!done) return done;
  auto src = to_wire(id.src()), dst = to_wire(id.dst());
  w.set_body(proto::CreateCmAddrReply(w.fbb(), &src, &dst));
  return Status{};
}

}  // namespace

Status handle_cm_bind_addr(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_CmBindAddr();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return with_addresses(s.services().connection_manager().bind(*id->id, from_wire(r->addr())), *id->id, w);
}

Status handle_cm_listen(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_CmListen();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return with_addresses(s.services().connection_manager().listen(*id->id, r->backlog()), *id->id, w);
}

// The address resolves when a client of the tenant has it on this router;
// otherwise ADDR_ERROR, as an address no one answers for.
Status handle_cm_resolve_addr(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_CmResolveAddr();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  cm::Endpoint dst = from_wire(r->dst());
  std::optional<cm::Endpoint> src;
  if (r->has_src()) src = from_wire(r->src());
  bool served = dst.ip == s.virtual_ip() || s.services().serves(s.tenant()->name, dst.ip);
  return with_addresses(s.services().connection_manager().resolve_addr(*id->id, src, dst, served), *id->id, w);
}

Status handle_cm_resolve_route(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  auto* id = find_cm_id(s, req.body_as_CmResolveRoute()->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return s.services().connection_manager().resolve_route(*id->id);
}

}  // namespace ff::router
