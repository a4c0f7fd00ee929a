// The soft RC transport, executed by the engine's poller: one QP's send
// queue at a time, head first, in order. Every descriptor is a copy taken
// out of shared memory (RingConsumer::sc_peek) and validated against the
// posting session's own MRs before a byte moves.
//
// What verbs promises and this file keeps:
//   * completions in order per QP; error completions always, success ones
//     when signaled (or sq_sig_all);
//   * RNR: a SEND or WRITE_WITH_IMM finding no receive waits min_rnr_timer
//     and retries rnr_retry times (7: forever), then IBV_WC_RNR_RETRY_EXC_ERR;
//   * no answer (peer not ready, or gone): retry after `timeout`, retry_cnt
//     times, then IBV_WC_RETRY_EXC_ERR (at once when the peer was destroyed);
//   * bad lkey, SGE outside its MR, missing local access: IBV_WC_LOC_PROT_ERR;
//     bad rkey, range or remote access: IBV_WC_REM_ACCESS_ERR at the requester;
//   * after an error completion the QP is in ERR and everything outstanding
//     completes with IBV_WC_WR_FLUSH_ERR.
// UC and UD are unreliable: what RC would retry or NAK (no receive posted,
// peer not ready, bad rkey at the responder, wrong Q_Key, no such QP) is
// dropped, and the requester completes successfully, as on the wire. UD
// datagrams are limited to the port MTU and land behind a 40-byte GRH
// (RoCE v2 over IPv4: the sender's address in an IPv4 header).
#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "router/fabric/soft/engine.h"
#include "router/fabric/soft/transfer.h"

namespace ff::router::soft {
namespace {

using shm::Cqe;
using shm::RecvWqe;
using shm::SendWqe;
using shm::WireSge;

constexpr int kBatch = 32;

enum class Outcome { kDone, kWait, kFatal };

// Executes the head WQE of one QP. The requester's completion is left in
// `completion` for the caller, which first releases the WQE's ring slot: an
// app that sees the completion may at once reuse the slot.
class Executor {
 public:
  Executor(Engine& e, Qp& q, uint64_t now) : e_(e), q_(q), now_(now) {}

  bool has_completion = false;
  Cqe completion{};

  Outcome run(const SendWqe& w) {
    if (!shm::opcode_allowed(q_.init.type, w.opcode)) return fail(w, IBV_WC_LOC_QP_OP_ERR);
    switch (w.opcode) {
      case IBV_WR_SEND:
      case IBV_WR_SEND_WITH_IMM:
        return send(w);
      case IBV_WR_RDMA_WRITE:
      case IBV_WR_RDMA_WRITE_WITH_IMM:
        return write(w);
      case IBV_WR_RDMA_READ:
        return read(w);
      case IBV_WR_ATOMIC_CMP_AND_SWP:
      case IBV_WR_ATOMIC_FETCH_AND_ADD:
        return atomic(w);
      default:
        return fail(w, IBV_WC_LOC_QP_OP_ERR);
    }
  }

 private:
  bool reliable() const { return q_.init.type == IBV_QPT_RC; }

  // The connected responder (RC, UC) on this router, if it would answer now.
  Qp* target() const {
    Qp* t = e_.find_qp(q_.attr.dest_qp_num);
    if (t == nullptr || !ready(*t) || t->attr.dest_qp_num != q_.qpn || t->init.type != q_.init.type ||
        t->pd.owner.tenant != q_.pd.owner.tenant || t->route != nullptr)
      return nullptr;
    return t;
  }

  ibv_wc_status gather(const SendWqe& w, Sges& s) { return soft::gather(e_, q_, w, s); }
  const Mr* remote(const Qp& t, uint32_t rkey, uint64_t addr, uint64_t len, unsigned need) const {
    return remote_mr(e_, t, rkey, addr, len, need);
  }

  void reset_retries() {
    q_.rnr_left = q_.attr.rnr_retry;
    q_.retry_left = q_.attr.retry_cnt;
  }

  // Nobody answered. RC retries; UC and UD just lost the message.
  Outcome no_answer(const SendWqe& w, uint64_t bytes) {
    if (!reliable()) return done(w, bytes);
    if (q_.peer_gone || q_.retry_left == 0) return fail(w, IBV_WC_RETRY_EXC_ERR);
    --q_.retry_left;
    q_.wait_until_ns = now_ + ack_timeout_ns(q_.attr.timeout);
    return Outcome::kWait;
  }

  Outcome rnr(const SendWqe& w, const Qp& t, uint64_t bytes) {
    if (!reliable()) return done(w, bytes);  // no receive posted: dropped
    if (q_.attr.rnr_retry != 7) {
      if (q_.rnr_left == 0) return fail(w, IBV_WC_RNR_RETRY_EXC_ERR);
      --q_.rnr_left;
    }
    q_.wait_until_ns = now_ + rnr_delay_ns(t.attr.min_rnr_timer);
    return Outcome::kWait;
  }

