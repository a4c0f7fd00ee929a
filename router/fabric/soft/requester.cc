// The soft requester toward QPs of this router: one QP's send queue at a
// time, head first, in order. Every descriptor is a copy taken out of shared
// memory (RingConsumer::sc_peek) and validated against the posting
// session's own MRs before a byte moves; the responder's side of each
// operation is the Responder's (responder.h). A message longer than kPiece
// moves one piece per poller pass, so that a 1 GiB WRITE does not hold the
// poller while every other QP waits; each piece is checked again (an MR may
// go meanwhile). UD datagrams are limited to the port MTU and land behind a
// 40-byte GRH (RoCE v2 over IPv4).
#include "router/fabric/soft/requester.h"

#include <algorithm>
#include <atomic>

#include "router/fabric/soft/engine.h"

namespace ff::router::soft {

using shm::Cqe;
using shm::RecvWqe;
using shm::SendWqe;

ibv_wc_status resolve_request(const Engine& e, const Qp& q, const SendWqe& w, Sges& s) {
  if (!shm::opcode_allowed(q.init.type, w.opcode)) return IBV_WC_LOC_QP_OP_ERR;
  if (shm::is_local_op(w.opcode)) {  // no data: the fields name a window (shm/descriptors.h)
    s = Sges{};
    return IBV_WC_SUCCESS;
  }
  if (w.opcode == IBV_WR_ATOMIC_WRITE) {  // no local side: 8 bytes from the WQE
    s = Sges{};
    s.total = 8;
    return w.num_sge == 0 ? IBV_WC_SUCCESS : IBV_WC_LOC_LEN_ERR;
  }
  if (!answered_with_data(w.opcode)) {
    ibv_wc_status st = gather(e, q, w, s);
    if (st == IBV_WC_SUCCESS && q.init.type == IBV_QPT_UD && s.total > kUdMtu) return IBV_WC_LOC_LEN_ERR;  // one packet
    return st;
  }
  ibv_wc_status st = local_destination(e, q, w, s);
  if (st == IBV_WC_SUCCESS && is_atomic(w.opcode) && (s.total != 8 || w.num_sge != 1)) return IBV_WC_LOC_LEN_ERR;
  return st;
}

ibv_wc_status retry_or_fail(Qp& q, const Verdict& v, uint64_t now) {
  switch (v.refusal) {
    case Refusal::kNone:
      return IBV_WC_SUCCESS;
    case Refusal::kRnr: {
      if (q.attr.rnr_retry != 7) {  // 7: forever
        if (q.rnr_left == 0) return IBV_WC_RNR_RETRY_EXC_ERR;
        --q.rnr_left;
      }
      constexpr uint64_t kMaxBackoffNs = 8'000'000;
      uint64_t delay = rnr_delay_ns(v.rnr_timer);
      uint64_t grown = delay << std::min<uint8_t>(q.rnr_backoff, 20);
      q.wait_until_ns = now + std::max(delay, std::min(grown, kMaxBackoffNs));
      q.rnr_backoff = static_cast<uint8_t>(std::min(q.rnr_backoff + 1, 20));
      q.rnr_waiting = true;
      q.traffic.rnr_waited();
      q.tenant.traffic.rnr_waited();
      return IBV_WC_SUCCESS;
    }
    case Refusal::kNotReady:
      if (q.peer_gone || q.retry_left == 0) return IBV_WC_RETRY_EXC_ERR;
      --q.retry_left;
      q.wait_until_ns = now + ack_timeout_ns(q.attr.timeout);
      return IBV_WC_SUCCESS;
    case Refusal::kFailed:
      return v.status;
  }
  return IBV_WC_GENERAL_ERR;
}

Cqe send_success(const Qp& q, const SendWqe& w, uint64_t bytes) {
  Cqe c = send_completion(w.wr_id, IBV_WC_SUCCESS, w.opcode, q.qpn);
  c.byte_len = static_cast<uint32_t>(bytes);
  return c;
}

namespace {

// kCapped: its tenant's caps hold it (the QP waits); kHeldBack: its
// tenant used its share of this pass.
enum class Outcome { kDone, kPartial, kWait, kFatal, kCapped, kHeldBack };

constexpr uint64_t kPiece = 256 * 1024;

// Executes the head WQE of one QP whose responder is on this router. The
// requester's completion is left in `completion` for the caller, which
// first releases the WQE's ring slot: an app that sees the completion may
// at once reuse the slot.
class Executor {
 public:
  // `responder`: what Responder::connected named for this QP's last work
  // request in this turn (null: not asked yet); kept while its state still
  // answers, asked again after any outcome but kDone.
  Executor(Engine& e, Qp& q, uint64_t now, Qp*& responder, core::QueueCore::SentTally& tally)
      : e_(e), r_(e.responder()), q_(q), now_(now), responder_(responder), tally_(tally) {}

