// The router-to-router protocol of the soft fabric, on one TCP connection
// per direction and peer: the router that opened the connection sends
// requests on it and gets their answers back on it.
//
// A connection starts with a Hello each way, then carries frames: an
// 80-byte header, then `payload` bytes. Integers are little-endian (the
// Hello's byte-order mark refuses anything else). Requests carry what a
// responder needs to execute them without asking back; a message longer
// than kMaxChunk goes as several request frames of the same `seq` (or, for
// a READ, as several chunk requests), so a large transfer never holds the
// connection for long. Nothing here trusts the peer: decode() refuses any
// frame whose fields do not add up, and the connection is closed.
#pragma once

#include <infiniband/verbs.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

namespace ff::router::soft::wire {

inline constexpr uint32_t kMagic = 0x31524646;  // "FFR1"
inline constexpr uint16_t kVersion = 2;  // 2: a link per poller (Hello.poller, Hello.pollers)
inline constexpr uint32_t kMaxChunk = 64 * 1024;
inline constexpr uint64_t kMaxMessage = uint64_t{1} << 31;
inline constexpr size_t kMaxRouterName = 63;

struct Hello {
  uint32_t magic;
  uint16_t version;
  uint16_t byte_order;  // 0x0102 as written by the sender
  uint64_t incarnation;  // random per router start: a restarted peer is a new one
  char name[kMaxRouterName + 1];  // NUL-terminated router name
  // Routers are joined poller to poller: a tenant's traffic travels on the
  // links of the poller that serves it, which is the same on every router
  // (router/fabric/fabric.h, poller_of) when every router runs as many.
  uint16_t poller;   // the sender's poller this link belongs to
  uint16_t pollers;  // how many the sender runs
  uint32_t reserved;
};
static_assert(sizeof(Hello) == 88);

Hello make_hello(std::string_view name, uint64_t incarnation, uint16_t poller = 0, uint16_t pollers = 1);
// Empty when acceptable; otherwise what is wrong with it.
std::string check_hello(const Hello& h);

enum class Type : uint8_t {
  kRequest = 1,         // requester -> responder: SEND, WRITE, READ chunk, atomic, UD datagram
  kAck = 2,             // responder -> requester: `seq` executed (and everything before it)
  kNak = 3,             // responder -> requester: `seq` not executed; `opcode` is a NakReason
  kReadResponse = 4,    // data of READ `seq` at `offset`
  kAtomicResponse = 5,  // the 8-byte old value of atomic `seq`
  kMessage = 6,         // router -> router: a control-plane message (rdma_cm), `payload` bytes; no answer
};

enum class NakReason : uint8_t {
  kRnr = 1,       // no receive posted; `imm` = the responder's min_rnr_timer
  kNotReady = 2,  // no such QP, not connected to the sender, or not in RTR/RTS
  kStatus = 3,    // failed; `imm` = the ibv_wc_status the requester completes with
};

enum Flags : uint8_t {
  kSolicited = 1,
  kHasImm = 2,
};

struct Header {
  uint8_t type;      // Type
  uint8_t opcode;    // requests: ibv_wr_opcode; NAK: NakReason
  uint8_t flags;     // Flags
  uint8_t qp_type;   // the requester's ibv_qp_type (RC, UC, UD)
  uint32_t payload;  // bytes after the header, <= kMaxChunk
  uint32_t tenant;   // tenant_id() of the requester's tenant
  uint32_t src_qpn;  // requester's QP (answers: the responder's)
  uint32_t dst_qpn;  // responder's QP (answers: the requester's)
  uint32_t seq;      // the requester's work request sequence number
  uint32_t src_ip;   // virtual IPs of both ends
  uint32_t dst_ip;
  uint32_t imm;      // immediate data (network order); NAK: see NakReason
  uint32_t rkey;     // WRITE/READ/atomic: rkey; UD: Q_Key
  uint64_t total;    // the whole message's length
  uint64_t offset;   // where this chunk starts in the message
  uint64_t remote_addr;
  uint64_t compare_add;
  uint64_t swap;
};
static_assert(sizeof(Header) == 80);

// Whether this router executes requests of ibv_wr_opcode `op` from a peer.
inline bool serves_opcode(uint32_t op) {
  switch (op) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
    case IBV_WR_RDMA_READ:
    case IBV_WR_ATOMIC_CMP_AND_SWP:
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_SEND_WITH_INV:
    case IBV_WR_ATOMIC_WRITE:
      return true;
    default:
      return false;
  }
}

// A stable 32-bit name of a tenant (FNV-1a): tenants are named alike on
// every router.
uint32_t tenant_id(std::string_view tenant);

// The length of a READ chunk request at `offset` of a `total`-byte READ.
inline uint64_t read_chunk(uint64_t total, uint64_t offset) {
  return total - offset < kMaxChunk ? total - offset : kMaxChunk;
}

enum class Decode { kFrame, kNeedMore, kBad };
// Looks at the front of `bytes`: a whole valid frame (header and payload
// set, `used` its size), more bytes needed, or garbage (`why` says what).
Decode decode(std::span<const std::byte> bytes, Header& header, std::span<const std::byte>& payload,
              size_t& used, const char*& why);

}  // namespace ff::router::soft::wire
