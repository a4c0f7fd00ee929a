#include "router/fabric/soft/responder.h"

#include "router/fabric/soft/engine.h"
#include "router/fabric/soft/wire.h"

namespace ff::router::soft {

using shm::Cqe;
using shm::RecvWqe;

bool Responder::same_tenant(const Qp& t, const Origin& o) const {
  // (Both QPs of one session share its tenant string: no compare.)
  return o.via == nullptr ? o.tenant != nullptr && (&t.pd.owner.tenant == o.tenant || t.pd.owner.tenant == *o.tenant)
                          : wire::tenant_id(t.pd.owner.tenant) == o.tenant_id;
}

Qp* Responder::connected(const Origin& o) const {
  Qp* t = e_.find_qp(o.dst_qpn);
  if (t == nullptr || !core::answers(t->state) || t->init.type != answering_type(o.type) ||
      t->attr.dest_qp_num != o.src_qpn ||
      t->route != o.via || !same_tenant(*t, o))
    return nullptr;
  // From another router: at the addresses both ends named at RTR.
  if (o.via != nullptr && (t->remote_ip != o.src_ip || t->pd.owner.virtual_ip != o.dst_ip)) return nullptr;
  return t;
}

const Mr* Responder::remote_mr(const Qp& t, uint32_t rkey, uint64_t addr, uint64_t len, unsigned need) const {
  const Pd* pd = t.memory_pd();
  if (pd == nullptr) return nullptr;
  if (const Mr* mr = e_.find_mr(rkey)) return mr->grants(*pd, need, addr, len) ? mr : nullptr;
  return static_cast<const Mr*>(e_.window_grants(t, rkey, need, addr, len));
}

Verdict Responder::select_xrc_srq(Qp& t, uint32_t srq_num) {
  if (!t.xrc_target()) return Verdict::ok();
  // A message in pieces keeps the SRQ it started with; a receive held by a
  // message to another SRQ is what an aborted message left (its sender
  // failed): it completes flushed on its own SRQ's CQ, as nothing else
  // would ever take it.
  if (t.held_recv && t.srq != nullptr && t.srq->number == srq_num) return Verdict::ok();
  if (t.held_recv) flush_held_receive(t);
  core::Srq* s = e_.find_xrc_srq(srq_num);
  if (s == nullptr || s->xrcd != t.init.xrcd) {
    t.srq = nullptr;
    return Verdict::failed(IBV_WC_REM_INV_REQ_ERR);
  }
  t.srq = s;
  return Verdict::ok();
}

Verdict Responder::check_write(const Qp& t, uint32_t rkey, uint64_t addr, uint64_t len, const Mr*& mr) const {
  mr = nullptr;
  if (!enabled(t, IBV_ACCESS_REMOTE_WRITE)) return Verdict::failed(IBV_WC_REM_INV_REQ_ERR);
  if (len == 0) return Verdict::ok();  // no memory touched: no key checked
  mr = remote_mr(t, rkey, addr, len, IBV_ACCESS_REMOTE_WRITE);
  return mr != nullptr ? Verdict::ok() : Verdict::failed(IBV_WC_REM_ACCESS_ERR);
}

Verdict Responder::check_read(const Qp& t, uint32_t rkey, uint64_t addr, uint64_t len, const Mr*& mr) const {
  mr = nullptr;
  if (!enabled(t, IBV_ACCESS_REMOTE_READ)) return Verdict::failed(IBV_WC_REM_INV_REQ_ERR);
  if (len == 0) return Verdict::ok();
  mr = remote_mr(t, rkey, addr, len, IBV_ACCESS_REMOTE_READ);
  return mr != nullptr ? Verdict::ok() : Verdict::failed(IBV_WC_REM_ACCESS_ERR);
}

Verdict Responder::atomic(const Qp& t, uint32_t wr_opcode, uint32_t rkey, uint64_t addr, uint64_t compare_add,
                          uint64_t swap, uint64_t& old) const {
  // ATOMIC WRITE is an 8-byte WRITE done atomically: it needs remote write
  // (IBA A19.4.2; rxe checks the same), the others remote atomic.
  unsigned need = wr_opcode == IBV_WR_ATOMIC_WRITE ? IBV_ACCESS_REMOTE_WRITE : IBV_ACCESS_REMOTE_ATOMIC;
  if (addr % 8 != 0 || !enabled(t, need)) return Verdict::failed(IBV_WC_REM_INV_REQ_ERR);
  const Mr* mr = remote_mr(t, rkey, addr, 8, need);
  if (mr == nullptr) return Verdict::failed(IBV_WC_REM_ACCESS_ERR);
  uint64_t contiguous = 0;
  std::byte* word = mr->translate(addr, 8, contiguous);
  if (word == nullptr || contiguous != 8) return Verdict::failed(IBV_WC_REM_INV_REQ_ERR);
  old = execute_atomic(word, wr_opcode, compare_add, swap);
  return Verdict::ok();
}

Verdict Responder::take_receive(Qp& t, uint64_t len, const Arrival& a, Sges& dst) {
  if (!t.held_recv) {
    auto& queue = t.receives();
    shm::RecvWqe r;
    if (!queue.sc_peek(0, r)) {
      if (!queue.corrupt()) return Verdict{IBV_WC_SUCCESS, Refusal::kRnr, t.attr.min_rnr_timer};
      e_.set_error(t);
      return Verdict::not_ready();
    }
    queue.sc_release(1);
    queue.sc_prefetch(0);  // the next message's receive
    t.held_recv = r;
    if (t.srq != nullptr) e_.check_srq_limit(*t.srq);
  }
  const RecvWqe& r = *t.held_recv;
  uint64_t need = t.init.type == IBV_QPT_UD ? len + kGrhBytes : len;
  ibv_wc_status st = resolve_local(e_, t.receive_pd(), r.sge, r.num_sge, IBV_ACCESS_LOCAL_WRITE, dst);
  if (st == IBV_WC_SUCCESS && dst.total < need) st = IBV_WC_LOC_LEN_ERR;
  if (st == IBV_WC_SUCCESS) return Verdict::ok();
  // The responder's own fault; an RC requester learns only that the remote
  // side failed.
  complete_receive(t, a, IBV_WC_RECV, 0, st);
  e_.set_error(t);
  return Verdict::failed(st == IBV_WC_LOC_LEN_ERR ? IBV_WC_REM_INV_REQ_ERR : IBV_WC_REM_OP_ERR);
}

Verdict Responder::resolve_receive(Qp& t, const Arrival& a, Sges& dst) {
  if (!t.held_recv) return Verdict::not_ready();
  const RecvWqe& r = *t.held_recv;
  if (resolve_local(e_, t.receive_pd(), r.sge, r.num_sge, IBV_ACCESS_LOCAL_WRITE, dst) == IBV_WC_SUCCESS)
    return Verdict::ok();
  complete_receive(t, a, IBV_WC_RECV, 0, IBV_WC_LOC_PROT_ERR);
  e_.set_error(t);
  return Verdict::failed(IBV_WC_REM_OP_ERR);
}

Verdict Responder::finish_receive(Qp& t, const Arrival& a, ibv_wc_opcode op, uint64_t bytes) {
  if (a.wr_opcode == IBV_WR_SEND_WITH_INV && !e_.invalidate_window(t, a.imm)) {
    complete_receive(t, a, op, 0, IBV_WC_REM_INV_REQ_ERR);
    e_.set_error(t);
    return Verdict::failed(IBV_WC_REM_INV_REQ_ERR);
  }
  complete_receive(t, a, op, bytes, IBV_WC_SUCCESS);
  return Verdict::ok();
}

void Responder::complete_receive(Qp& t, const Arrival& a, ibv_wc_opcode op, uint64_t bytes, ibv_wc_status status) {
  if (!t.held_recv) return;
  Cqe c{};
  c.wr_id = t.held_recv->wr_id;
  t.held_recv.reset();
  c.status = status;
  c.opcode = op;
  c.byte_len = static_cast<uint32_t>(bytes);
  c.qp_num = t.qpn;
  c.src_qp = a.src_qpn;
  if (a.wr_opcode == IBV_WR_SEND_WITH_IMM || a.wr_opcode == IBV_WR_RDMA_WRITE_WITH_IMM) {
    c.imm_data = a.imm;
    c.wc_flags = IBV_WC_WITH_IMM;
  } else if (a.wr_opcode == IBV_WR_SEND_WITH_INV) {
    c.imm_data = a.imm;  // ibv_wc.invalidated_rkey shares imm_data's place
    c.wc_flags = IBV_WC_WITH_INV;
  }
  c.solicited = a.solicited ? 1 : 0;
  if (t.init.type == IBV_QPT_UD) {
    c.wc_flags |= IBV_WC_GRH;
    c.byte_len = static_cast<uint32_t>(bytes + kGrhBytes);
    // On RoCE, devices report the received packet's L3 type in `sl` for
    // UD (mlx5: 2 = IPv4); UCX reads it to find the GRH's destination.
    c.sl = kRoceIpv4PacketType;
  }
  if (t.xrc_target() && t.srq != nullptr) c.xrc_srq = t.srq->number;
  e_.complete_for(t, t.receive_cq(), c);
}

void Responder::flush_held_receive(Qp& t) {
  complete_receive(t, Arrival{t.attr.dest_qp_num, IBV_WR_SEND, 0, false}, IBV_WC_RECV, 0, IBV_WC_WR_FLUSH_ERR);
}

bool Responder::deliver_datagram(const Origin& o, uint32_t qkey, uint32_t dst_ip,
                                 const DatagramHeader& g, Pieces& payload, uint64_t len, const Arrival& a) {
  Qp* t = e_.find_qp(o.dst_qpn);
  if (t == nullptr || !takes_datagram(*t, o, qkey) || t->pd.owner.virtual_ip != dst_ip) return false;
  return land_datagram(*t, g, payload, len, a);
}

bool Responder::land_datagram(Qp& t, const DatagramHeader& g, Pieces& payload, uint64_t len, const Arrival& a) {
  Sges dst;
  if (!take_receive(t, len, a, dst)) return false;
  std::byte grh[kGrhBytes];
  write_roce_grh(grh, g.src_ip, g.dst_ip, g.traffic_class, g.hop_limit, len);
  Pieces to(dst);
  Pieces header(grh, kGrhBytes);
  copy(to, header, kGrhBytes);
  copy(to, payload, len);
  complete_receive(t, a, IBV_WC_RECV, len, IBV_WC_SUCCESS);
  return true;
}

const std::vector<core::Qp*>* Responder::group_members(uint32_t group) const { return e_.mcast_members(group); }

}  // namespace ff::router::soft
