// The soft fabric's responder: what a QP does with a request that reaches
// it, whoever carried the request there: the local requester
// (requester.cc) or a link from another router (link_responder.cc). Every
// access, key, bounds, alignment and state rule of WRITE, READ, atomics,
// SEND and UD delivery is written here, once; the carriers only move bytes
// and turn a Verdict into what their requester sees (a completion status,
// an RNR wait, a NAK on the wire).
//
// Poller thread (or inside Engine::run_sync). Pure functions of the objects
// they are given: unit-tested without sockets or processes
// (tests/unit/responder_test.cc).
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <optional>
#include <string>

#include "router/fabric/soft/objects.h"
#include "router/fabric/soft/transfer.h"

namespace ff::router::soft {

class Engine;

// Who sends a request, as far as the responder checks it.
struct Origin {
  uint32_t src_qpn = 0;
  uint32_t dst_qpn = 0;
  ibv_qp_type type = IBV_QPT_RC;
  const Peer* via = nullptr;           // the peer router it came from; nullptr: this router
  const std::string* tenant = nullptr;  // this router: the sender's tenant
  uint32_t tenant_id = 0;              // another router: wire::tenant_id of it
  uint32_t src_ip = 0, dst_ip = 0;     // another router: the virtual IPs both ends named
};

// What a responder knows of the message that consumes one of its receives.
struct Arrival {
  uint32_t src_qpn = 0;
  uint32_t wr_opcode = 0;
  uint32_t imm = 0;  // network order
  bool solicited = false;
};

// Why a responder does not execute a request, in the terms an RC requester
// acts on (UC and UD requesters just lose the message).
enum class Refusal : uint8_t {
  kNone,
  kRnr,       // no receive posted: wait `rnr_timer` and retry
  kNotReady,  // nobody answers (no such QP, not connected, not ready): transport retry
  kFailed,    // the requester completes with `status` and its QP goes to ERR
};

// Eight bytes, the status first: returned in one register. (Twelve, with the
// byte-sized refusal first, were assembled on the stack byte by byte and read
// back whole: a store-forwarding stall on every work request.)
struct Verdict {
  ibv_wc_status status = IBV_WC_SUCCESS;  // kFailed
  Refusal refusal = Refusal::kNone;
  uint8_t rnr_timer = 0;  // kRnr: the responder's min_rnr_timer
  static Verdict ok() { return {}; }
  static Verdict failed(ibv_wc_status s) { return {s, Refusal::kFailed, 0}; }
  static Verdict not_ready() { return {IBV_WC_SUCCESS, Refusal::kNotReady, 0}; }
  explicit operator bool() const { return refusal == Refusal::kNone; }
};
static_assert(sizeof(Verdict) == 8);

// The destination QP number of a multicast datagram (IBA 9.8.1).
inline constexpr uint32_t kMulticastQpn = 0xffffff;

// The GRH fields a UD datagram carries from its sender's AH.
struct DatagramHeader {
  uint32_t src_ip = 0, dst_ip = 0;
  uint8_t traffic_class = 0, hop_limit = 0;
};

class Responder {
 public:
  explicit Responder(Engine& e) : e_(e) {}

  // RC and UC: the QP that answers a request from `o`: the one numbered
  // o.dst_qpn, ready, of the same type and tenant, connected to exactly
  // that sender through that router (and, from another router, at the
  // addresses both ends named). nullptr: nobody answers.
  Qp* connected(const Origin& o) const;

  // XRC: the SRQ an XRC send QP's request names by number becomes t's for
  // that request (its receives, its PD for every key, its CQ); an XRC
  // receive QP that is not in the SRQ's domain, or a number no SRQ has,
  // refuses it as an invalid request. Any other QP: ok.
  Verdict select_xrc_srq(Qp& t, uint32_t srq_num);
  // A WRITE of [addr, addr + len) under `rkey` (`mr`: where it lands; null
  // for len 0). REM_INV_REQ_ERR when t does not enable remote writes,
  // REM_ACCESS_ERR for a bad key, range or access.
  Verdict check_write(const Qp& t, uint32_t rkey, uint64_t addr, uint64_t len, const Mr*& mr) const;
  // The same for a READ.
  Verdict check_read(const Qp& t, uint32_t rkey, uint64_t addr, uint64_t len, const Mr*& mr) const;
  // Executes an atomic on the 8-byte word at `addr` (`old`: its previous
  // value). REM_INV_REQ_ERR when misaligned or not enabled, REM_ACCESS_ERR
  // for a bad key, range or access.
  Verdict atomic(const Qp& t, uint32_t wr_opcode, uint32_t rkey, uint64_t addr, uint64_t compare_add,
                 uint64_t swap, uint64_t& old) const;