  bool has_completion = false;
  Cqe completion{};
  // The piece its tenant's QoS admitted (refunded when it waits instead).
  uint64_t admitted = 0;
  bool admitted_starts = false;

  Outcome run(const SendWqe& w) {
    Sges local;
    if (ibv_wc_status st = resolve_request(e_, q_, w, local); st != IBV_WC_SUCCESS) return fail(w, st);
    if (shm::is_local_op(w.opcode)) return local_op(w);
    if (Outcome o = admit(w, local); o != Outcome::kDone) return o;
    if (q_.init.type == IBV_QPT_UD) return send_datagram(w, local);
    if (responder_ == nullptr || !core::answers(responder_->state))
      responder_ = r_.connected(Origin{q_.qpn, q_.attr.dest_qp_num, q_.init.type, nullptr, &q_.pd.owner.tenant});
    Qp* t = responder_;
    if (t == nullptr) return refused(w, Verdict::not_ready(), local.total);
    // XRC: the SRQ the request names (in remote_qpn) serves it there.
    if (t->xrc_target())
      if (Verdict v = r_.select_xrc_srq(*t, w.remote_qpn); !v) return refused(w, v, local.total);
    switch (w.opcode) {
      case IBV_WR_SEND:
      case IBV_WR_SEND_WITH_IMM:
      case IBV_WR_SEND_WITH_INV:
        return send(w, *t, local);
      case IBV_WR_RDMA_WRITE:
      case IBV_WR_RDMA_WRITE_WITH_IMM:
        return write(w, *t, local);
      case IBV_WR_RDMA_READ:
        return read(w, *t, local);
      default:
        return atomic(w, *t, local);
    }
  }

 private:
  bool reliable() const { return q_.init.type == IBV_QPT_RC || q_.init.type == IBV_QPT_XRC_SEND; }

  // The next piece's turn under its tenant's QoS (kDone: it may go).
  Outcome admit(const SendWqe& w, const Sges& local) {
    uint64_t piece = q_.init.type == IBV_QPT_UD || is_atomic(w.opcode) ? local.total
                                                                        : std::min(kPiece, local.total - q_.head_moved);
    switch (e_.admit(q_, piece, q_.head_moved == 0, now_)) {
      case core::TenantShare::Admission::kGo:
        admitted = piece;
        admitted_starts = q_.head_moved == 0;
        return Outcome::kDone;
      case core::TenantShare::Admission::kCapped:
        return Outcome::kCapped;
      case core::TenantShare::Admission::kHeldBack:
        return Outcome::kHeldBack;
    }
    return Outcome::kDone;
  }

  // The responder did not execute it: RC waits to retry (from its first
  // byte) or fails; UC and UD lost the message, which completes.
  Outcome refused(const SendWqe& w, const Verdict& v, uint64_t bytes) {
    q_.head_moved = 0;
    if (!reliable()) return done(w, bytes);
    ibv_wc_status st = retry_or_fail(q_, v, now_);
    return st == IBV_WC_SUCCESS ? Outcome::kWait : fail(w, st);
  }

  // An error completion at the requester; the QP goes to ERR.
  Outcome fail(const SendWqe& w, ibv_wc_status status) {
    completion = send_completion(w.wr_id, status, w.opcode, q_.qpn);
    has_completion = true;
    e_.set_error(q_);
    reset_retries(q_);
    return Outcome::kFatal;
  }

  Outcome done(const SendWqe& w, uint64_t bytes) {
    reset_retries(q_);
    if (q_.signals(w)) {
      completion = send_success(q_, w, bytes);
      has_completion = true;
    }
    return Outcome::kDone;
  }

  // Moved `bytes` for the requester.
  Outcome moved(const SendWqe& w, uint64_t bytes) {
    tally_.add(w.opcode, bytes);
    return done(w, bytes);
  }

  // BIND_MW, LOCAL_INV: the requester's own windows change; no message.
  Outcome local_op(const SendWqe& w) {
    if (ibv_wc_status st = e_.execute_local(q_, w); st != IBV_WC_SUCCESS) return fail(w, st);
    tally_.add(w.opcode, 0);
    return done(w, 0);
  }

  Arrival arrival(const SendWqe& w) const {
    return Arrival{q_.qpn, w.opcode, w.imm_data, (w.send_flags & IBV_SEND_SOLICITED) != 0};
  }

  enum Side : unsigned { kFromStart = 1, kToStart = 2 };  // which side starts at the message's first byte

