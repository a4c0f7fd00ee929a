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

namespace ff::router::soft {
namespace {

using shm::Cqe;
using shm::RecvWqe;
using shm::SendWqe;
using shm::WireSge;

constexpr int kBatch = 32;
constexpr uint64_t kMaxMessage = uint64_t{1} << 31;
constexpr uint64_t kUdMtu = 4096;  // the port's active MTU
constexpr uint32_t kGrhBytes = sizeof(shm::WireGrh);
constexpr uint8_t kRoceIpv4PacketType = 2;



// Local ACK timeout: 4.096 us * 2^timeout; 0 means "infinite" in the spec,
// here 2^20 (4.3 s) so that a dead peer is always reported.
uint64_t ack_timeout_ns(uint8_t t) { return 4096ull << (t == 0 ? 20 : std::min<uint8_t>(t, 31)); }

// The min_rnr_timer encoding of the InfiniBand spec (table 45), in us.
uint64_t rnr_delay_ns(uint8_t code) {
  static constexpr uint32_t kMicros[32] = {
      655360, 10,    20,    30,    40,    60,    80,    120,   160,    240,    320,
      480,    640,   960,   1280,  1920,  2560,  3840,  5120,  7680,   10240,  15360,
      20480,  30720, 40960, 61440, 81920, 122880, 163840, 245760, 327680, 491520};
  return uint64_t{kMicros[code & 31]} * 1000;
}

// Local SGEs resolved against the QP's own MRs.
struct Sges {
  const WireSge* sge = nullptr;
  uint32_t n = 0;
  const Mr* mr[shm::kMaxSge] = {};
  uint64_t total = 0;
  // Inline data instead of SGEs.
  const std::byte* flat = nullptr;
};

ibv_wc_status resolve_local(const Engine& e, const Pd& pd, const WireSge* sge, uint32_t n,
                            unsigned need, Sges& out) {
  if (n > shm::kMaxSge) return IBV_WC_LOC_LEN_ERR;
  out.sge = sge;
  out.n = n;
  out.total = 0;
  for (uint32_t i = 0; i < n; ++i) {
    out.total += sge[i].length;
    if (sge[i].length == 0) {
      out.mr[i] = nullptr;
      continue;
    }
    const Mr* mr = e.find_mr(sge[i].lkey);
    if (mr == nullptr || mr->pd != &pd || (mr->access & need) != need ||
        !mr->contains(sge[i].addr, sge[i].length))
      return IBV_WC_LOC_PROT_ERR;
    out.mr[i] = mr;
  }
  if (out.total > kMaxMessage) return IBV_WC_LOC_LEN_ERR;
  return IBV_WC_SUCCESS;
}

// Walks a byte sequence made of pieces: resolved SGEs, one flat buffer, or a
// remote MR range.
class Pieces {
 public:
  explicit Pieces(const Sges& s) : sges_(&s) {}
  Pieces(std::byte* flat, uint64_t len) : flat_(flat), flat_len_(len) {}
  Pieces(const Mr& mr, uint64_t addr, uint64_t len) : remote_(&mr), addr_(addr), flat_len_(len) {}

  // Next contiguous piece of at most `max` bytes; nullptr at the end.
  std::byte* next(uint64_t max, uint64_t& got) {
    if (remote_ != nullptr) {
      if (pos_ >= flat_len_) return nullptr;
      std::byte* p = remote_->translate(addr_ + pos_, std::min(max, flat_len_ - pos_), got);
      pos_ += got;
      return p;
    }
    if (sges_ == nullptr) {
      if (pos_ >= flat_len_) return nullptr;
      got = std::min(max, flat_len_ - pos_);
      std::byte* p = flat_ + pos_;
      pos_ += got;
      return p;
    }
    while (i_ < sges_->n && pos_ >= sges_->sge[i_].length) {
      ++i_;
      pos_ = 0;
    }
    if (i_ >= sges_->n) return nullptr;
    const WireSge& s = sges_->sge[i_];
    std::byte* p = sges_->mr[i_]->translate(s.addr + pos_, std::min<uint64_t>(max, s.length - pos_), got);
    pos_ += got;
    return p;
  }

