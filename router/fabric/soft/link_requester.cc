// The soft requester toward QPs on another router: a QP whose connected QP
// (or a UD datagram whose AH) is behind a peer router runs its send queue
// over that peer's outbound link and completes on the answers that come
// back on it.
//
// RC semantics over a TCP connection (in order, reliable while it lasts):
//   * WQEs are numbered (seq) and sent in order, up to a window of
//     kWindowWqes WQEs or kWindowBytes bytes ahead of the oldest unanswered;
//     long messages go in wire::kMaxChunk chunks, one chunk per QP per
//     poller pass, so QPs sharing a link take turns;
//   * the requester completes a WQE only on its answer: an ACK once the
//     responder executed it, the READ data, the atomic's old value;
//   * a NAK (the responder's Verdict: RNR, not ready, an error status)
//     answers the oldest WQE; the responder then drops what follows it until
//     the requester comes back to that WQE (go-back-N), and the requester
//     waits (RNR timer, ACK timeout) and resends from it, or fails it, as
//     requester.h says;
//   * a lost connection fails every QP routed through that peer (links.cc).
// UC and UD complete at the requester once sent.
#include <algorithm>
#include <cassert>

#include "router/fabric/soft/engine.h"
#include "router/fabric/soft/link_protocol.h"
#include "router/fabric/soft/requester.h"