  // Moves the next piece of the head WQE; `to` and `from` are at the
  // message's start where `starts` says so (they skip what moved already),
  // else at the piece. True once every byte moved.
  bool next_piece(Pieces& to, Pieces& from, uint64_t total, unsigned starts = kFromStart | kToStart) {
    uint64_t n = std::min(kPiece, total - q_.head_moved);
    if ((starts & kToStart) != 0) to.skip(q_.head_moved);
    if ((starts & kFromStart) != 0) from.skip(q_.head_moved);
    // The earlier pieces' stores (non-temporal ones too) before the last
    // bytes (copy() orders the tail within one call).
    if (q_.head_moved > 0 && q_.head_moved + n == total) std::atomic_thread_fence(std::memory_order_seq_cst);
    copy(to, from, n);
    q_.head_moved += n;
    return q_.head_moved == total;
  }

  // The receive a message consumes: taken at its first piece, resolved again
  // at the next ones (its MRs may have gone meanwhile).
  Verdict receive_for(const SendWqe& w, Qp& t, uint64_t need, Sges& dst) {
    if (q_.head_moved == 0) return r_.take_receive(t, need, arrival(w), dst);
    return r_.resolve_receive(t, arrival(w), dst);
  }

  Outcome send(const SendWqe& w, Qp& t, const Sges& src) {
    Sges dst;
    if (Verdict v = receive_for(w, t, src.total, dst); !v) return refused(w, v, src.total);
    Pieces from = source_of(src);
    Pieces to(dst);
    if (!next_piece(to, from, src.total)) return Outcome::kPartial;
    if (Verdict v = r_.finish_receive(t, arrival(w), IBV_WC_RECV, src.total); !v) return refused(w, v, src.total);
    return moved(w, src.total);
  }

  Outcome write(const SendWqe& w, Qp& t, const Sges& src) {
    const Mr* mr = nullptr;
    // The whole range at the first piece (nothing moves into a bad one), the
    // piece's at the next ones.
    uint64_t at = w.remote_addr + q_.head_moved;
    uint64_t len = q_.head_moved == 0 ? src.total : std::min(kPiece, src.total - q_.head_moved);
    const bool with_imm = w.opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
    if (Verdict v = r_.check_write(t, w.rkey, at, len, mr); !v) {
      if (with_imm && q_.head_moved > 0)  // the receive it took completes in error
        r_.complete_receive(t, arrival(w), IBV_WC_RECV_RDMA_WITH_IMM, 0, v.status);
      return refused(w, v, src.total);
    }
    Sges ignored;
    if (with_imm && q_.head_moved == 0) {
      if (Verdict v = r_.take_receive(t, 0, arrival(w), ignored); !v) return refused(w, v, src.total);
    }
    if (mr != nullptr) {
      Pieces from = source_of(src);
      Pieces to(*mr, at, src.total - q_.head_moved);
      if (!next_piece(to, from, src.total, kFromStart)) return Outcome::kPartial;
    }
    if (with_imm) r_.complete_receive(t, arrival(w), IBV_WC_RECV_RDMA_WITH_IMM, src.total, IBV_WC_SUCCESS);
    return moved(w, src.total);
  }

  Outcome read(const SendWqe& w, Qp& t, const Sges& dst) {
    const Mr* mr = nullptr;
    uint64_t at = w.remote_addr + q_.head_moved;
    uint64_t len = q_.head_moved == 0 ? dst.total : std::min(kPiece, dst.total - q_.head_moved);
    if (Verdict v = r_.check_read(t, w.rkey, at, len, mr); !v) return refused(w, v, dst.total);
    if (mr != nullptr) {
      Pieces from(*mr, at, dst.total - q_.head_moved);
      Pieces to(dst);
      if (!next_piece(to, from, dst.total, kToStart)) return Outcome::kPartial;
    }
    return moved(w, dst.total);
  }

  Outcome atomic(const SendWqe& w, Qp& t, const Sges& dst) {
    uint64_t old = 0;
    if (Verdict v = r_.atomic(t, w.opcode, w.rkey, w.remote_addr, w.compare_add, w.swap, old); !v)
      return refused(w, v, 8);
    if (lands_locally(w.opcode)) {
      Pieces from(reinterpret_cast<std::byte*>(&old), 8);
      Pieces to(dst);
      copy(to, from, 8);
    }
    return moved(w, 8);
  }