 private:
  const Sges* sges_ = nullptr;
  const Mr* remote_ = nullptr;
  uint64_t addr_ = 0;
  std::byte* flat_ = nullptr;
  uint64_t flat_len_ = 0;
  uint32_t i_ = 0;
  uint64_t pos_ = 0;
};

Pieces source_of(const Sges& s) {
  return s.flat != nullptr ? Pieces(const_cast<std::byte*>(s.flat), s.total) : Pieces(s);
}

void copy(Pieces& dst, Pieces& src, uint64_t len) {
  uint64_t left = len;
  std::byte* d = nullptr;
  uint64_t dlen = 0;
  while (left > 0) {
    uint64_t slen;
    std::byte* s = src.next(left, slen);
    if (s == nullptr || slen == 0) return;
    left -= slen;
    while (slen > 0) {
      if (dlen == 0) {
        d = dst.next(slen, dlen);
        if (d == nullptr || dlen == 0) return;
      }
      uint64_t n = std::min(slen, dlen);
      std::memcpy(d, s, n);
      d += n;
      s += n;
      dlen -= n;
      slen -= n;
    }
  }
}

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

  // The connected responder (RC, UC), if it would answer right now.
  Qp* target() const {
    Qp* t = e_.find_qp(q_.attr.dest_qp_num);
    if (t == nullptr || !ready(*t) || t->attr.dest_qp_num != q_.qpn || t->init.type != q_.init.type ||
        t->pd.owner.tenant != q_.pd.owner.tenant)
      return nullptr;
    return t;
  }
  static bool ready(const Qp& t) {
    return t.state == IBV_QPS_RTR || t.state == IBV_QPS_RTS || t.state == IBV_QPS_SQD;
  }

  ibv_wc_status gather(const SendWqe& w, Sges& s) {
    if ((w.send_flags & IBV_SEND_INLINE) != 0) {
      if (w.inline_len > shm::kMaxInline) return IBV_WC_LOC_LEN_ERR;
      s.flat = reinterpret_cast<const std::byte*>(w.payload.inline_data);
      s.total = w.inline_len;
      return IBV_WC_SUCCESS;
    }
    return resolve_local(e_, q_.pd, w.payload.sge, w.num_sge, 0, s);
  }

  // The remote MR if `rkey` grants `need` on [addr, addr + len) at responder t.
  const Mr* remote(const Qp& t, uint32_t rkey, uint64_t addr, uint64_t len, unsigned need) const {
    const Mr* mr = e_.find_mr(rkey);
    if (mr == nullptr || mr->pd != &t.pd || (mr->access & need) != need || !mr->contains(addr, len))
      return nullptr;
    return mr;
  }
  // Whether the responder QP enables the operation at all: if not, it NAKs
  // it as an invalid request (IB spec), not as an access violation.
  static bool enabled(const Qp& t, unsigned need) { return (t.attr.qp_access_flags & need) == need; }

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

  // A receive completion at the responder.
  void received(Qp& t, const RecvWqe& r, const SendWqe& w, ibv_wc_opcode op, uint64_t bytes,
                ibv_wc_status status) {
    Cqe c{};
    c.wr_id = r.wr_id;
    c.status = status;
    c.opcode = op;
    c.byte_len = static_cast<uint32_t>(bytes);
    c.qp_num = t.qpn;
    c.src_qp = q_.qpn;
    if (w.opcode == IBV_WR_SEND_WITH_IMM || w.opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
      c.imm_data = w.imm_data;
      c.wc_flags = IBV_WC_WITH_IMM;
    }
    c.solicited = (w.send_flags & IBV_SEND_SOLICITED) != 0 ? 1 : 0;
    if (t.init.type == IBV_QPT_UD) {
      c.wc_flags |= IBV_WC_GRH;
      c.byte_len = static_cast<uint32_t>(bytes + kGrhBytes);
      // On RoCE, devices report the received packet's L3 type in `sl` for
      // UD (mlx5: 2 = IPv4); UCX reads it to find the GRH's destination.
      c.sl = kRoceIpv4PacketType;
    }
    t.receives().sc_release(1);
    if (t.srq != nullptr) e_.check_srq_limit(*t.srq);
    post(t.recv_cq, c, t);
  }

  // Takes the responder's next receive WQE and checks it can hold `len`.
  // kDone: `r`/`dst` are ready. Otherwise the outcome for the requester.
  std::pair<Outcome, bool> take_receive(Qp& t, const SendWqe& w, uint64_t len, RecvWqe& r, Sges& dst) {
    auto& queue = t.receives();
    if (!queue.sc_peek(0, r)) {
      if (queue.corrupt()) {
        e_.set_error(t);
        return {no_answer(w, len), false};
      }
      return {rnr(w, t, len), false};
    }
    uint64_t need = t.init.type == IBV_QPT_UD ? len + kGrhBytes : len;
    // Receive buffers belong to the PD of the queue they were posted to.
    const Pd& pd = t.srq != nullptr ? t.srq->pd : t.pd;
    ibv_wc_status st = resolve_local(e_, pd, r.sge, r.num_sge, IBV_ACCESS_LOCAL_WRITE, dst);
    if (st == IBV_WC_SUCCESS && dst.total < need) st = IBV_WC_LOC_LEN_ERR;
    if (st != IBV_WC_SUCCESS) {
      // The responder's own fault: its receive fails and it goes to ERR; an
      // RC requester learns only that the remote side failed.
      received(t, r, w, IBV_WC_RECV, 0, st);
      e_.set_error(t);
      if (!reliable()) return {done(w, len), false};
      return {fail(w, st == IBV_WC_LOC_LEN_ERR ? IBV_WC_REM_INV_REQ_ERR : IBV_WC_REM_OP_ERR), false};
    }
    return {Outcome::kDone, true};
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
    received(*t, r, w, IBV_WC_RECV, src.total, IBV_WC_SUCCESS);
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
      received(*t, r, w, IBV_WC_RECV_RDMA_WITH_IMM, src.total, IBV_WC_SUCCESS);
    account(src.total);
    return done(w, src.total);
  }