  // An error completion at the requester; the QP goes to ERR.
  Outcome fail(const SendWqe& w, ibv_wc_status status) {
    completion = send_completion(w.wr_id, status, w.opcode, q_.qpn);
    has_completion = true;
    e_.set_error(q_);
    reset_retries();
    return Outcome::kFatal;
  }

  Outcome done(const SendWqe& w, uint64_t bytes) {
    reset_retries();
    if ((w.send_flags & IBV_SEND_SIGNALED) != 0 || q_.init.sq_sig_all) {
      completion = Cqe{};
      completion.wr_id = w.wr_id;
      completion.opcode = completion_opcode(w.opcode);
      completion.byte_len = static_cast<uint32_t>(bytes);
      completion.qp_num = q_.qpn;
      has_completion = true;
    }
    return Outcome::kDone;
  }

  Arrival arrival(const SendWqe& w) const {
    return Arrival{q_.qpn, w.opcode, w.imm_data, (w.send_flags & IBV_SEND_SOLICITED) != 0};
  }

  // A receive completion at the responder.
  void received(Qp& t, const RecvWqe& r, const SendWqe& w, ibv_wc_opcode op, uint64_t bytes) {
    e_.consume_receive(t);
    e_.complete_receive(t, r, arrival(w), op, bytes, IBV_WC_SUCCESS);
  }

  // Takes the responder's next receive WQE and checks it can hold `len`.
  // kDone: `r`/`dst` are ready. Otherwise the outcome for the requester.
  std::pair<Outcome, bool> take_receive(Qp& t, const SendWqe& w, uint64_t len, RecvWqe& r, Sges& dst) {
    ibv_wc_status st = IBV_WC_SUCCESS;
    switch (e_.take_receive(t, len, arrival(w), r, dst, st)) {
      case Take::kOk:
        return {Outcome::kDone, true};
      case Take::kNone:
        return {rnr(w, t, len), false};
      case Take::kBroken:
        return {no_answer(w, len), false};
      case Take::kFailed:
        // The responder's own fault; an RC requester learns only that the
        // remote side failed.
        if (!reliable()) return {done(w, len), false};
        return {fail(w, st == IBV_WC_LOC_LEN_ERR ? IBV_WC_REM_INV_REQ_ERR : IBV_WC_REM_OP_ERR), false};
    }
    return {no_answer(w, len), false};
  }

  Outcome send(const SendWqe& w) {
    Sges src;
    if (ibv_wc_status st = gather(w, src); st != IBV_WC_SUCCESS) return fail(w, st);
    if (q_.init.type == IBV_QPT_UD) return send_datagram(w, src);
    Qp* t = target();
    if (t == nullptr) return no_answer(w, src.total);
    RecvWqe r;
    Sges dst;
    auto [outcome, ok] = take_receive(*t, w, src.total, r, dst);
    if (!ok) return outcome;
    Pieces from = source_of(src);
    Pieces to(dst);
    copy(to, from, src.total);
    received(*t, r, w, IBV_WC_RECV, src.total);
    account(src.total);
    return done(w, src.total);
  }

  Outcome write(const SendWqe& w) {
    Sges src;
    if (ibv_wc_status st = gather(w, src); st != IBV_WC_SUCCESS) return fail(w, st);
    Qp* t = target();
    if (t == nullptr) return no_answer(w, src.total);
    const Mr* mr = nullptr;
    if (!enabled(*t, IBV_ACCESS_REMOTE_WRITE))
      return reliable() ? fail(w, IBV_WC_REM_INV_REQ_ERR) : done(w, src.total);
    if (src.total > 0) {
      mr = remote(*t, w.rkey, w.remote_addr, src.total, IBV_ACCESS_REMOTE_WRITE);
      if (mr == nullptr) return reliable() ? fail(w, IBV_WC_REM_ACCESS_ERR) : done(w, src.total);
    }
    RecvWqe r;
    if (w.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
      Sges ignored;
      auto [outcome, ok] = take_receive(*t, w, 0, r, ignored);
      if (!ok) return outcome;
    }
    if (mr != nullptr) {
      Pieces from = source_of(src);
      Pieces to(*mr, w.remote_addr, src.total);
      copy(to, from, src.total);
    }
    if (w.opcode == IBV_WR_RDMA_WRITE_WITH_IMM)
      received(*t, r, w, IBV_WC_RECV_RDMA_WITH_IMM, src.total);
    account(src.total);
    return done(w, src.total);
  }

  ibv_wc_status local_destination(const SendWqe& w, Sges& dst) { return soft::local_destination(e_, q_, w, dst); }

