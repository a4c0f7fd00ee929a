#include "router/control/cm_wire.h"
#include "router/common/addresses.h"
#include "router/control/handlers.h"

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <chrono>

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

Status handle_cm_set_reuse_addr(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  const auto* r = req.body_as_CmSetReuseAddr();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return s.services().connection_manager().set_reuseaddr(*id->id, r->reuse());
}

Status handle_cm_listen(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_CmListen();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return with_addresses(s.services().connection_manager().listen(*id->id, r->backlog()), *id->id, w);
}

namespace {

// Asks every 20 ms, until `deadline`, whether a client of the tenant has
// the address now (the program there may not have opened the device yet),
// as ARP would go on asking within the app's timeout.
void await_address(std::weak_ptr<Session> session, std::weak_ptr<cm::Id> id, uint32_t ip,
                   std::chrono::steady_clock::time_point deadline, std::shared_ptr<boost::asio::steady_timer> timer) {
  timer->expires_after(std::chrono::milliseconds(20));
  timer->async_wait([=](const boost::system::error_code& ec) {
    auto s = session.lock();
    auto i = id.lock();
    if (ec || !s || !i || i->state() != cm::Id::State::kAddrQuery) return;
    bool found = s->services().reachable(s->tenant()->name, ip);
    if (found || std::chrono::steady_clock::now() >= deadline)
      s->services().connection_manager().address_answer(*i, found);
    else
      await_address(session, id, ip, deadline, timer);
  });
}

}  // namespace

// The address resolves when a client of the tenant has it, on this router
// or on another the directory lists
// (at once, or within the app's timeout); otherwise ADDR_ERROR, as an
// address no one answers for.
Status handle_cm_resolve_addr(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_CmResolveAddr();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  cm::Endpoint dst = from_wire(r->dst());
  std::optional<cm::Endpoint> src;
  if (r->has_src()) src = from_wire(r->src());
  // A multicast group resolves at once: its members are found when it is joined.
  bool served = dst.ip == s.virtual_ip() || is_multicast_ipv4(dst.ip) || s.services().reachable(s.tenant()->name, dst.ip);
  auto& manager = s.services().connection_manager();
  Status done = manager.resolve_addr(*id->id, src, dst, served ? std::optional<bool>(true) : std::nullopt);
  if (done && !served) {
    auto wait = std::chrono::milliseconds(std::clamp(r->timeout_ms(), 0, 60000));
    await_address(s.weak_from_this(), id->id, dst.ip, std::chrono::steady_clock::now() + wait,
                  std::make_shared<boost::asio::steady_timer>(s.executor()));
  }
  return with_addresses(std::move(done), *id->id, w);
}

Status handle_cm_join_multicast(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  const auto* r = req.body_as_CmJoinMulticast();
  auto* id = find_cm_id(s, r->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  if (r->group() == nullptr) return Error{EINVAL, "missing the group address"};
  auto& manager = s.services().connection_manager();
  uint32_t group = r->group()->ip();
  return r->join() ? manager.join_multicast(*id->id, group) : manager.leave_multicast(*id->id, group);
}

Status handle_cm_resolve_route(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  auto* id = find_cm_id(s, req.body_as_CmResolveRoute()->id());
  if (id == nullptr) return Error{EINVAL, "no such rdma_cm id"};
  return s.services().connection_manager().resolve_route(*id->id);
}

}  // namespace ff::router