  // READ responses and atomic results land in local memory: the SGEs need
  // LOCAL_WRITE, and there is no inline form.
  ibv_wc_status local_destination(const SendWqe& w, Sges& dst) {
    if ((w.send_flags & IBV_SEND_INLINE) != 0) return IBV_WC_LOC_QP_OP_ERR;
    return resolve_local(e_, q_.pd, w.payload.sge, w.num_sge, IBV_ACCESS_LOCAL_WRITE, dst);
  }

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
    // Segments are page-aligned copies of the app's pages, so the router's
    // address has the app address's 8-byte alignment.
    std::atomic_ref<uint64_t> word(*reinterpret_cast<uint64_t*>(p));
    uint64_t old;
    if (w.opcode == IBV_WR_ATOMIC_CMP_AND_SWP) {
      old = w.compare_add;
      word.compare_exchange_strong(old, w.swap);
    } else {
      old = word.fetch_add(w.compare_add);
    }
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
    Qp* t = e_.find_qp(w.remote_qpn);
    if (t == nullptr || t->init.type != IBV_QPT_UD || !ready(*t) || t->attr.qkey != qkey ||
        t->pd.owner.tenant != q_.pd.owner.tenant ||
        (ah->attr.is_global != 0 && t->pd.owner.virtual_ip != ah->virtual_ip))
      return done(w, src.total);
    RecvWqe r;
    Sges dst;
    auto [outcome, ok] = take_receive(*t, w, src.total, r, dst);
    if (!ok) return outcome;
    // The GRH as a RoCE v2 device with IPv4 addresses writes it: 20 unused
    // bytes, then the IPv4 header of the datagram (rdma-core's
    // ibv_init_ah_from_wc reads the sender's address from there).
    shm::WireGrh grh{};
    auto* ip = reinterpret_cast<uint8_t*>(&grh) + 20;
    uint16_t total = static_cast<uint16_t>(20 + 8 + 12 + 8 + src.total + 4);  // IP+UDP+BTH+DETH+payload+ICRC
    uint8_t ttl = ah->attr.grh.hop_limit != 0 ? ah->attr.grh.hop_limit : 64;
    uint32_t saddr = q_.pd.owner.virtual_ip, daddr = t->pd.owner.virtual_ip;
    const uint8_t header[20] = {0x45, ah->attr.grh.traffic_class, static_cast<uint8_t>(total >> 8),
                                static_cast<uint8_t>(total), 0, 0, 0x40, 0, ttl, 17, 0, 0,
                                static_cast<uint8_t>(saddr >> 24), static_cast<uint8_t>(saddr >> 16),
                                static_cast<uint8_t>(saddr >> 8), static_cast<uint8_t>(saddr),
                                static_cast<uint8_t>(daddr >> 24), static_cast<uint8_t>(daddr >> 16),
                                static_cast<uint8_t>(daddr >> 8), static_cast<uint8_t>(daddr)};
    std::memcpy(ip, header, sizeof header);
    uint32_t sum = 0;
    for (int i = 0; i < 20; i += 2) sum += (uint32_t{ip[i]} << 8) | ip[i + 1];
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    ip[10] = static_cast<uint8_t>(~sum >> 8);
    ip[11] = static_cast<uint8_t>(~sum);
    std::byte both[kGrhBytes + kUdMtu];
    std::memcpy(both, &grh, kGrhBytes);
    Pieces from = source_of(src);
    Pieces staging(both + kGrhBytes, src.total);
    copy(staging, from, src.total);
    Pieces whole(both, kGrhBytes + src.total);
    Pieces to(dst);
    copy(to, whole, kGrhBytes + src.total);
    received(*t, r, w, IBV_WC_RECV, src.total, IBV_WC_SUCCESS);
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