namespace ff::router::soft {
namespace {

using shm::SendWqe;
using wire::Header;
using wire::Type;

// UC and UD traffic to a router not connected yet waits this long for the
// connection before it is dropped (the first datagram to a new peer).
constexpr uint64_t kConnectGraceNs = 2'000'000'000;

// What a WQE puts in flight (the window), without validating it.
uint64_t message_bytes(const SendWqe& w) {
  if (is_atomic(w.opcode)) return 8;
  if ((w.send_flags & IBV_SEND_INLINE) != 0) return w.inline_len;
  uint64_t n = 0;
  for (uint32_t i = 0; i < std::min<uint32_t>(w.num_sge, shm::kMaxSge); ++i) n += w.payload.sge[i].length;
  return n;
}

Header request_header(const Qp& q, const SendWqe& w, uint32_t dst_qpn, uint32_t dst_ip) {
  Header h{};
  h.type = static_cast<uint8_t>(Type::kRequest);
  h.opcode = static_cast<uint8_t>(w.opcode);
  h.qp_type = static_cast<uint8_t>(q.init.type);
  h.flags = static_cast<uint8_t>(((w.send_flags & IBV_SEND_SOLICITED) != 0 ? wire::kSolicited : 0) |
                                 (w.opcode == IBV_WR_SEND_WITH_IMM || w.opcode == IBV_WR_RDMA_WRITE_WITH_IMM
                                      ? wire::kHasImm
                                      : 0));
  h.tenant = wire::tenant_id(q.pd.owner.tenant);
  h.src_qpn = q.qpn;
  h.dst_qpn = dst_qpn;
  h.src_ip = q.pd.owner.virtual_ip;
  h.dst_ip = dst_ip;
  h.imm = w.imm_data;
  h.rkey = w.rkey;
  h.remote_addr = w.remote_addr;
  h.compare_add = w.compare_add;
  h.swap = w.swap;
  return h;
}

void complete_head(Engine& e, Qp& q, const SendWqe& w, ibv_wc_status status, uint64_t bytes) {
  e.complete_remote_head(q, w, status, bytes);
}

// The answer to the oldest WQE was "not now": everything sent after it is
// dropped by the responder and goes again.
void go_back(RemoteRequester& rr) {
  rr.sent = 0;
  rr.offset = 0;
  rr.bytes_out = 0;
  rr.read_got = 0;
}

// Waits for the head WQE to be answered again, or fails it.
void retry_head(Engine& e, Qp& q, const SendWqe& w, const Verdict& v, uint64_t now) {
  if (ibv_wc_status st = retry_or_fail(q, v, now); st != IBV_WC_SUCCESS) complete_head(e, q, w, st, 0);
}

}  // namespace

// No link to the peer (not yet, or it is down): like a request nobody
// answers. Peers keeps trying to connect meanwhile.
static bool wait_for_link(Engine& e, Qp& q, Peer& peer, uint64_t now) {
  SendWqe w;
  if (!q.sq.sc_peek(0, w)) return false;
  if (peer.wanted_since_ns == 0) peer.wanted_since_ns = now;
  if (q.init.type == IBV_QPT_RC) {
    bool failed = q.retry_left == 0;
    retry_head(e, q, w, Verdict::not_ready(), now);
    return failed;
  }
  if (now - peer.wanted_since_ns < kConnectGraceNs) {
    q.wait_until_ns = now + 1'000'000;
    return false;
  }
  complete_head(e, q, w, IBV_WC_SUCCESS, message_bytes(w));  // UC: lost on the wire
  return true;
}

bool Engine::service_remote(Qp& q, uint64_t now) {
  RemoteRequester& rr = q.remote_req;
  Link* link = q.route->out;
  SendWqe w;
  // A bind or local invalidation at the head needs no link: it runs now.
  if (rr.sent == 0 && q.sq.sc_peek(0, w) && shm::is_local_op(w.opcode) && shm::opcode_allowed(q.init.type, w.opcode)) {
    complete_head(*this, q, w, execute_local(q, w), 0);
    return true;
  }
  if (link == nullptr) return wait_for_link(*this, q, *q.route, now);
  const bool reliable = q.init.type == IBV_QPT_RC;
  int n = 0;
  bool held_back = false;  // by its tenant's fair share: more next pass
  uint64_t pass_bytes = 0;
  while (n < core::kBatch && link->room()) {
    if (reliable && (rr.sent >= kWindowWqes || rr.bytes_out >= kWindowBytes)) break;
    if (!q.sq.sc_peek(rr.sent, w)) break;
    // Validated again for every chunk: the descriptor is a fresh copy each
    // time, and an MR may have gone meanwhile.
    Sges s;
    if (ibv_wc_status st = resolve_request(*this, q, w, s); st != IBV_WC_SUCCESS) {
      // Fails in order: once everything before it has been answered.
      if (rr.sent == 0) {
        complete_head(*this, q, w, st, 0);
        rr.offset = 0;
        ++n;
      }
      break;
    }
    // BIND_MW, LOCAL_INV: here, in order, once everything before it was answered.
    if (shm::is_local_op(w.opcode)) {
      if (rr.sent != 0) break;
      ibv_wc_status st = execute_local(q, w);
      complete_head(*this, q, w, st, 0);
      ++n;
      if (st != IBV_WC_SUCCESS) break;
      continue;
    }
    // A READ asks for one chunk at a time; an atomic in one request.
    uint64_t chunk = !answered_with_data(w.opcode) ? std::min<uint64_t>(wire::kMaxChunk, s.total - rr.offset)
                     : is_atomic(w.opcode)         ? 8
                                                   : wire::read_chunk(s.total, rr.offset);
    if (auto a = admit(q, chunk, rr.offset == 0, now); a != core::TenantShare::Admission::kGo) {
      held_back = a == core::TenantShare::Admission::kHeldBack;
      break;
    }
    Header h = request_header(q, w, q.attr.dest_qp_num, q.remote_ip);
    h.seq = rr.head_seq + rr.sent;
    h.total = s.total;
    h.offset = rr.offset;
    if (answered_with_data(w.opcode)) {
      link->put(h);
    } else {
      h.payload = static_cast<uint32_t>(chunk);
      Pieces from = source_of(s);
      from.skip(rr.offset);
      if (!put_with_payload(*link, h, from, chunk, /*may_defer=*/true)) {  // the socket is full: later
        refund(q, chunk, rr.offset == 0, /*tried=*/false);
        break;
      }
    }
    rr.offset += chunk;
    ++n;
    if (rr.offset >= s.total) {  // the whole WQE went out
      rr.offset = 0;
      if (reliable) {
        ++rr.sent;
        rr.bytes_out += s.total;
      } else {
        complete_head(*this, q, w, IBV_WC_SUCCESS, s.total);
      }
    }
    pass_bytes += chunk;
    if (pass_bytes >= q.tenant.share.pass_budget()) {  // the other QPs on the link get their turn
      q.tenant.share.turn_ended();
      break;
    }
  }
  return n > 0 || held_back;
}

// READ data or an atomic's old value for the head WQE.
static void on_data_answer(Engine& e, Qp& q, const SendWqe& w, const Header& h, std::span<const std::byte> payload) {
  RemoteRequester& rr = q.remote_req;
  bool read = w.opcode == IBV_WR_RDMA_READ;
  if (read != (static_cast<Type>(h.type) == Type::kReadResponse) || !answered_with_data(w.opcode)) return;
  Sges dst;
  ibv_wc_status st = resolve_request(e, q, w, dst);
  if (st == IBV_WC_SUCCESS && h.total != dst.total) return;  // not an answer to this WQE
  if (st == IBV_WC_SUCCESS && lands_locally(w.opcode)) {
    Pieces to(dst);
    to.skip(h.offset);
    land(to, payload);
  }
  rr.read_got += payload.size();
  if (st == IBV_WC_SUCCESS && read && rr.read_got < dst.total) return;  // more chunks to come
  if (rr.sent > 0) {
    --rr.sent;
    rr.bytes_out -= std::min(rr.bytes_out, dst.total);
  }
  complete_head(e, q, w, st, dst.total);
}

void Engine::on_answer(Link& link, const Header& h, std::span<const std::byte> payload) {
  Qp* q = find_qp(h.dst_qpn);
  // Answers for a QP that went away, was reset or moved on are stale.
  if (q == nullptr || q->route != &link.peer || q->state != IBV_QPS_RTS || q->init.type != IBV_QPT_RC ||
      q->attr.dest_qp_num != h.src_qpn)
    return;
  RemoteRequester& rr = q->remote_req;
  if (h.seq != rr.head_seq) return;  // answers come in order: anything else is stale
  SendWqe w;
  if (!q->sq.sc_peek(0, w)) return;
  switch (static_cast<Type>(h.type)) {
    case Type::kAck:
      if (rr.sent == 0 || answered_with_data(w.opcode)) return;
      --rr.sent;
      rr.bytes_out -= std::min(rr.bytes_out, message_bytes(w));
      return complete_head(*this, *q, w, IBV_WC_SUCCESS, message_bytes(w));
    case Type::kReadResponse:
    case Type::kAtomicResponse:
      return on_data_answer(*this, *q, w, h, payload);
    case Type::kNak:
      if (auto v = verdict_of_nak(h)) {
        go_back(rr);
        retry_head(*this, *q, w, *v, now_);
      }
      return;
    default:
      return;
  }
}

void Engine::complete_remote_head(Qp& q, const SendWqe& w, ibv_wc_status status, uint64_t bytes) {
  assert(q.route != nullptr && q.sq.size_guess() > 0 && "completes the head of a routed QP");
  uint64_t index = q.sq.consumed();
  q.sq.sc_release(1);
  ++q.remote_req.head_seq;
  q.remote_req.read_got = 0;
  reset_retries(q);
  if (status != IBV_WC_SUCCESS) {
    complete_send(q, send_completion(w.wr_id, status, w.opcode, q.qpn), index);
    set_error(q);
    return;
  }
  count_sent(q, w.opcode, bytes);
  if (q.signals(w)) complete_send(q, send_success(q, w, bytes), index);
}

Datagram Engine::send_remote_datagram(Qp& q, const Ah& ah, const SendWqe& w, const Sges& src, uint32_t qkey,
                                      uint64_t now) {
  Peer& peer = *ah.route;
  Link* link = peer.out;
  if (link == nullptr) {
    if (peer.wanted_since_ns == 0) peer.wanted_since_ns = now;
    return now - peer.wanted_since_ns < kConnectGraceNs ? Datagram::kWait : Datagram::kDropped;
  }
  return put_datagram(q, ah, peer, w, src, qkey) ? Datagram::kSent : Datagram::kWait;
}

Datagram Engine::fanout_ready(const Ah& ah, uint64_t now) {
  for (Peer* p : ah.fanout) {
    if (p->out == nullptr) {
      if (p->wanted_since_ns == 0) p->wanted_since_ns = now;
      if (now - p->wanted_since_ns < kConnectGraceNs) return Datagram::kWait;
    } else if (!p->out->room()) {
      return Datagram::kWait;
    }
  }
  return Datagram::kSent;
}

bool Engine::put_datagram(Qp& q, const Ah& ah, Peer& peer, const SendWqe& w, const Sges& src, uint32_t qkey) {
  Link* link = peer.out;
  if (link == nullptr || !link->room()) return false;
  Header h = request_header(q, w, w.remote_qpn, ah.virtual_ip);
  h.rkey = qkey;
  h.total = src.total;
  h.payload = static_cast<uint32_t>(src.total);
  h.remote_addr = ah.attr.grh.traffic_class | (uint64_t{ah.attr.grh.hop_limit} << 8);
  h.compare_add = 0;
  h.swap = 0;
  Pieces from = source_of(src);
  put_with_payload(*link, h, from, src.total);
  return true;
}

}  // namespace ff::router::soft
