#include "router/control/handlers.h"

#include "router/common/version.h"

namespace ff::router {

// Identifies the client: tenant from the socket it reached, virtual IP from
// its own network namespace (peer credentials), never from the request.
Status handle_hello(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* hello = req.body_as_Hello();
  if (s.greeted()) return Error{EPROTO, "Hello sent twice"};
  if (hello->protocol_version() != static_cast<uint32_t>(proto::ProtocolVersion::Current))
    return Error{EPROTONOSUPPORT,
                               "protocol version " + std::to_string(hello->protocol_version()) +
                                   " is not this router's (" +
                                   std::to_string(static_cast<uint32_t>(proto::ProtocolVersion::Current)) +
                                   "); use libffverbs.so from the same ffrouter release"};
  const PeerIdentity& peer = s.peer();
  if (!peer.error.empty()) return Error{EACCES, "cannot identify the client: " + peer.error};
  auto choice = policy::choose_virtual_ip(*s.tenant(), peer.addresses);
  if (!choice.ip) return Error{EADDRNOTAVAIL, choice.error};
  s.set_virtual_ip(*choice.ip);
  s.services().session_greeted(s);
  auto& fbb = w.fbb();
  w.set_body(proto::CreateHelloReply(fbb, fbb.CreateString(s.tenant()->name), s.id(), *choice.ip,
                                     fbb.CreateString(std::string("ffrouter ") + kVersion)));
  return Status{};
}

}  // namespace ff::router
