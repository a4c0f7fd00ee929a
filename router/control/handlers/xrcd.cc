#include "router/control/handlers.h"

namespace ff::router {

// ibv_open_xrcd: a private domain, or the tenant's domain of a file
// (XrcDomains). The reply names the session's handle to it.
Status handle_open_xrcd(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* r = req.body_as_OpenXrcd();
  if (find_context(s, r->context()) == nullptr) return Error{EINVAL, "no such context"};
  if ((s.fabric().device_limits().attr.orig_attr.device_cap_flags & IBV_DEVICE_XRC) == 0)
    return Error{EOPNOTSUPP, "the " + std::string(s.fabric().name()) + " fabric has no XRC (the soft fabric has)"};
  std::optional<XrcDomains::File> file;
  if (r->shared()) file = XrcDomains::File{r->dev(), r->ino()};
  auto domain = s.services().xrc_domains().open(s.fabric(), s.owner(), file, r->oflags());
  if (!domain) return domain.error();
  uint32_t handle = s.objects().add(std::make_unique<XrcdObject>(std::move(*domain)), {r->context()});
  w.set_body(proto::CreateOpenXrcdReply(w.fbb(), handle));
  return Status{};
}

// EBUSY while this session's XRC SRQs or receive QPs use it.
Status handle_close_xrcd(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  return destroy_status(s.objects().remove(req.body_as_CloseXrcd()->xrcd(), ObjectKind::kXrcd), "XRC domain");
}

}  // namespace ff::router
