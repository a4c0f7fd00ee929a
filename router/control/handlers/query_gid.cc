#include <string>

#include "router/control/handlers.h"

namespace ff::router {

// The port's only GID is the RoCEv2 IPv4-mapped GID of the client's virtual
// IP, at index 0; the other entries of the table are empty (ENODATA, as the
// kernel answers for an empty entry; libibverbs turns that into a zero GID
// for ibv_query_gid).
Status handle_query_gid(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter& w) {
  const auto* q = req.body_as_QueryGid();
  if (find_context(s, q->context()) == nullptr) return Error{EINVAL, "no such context"};
  if (q->port_num() != 1 || q->index() < 0 || q->index() >= kVirtualGidTableLength)
    return Error{EINVAL, "no such GID table entry: port 1 has " + std::to_string(kVirtualGidTableLength)};
  if (q->index() != 0) return Error{ENODATA, "GID table entry " + std::to_string(q->index()) + " is empty"};
  uint8_t raw[16];
  policy::ipv4_mapped_gid(s.virtual_ip(), raw);
  proto::Gid gid(flatbuffers::span<const uint8_t, 16>(raw, 16));
  w.set_body(proto::CreateQueryGidReply(w.fbb(), &gid, /*RoCE v2=*/1));
  return Status{};
}

}  // namespace ff::router
