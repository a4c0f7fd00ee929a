#include <cstring>

#include "proto/verbs_codec.h"
#include "router/control/handlers.h"

namespace ff::router {

// An address handle. UD work requests name it by the id in the reply, which
// the fabric checks against the sending QP's PD.
Status handle_create_ah(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                               ReplyWriter& w) {
  const auto* r = req.body_as_CreateAh();
  auto* pd = s.objects().find<PdObject>(r->pd(), ObjectKind::kPd);
  if (pd == nullptr) return Error{EINVAL, "no such protection domain"};
  if (r->attr() == nullptr) return Error{EINVAL, "missing address attributes"};
  auto made = s.fabric().create_ah(*pd->fabric, proto::from_wire(*r->attr()));
  if (!made) return made.error();
  auto ah = std::move(*made);
  uint32_t id = ah->id();
  uint32_t handle = s.objects().add(std::make_unique<AhObject>(std::move(ah)), {r->pd()});
  w.set_body(proto::CreateCreateAhReply(w.fbb(), handle, id));
  return Status{};
}

Status handle_destroy_ah(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_DestroyAh()->ah(), ObjectKind::kAh),
                        "address handle");
}

// The receiving QP must be the session's: another tenant's senders are
// none of its business.
Status handle_sender_address(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_SenderAddress();
  if (r->seen() == nullptr) return Error{EINVAL, "missing the GRH source address"};
  FabricQp* receiver = nullptr;
  s.objects().for_each<QpObject>(ObjectKind::kQp, [&](const QpObject& q) {
    if (q.fabric->qp_num() == r->qp_num()) receiver = q.fabric.get();
  });
  if (receiver == nullptr) return Error{EINVAL, "wc.qp_num names no QP of this process"};
  ibv_gid seen;
  std::memcpy(seen.raw, r->seen()->raw()->data(), sizeof seen.raw);
  ibv_gid gid = s.fabric().sender_address(*receiver, r->src_qp(), seen);
  proto::Gid wire(flatbuffers::span<const uint8_t, 16>(gid.raw, 16));
  w.set_body(proto::CreateSenderAddressReply(w.fbb(), &wire));
  return Status{};
}

namespace {
// Attaches or detaches a UD QP of the session's to a multicast group.
Status mcast(Session& s, uint32_t qp_handle, const proto::Gid* wire, bool attach) {
  auto* qp = s.objects().find<QpObject>(qp_handle, ObjectKind::kQp);
  if (qp == nullptr) return Error{EINVAL, "no such queue pair"};
  if (wire == nullptr) return Error{EINVAL, "missing the multicast GID"};
  ibv_gid gid;
  std::memcpy(gid.raw, wire->raw()->data(), sizeof gid.raw);
  return s.fabric().attach_mcast(*qp->fabric, gid, attach);
}
}  // namespace

Status handle_attach_mcast(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  const auto* r = req.body_as_AttachMcast();
  return mcast(s, r->qp(), r->gid(), true);
}

Status handle_detach_mcast(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  const auto* r = req.body_as_DetachMcast();
  return mcast(s, r->qp(), r->gid(), false);
}

}  // namespace ff::router
