// The soft transport between routers: a QP whose connected QP (or a UD
// datagram whose AH) is on another router. The requester half runs the send
// queue over the peer's outbound link; the responder half executes requests
// arriving on an inbound link against local QPs, as transport.cc does for
// local ones, and answers on the same link.
//
// RC semantics over a TCP connection (in order, reliable while it lasts):
//   * WQEs are numbered (seq) and sent in order, up to a window of
//     kWindowWqes WQEs or kWindowBytes bytes ahead of the oldest unanswered;
//     long messages go in wire::kMaxChunk chunks, one chunk per QP per
//     poller pass, so QPs sharing a link take turns;
//   * the requester completes a WQE only on its answer: an ACK once the
//     responder executed it, the READ data, the atomic's old value;
//   * a NAK (no receive: RNR; QP not there or not ready; an error status)
//     answers the oldest WQE; the responder then drops what follows it until
//     the requester comes back to that WQE (go-back-N), and the requester
//     waits (RNR timer, ACK timeout) and resends from it, or fails it;
//   * a lost connection fails every QP routed through that peer: the head
//     WQE with IBV_WC_RETRY_EXC_ERR, the rest flushed, idle QPs to ERR (their
//     receives flush), so programs see errors, not a hang.
// UC and UD complete at the requester once sent; a responder that cannot
// take them drops them, as on the wire.
#include <algorithm>

#include "router/fabric/soft/engine.h"
#include "router/fabric/soft/transfer.h"

