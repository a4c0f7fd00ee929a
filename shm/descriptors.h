// Data-path descriptors in shared memory: what the shim writes into a QP's
// send and receive rings, and what the router writes into a CQ's ring.
// Explicit fixed layouts, no pointers, no ibv_* structs (the router never
// trusts a client's struct layout, and a future client of another build
// must agree byte for byte: the static_asserts pin that).
//
// Segment layouts (each a memfd created by the router, see segment.h):
//   QP: SegmentHeader | ring<SendWqe>(send capacity) | ring<RecvWqe>(recv capacity)
//   CQ: SegmentHeader | CqControl | ring<Cqe>(capacity)
//   completion channel: SegmentHeader | ring<ChannelEvent>(capacity)
#pragma once

#include <infiniband/verbs.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "shm/ring.h"
#include "shm/segment.h"

namespace ff::shm {

inline constexpr uint32_t kMaxSge = 16;
inline constexpr uint32_t kMaxInline = 448;

struct WireSge {
  uint64_t addr;
  uint32_t length;
  uint32_t lkey;
};
static_assert(sizeof(WireSge) == 16, "descriptor layout is ABI");

// Opcodes are the ibv_wr_opcode values; flags the ibv_send_flags bits.
// The memory-window operations reuse the fields:
//   BIND_MW: rkey = the window's rkey now, remote_qkey = its rkey after the
//     bind (same index, the new key byte), remote_addr and compare_add =
//     the range, swap = its access flags, payload.sge[0].lkey = the MR's
//     lkey (0 and an empty range: unbind a type 1 window); num_sge 0.
//   LOCAL_INV, SEND_WITH_INV: imm_data = the rkey to invalidate (host
//     order, as ibv_send_wr.invalidate_rkey).
struct SendWqe {
  uint64_t wr_id;
  uint8_t opcode;
  uint8_t num_sge;
  uint16_t reserved;
  uint32_t send_flags;
  uint32_t imm_data;    // network order, as the app gave it
  uint32_t inline_len;  // bytes in `payload` when IBV_SEND_INLINE
  uint64_t remote_addr;
  uint32_t rkey;
  uint32_t remote_qpn;  // UD
  uint64_t compare_add;
  uint64_t swap;
  uint32_t ah;  // UD: address handle (router handle)
  uint32_t remote_qkey;
  union {
    WireSge sge[kMaxSge];
    uint8_t inline_data[kMaxInline];
  } payload;

  // What a ring moves of it (shm/ring.h, SizedDescriptor): the header line,
  // then the inline bytes or the SGEs, one SGE's room at least (a bind
  // keeps its MR's lkey there). A 64-byte WRITE's descriptor is two cache
  // lines, not eight. Whatever the header says, never more than the slot.
  static constexpr size_t kHeaderBytes = 64;
  static constexpr size_t kCommonBytes = 128;  // up to 4 SGEs or 64 inline bytes
  size_t wire_bytes() const {
    size_t body = (send_flags & IBV_SEND_INLINE) != 0 ? (size_t{inline_len} + 7) & ~size_t{7}
                                                       : size_t{num_sge} * sizeof(WireSge);
    return kHeaderBytes + std::clamp(body, sizeof(WireSge), sizeof(payload));
  }

