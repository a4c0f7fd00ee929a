#include "router/fabric/soft/wire.h"

#include <infiniband/verbs.h>

namespace ff::router::soft::wire {

Hello make_hello(std::string_view name, uint64_t incarnation, uint16_t poller, uint16_t pollers) {
  Hello h{};
  h.poller = poller;
  h.pollers = pollers;
  h.magic = kMagic;
  h.version = kVersion;
  h.byte_order = 0x0102;
  h.incarnation = incarnation;
  name = name.substr(0, kMaxRouterName);
  std::memcpy(h.name, name.data(), name.size());
  return h;
}

std::string check_hello(const Hello& h) {
  // A TLS record (a ClientHello): the peer secures its links, this router not.
  const auto* first = reinterpret_cast<const unsigned char*>(&h);
  if (first[0] == 0x16 && first[1] == 0x03)
    return "the peer speaks TLS: it secures its links and this router does not (give every router the same "
           "--link-psk or --link-cert)";
  if (h.magic != kMagic) return "not an ffrouter peer (bad magic)";
  if (h.byte_order != 0x0102) return "peer has another byte order";
  if (h.version != kVersion)
    return "peer speaks protocol version " + std::to_string(h.version) + ", this router " +
           std::to_string(kVersion) + ": run the same ffrouter release on every host";
  if (std::memchr(h.name, 0, sizeof h.name) == nullptr || h.name[0] == 0) return "peer sent no router name";
  if (h.pollers == 0 || h.poller >= h.pollers) return "peer sent no valid poller (Hello.poller, Hello.pollers)";
  return {};
}

uint32_t tenant_id(std::string_view tenant) {
  uint32_t h = 2166136261u;
  for (char c : tenant) {
    h ^= static_cast<uint8_t>(c);
    h *= 16777619u;
  }
  return h;
}

namespace {

bool valid_request(const Header& h, const char*& why) {
  if (h.qp_type != IBV_QPT_RC && h.qp_type != IBV_QPT_UC && h.qp_type != IBV_QPT_UD)
    return why = "request from an unknown QP type", false;
  if (h.total > kMaxMessage) return why = "message longer than 2 GiB", false;
  if (h.offset > h.total) return why = "chunk beyond its message", false;
  switch (h.opcode) {
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
    case IBV_WR_SEND_WITH_INV:  // imm: the rkey to invalidate
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
      if (h.payload > h.total - h.offset) return why = "chunk longer than its message", false;
      if (h.payload == 0 && h.total != 0) return why = "empty chunk", false;
      return true;
    case IBV_WR_RDMA_READ:
      if (h.payload != 0) return why = "READ request with data", false;
      if (h.total != 0 && h.offset == h.total) return why = "READ chunk beyond its message", false;
      return true;
    case IBV_WR_ATOMIC_CMP_AND_SWP:
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_ATOMIC_WRITE:
      if (h.payload != 0 || h.total != 8 || h.offset != 0) return why = "malformed atomic request", false;
      return true;
    default:
      // An opcode of a newer router's (a rolling upgrade): well framed, it
      // is that request's failure (Engine::on_request), not the link's.
      return true;
  }
}

}  // namespace

Decode decode(std::span<const std::byte> bytes, Header& h, std::span<const std::byte>& payload, size_t& used,
              const char*& why) {
  if (bytes.size() < sizeof(Header)) return Decode::kNeedMore;
  std::memcpy(&h, bytes.data(), sizeof h);
  if (h.payload > kMaxChunk) return why = "frame longer than a chunk", Decode::kBad;
  switch (static_cast<Type>(h.type)) {
    case Type::kRequest:
      if (!valid_request(h, why)) return Decode::kBad;
      break;
    case Type::kAck:
      if (h.payload != 0) return why = "ACK with data", Decode::kBad;
      break;
    case Type::kNak:
      if (h.payload != 0 || h.opcode < 1 || h.opcode > 3) return why = "malformed NAK", Decode::kBad;
      break;
    case Type::kReadResponse:
      if (h.total > kMaxMessage || h.offset > h.total || h.payload != read_chunk(h.total, h.offset))
        return why = "READ response chunk does not fit its message", Decode::kBad;
      break;
    case Type::kAtomicResponse:
      if (h.payload != 8) return why = "atomic response is not 8 bytes", Decode::kBad;
      break;
    case Type::kMessage:
      if (h.payload == 0) return why = "empty control message", Decode::kBad;
      break;
    default:
      return why = "unknown frame type", Decode::kBad;
  }
  if (bytes.size() < sizeof(Header) + h.payload) return Decode::kNeedMore;
  payload = bytes.subspan(sizeof(Header), h.payload);
  used = sizeof(Header) + h.payload;
  return Decode::kFrame;
}

}  // namespace ff::router::soft::wire