namespace ff::router::soft {
namespace {

using shm::Cqe;
using shm::RecvWqe;
using shm::SendWqe;
using wire::Header;
using wire::NakReason;
using wire::Type;

constexpr uint32_t kWindowWqes = 64;
constexpr uint64_t kWindowBytes = 4u << 20;
constexpr int kBatch = 32;
// UC and UD traffic to a router not connected yet waits this long for the
// connection before it is dropped (the first datagram to a new peer).
constexpr uint64_t kConnectGraceNs = 2'000'000'000;

bool is_atomic(uint32_t op) { return op == IBV_WR_ATOMIC_CMP_AND_SWP || op == IBV_WR_ATOMIC_FETCH_AND_ADD; }
bool answered_with_data(uint32_t op) { return op == IBV_WR_RDMA_READ || is_atomic(op); }

// What a WQE puts in flight (the window), without validating it.
uint64_t message_bytes(const SendWqe& w) {
  if (is_atomic(w.opcode)) return 8;
  if ((w.send_flags & IBV_SEND_INLINE) != 0) return w.inline_len;
  uint64_t n = 0;
  for (uint32_t i = 0; i < std::min<uint32_t>(w.num_sge, shm::kMaxSge); ++i) n += w.payload.sge[i].length;
  return n;
}

Header request_header(const Qp& q, const SendWqe& w, uint32_t seq) {
  Header h{};
  h.type = static_cast<uint8_t>(Type::kRequest);
  h.opcode = w.opcode;
  h.qp_type = static_cast<uint8_t>(q.init.type);
  h.flags = static_cast<uint8_t>(((w.send_flags & IBV_SEND_SOLICITED) != 0 ? wire::kSolicited : 0) |
                                 (w.opcode == IBV_WR_SEND_WITH_IMM || w.opcode == IBV_WR_RDMA_WRITE_WITH_IMM
                                      ? wire::kHasImm
                                      : 0));
  h.tenant = wire::tenant_id(q.pd.owner.tenant);
  h.src_qpn = q.qpn;
  h.dst_qpn = q.attr.dest_qp_num;
  h.seq = seq;
  h.src_ip = q.pd.owner.virtual_ip;
  h.dst_ip = q.remote_ip;
  h.imm = w.imm_data;
  h.rkey = w.rkey;
  h.remote_addr = w.remote_addr;
  h.compare_add = w.compare_add;
  h.swap = w.swap;
  return h;
}

// Copies a received payload into `to` (positioned already).
void land(Pieces& to, std::span<const std::byte> payload) {
  Pieces from(const_cast<std::byte*>(payload.data()), payload.size());
  copy(to, from, payload.size());
}

}  // namespace

// --- requester ---------------------------------------------------------------

// Completes the send queue's head WQE: a completion when signaled (always on
// error), then the QP goes to ERR on error.
static void complete_head(Engine& e, Qp& q, const SendWqe& w, ibv_wc_status status, uint64_t bytes) {
  q.sq.sc_release(1);
  ++q.remote_req.head_seq;
  q.remote_req.read_got = 0;
  q.rnr_left = q.attr.rnr_retry;
  q.retry_left = q.attr.retry_cnt;
  if (status != IBV_WC_SUCCESS) {
    e.complete(q.send_cq, send_completion(w.wr_id, status, w.opcode, q.qpn));
    e.set_error(q);
    return;
  }
  e.count_wqe(bytes);
  if ((w.send_flags & IBV_SEND_SIGNALED) != 0 || q.init.sq_sig_all) {
    Cqe c = send_completion(w.wr_id, IBV_WC_SUCCESS, w.opcode, q.qpn);
    c.byte_len = static_cast<uint32_t>(bytes);
    if (!e.complete(q.send_cq, c)) e.set_error(q, /*fatal=*/true);
  }
}

// The answer to the oldest WQE was "not now": everything sent after it is
// dropped by the responder and goes again.
static void go_back(RemoteRequester& rr) {
  rr.sent = 0;
  rr.offset = 0;
  rr.bytes_out = 0;
  rr.read_got = 0;
}

bool Engine::service_remote(Qp& q, uint64_t now) {
  RemoteRequester& rr = q.remote_req;
  Peer& peer = *q.route;
  const bool reliable = q.init.type == IBV_QPT_RC;
  SendWqe w;
  Link* link = peer.out;
  if (link == nullptr) {
    // Not connected (not yet, or the peer is down): like a request nobody
    // answers. Peers keeps trying to connect meanwhile.
    if (!q.sq.sc_peek(0, w)) return false;
    if (peer.wanted_since_ns == 0) peer.wanted_since_ns = now;
    if (reliable) {
      if (q.retry_left == 0) {
        complete_head(*this, q, w, IBV_WC_RETRY_EXC_ERR, 0);
        return true;
      }
      --q.retry_left;
      q.wait_until_ns = now + ack_timeout_ns(q.attr.timeout);
      return false;
    }
    if (now - peer.wanted_since_ns < kConnectGraceNs) {
      q.wait_until_ns = now + 1'000'000;
      return false;
    }
    complete_head(*this, q, w, IBV_WC_SUCCESS, message_bytes(w));  // UC: lost on the wire
    return true;
  }
  int n = 0;
  while (n < kBatch && link->room()) {
    if (reliable && (rr.sent >= kWindowWqes || rr.bytes_out >= kWindowBytes)) break;
    if (!q.sq.sc_peek(rr.sent, w)) break;
    // Validated again for every chunk: the descriptor is a fresh copy each
    // time, and an MR may have gone meanwhile.
    Sges s;
    ibv_wc_status st = IBV_WC_SUCCESS;
    const bool with_data = answered_with_data(w.opcode);
    if (!shm::opcode_allowed(q.init.type, w.opcode))
      st = IBV_WC_LOC_QP_OP_ERR;
    else
      st = with_data ? local_destination(*this, q, w, s) : gather(*this, q, w, s);
    if (st == IBV_WC_SUCCESS && is_atomic(w.opcode) && (s.total != 8 || w.num_sge != 1)) st = IBV_WC_LOC_LEN_ERR;
    if (st != IBV_WC_SUCCESS) {
      // Fails in order: once everything before it has been answered.
      if (rr.sent == 0) {
        complete_head(*this, q, w, st, 0);
        rr.offset = 0;
        ++n;
      }
      break;
    }
    Header h = request_header(q, w, rr.head_seq + rr.sent);
    h.total = s.total;
    h.offset = rr.offset;
    uint64_t chunk;
    if (with_data) {
      // A READ asks for one chunk at a time; an atomic in one request.
      chunk = is_atomic(w.opcode) ? 8 : wire::read_chunk(s.total, rr.offset);
      link->put(h);
    } else {
      chunk = std::min<uint64_t>(wire::kMaxChunk, s.total - rr.offset);
      h.payload = static_cast<uint32_t>(chunk);
      std::byte* p = link->put(h);
      Pieces from = source_of(s);
      from.skip(rr.offset);
      Pieces to(p, chunk);
      copy(to, from, chunk);
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
    if (chunk >= wire::kMaxChunk) break;  // a big chunk: the other QPs on the link get their turn
  }
  return n > 0;
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
  const bool sent_whole = rr.sent > 0;
  switch (static_cast<Type>(h.type)) {
    case Type::kAck:
      if (!sent_whole || answered_with_data(w.opcode)) return;
      --rr.sent;
      rr.bytes_out -= std::min(rr.bytes_out, message_bytes(w));
      complete_head(*this, *q, w, IBV_WC_SUCCESS, message_bytes(w));
      return;
    case Type::kReadResponse:
    case Type::kAtomicResponse: {
      bool read = w.opcode == IBV_WR_RDMA_READ;
      if (read != (static_cast<Type>(h.type) == Type::kReadResponse) || !answered_with_data(w.opcode)) return;
      Sges dst;
      ibv_wc_status st = local_destination(*this, *q, w, dst);
      if (st == IBV_WC_SUCCESS && h.total != dst.total) return;  // not an answer to this WQE
      if (st == IBV_WC_SUCCESS) {
        Pieces to(dst);
        to.skip(h.offset);
        land(to, payload);
      }
      rr.read_got += payload.size();
      if (st == IBV_WC_SUCCESS && read && rr.read_got < dst.total) return;  // more chunks to come
      if (sent_whole) {
        --rr.sent;
        rr.bytes_out -= std::min(rr.bytes_out, dst.total);
      }
      complete_head(*this, *q, w, st, dst.total);
      return;
    }
    case Type::kNak:
      break;
    default:
      return;
  }
  switch (static_cast<NakReason>(h.opcode)) {
    case NakReason::kRnr:
      go_back(rr);
      if (q->attr.rnr_retry != 7) {
        if (q->rnr_left == 0) return complete_head(*this, *q, w, IBV_WC_RNR_RETRY_EXC_ERR, 0);
        --q->rnr_left;
      }
      q->wait_until_ns = now_ + rnr_delay_ns(static_cast<uint8_t>(h.imm));
      return;
    case NakReason::kNotReady:
      go_back(rr);
      if (q->retry_left == 0) return complete_head(*this, *q, w, IBV_WC_RETRY_EXC_ERR, 0);
      --q->retry_left;
      q->wait_until_ns = now_ + ack_timeout_ns(q->attr.timeout);
      return;
    case NakReason::kStatus: {
      auto st = static_cast<ibv_wc_status>(h.imm);
      if (st != IBV_WC_REM_ACCESS_ERR && st != IBV_WC_REM_INV_REQ_ERR) st = IBV_WC_REM_OP_ERR;
      go_back(rr);
      complete_head(*this, *q, w, st, 0);
      return;
    }
  }
}

Datagram Engine::send_remote_datagram(Qp& q, const Ah& ah, const SendWqe& w, const Sges& src, uint32_t qkey,
                                      uint64_t now) {
  Peer& peer = *ah.route;
  Link* link = peer.out;
  if (link == nullptr) {
    if (peer.wanted_since_ns == 0) peer.wanted_since_ns = now;
    return now - peer.wanted_since_ns < kConnectGraceNs ? Datagram::kWait : Datagram::kDropped;
  }
  if (!link->room()) return Datagram::kWait;
  Header h{};
  h.type = static_cast<uint8_t>(Type::kRequest);
  h.opcode = w.opcode;
  h.qp_type = IBV_QPT_UD;
  h.flags = static_cast<uint8_t>(((w.send_flags & IBV_SEND_SOLICITED) != 0 ? wire::kSolicited : 0) |
                                 (w.opcode == IBV_WR_SEND_WITH_IMM ? wire::kHasImm : 0));
  h.tenant = wire::tenant_id(q.pd.owner.tenant);
  h.src_qpn = q.qpn;
  h.dst_qpn = w.remote_qpn;
  h.src_ip = q.pd.owner.virtual_ip;
  h.dst_ip = ah.virtual_ip;
  h.imm = w.imm_data;
  h.rkey = qkey;
  h.total = src.total;
  h.payload = static_cast<uint32_t>(src.total);
  h.remote_addr = ah.attr.grh.traffic_class | (uint64_t{ah.attr.grh.hop_limit} << 8);
  std::byte* p = link->put(h);
  Pieces from = source_of(src);
  Pieces to(p, src.total);
  copy(to, from, src.total);
  return Datagram::kSent;
}

// --- responder ---------------------------------------------------------------

std::byte* Engine::answer(Link& link, const Header& request, Type type, uint8_t reason, uint32_t value,
                          uint32_t payload) {
  Header a{};
  a.type = static_cast<uint8_t>(type);
  a.opcode = reason;
  a.qp_type = request.qp_type;
  a.tenant = request.tenant;
  a.src_qpn = request.dst_qpn;
  a.dst_qpn = request.src_qpn;
  a.seq = request.seq;
  a.src_ip = request.dst_ip;
  a.dst_ip = request.src_ip;
  a.imm = value;
  a.total = request.total;
  a.offset = request.offset;
  a.payload = payload;
  return link.put(a);
}

void Engine::on_datagram(const Header& h, std::span<const std::byte> payload) {
  if ((h.opcode != IBV_WR_SEND && h.opcode != IBV_WR_SEND_WITH_IMM) || h.offset != 0 || h.total != h.payload ||
      h.total > kUdMtu)
    return;
  Qp* t = find_qp(h.dst_qpn);
  if (t == nullptr || t->init.type != IBV_QPT_UD || !ready(*t) || t->attr.qkey != h.rkey ||
      wire::tenant_id(t->pd.owner.tenant) != h.tenant || t->pd.owner.virtual_ip != h.dst_ip)
    return;  // unreliable: whatever does not match is dropped
  Arrival a{h.src_qpn, h.opcode, h.imm, (h.flags & wire::kSolicited) != 0};
  RecvWqe r;
  Sges dst;
  ibv_wc_status failed;
  if (take_receive(*t, h.total, a, r, dst, failed) != Take::kOk) return;
  std::byte grh[kGrhBytes];
  write_roce_grh(grh, h.src_ip, h.dst_ip, static_cast<uint8_t>(h.remote_addr), static_cast<uint8_t>(h.remote_addr >> 8),
                 h.total);
  Pieces to(dst);
  Pieces header(grh, kGrhBytes);
  copy(to, header, kGrhBytes);
  land(to, payload);
  consume_receive(*t);
  complete_receive(*t, r, a, IBV_WC_RECV, h.total, IBV_WC_SUCCESS);
  count_wqe(h.total);
}

void Engine::on_request(Link& link, const Header& h, std::span<const std::byte> payload) {
  if (h.qp_type == IBV_QPT_UD) return on_datagram(h, payload);
  const bool reliable = h.qp_type == IBV_QPT_RC;
  Qp* t = find_qp(h.dst_qpn);
  // Only the QP connected to the sender, through this peer, in the sender's
  // tenant, at the addresses both ends named, answers.
  if (t == nullptr || t->route != &link.peer || !ready(*t) || t->init.type != h.qp_type ||
      t->attr.dest_qp_num != h.src_qpn || t->remote_ip != h.src_ip || t->pd.owner.virtual_ip != h.dst_ip ||
      wire::tenant_id(t->pd.owner.tenant) != h.tenant) {
    if (reliable && h.offset == 0) answer(link, h, Type::kNak, static_cast<uint8_t>(NakReason::kNotReady));
    return;
  }
  RemoteResponder& rs = t->remote_resp;
  const bool first = h.offset == 0;
  if (rs.nak_pending) {
    uint32_t d = h.seq - rs.nak_seq;
    if (d == 0 && first)
      rs.nak_pending = false;  // the requester came back to it
    else if (d <= kWindowWqes)
      return;  // sent before the requester saw the NAK
    else
      rs.nak_pending = false;  // a new life of the requester
  }
  if (rs.discard) {
    if (h.seq == rs.seq) return;
    rs.discard = false;
  }
  // RC: NAK, and drop what follows until the requester resends; UC: drop
  // the rest of the message.
  auto refuse = [&](NakReason reason, uint32_t value) {
    rs.receiving = false;
    if (reliable) {
      answer(link, h, Type::kNak, static_cast<uint8_t>(reason), value);
      rs.nak_pending = true;
      rs.nak_seq = h.seq;
    } else {
      rs.discard = true;
      rs.seq = h.seq;
    }
  };
  const bool last = h.offset + h.payload == h.total;
  const bool with_imm = h.opcode == IBV_WR_SEND_WITH_IMM || h.opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
  const bool consumes_receive = h.opcode == IBV_WR_SEND || with_imm;
  Arrival a{h.src_qpn, h.opcode, h.imm, (h.flags & wire::kSolicited) != 0};

  switch (h.opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
      if (first) {
        if (!enabled(*t, IBV_ACCESS_REMOTE_WRITE)) return refuse(NakReason::kStatus, IBV_WC_REM_INV_REQ_ERR);
        if (h.total > 0 && remote_mr(*this, *t, h.rkey, h.remote_addr, h.total, IBV_ACCESS_REMOTE_WRITE) == nullptr)
          return refuse(NakReason::kStatus, IBV_WC_REM_ACCESS_ERR);
      }
      break;
    case IBV_WR_RDMA_READ: {
      if (!reliable) return;
      if (!enabled(*t, IBV_ACCESS_REMOTE_READ)) return refuse(NakReason::kStatus, IBV_WC_REM_INV_REQ_ERR);
      uint64_t len = wire::read_chunk(h.total, h.offset);
      const Mr* mr = nullptr;
      if (h.total > 0) {
        mr = remote_mr(*this, *t, h.rkey, h.remote_addr, h.total, IBV_ACCESS_REMOTE_READ);
        if (mr == nullptr) return refuse(NakReason::kStatus, IBV_WC_REM_ACCESS_ERR);
      }
      std::byte* p = answer(link, h, Type::kReadResponse, 0, 0, static_cast<uint32_t>(len));
      if (len > 0) {
        Pieces from(*mr, h.remote_addr + h.offset, len);
        Pieces to(p, len);
        copy(to, from, len);
      }
      if (h.offset + len == h.total) count_wqe(h.total);
      return;
    }
    case IBV_WR_ATOMIC_CMP_AND_SWP:
    case IBV_WR_ATOMIC_FETCH_AND_ADD: {
      if (!reliable) return;
      if (h.remote_addr % 8 != 0 || !enabled(*t, IBV_ACCESS_REMOTE_ATOMIC))
        return refuse(NakReason::kStatus, IBV_WC_REM_INV_REQ_ERR);
      const Mr* mr = remote_mr(*this, *t, h.rkey, h.remote_addr, 8, IBV_ACCESS_REMOTE_ATOMIC);
      if (mr == nullptr) return refuse(NakReason::kStatus, IBV_WC_REM_ACCESS_ERR);
      uint64_t contiguous = 0;
      std::byte* word = mr->translate(h.remote_addr, 8, contiguous);
      if (word == nullptr || contiguous != 8) return refuse(NakReason::kStatus, IBV_WC_REM_INV_REQ_ERR);
      uint64_t old = execute_atomic(word, h.opcode, h.compare_add, h.swap);
      std::memcpy(answer(link, h, Type::kAtomicResponse, 0, 0, 8), &old, 8);
      count_wqe(8);
      return;
    }
    default:  // SEND, SEND_WITH_IMM
      break;
  }

  // A message that consumes a receive takes it at its first chunk, frees
  // its slot, and completes it after the last.
  if (consumes_receive) {
    if (first) {
      RecvWqe r;
      Sges dst;
      ibv_wc_status failed = IBV_WC_SUCCESS;
      uint64_t need = h.opcode == IBV_WR_RDMA_WRITE_WITH_IMM ? 0 : h.total;
      switch (take_receive(*t, need, a, r, dst, failed)) {
        case Take::kOk:
          break;
        case Take::kNone:
          return refuse(NakReason::kRnr, t->attr.min_rnr_timer);
        case Take::kBroken:
          return refuse(NakReason::kNotReady, 0);
        case Take::kFailed:
          return refuse(NakReason::kStatus,
                        failed == IBV_WC_LOC_LEN_ERR ? IBV_WC_REM_INV_REQ_ERR : IBV_WC_REM_OP_ERR);
      }
      consume_receive(*t);
      rs.recv = r;
      rs.receiving = true;
      rs.seq = h.seq;
    } else if (!rs.receiving || rs.seq != h.seq) {
      return;  // the rest of a message this QP did not take
    }
  }

  if (h.opcode == IBV_WR_SEND || h.opcode == IBV_WR_SEND_WITH_IMM) {
    Sges dst;
    const Pd& pd = t->srq != nullptr ? t->srq->pd : t->pd;
    if (resolve_local(*this, pd, rs.recv.sge, rs.recv.num_sge, IBV_ACCESS_LOCAL_WRITE, dst) != IBV_WC_SUCCESS) {
      complete_receive(*t, rs.recv, a, IBV_WC_RECV, 0, IBV_WC_LOC_PROT_ERR);  // its MR went meanwhile
      set_error(*t);
      return refuse(NakReason::kStatus, IBV_WC_REM_OP_ERR);
    }
    Pieces to(dst);
    to.skip(h.offset);
    land(to, payload);
  } else if (h.payload > 0) {  // WRITE: each chunk checked against the MR as it is now
    const Mr* mr = remote_mr(*this, *t, h.rkey, h.remote_addr + h.offset, h.payload, IBV_ACCESS_REMOTE_WRITE);
    if (mr == nullptr) {
      if (rs.receiving) complete_receive(*t, rs.recv, a, IBV_WC_RECV_RDMA_WITH_IMM, 0, IBV_WC_REM_ACCESS_ERR);
      return refuse(NakReason::kStatus, IBV_WC_REM_ACCESS_ERR);
    }
    Pieces to(*mr, h.remote_addr + h.offset, h.payload);
    land(to, payload);
  }
  if (!last) return;
  if (consumes_receive) {
    rs.receiving = false;
    complete_receive(*t, rs.recv, a, h.opcode == IBV_WR_RDMA_WRITE_WITH_IMM ? IBV_WC_RECV_RDMA_WITH_IMM : IBV_WC_RECV,
                     h.total, IBV_WC_SUCCESS);
  }
  count_wqe(h.total);
  if (reliable) answer(link, h, Type::kAck);
}

// --- links -------------------------------------------------------------------

void Engine::on_frame(Link& link, const Header& h, std::span<const std::byte> payload) {
  // Requests come in on the links peers opened, answers on ours.
  bool request = static_cast<Type>(h.type) == Type::kRequest;
  if (request == link.outbound) {
    link.dead = true;
    link.why_dead = request ? "protocol error from the peer: a request on an answer link"
                            : "protocol error from the peer: an answer on a request link";
    return;
  }
  if (request)
    on_request(link, h, payload);
  else
    on_answer(link, h, payload);
}

void Engine::attach_link(std::unique_ptr<Link> link, uint64_t incarnation) {
  Peer& p = link->peer;
  if (p.incarnation != 0 && p.incarnation != incarnation) fail_routes_to(p);  // restarted: its QPs are gone
  p.incarnation = incarnation;
  Link*& slot = link->outbound ? p.out : p.in;
  if (slot != nullptr) {
    slot->dead = true;
    slot->why_dead = "replaced by a new connection";
  }
  slot = link.get();
  (link->outbound ? p.out_up : p.in_up).store(true, std::memory_order_relaxed);
  p.connects.fetch_add(1, std::memory_order_relaxed);
  if (link->outbound) p.wanted_since_ns = 0;
  poller_.watch_other(link->fd.get());
  links_.push_back(std::move(link));
}

void Engine::fail_routes_to(Peer& peer) {
  for (Qp* q : qps_) {
    if (q->route != &peer || !(q->state == IBV_QPS_RTR || q->state == IBV_QPS_RTS || q->state == IBV_QPS_SQD))
      continue;
    SendWqe w;
    if (q->init.type == IBV_QPT_RC && q->sq.sc_peek(0, w))
      complete_head(*this, *q, w, IBV_WC_RETRY_EXC_ERR, 0);
    else
      set_error(*q);
    peer.qps_failed.fetch_add(1, std::memory_order_relaxed);
  }
}

void Engine::drop_link(Link& link) {
  Peer& p = link.peer;
  poller_.unwatch(link.fd.get());
  Link*& slot = link.outbound ? p.out : p.in;
  if (slot == &link) {
    slot = nullptr;
    (link.outbound ? p.out_up : p.in_up).store(false, std::memory_order_relaxed);
  }
  p.failures.fetch_add(1, std::memory_order_relaxed);
  fail_routes_to(p);
  if (on_link_down_) on_link_down_(p, link.outbound, link.why_dead);
}

bool Engine::receive_links() {
  bool busy = false;
  for (auto& l : links_) {
    if (l->dead) continue;
    if (!l->receive([&](const Header& h, std::span<const std::byte> payload) {
          busy = true;
          on_frame(*l, h, payload);
        }))
      l->dead = true;
  }
  return busy;
}

bool Engine::flush_links() {
  bool any_dead = false;
  for (auto& l : links_) {
    if (!l->dead && l->tx_pending() && !l->flush()) l->dead = true;
    any_dead |= l->dead;
  }
  if (!any_dead) return false;
  for (size_t i = 0; i < links_.size();) {
    if (!links_[i]->dead) {
      ++i;
      continue;
    }
    std::unique_ptr<Link> gone = std::move(links_[i]);
    links_.erase(links_.begin() + static_cast<std::ptrdiff_t>(i));
    drop_link(*gone);
  }
  return true;
}

}  // namespace ff::router::soft