  // The short form of a lone post (shm/ring.h, LoneCopied): SEND, WRITE
  // (with or without immediate) and READ on a connected QP, with one SGE
  // or up to 16 inline bytes: a small message's whole descriptor, in the
  // line that publishes it.
  struct Lone {
    uint64_t wr_id;
    uint64_t remote_addr;
    uint32_t rkey;
    uint32_t imm_data;
    uint8_t opcode;
    uint8_t num_sge;
    uint8_t inline_len;
    uint8_t send_flags;
    uint32_t reserved;
    union {
      WireSge sge;
      uint8_t inline_data[16];
    } body;
  };
  static bool to_lone(const SendWqe& w, Lone& lone);
  static void from_lone(const Lone& lone, SendWqe& w);
};
static_assert(sizeof(SendWqe::Lone) == 48, "descriptor layout is ABI");

inline bool SendWqe::to_lone(const SendWqe& w, Lone& lone) {
  switch (w.opcode) {
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_RDMA_READ:
      break;
    default:
      return false;
  }
  // Only what the short form holds, the rest zero: from_lone gives back this very descriptor.
  if (w.send_flags > UINT8_MAX || w.num_sge > 1 || w.inline_len > sizeof lone.body || w.reserved != 0 ||
      w.remote_qpn != 0 || w.compare_add != 0 || w.swap != 0 || w.ah != 0 || w.remote_qkey != 0)
    return false;
  lone.wr_id = w.wr_id;
  lone.remote_addr = w.remote_addr;
  lone.rkey = w.rkey;
  lone.imm_data = w.imm_data;
  lone.opcode = w.opcode;
  lone.num_sge = w.num_sge;
  lone.inline_len = static_cast<uint8_t>(w.inline_len);
  lone.send_flags = static_cast<uint8_t>(w.send_flags);
  lone.reserved = 0;
  std::memcpy(&lone.body, &w.payload, sizeof lone.body);
  return true;
}

inline void SendWqe::from_lone(const Lone& lone, SendWqe& w) {
  std::memset(&w, 0, offsetof(SendWqe, payload));
  w.wr_id = lone.wr_id;
  w.remote_addr = lone.remote_addr;
  w.rkey = lone.rkey;
  w.imm_data = lone.imm_data;
  w.opcode = lone.opcode;
  // Never more than the short form holds, whatever the app wrote there:
  // the reader must not go on into bytes this copy did not fill.
  w.num_sge = std::min<uint8_t>(lone.num_sge, 1);
  w.inline_len = std::min<uint32_t>(lone.inline_len, sizeof lone.body);
  w.send_flags = lone.send_flags;
  std::memcpy(&w.payload, &lone.body, sizeof lone.body);
}
static_assert(sizeof(SendWqe) == 512, "descriptor layout is ABI");
static_assert(offsetof(SendWqe, payload) == 64, "descriptor layout is ABI");

// Which work request opcodes a QP type carries (verbs: UD only sends; UC
// sends and writes; RC everything; an XRC send QP what RC does but the
// window operations; an XRC receive QP nothing). The shim refuses others at
// post; the router refuses them again, since it trusts no descriptor.
inline bool opcode_allowed(ibv_qp_type type, uint32_t op) {
  switch (op) {
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
      return type != IBV_QPT_XRC_RECV;
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
      return type == IBV_QPT_RC || type == IBV_QPT_UC || type == IBV_QPT_XRC_SEND;
    case IBV_WR_BIND_MW:  // the fabric must offer memory windows (no window exists otherwise)
    case IBV_WR_LOCAL_INV:
    case IBV_WR_SEND_WITH_INV:
      return type == IBV_QPT_RC || type == IBV_QPT_UC;
    case IBV_WR_RDMA_READ:
    case IBV_WR_ATOMIC_CMP_AND_SWP:
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
      return type == IBV_QPT_RC || type == IBV_QPT_XRC_SEND;
    case IBV_WR_ATOMIC_WRITE:  // the value in `swap`; the fabric must offer it (QP creation checks)
      return type == IBV_QPT_RC;
    default:
      return false;
  }
}

// Work requests the requester executes itself, in order, without a
// message: they change its memory windows.
inline bool is_local_op(uint32_t op) { return op == IBV_WR_BIND_MW || op == IBV_WR_LOCAL_INV; }

struct RecvWqe {
  uint64_t wr_id;
  uint32_t num_sge;
  uint32_t reserved;
  WireSge sge[kMaxSge];