  // A UD send: to (AH, remote QPN, Q_Key). Whatever does not match is
  // dropped; the requester always completes.
  Outcome send_datagram(const SendWqe& w, const Sges& src) {
    const Ah* ah = e_.find_ah(w.ah);
    if (ah == nullptr || &ah->pd != &q_.pd) return fail(w, IBV_WC_LOC_QP_OP_ERR);
    uint32_t qkey = datagram_qkey(q_, w);
    if (ah->multicast()) return send_multicast(w, src, qkey, *ah);
    if (ah->route != nullptr) {
      switch (e_.send_remote_datagram(q_, *ah, w, src, qkey, now_)) {
        case Datagram::kWait:
          q_.wait_until_ns = now_ + 1'000'000;  // the connection to its router is being set up
          return Outcome::kWait;
        case Datagram::kSent:
          return moved(w, src.total);
        case Datagram::kDropped:
          return done(w, src.total);
      }
    }
    Origin o{q_.qpn, w.remote_qpn, IBV_QPT_UD, nullptr, &q_.pd.owner.tenant};
    DatagramHeader g{q_.pd.owner.virtual_ip, ah->virtual_ip, ah->attr.grh.traffic_class, ah->attr.grh.hop_limit};
    Pieces payload = source_of(src);
    if (!r_.deliver_datagram(o, qkey, ah->virtual_ip, g, payload, src.total, arrival(w))) return done(w, src.total);
    return moved(w, src.total);
  }

  // To group ah.virtual_ip: its members on this router, and a copy to
  // every other router of the tenant, whose members take it there; it waits
  // for those links first (Engine::fanout_ready).
  Outcome send_multicast(const SendWqe& w, const Sges& src, uint32_t qkey, const Ah& ah) {
    if (w.remote_qpn == kMulticastQpn && e_.fanout_ready(ah, now_) == Datagram::kWait) {
      q_.wait_until_ns = now_ + 1'000'000;
      return Outcome::kWait;
    }
    Origin o{q_.qpn, w.remote_qpn, IBV_QPT_UD, nullptr, &q_.pd.owner.tenant};
    DatagramHeader g{q_.pd.owner.virtual_ip, ah.virtual_ip, ah.attr.grh.traffic_class, ah.attr.grh.hop_limit};
    r_.deliver_multicast(o, qkey, g, [&] { return source_of(src); }, src.total, arrival(w));
    if (w.remote_qpn == kMulticastQpn)
      for (Peer* p : ah.fanout) e_.put_datagram(q_, ah, *p, w, src, qkey);
    return moved(w, src.total);
  }

  Engine& e_;
  Responder& r_;
  Qp& q_;
  uint64_t now_;
  Qp*& responder_;
  core::QueueCore::SentTally& tally_;
};

}  // namespace

bool Engine::service_local(Qp& q, uint64_t now) {
  int n = 0;
  uint64_t pass_bytes = 0;
  SendWqe w;
  // Slots are handed back once per turn, or before a completion (the app
  // may reuse a slot as soon as it sees one), not once per work request:
  // each hand-back moves the ring's control line to the app's core.
  struct HandBack {
    Qp& q;
    bool pending = false;
    void now() {
      if (pending) q.sq.sc_publish_released();
      pending = false;
    }
    ~HandBack() { now(); }
  } hand_back{q};
  // Within one turn the QP's responder and its tenant's budget stay what
  // they were for the work request before (nothing else runs meanwhile; a
  // responder that stopped answering is asked for again).
  Qp* responder = nullptr;
  core::QueueCore::SentTally tally(*this, q);  // (declared after hand_back: counted before the slots go back)
  uint64_t budget = 0;  // once there is work: a division, not for every idle pass
  while (n < core::kBatch && q.sq.sc_peek(0, w)) {
    if (budget == 0) budget = q.tenant.share.pass_budget();
    q.sq.sc_prefetch(1);  // the next one crosses from the app's core while this one runs
    Executor x(*this, q, now, responder, tally);
    Outcome o = x.run(w);
    if (o != Outcome::kDone) responder = nullptr;
    // A piece moved: the next one while the QP's turn in this pass lasts
    // (its tenant's share bounds it too); then the other QPs go.
    if (o == Outcome::kPartial || o == Outcome::kDone) pass_bytes += x.admitted;
    bool turn_over = pass_bytes >= budget;
    if (o == Outcome::kPartial) {
      if (!turn_over) continue;
      q.tenant.share.turn_ended();
      return true;
    }
    if (o == Outcome::kHeldBack) return true;
    // It goes again later, asked again; the attempt costs its tenant's share.
    if (o == Outcome::kWait) refund(q, x.admitted, x.admitted_starts, /*tried=*/true);
    if (o == Outcome::kWait || o == Outcome::kCapped) break;
    uint64_t index = q.sq.consumed();
    q.sq.sc_release_unpublished(1);
    hand_back.pending = true;
    if (x.has_completion) {
      tally.flush();
      hand_back.now();
      complete_send(q, x.completion, index);
    }
    ++n;
    if (o == Outcome::kFatal) break;
    if (turn_over) {
      if (q.sq.size_guess() > 0) q.tenant.share.turn_ended();
      break;
    }
  }
  return n > 0;
}

}  // namespace ff::router::soft