  Outcome read(const SendWqe& w) {
    Sges dst;
    if (ibv_wc_status st = local_destination(w, dst); st != IBV_WC_SUCCESS) return fail(w, st);
    Qp* t = target();
    if (t == nullptr) return no_answer(w, dst.total);
    if (!enabled(*t, IBV_ACCESS_REMOTE_READ)) return fail(w, IBV_WC_REM_INV_REQ_ERR);
    if (dst.total > 0) {
      const Mr* mr = remote(*t, w.rkey, w.remote_addr, dst.total, IBV_ACCESS_REMOTE_READ);
      if (mr == nullptr) return fail(w, IBV_WC_REM_ACCESS_ERR);
      Pieces from(*mr, w.remote_addr, dst.total);
      Pieces to(dst);
      copy(to, from, dst.total);
    }
    account(dst.total);
    return done(w, dst.total);
  }

  Outcome atomic(const SendWqe& w) {
    Sges dst;
    if (ibv_wc_status st = local_destination(w, dst); st != IBV_WC_SUCCESS) return fail(w, st);
    if (dst.total != 8 || w.num_sge != 1) return fail(w, IBV_WC_LOC_LEN_ERR);
    Qp* t = target();
    if (t == nullptr) return no_answer(w, 8);
    if (w.remote_addr % 8 != 0 || !enabled(*t, IBV_ACCESS_REMOTE_ATOMIC)) return fail(w, IBV_WC_REM_INV_REQ_ERR);
    const Mr* mr = remote(*t, w.rkey, w.remote_addr, 8, IBV_ACCESS_REMOTE_ATOMIC);
    if (mr == nullptr) return fail(w, IBV_WC_REM_ACCESS_ERR);
    uint64_t contiguous = 0;
    std::byte* p = mr->translate(w.remote_addr, 8, contiguous);
    if (p == nullptr || contiguous != 8) return fail(w, IBV_WC_REM_INV_REQ_ERR);
    uint64_t old = execute_atomic(p, w.opcode, w.compare_add, w.swap);
    Pieces from(reinterpret_cast<std::byte*>(&old), 8);
    Pieces to(dst);
    copy(to, from, 8);
    account(8);
    return done(w, 8);
  }

  // A UD send: to (AH, remote QPN, Q_Key). Whatever does not match is
  // dropped; the requester always completes.
  Outcome send_datagram(const SendWqe& w, const Sges& src) {
    if (src.total > kUdMtu) return fail(w, IBV_WC_LOC_LEN_ERR);
    const Ah* ah = e_.find_ah(w.ah);
    if (ah == nullptr || &ah->pd != &q_.pd) return fail(w, IBV_WC_LOC_QP_OP_ERR);
    uint32_t qkey = (w.remote_qkey & 0x80000000u) != 0 ? q_.attr.qkey : w.remote_qkey;
    if (ah->route != nullptr) {
      switch (e_.send_remote_datagram(q_, *ah, w, src, qkey, now_)) {
        case Datagram::kWait:
          q_.wait_until_ns = now_ + 1'000'000;  // the connection to its router is being set up
          return Outcome::kWait;
        case Datagram::kSent:
          account(src.total);
          [[fallthrough]];
        case Datagram::kDropped:
          return done(w, src.total);
      }
    }
    Qp* t = e_.find_qp(w.remote_qpn);
    if (t == nullptr || t->init.type != IBV_QPT_UD || !ready(*t) || t->attr.qkey != qkey ||
        t->pd.owner.tenant != q_.pd.owner.tenant ||
        (ah->attr.is_global != 0 && t->pd.owner.virtual_ip != ah->virtual_ip))
      return done(w, src.total);
    RecvWqe r;
    Sges dst;
    auto [outcome, ok] = take_receive(*t, w, src.total, r, dst);
    if (!ok) return outcome;
    std::byte both[kGrhBytes + kUdMtu];
    write_roce_grh(reinterpret_cast<std::byte(&)[kGrhBytes]>(both), q_.pd.owner.virtual_ip, t->pd.owner.virtual_ip,
                   ah->attr.grh.traffic_class, ah->attr.grh.hop_limit, src.total);
    Pieces from = source_of(src);
    Pieces staging(both + kGrhBytes, src.total);
    copy(staging, from, src.total);
    Pieces whole(both, kGrhBytes + src.total);
    Pieces to(dst);
    copy(to, whole, kGrhBytes + src.total);
    received(*t, r, w, IBV_WC_RECV, src.total);
    account(src.total);
    return done(w, src.total);
  }

  void account(uint64_t bytes) {
    e_.count_wqe(bytes);
  }

  // Adds a completion; a CQ that overflows puts the QP in ERR.
  void post(Cq& cq, const Cqe& c, Qp& owner) {
    if (!e_.complete(cq, c)) e_.set_error(owner, /*fatal=*/true);
  }