  // Takes t's next receive for a message of `len` bytes (UD: behind the
  // GRH) and holds it in t.held_recv until complete_receive(): `dst` is then
  // ready, and the receive's slot is free. A receive t holds already (a
  // message that never finished) is taken again first, as a device keeps
  // its receive WQE at the head. No receive: RNR. A corrupt receive queue:
  // t goes to ERR, not ready. A receive that cannot hold the message (or
  // whose SGEs are bad) completes in error at the responder, t goes to ERR,
  // and the requester fails with REM_INV_REQ_ERR (too short) or REM_OP_ERR.
  Verdict take_receive(Qp& t, uint64_t len, const Arrival& a, Sges& dst);
  // Resolves the held receive's SGEs again (a message in chunks: its MRs may
  // have gone meanwhile). On failure the receive completes with
  // LOC_PROT_ERR, t goes to ERR, and the requester fails with REM_OP_ERR;
  // none held any more (t failed meanwhile): not ready.
  Verdict resolve_receive(Qp& t, const Arrival& a, Sges& dst);
  // A message that consumed the held receive arrived whole: a SEND with
  // invalidate frees the type 2 window it names first (one this QP bound;
  // otherwise the receive completes with REM_INV_REQ_ERR, t goes to ERR,
  // and so does the requester), then the receive completes.
  Verdict finish_receive(Qp& t, const Arrival& a, ibv_wc_opcode op, uint64_t bytes);
  // The held receive's completion at the responder.
  void complete_receive(Qp& t, const Arrival& a, ibv_wc_opcode op, uint64_t bytes, ibv_wc_status status);
  // t fails: the receive a message held completes flushed, never lost.
  void flush_held_receive(Qp& t);

  // UD: delivers `len` bytes of `payload` from `o` with Q_Key `qkey` to QP
  // o.dst_qpn behind a RoCE v2 GRH, and completes its receive. Datagrams
  // are unreliable: one that does not match (no such QP, not UD, not
  // ready, wrong Q_Key, another tenant, not at `dst_ip`) or finds no
  // receive is dropped. True when delivered.
  bool deliver_datagram(const Origin& o, uint32_t qkey, uint32_t dst_ip, const DatagramHeader& g,
                        Pieces& payload, uint64_t len, const Arrival& a);
  // UD multicast: delivers the datagram to every QP of the sender's tenant
  // attached to group g.dst_ip (a datagram from this router: not to the
  // sending QP itself), each as deliver_datagram does to one, with
  // `payload()` giving the bytes afresh for each. The number delivered.
  template <typename MakePayload>
  int deliver_multicast(const Origin& o, uint32_t qkey, const DatagramHeader& g, MakePayload payload, uint64_t len,
                        const Arrival& a);

 private:
  bool same_tenant(const Qp& t, const Origin& o) const;
  const std::vector<core::Qp*>* group_members(uint32_t group) const;
  // Whether UD QP t takes a datagram from `o` with `qkey`.
  bool takes_datagram(const Qp& t, const Origin& o, uint32_t qkey) const {
    return t.init.type == IBV_QPT_UD && core::answers(t.state) && t.attr.qkey == qkey && same_tenant(t, o);
  }
  // Lands a datagram in t's next receive behind its GRH; false when t has
  // none (dropped).
  bool land_datagram(Qp& t, const DatagramHeader& g, Pieces& payload, uint64_t len, const Arrival& a);
  // The MR behind `rkey` (an MR's, or a memory window's) if it grants
  // `need` on [addr, addr + len) to t.
  const Mr* remote_mr(const Qp& t, uint32_t rkey, uint64_t addr, uint64_t len, unsigned need) const;

  Engine& e_;
};

template <typename MakePayload>
int Responder::deliver_multicast(const Origin& o, uint32_t qkey, const DatagramHeader& g, MakePayload payload,
                                 uint64_t len, const Arrival& a) {
  const std::vector<core::Qp*>* members = group_members(g.dst_ip);
  if (members == nullptr || o.dst_qpn != kMulticastQpn) return 0;
  int n = 0;
  for (core::Qp* m : *members) {
    auto& t = static_cast<Qp&>(*m);
    if (!takes_datagram(t, o, qkey) || (o.via == nullptr && t.qpn == o.src_qpn)) continue;
    Pieces p = payload();
    n += land_datagram(t, g, p, len, a) ? 1 : 0;
  }
  return n;
}

// The QP type that answers a requester of `type`: its own, but XRC's
// send QP is answered by an XRC receive QP.
inline ibv_qp_type answering_type(ibv_qp_type type) { return type == IBV_QPT_XRC_SEND ? IBV_QPT_XRC_RECV : type; }

// Whether responder t enables the operation at all: if not, it refuses it
// as an invalid request (IB spec), not as an access violation.
inline bool enabled(const Qp& t, unsigned need) { return (t.attr.qp_access_flags & need) == need; }

}  // namespace ff::router::soft
