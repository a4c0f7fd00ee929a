// What the connection managers of two routers say to each other: the CM
// messages of one connection's handshake (RoCE's REQ, REP, RTU, REJ, DREQ,
// DREP, and SIDR's REQ and REP for UD), addressed from one id to another.
// The same messages pass between two ids of one router (delivered at once),
// so the handshake's rules are written once (connection_manager.cc).
//
// On the wire (between routers, through the fabric's router-to-router
// link) a message is a fixed little-endian header and its private data.
// decode() trusts nothing: a peer router's bytes are checked field by field.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace ff::router::cm {

struct Endpoint {
  uint32_t ip = 0;  // host order
  uint16_t port = 0;
  bool operator==(const Endpoint&) const = default;
};

// struct rdma_conn_param without the private data.
struct ConnParam {
  uint8_t responder_resources = 0, initiator_depth = 0, flow_control = 0, retry_count = 0,
          rnr_retry_count = 0, srq = 0;
  uint32_t qp_num = 0;
};

enum class MessageType : uint8_t {
  kRequest = 1,            // REQ (SIDR REQ on a datagram port space); `to` is 0
  kReply = 2,              // REP (SIDR REP): the passive id accepted
  kReadyToUse = 3,         // RTU: the active id established
  kReject = 4,             // REJ with `status`; `to` 0: a requester gives up before it knows its passive id
  kDisconnectRequest = 5,  // DREQ
  kDisconnectReply = 6,    // DREP
};
inline constexpr uint8_t kLastMessageType = 6;

struct Message {
  MessageType type = MessageType::kRequest;
  std::string tenant;      // the sender's; a message only ever reaches the same tenant's ids
  uint64_t from = 0;       // the sending id's token on its router
  uint64_t to = 0;         // the receiving id's token (0: see kRequest, kReject)
  uint16_t port_space = 0;
  uint8_t qp_type = 0;
  bool unreachable = false;  // kReject: the request was dropped (a full listener), not refused
  Endpoint src, dst;       // kRequest: the requester's address and the one it dials
  ConnParam param;         // kRequest, kReply: the sender's
  uint32_t psn = 0;        // kRequest, kReply: the sender's QP's starting PSN
  int32_t status = 0;      // kReject
  std::vector<uint8_t> private_data;
};

inline constexpr size_t kMaxTenantName = 63;
inline constexpr size_t kMaxPrivateData = 196;  // the longest field: RC's REP

// A message of `type` back to the sender of `m`, from the id `m` was for.
inline Message answer_to(const Message& m, MessageType type) {
  Message a;
  a.type = type;
  a.tenant = m.tenant;
  a.from = m.to;
  a.to = m.from;
  a.port_space = m.port_space;
  a.qp_type = m.qp_type;
  return a;
}

// The peer's parameters as an event reports them: what the peer offers to
// answer is what this side may ask for, and the other way round.
inline ConnParam as_seen_by_peer(const ConnParam& p) {
  ConnParam seen = p;
  seen.responder_resources = p.initiator_depth;
  seen.initiator_depth = p.responder_resources;
  return seen;
}

// Private data as every event reports it: the message's whole field,
// zero-padded, as the kernel's rdma_cm does.
inline std::vector<uint8_t> padded(const std::vector<uint8_t>& data, size_t field) {
  std::vector<uint8_t> out(field, 0);
  std::copy_n(data.begin(), std::min(data.size(), field), out.begin());
  return out;
}

std::vector<std::byte> encode(const Message& m);
// The message, or nullopt with `why` set.
std::optional<Message> decode(std::span<const std::byte> bytes, std::string& why);

}  // namespace ff::router::cm