  Engine& e_;
  Qp& q_;
  uint64_t now_;
};

}  // namespace

Take Engine::take_receive(Qp& t, uint64_t len, const Arrival& a, RecvWqe& r, Sges& dst, ibv_wc_status& failed) {
  auto& queue = t.receives();
  if (!queue.sc_peek(0, r)) {
    if (!queue.corrupt()) return Take::kNone;
    set_error(t);
    return Take::kBroken;
  }
  uint64_t need = t.init.type == IBV_QPT_UD ? len + kGrhBytes : len;
  // Receive buffers belong to the PD of the queue they were posted to.
  const Pd& pd = t.srq != nullptr ? t.srq->pd : t.pd;
  ibv_wc_status st = resolve_local(*this, pd, r.sge, r.num_sge, IBV_ACCESS_LOCAL_WRITE, dst);
  if (st == IBV_WC_SUCCESS && dst.total < need) st = IBV_WC_LOC_LEN_ERR;
  if (st == IBV_WC_SUCCESS) return Take::kOk;
  consume_receive(t);
  complete_receive(t, r, a, IBV_WC_RECV, 0, st);
  set_error(t);
  failed = st;
  return Take::kFailed;
}

void Engine::consume_receive(Qp& t) {
  t.receives().sc_release(1);
  if (t.srq != nullptr) check_srq_limit(*t.srq);
}

void Engine::complete_receive(Qp& t, const RecvWqe& r, const Arrival& a, ibv_wc_opcode op, uint64_t bytes,
                              ibv_wc_status status) {
  Cqe c{};
  c.wr_id = r.wr_id;
  c.status = status;
  c.opcode = op;
  c.byte_len = static_cast<uint32_t>(bytes);
  c.qp_num = t.qpn;
  c.src_qp = a.src_qpn;
  if (a.wr_opcode == IBV_WR_SEND_WITH_IMM || a.wr_opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
    c.imm_data = a.imm;
    c.wc_flags = IBV_WC_WITH_IMM;
  }
  c.solicited = a.solicited ? 1 : 0;
  if (t.init.type == IBV_QPT_UD) {
    c.wc_flags |= IBV_WC_GRH;
    c.byte_len = static_cast<uint32_t>(bytes + kGrhBytes);
    // On RoCE, devices report the received packet's L3 type in `sl` for
    // UD (mlx5: 2 = IPv4); UCX reads it to find the GRH's destination.
    c.sl = kRoceIpv4PacketType;
  }
  if (!complete(t.recv_cq, c)) set_error(t, /*fatal=*/true);
}

bool Engine::complete(Cq& cq, const Cqe& c) {
  if (c.status != IBV_WC_SUCCESS) stats_.error_completions.fetch_add(1, std::memory_order_relaxed);
  return cq.add(c);
}

void Engine::set_error(Qp& qp, bool fatal) {
  if (qp.state == IBV_QPS_ERR) return;
  qp.state = IBV_QPS_ERR;
  if (fatal) qp.ctx.async.raise(IBV_EVENT_QP_FATAL, qp.tag);
  if (qp.srq != nullptr) qp.ctx.async.raise(IBV_EVENT_QP_LAST_WQE_REACHED, qp.tag);
}

// Everything queued completes with IBV_WC_WR_FLUSH_ERR.
static bool flush(Engine& e, Qp& q) {
  int n = 0;
  SendWqe w;
  while (n < kBatch && q.sq.sc_try_pop(w)) {
    e.complete(q.send_cq, send_completion(w.wr_id, IBV_WC_WR_FLUSH_ERR, w.opcode, q.qpn));
    ++n;
  }
  RecvWqe r;
  while (n < kBatch && q.srq == nullptr && q.rq.sc_try_pop(r)) {
    e.complete(q.recv_cq, flushed_receive(r.wr_id, q.qpn));
    ++n;
  }
  return n > 0;
}

bool Engine::service(Qp& q, uint64_t now) {
  if (q.state == IBV_QPS_ERR) return flush(*this, q);
  if (q.state != IBV_QPS_RTS || q.wait_until_ns > now) return false;
  q.wait_until_ns = 0;
  if (q.route != nullptr) return service_remote(q, now);
  int n = 0;
  SendWqe w;
  while (n < kBatch && q.sq.sc_peek(0, w)) {
    Executor x(*this, q, now);
    Outcome o = x.run(w);
    if (o == Outcome::kWait) break;
    q.sq.sc_release(1);
    if (x.has_completion && !complete(q.send_cq, x.completion)) set_error(q, /*fatal=*/true);
    ++n;
    if (o == Outcome::kFatal) break;
  }
  // A producer index that runs past the ring is the client's doing: its QP
  // fails, nobody else notices.
  if (q.sq.corrupt() || q.rq.corrupt()) set_error(q, /*fatal=*/true);
  return n > 0;
}

}  // namespace ff::router::soft
