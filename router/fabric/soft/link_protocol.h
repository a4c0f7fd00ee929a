// What the two halves of the soft transport between routers share: the
// requester's window, and how a responder's Verdict travels as a NAK.
#pragma once

#include <optional>
#include <span>

#include "router/fabric/soft/link.h"
#include "router/fabric/soft/responder.h"
#include "router/fabric/soft/transfer.h"
#include "router/fabric/soft/wire.h"

namespace ff::router::soft {

// A frame carrying `len` bytes of `from` (h.payload == len): sent from the
// pages where they are when the link can (Link::put_gathered), else
// copied into the link's buffer. Small payloads are copied: a system call
// per frame costs more than the copy, and frames queued together go out
// with one. False: deferred (`may_defer` and the socket is full), nothing
// queued.
inline bool put_with_payload(Link& link, const wire::Header& h, Pieces& from, uint64_t len, bool may_defer = false) {
  constexpr uint64_t kDirectFrom = 16 * 1024;
  constexpr size_t kMaxParts = 16;
  if (len >= kDirectFrom && !link.tx_pending()) {
    iovec parts[kMaxParts];
    size_t n = 0;
    uint64_t left = len, got = 0;
    Pieces probe = from;
    while (left > 0 && n < kMaxParts) {
      std::byte* p = probe.next(left, got);
      if (p == nullptr || got == 0) break;
      parts[n++] = {p, got};
      left -= got;
    }
    if (left == 0) return link.put_gathered(h, std::span<const iovec>(parts, n), may_defer);
  }
  Pieces to(link.put(h), len);  // (scattered over more pieces than that: copied)
  copy(to, from, len);
  return true;
}

// An RC requester keeps at most this much unanswered on a link.
inline constexpr uint32_t kWindowWqes = 64;
inline constexpr uint64_t kWindowBytes = 4u << 20;

// A refusal as a NAK: (reason, value) for wire::Header::opcode and imm.
inline std::pair<wire::NakReason, uint32_t> nak_of(const Verdict& v) {
  switch (v.refusal) {
    case Refusal::kRnr:
      return {wire::NakReason::kRnr, v.rnr_timer};
    case Refusal::kFailed:
      return {wire::NakReason::kStatus, static_cast<uint32_t>(v.status)};
    default:
      return {wire::NakReason::kNotReady, 0};
  }
}

// A NAK as the refusal it stands for; nullopt for a reason this router does
// not know. Only the statuses a responder sends are believed: anything else
// from a peer is a remote operational error.
inline std::optional<Verdict> verdict_of_nak(const wire::Header& h) {
  switch (static_cast<wire::NakReason>(h.opcode)) {
    case wire::NakReason::kRnr:
      return Verdict{IBV_WC_SUCCESS, Refusal::kRnr, static_cast<uint8_t>(h.imm)};
    case wire::NakReason::kNotReady:
      return Verdict::not_ready();
    case wire::NakReason::kStatus: {
      auto st = static_cast<ibv_wc_status>(h.imm);
      if (st != IBV_WC_REM_ACCESS_ERR && st != IBV_WC_REM_INV_REQ_ERR) st = IBV_WC_REM_OP_ERR;
      return Verdict::failed(st);
    }
  }
  return std::nullopt;
}

// Copies a received payload into `to` (positioned already).
inline void land(Pieces& to, std::span<const std::byte> payload) {
  Pieces from(const_cast<std::byte*>(payload.data()), payload.size());
  copy(to, from, payload.size());
}

}  // namespace ff::router::soft