  // What a ring moves of it: the header, then its SGEs (never more than the slot).
  static constexpr size_t kHeaderBytes = 16;
  static constexpr size_t kCommonBytes = 64;  // up to 3 SGEs
  size_t wire_bytes() const { return kHeaderBytes + size_t{num_sge < kMaxSge ? num_sge : kMaxSge} * sizeof(WireSge); }
};
static_assert(sizeof(RecvWqe) == 272, "descriptor layout is ABI");

// Mirrors the fields of struct ibv_wc.
struct Cqe {
  uint64_t wr_id;
  uint32_t status;  // ibv_wc_status
  uint32_t opcode;  // ibv_wc_opcode
  uint32_t vendor_err;
  uint32_t byte_len;
  uint32_t imm_data;  // network order
  uint32_t qp_num;
  uint32_t src_qp;
  uint32_t wc_flags;
  uint16_t pkey_index;
  uint16_t slid;
  uint8_t sl;
  uint8_t dlid_path_bits;
  uint8_t solicited;  // drives solicited-only notification
  uint8_t lap;        // the ring's (shm/ring.h LapMarked): stored last, tells the app the slot is published
  // A send completion: how many send WRs of its QP it retires (itself and
  // the unsignaled ones before it). Their slots in the send queue are free
  // once the app polled it, as on mlx5: ibv_post_send says ENOMEM before.
  uint32_t sends_retired;
  // A receive completion of an XRC SRQ: its srq_num (the QP, qp_num, may
  // be another process's), so that the shim frees the SRQ's slot.
  uint32_t xrc_srq;
  // When the router wrote it (CLOCK_MONOTONIC, ns), for CQs made with
  // IBV_WC_EX_WITH_COMPLETION_TIMESTAMP(_WALLCLOCK); 0 on the others.
  uint64_t completed_ns;
};
static_assert(sizeof(Cqe) == 64, "descriptor layout is ABI");
static_assert(offsetof(Cqe, sends_retired) == 48, "descriptor layout is ABI");

// The virtual device's clock, in kHz (ibv_device_attr_ex.hca_core_clock):
// completion timestamps and ibv_query_rt_values_ex count nanoseconds of
// CLOCK_MONOTONIC, a 1 GHz clock.
inline constexpr uint64_t kCompletionClockKhz = 1000000;

// Written by the app (arm), read and cleared by the router when it adds a
// completion; `error` written by the router when the CQ overran.
struct alignas(kCacheLine) CqControl {
  std::atomic<uint32_t> arm;    // 0, kArmNext or kArmSolicited
  std::atomic<uint32_t> error;  // non-zero: completions were lost (overrun)
  uint8_t pad[kCacheLine - 8];
};
static_assert(sizeof(CqControl) == kCacheLine, "descriptor layout is ABI");
inline constexpr uint32_t kArmNext = 1;
inline constexpr uint32_t kArmSolicited = 2;

// The 40-byte Global Route Header written at the head of every UD receive
// buffer (verbs' struct ibv_grh layout, network order).
struct WireGrh {
  uint32_t version_tclass_flow;
  uint16_t paylen;
  uint8_t next_hdr;
  uint8_t hop_limit;
  uint8_t sgid[16];
  uint8_t dgid[16];
};
static_assert(sizeof(WireGrh) == 40, "the GRH is 40 bytes");

// One asynchronous event: an ibv_event_type and the client's handle of the
// QP, CQ or SRQ it concerns (0 for port and device events).
struct AsyncEvent {
  uint32_t type;
  uint32_t handle;
};
static_assert(sizeof(AsyncEvent) == 8, "descriptor layout is ABI");

// One completion event: which CQ (the router's handle) fired.
struct ChannelEvent {
  uint32_t cq;
  uint32_t reserved;
};
static_assert(sizeof(ChannelEvent) == 8, "descriptor layout is ABI");

// Offsets inside the segments.
inline constexpr size_t kQpSendRingOffset = sizeof(SegmentHeader);
inline constexpr size_t qp_recv_ring_offset(uint32_t send_capacity) {
  return kQpSendRingOffset + ring_bytes<SendWqe>(send_capacity);
}
inline constexpr size_t qp_segment_bytes(uint32_t send_capacity, uint32_t recv_capacity) {
  return qp_recv_ring_offset(send_capacity) + ring_bytes<RecvWqe>(recv_capacity);
}
inline constexpr size_t kCqControlOffset = sizeof(SegmentHeader);
inline constexpr size_t kCqRingOffset = kCqControlOffset + sizeof(CqControl);
inline constexpr size_t cq_segment_bytes(uint32_t capacity) {
  return kCqRingOffset + ring_bytes<Cqe>(capacity);
}
inline constexpr size_t kSrqRingOffset = sizeof(SegmentHeader);
inline constexpr size_t srq_segment_bytes(uint32_t capacity) {
  return kSrqRingOffset + ring_bytes<RecvWqe>(capacity);
}
inline constexpr size_t kChannelRingOffset = sizeof(SegmentHeader);
inline constexpr size_t kAsyncRingOffset = sizeof(SegmentHeader);
inline constexpr uint32_t kAsyncRingCapacity = 1024;
inline constexpr size_t async_segment_bytes() {
  return kAsyncRingOffset + ring_bytes<AsyncEvent>(kAsyncRingCapacity);
}
inline constexpr size_t channel_segment_bytes(uint32_t capacity) {
  return kChannelRingOffset + ring_bytes<ChannelEvent>(capacity);
}

// Smallest valid ring capacity holding `n` entries (at least 2).
inline uint32_t ring_capacity_for(uint32_t n) {
  uint32_t c = 2;
  while (c < n && c < (1u << 20)) c <<= 1;
  return c;
}

}  // namespace ff::shm
