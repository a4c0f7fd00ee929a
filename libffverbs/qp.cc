// Queue pairs. Work requests are validated here (so that ibv_post_send can
// return the errno and bad_wr that verbs promises) and written as fixed
// descriptors into the QP's shared send/receive rings, which the router's
// poller drains. No system call per post while the router is busy; when it
// sleeps, the post rings the context's doorbell.
#include <unistd.h>

#include <cstring>
#include <new>

#include "libffverbs/request.h"
#include "proto/verbs_codec.h"

using namespace ff::verbs;
namespace shm = ff::shm;
namespace proto = ff::proto;

namespace {

// The opcode as the app stored it: any integer. Loading an out-of-range
// value as the enum type would itself be undefined behaviour.
uint32_t raw_opcode(const ibv_send_wr& wr) {
  uint32_t op;
  static_assert(sizeof op == sizeof wr.opcode);
  std::memcpy(&op, &wr.opcode, sizeof op);
  return op;
}

// Builds the descriptor of one work request; 0 or the errno post_send returns.
int build_send(const FfQp& qp, const ibv_send_wr& wr, shm::SendWqe& w) {
  if (!shm::opcode_allowed(qp.qpx.qp_base.qp_type, raw_opcode(wr))) return EINVAL;
  if (wr.num_sge < 0 || static_cast<uint32_t>(wr.num_sge) > qp.cap.max_send_sge) return EINVAL;
  std::memset(&w, 0, offsetof(shm::SendWqe, payload));
  w.wr_id = wr.wr_id;
  w.opcode = static_cast<uint8_t>(wr.opcode);
  w.send_flags = wr.send_flags;
  w.imm_data = wr.imm_data;
  w.num_sge = static_cast<uint8_t>(wr.num_sge);
  switch (wr.opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
    case IBV_WR_RDMA_READ:
      w.remote_addr = wr.wr.rdma.remote_addr;
      w.rkey = wr.wr.rdma.rkey;
      break;
    case IBV_WR_ATOMIC_CMP_AND_SWP:
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_ATOMIC_WRITE:  // the value to write in wr.atomic.swap, no SGE
      w.remote_addr = wr.wr.atomic.remote_addr;
      w.rkey = wr.wr.atomic.rkey;
      w.compare_add = wr.wr.atomic.compare_add;
      w.swap = wr.wr.atomic.swap;
      break;
    case IBV_WR_BIND_MW:
      return encode_bind(w, wr.bind_mw.mw, wr.bind_mw.rkey, wr.bind_mw.bind_info);
    case IBV_WR_LOCAL_INV:  // invalidate_rkey shares imm_data's place: copied above
      w.num_sge = 0;
      return 0;
    default:
      break;
  }
  if (qp.qpx.qp_base.qp_type == IBV_QPT_XRC_SEND) w.remote_qpn = wr.qp_type.xrc.remote_srqn;
  if (qp.qpx.qp_base.qp_type == IBV_QPT_UD) {
    if (wr.wr.ud.ah == nullptr) return EINVAL;
    w.ah = to_ff(wr.wr.ud.ah)->id;
    w.remote_qpn = wr.wr.ud.remote_qpn;
    w.remote_qkey = wr.wr.ud.remote_qkey;
  }
  if ((wr.send_flags & IBV_SEND_INLINE) != 0 &&
      (wr.opcode == IBV_WR_SEND || wr.opcode == IBV_WR_SEND_WITH_IMM || wr.opcode == IBV_WR_SEND_WITH_INV ||
       wr.opcode == IBV_WR_RDMA_WRITE || wr.opcode == IBV_WR_RDMA_WRITE_WITH_IMM)) {
    // Inline: the data is copied now; the buffer may be reused on return.
    uint64_t total = 0;
    for (int i = 0; i < wr.num_sge; ++i) total += wr.sg_list[i].length;
    if (total > qp.cap.max_inline_data) return EINVAL;
    uint32_t at = 0;
    for (int i = 0; i < wr.num_sge; ++i) {
      std::memcpy(w.payload.inline_data + at, reinterpret_cast<const void*>(wr.sg_list[i].addr),
                  wr.sg_list[i].length);
      at += wr.sg_list[i].length;
    }
    w.inline_len = at;
    w.num_sge = 0;
    return 0;
  }
  w.send_flags &= ~static_cast<uint32_t>(IBV_SEND_INLINE);
  for (int i = 0; i < wr.num_sge; ++i)
    w.payload.sge[i] = {wr.sg_list[i].addr, wr.sg_list[i].length, wr.sg_list[i].lkey};
  return 0;
}

// --- ibv_wr_* (extended post-send API) -------------------------------------
shm::SendWqe* begin_wr(ibv_qp_ex* qpx, ibv_wr_opcode op) {
  FfQp* qp = to_ff(qpx);
  if (qp->pending_error != 0) return nullptr;
  if (!shm::opcode_allowed(qpx->qp_base.qp_type, op) || qp->pending.size() >= qp->sq.capacity()) {
    qp->pending_error = qp->pending.size() >= qp->sq.capacity() ? ENOMEM : EINVAL;
    return nullptr;
  }
  shm::SendWqe& w = qp->pending.emplace_back();
  std::memset(&w, 0, sizeof w);
  w.wr_id = qpx->wr_id;
  w.opcode = static_cast<uint8_t>(op);
  w.send_flags = qpx->wr_flags & ~static_cast<unsigned>(IBV_SEND_INLINE);
  return &w;
}
void wr_send(ibv_qp_ex* q) { begin_wr(q, IBV_WR_SEND); }
void wr_send_imm(ibv_qp_ex* q, __be32 imm) {
  if (auto* w = begin_wr(q, IBV_WR_SEND_WITH_IMM)) w->imm_data = imm;
}
void wr_rdma_write(ibv_qp_ex* q, uint32_t rkey, uint64_t addr) {
  if (auto* w = begin_wr(q, IBV_WR_RDMA_WRITE)) {
    w->rkey = rkey;
    w->remote_addr = addr;
  }
}
void wr_rdma_write_imm(ibv_qp_ex* q, uint32_t rkey, uint64_t addr, __be32 imm) {
  if (auto* w = begin_wr(q, IBV_WR_RDMA_WRITE_WITH_IMM)) {
    w->rkey = rkey;
    w->remote_addr = addr;
    w->imm_data = imm;
  }
}
void wr_rdma_read(ibv_qp_ex* q, uint32_t rkey, uint64_t addr) {
  if (auto* w = begin_wr(q, IBV_WR_RDMA_READ)) {
    w->rkey = rkey;
    w->remote_addr = addr;
  }
}
void wr_atomic_cmp_swp(ibv_qp_ex* q, uint32_t rkey, uint64_t addr, uint64_t compare, uint64_t swap) {
  if (auto* w = begin_wr(q, IBV_WR_ATOMIC_CMP_AND_SWP)) {
    w->rkey = rkey;
    w->remote_addr = addr;
    w->compare_add = compare;
    w->swap = swap;
  }
}
void wr_atomic_write(ibv_qp_ex* q, uint32_t rkey, uint64_t addr, const void* atomic_wr) {
  if (auto* w = begin_wr(q, IBV_WR_ATOMIC_WRITE)) {
    w->rkey = rkey;
    w->remote_addr = addr;
    std::memcpy(&w->swap, atomic_wr, sizeof w->swap);
  }
}
void wr_bind_mw(ibv_qp_ex* q, ibv_mw* mw, uint32_t rkey, const ibv_mw_bind_info* info) {
  if (auto* w = begin_wr(q, IBV_WR_BIND_MW)) {
    if (info == nullptr || encode_bind(*w, mw, rkey, *info) != 0) to_ff(q)->pending_error = EINVAL;
  }
}
void wr_local_inv(ibv_qp_ex* q, uint32_t rkey) {
  if (auto* w = begin_wr(q, IBV_WR_LOCAL_INV)) w->imm_data = rkey;
}
void wr_send_inv(ibv_qp_ex* q, uint32_t rkey) {
  if (auto* w = begin_wr(q, IBV_WR_SEND_WITH_INV)) w->imm_data = rkey;
}
void wr_atomic_fetch_add(ibv_qp_ex* q, uint32_t rkey, uint64_t addr, uint64_t add) {
  if (auto* w = begin_wr(q, IBV_WR_ATOMIC_FETCH_AND_ADD)) {
    w->rkey = rkey;
    w->remote_addr = addr;
    w->compare_add = add;
  }
}
shm::SendWqe* last_wr(ibv_qp_ex* q) {
  FfQp* qp = to_ff(q);
  if (qp->pending_error != 0) return nullptr;
  if (qp->pending.empty()) {
    qp->pending_error = EINVAL;
    return nullptr;
  }
  return &qp->pending.back();
}
void wr_set_sge(ibv_qp_ex* q, uint32_t lkey, uint64_t addr, uint32_t length) {
  if (auto* w = last_wr(q)) {
    w->num_sge = 1;
    w->payload.sge[0] = {addr, length, lkey};
  }
}
void wr_set_sge_list(ibv_qp_ex* q, size_t n, const ibv_sge* list) {
  auto* w = last_wr(q);
  if (w == nullptr) return;
  if (n > to_ff(q)->cap.max_send_sge) {
    to_ff(q)->pending_error = EINVAL;
    return;
  }
  w->num_sge = static_cast<uint8_t>(n);
  for (size_t i = 0; i < n; ++i) w->payload.sge[i] = {list[i].addr, list[i].length, list[i].lkey};
}
void wr_set_inline_data_list(ibv_qp_ex* q, size_t n, const ibv_data_buf* bufs) {
  auto* w = last_wr(q);
  if (w == nullptr) return;
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) total += bufs[i].length;
  if (total > to_ff(q)->cap.max_inline_data) {
    to_ff(q)->pending_error = EINVAL;
    return;
  }
  uint32_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    std::memcpy(w->payload.inline_data + at, bufs[i].addr, bufs[i].length);
    at += static_cast<uint32_t>(bufs[i].length);
  }
  w->inline_len = at;
  w->num_sge = 0;
  w->send_flags |= IBV_SEND_INLINE;
}
void wr_set_inline_data(ibv_qp_ex* q, void* addr, size_t length) {
  ibv_data_buf b{addr, length};
  wr_set_inline_data_list(q, 1, &b);
}
void wr_set_ud_addr(ibv_qp_ex* q, ibv_ah* ah, uint32_t remote_qpn, uint32_t remote_qkey) {
  auto* w = last_wr(q);
  if (w == nullptr) return;
  if (ah == nullptr) {
    to_ff(q)->pending_error = EINVAL;
    return;
  }
  w->ah = to_ff(ah)->id;
  w->remote_qpn = remote_qpn;
  w->remote_qkey = remote_qkey;
}
void wr_unsupported(FfQp* qp) {
  if (qp->pending_error == 0) qp->pending_error = EOPNOTSUPP;
}
void wr_start(ibv_qp_ex* q) {
  FfQp* qp = to_ff(q);
  qp->send_mu.lock();
  qp->pending.clear();
  qp->pending_error = 0;
}
int wr_complete(ibv_qp_ex* q) {
  FfQp* qp = to_ff(q);
  int e = qp->pending_error;
  if (e == 0 && q->qp_base.state < IBV_QPS_RTS && q->qp_base.state != IBV_QPS_ERR) e = EINVAL;
  if (e == 0 && (!qp->send_room(qp->pending.size()) || !qp->sq.sp_push_bulk(qp->pending))) e = ENOMEM;
  if (e == 0) wake_router_if_asked(qp->sq, *qp->ctx);
  qp->pending.clear();
  qp->send_mu.unlock();
  return e;
}
void wr_abort(ibv_qp_ex* q) {
  FfQp* qp = to_ff(q);
  qp->pending.clear();
  qp->send_mu.unlock();
}

constexpr uint64_t kSupportedSendOps =
    IBV_QP_EX_WITH_RDMA_WRITE | IBV_QP_EX_WITH_RDMA_WRITE_WITH_IMM | IBV_QP_EX_WITH_SEND |
    IBV_QP_EX_WITH_SEND_WITH_IMM | IBV_QP_EX_WITH_RDMA_READ | IBV_QP_EX_WITH_ATOMIC_CMP_AND_SWP |
    IBV_QP_EX_WITH_ATOMIC_FETCH_AND_ADD | IBV_QP_EX_WITH_ATOMIC_WRITE | IBV_QP_EX_WITH_BIND_MW |
    IBV_QP_EX_WITH_LOCAL_INV | IBV_QP_EX_WITH_SEND_WITH_INV;
constexpr uint64_t kWindowSendOps = IBV_QP_EX_WITH_BIND_MW | IBV_QP_EX_WITH_LOCAL_INV | IBV_QP_EX_WITH_SEND_WITH_INV;

// Whether the device offers memory windows (asked only by a QP that wants
// the window operations).
bool device_has_windows(ibv_context* context) {
  ibv_device_attr_ex attr{};
  return ffv_query_device_ex(context, nullptr, &attr, sizeof attr) == 0 &&
         (attr.orig_attr.device_cap_flags & IBV_DEVICE_MEM_WINDOW) != 0;
}

void wr_set_xrc_srqn(ibv_qp_ex* q, uint32_t remote_srqn) {
  if (auto* w = last_wr(q)) w->remote_qpn = remote_srqn;  // an XRC send QP's WRs name no QP (shm/descriptors.h)
}

void set_wr_ops(ibv_qp_ex& x) {
  x.comp_mask = 0;
  x.wr_atomic_cmp_swp = wr_atomic_cmp_swp;
  x.wr_atomic_fetch_add = wr_atomic_fetch_add;
  x.wr_bind_mw = wr_bind_mw;
  x.wr_local_inv = wr_local_inv;
  x.wr_rdma_read = wr_rdma_read;
  x.wr_rdma_write = wr_rdma_write;
  x.wr_rdma_write_imm = wr_rdma_write_imm;
  x.wr_send = wr_send;
  x.wr_send_imm = wr_send_imm;
  x.wr_send_inv = wr_send_inv;
  x.wr_send_tso = [](ibv_qp_ex* self, void*, uint16_t, uint16_t) { wr_unsupported(to_ff(self)); };
  x.wr_set_ud_addr = wr_set_ud_addr;
  x.wr_set_xrc_srqn = wr_set_xrc_srqn;
  x.wr_set_inline_data = wr_set_inline_data;
  x.wr_set_inline_data_list = wr_set_inline_data_list;
  x.wr_set_sge = wr_set_sge;
  x.wr_set_sge_list = wr_set_sge_list;
  x.wr_start = wr_start;
  x.wr_complete = wr_complete;
  x.wr_abort = wr_abort;
  x.wr_atomic_write = wr_atomic_write;
}

// Whether the request names the CQs (and domain) its type needs: XRC's
// send QP has no receive CQ, its receive QP only a domain.
bool names_what_it_needs(const ibv_qp_init_attr_ex& attr) {
  if (attr.qp_type == IBV_QPT_XRC_RECV)
    return (attr.comp_mask & IBV_QP_INIT_ATTR_XRCD) != 0 && attr.xrcd != nullptr;
  return attr.pd != nullptr && attr.send_cq != nullptr && (attr.recv_cq != nullptr || attr.qp_type == IBV_QPT_XRC_SEND);
}

// Writes back only the capabilities into the app's `asked`.
ibv_qp* create_qp(ibv_context* context, ibv_qp_init_attr_ex& asked) {
  FfContext* ctx = to_ff(context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_qp>(EIO);
  if (!names_what_it_needs(asked)) return fail_ptr<ibv_qp>(EINVAL);
  if (asked.qp_type != IBV_QPT_RC && asked.qp_type != IBV_QPT_UC && asked.qp_type != IBV_QPT_UD &&
      asked.qp_type != IBV_QPT_XRC_SEND && asked.qp_type != IBV_QPT_XRC_RECV)
    return fail_ptr<ibv_qp>(EOPNOTSUPP);
  ibv_qp_init_attr_ex attr = asked;
  const bool receiving = attr.qp_type == IBV_QPT_XRC_RECV;
  if (receiving) attr.pd = nullptr;  // verbs ignores what an XRC receive QP is given beyond its domain
  if (receiving || attr.qp_type == IBV_QPT_XRC_SEND) {
    attr.recv_cq = nullptr;
    attr.srq = nullptr;
    if (receiving) attr.send_cq = nullptr;
  }
  flatbuffers::FlatBufferBuilder fbb;
  auto cap = proto::to_wire(attr.cap);
  bool atomic_write = (attr.comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) != 0 &&
                      (attr.send_ops_flags & IBV_QP_EX_WITH_ATOMIC_WRITE) != 0;
  auto handle_of = [](auto* object) { return object != nullptr ? to_ff(object)->handle : 0; };
  auto body = proto::CreateCreateQp(fbb, handle_of(attr.pd), handle_of(attr.send_cq), handle_of(attr.recv_cq),
                                    handle_of(attr.srq), static_cast<uint8_t>(attr.qp_type), attr.sq_sig_all != 0,
                                    &cap, atomic_write, receiving ? to_ff(attr.xrcd)->handle : 0);
  std::lock_guard numbers(ctx->qp_numbers);
  auto reply = request<proto::CreateQpReply>(fbb, body, "create_qp failed", 1);
  if (!reply) return fail_ptr<ibv_qp>(reply.error);
  ibv_qp* qp = adopt_qp(*ctx, reply.fd(0), *reply.body, attr);
  asked.cap = attr.cap;
  return qp;
}

}  // namespace

namespace ff::verbs {

ibv_qp* adopt_qp(FfContext& ctx, int segment_fd, const proto::CreateQpReply& reply, ibv_qp_init_attr_ex& attr) {
  auto* qp = new (std::nothrow) FfQp();
  if (qp == nullptr) return fail_ptr<ibv_qp>(ENOMEM);
  uint32_t send_cap = reply.send_capacity(), recv_cap = reply.recv_capacity();
  // Two rings in one segment: the send ring first, then the receive ring.
  std::byte* sq = attach_ring<shm::SendWqe>(segment_fd, shm::qp_segment_bytes(send_cap, recv_cap),
                                            shm::kQpSendRingOffset, send_cap, qp->segment);
  std::byte* rq = sq != nullptr ? qp->segment.base() + shm::qp_recv_ring_offset(send_cap) : nullptr;
  if (sq == nullptr || !shm::ring_matches<shm::RecvWqe>(rq, recv_cap) || reply.cap() == nullptr) {
    delete qp;
    return fail_ptr<ibv_qp>(EPROTO);
  }
  try {
    qp->pending.reserve(send_cap);
  } catch (const std::bad_alloc&) {
    delete qp;
    return fail_ptr<ibv_qp>(ENOMEM);
  }
  qp->sq = shm::RingProducer<shm::SendWqe>(sq, send_cap);
  qp->rq = shm::RingProducer<shm::RecvWqe>(rq, recv_cap);
  qp->handle = reply.qp();
  qp->ctx = &ctx;
  qp->cap = proto::from_wire(*reply.cap());
  attr.cap = qp->cap;  // verbs reports the actual capabilities back
  ibv_qp& q = qp->qpx.qp_base;
  q.context = &ctx.vctx.context;
  q.qp_context = attr.qp_context;
  q.pd = attr.pd;
  if (attr.pd != nullptr) hold_parent_domain(attr.pd);
  q.send_cq = attr.send_cq;
  q.recv_cq = attr.recv_cq;
  q.srq = attr.srq;
  q.handle = qp->handle;
  q.qp_num = reply.qp_num();
  q.state = IBV_QPS_RESET;
  if (attr.send_cq != nullptr) {
    FfCq* scq = to_ff(attr.send_cq);
    std::lock_guard lock(scq->lock);
    scq->senders[q.qp_num] = qp;
  }
  if (attr.recv_cq != nullptr) {
    FfCq* rcq = to_ff(attr.recv_cq);
    std::lock_guard lock(rcq->lock);
    rcq->receivers[q.qp_num] = qp;
  }
  q.qp_type = attr.qp_type;
  pthread_mutex_init(&q.mutex, nullptr);
  pthread_cond_init(&q.cond, nullptr);
  set_wr_ops(qp->qpx);
  ctx.track(qp->handle, EventElement::kQp, qp);
  return &q;
}


int build_recv(const ibv_recv_wr& wr, uint32_t max_sge, shm::RecvWqe& r) {
  if (wr.num_sge < 0 || static_cast<uint32_t>(wr.num_sge) > max_sge) return EINVAL;
  r.wr_id = wr.wr_id;
  r.num_sge = static_cast<uint32_t>(wr.num_sge);
  r.reserved = 0;
  for (int i = 0; i < wr.num_sge; ++i) r.sge[i] = {wr.sg_list[i].addr, wr.sg_list[i].length, wr.sg_list[i].lkey};
  return 0;
}

int ffv_post_send(ibv_qp* ibqp, ibv_send_wr* wr, ibv_send_wr** bad_wr) {
  FfQp* qp = to_ff(ibqp);
  if (ibqp->state < IBV_QPS_RTS) {
    *bad_wr = wr;
    return EINVAL;
  }
  std::lock_guard lock(qp->send_mu);
  int e = 0;
  // Each WR is built in its ring slot; the list is handed over at once.
  for (; wr != nullptr; wr = wr->next) {
    shm::SendWqe* slot = qp->send_room(1) ? qp->sq.sp_claim() : nullptr;
    e = slot == nullptr ? ENOMEM : build_send(*qp, *wr, *slot);
    if (e != 0) break;
    qp->sq.sp_commit();
  }
  qp->sq.sp_publish();
  wake_router_if_asked(qp->sq, *qp->ctx);
  if (e != 0) {
    *bad_wr = wr;
    debug("post_send on QP %#x failed: %s (opcode %u, %d SGEs, flags %#x, %u queued)", ibqp->qp_num,
          std::strerror(e), raw_opcode(*wr), wr->num_sge, wr->send_flags,
          static_cast<unsigned>(qp->sq.produced()));
  }
  return e;
}

int ffv_post_recv(ibv_qp* ibqp, ibv_recv_wr* wr, ibv_recv_wr** bad_wr) {
  FfQp* qp = to_ff(ibqp);
  // An SRQ QP takes no receives of its own; XRC QPs have no receive queue.
  if (ibqp->state == IBV_QPS_RESET || ibqp->srq != nullptr || ibqp->qp_type == IBV_QPT_XRC_SEND ||
      ibqp->qp_type == IBV_QPT_XRC_RECV) {
    *bad_wr = wr;
    return EINVAL;
  }
  std::lock_guard lock(qp->recv_mu);
  int e = 0;
  for (; wr != nullptr; wr = wr->next) {
    shm::RecvWqe* slot = qp->recv_room() ? qp->rq.sp_claim() : nullptr;
    e = slot == nullptr ? ENOMEM : build_recv(*wr, qp->cap.max_recv_sge, *slot);
    if (e != 0) break;
    qp->rq.sp_commit();
  }
  qp->rq.sp_publish();
  // A fabric that hands receives to a device ahead of time sleeps on them too.
  wake_router_if_asked(qp->rq, *qp->ctx);
  if (e != 0) *bad_wr = wr;
  return e;
}

// The ibv_create_qp_ex fields that are not served may still be named, with
// values that ask for nothing (as programs that fill the whole struct do):
// no XRC domain but for an XRC receive QP, no create flags, no TSO, no RSS.
static bool asks_for_nothing_unserved(const ibv_qp_init_attr_ex& a) {
  uint32_t m = a.comp_mask;
  if ((m & IBV_QP_INIT_ATTR_XRCD) != 0 && a.xrcd != nullptr && a.qp_type != IBV_QPT_XRC_RECV) return false;
  if ((m & IBV_QP_INIT_ATTR_CREATE_FLAGS) != 0 && a.create_flags != 0) return false;
  if ((m & IBV_QP_INIT_ATTR_MAX_TSO_HEADER) != 0 && a.max_tso_header != 0) return false;
  if ((m & IBV_QP_INIT_ATTR_IND_TABLE) != 0 && a.rwq_ind_tbl != nullptr) return false;
  if ((m & IBV_QP_INIT_ATTR_RX_HASH) != 0 &&
      (a.rx_hash_conf.rx_hash_function != 0 || a.rx_hash_conf.rx_hash_fields_mask != 0 ||
       a.rx_hash_conf.rx_hash_key_len != 0))
    return false;
  return true;
}

ibv_qp* ffv_create_qp_ex(ibv_context* context, ibv_qp_init_attr_ex* attr) {
  constexpr uint32_t kKnown = IBV_QP_INIT_ATTR_PD | IBV_QP_INIT_ATTR_XRCD | IBV_QP_INIT_ATTR_CREATE_FLAGS |
                              IBV_QP_INIT_ATTR_MAX_TSO_HEADER | IBV_QP_INIT_ATTR_IND_TABLE |
                              IBV_QP_INIT_ATTR_RX_HASH | IBV_QP_INIT_ATTR_SEND_OPS_FLAGS;
  if ((attr->comp_mask & ~kKnown) != 0 ||
      ((attr->comp_mask & IBV_QP_INIT_ATTR_PD) == 0 && attr->qp_type != IBV_QPT_XRC_RECV) ||
      !asks_for_nothing_unserved(*attr))
    return fail_ptr<ibv_qp>(EOPNOTSUPP);
  if ((attr->comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) != 0 &&
      ((attr->send_ops_flags & ~kSupportedSendOps) != 0 ||
       ((attr->send_ops_flags & kWindowSendOps) != 0 && !device_has_windows(context))))
    return fail_ptr<ibv_qp>(EOPNOTSUPP);
  ibv_qp* qp = create_qp(context, *attr);
  if (qp != nullptr && (attr->comp_mask & IBV_QP_INIT_ATTR_SEND_OPS_FLAGS) != 0)
    to_ff(qp)->qpx.comp_mask = 0;
  return qp;
}

}  // namespace ff::verbs

extern "C" {

ibv_qp* ibv_create_qp(ibv_pd* pd, ibv_qp_init_attr* init) {
  ibv_qp_init_attr_ex ex{};
  ex.qp_context = init->qp_context;
  ex.send_cq = init->send_cq;
  ex.recv_cq = init->recv_cq;
  ex.srq = init->srq;
  ex.cap = init->cap;
  ex.qp_type = init->qp_type;
  ex.sq_sig_all = init->sq_sig_all;
  ex.comp_mask = IBV_QP_INIT_ATTR_PD;
  ex.pd = pd;
  ibv_qp* qp = create_qp(pd->context, ex);
  if (qp != nullptr) init->cap = ex.cap;
  return qp;
}

ibv_qp_ex* ibv_qp_to_qp_ex(ibv_qp* qp) { return &to_ff(qp)->qpx; }

int ibv_modify_qp(ibv_qp* ibqp, ibv_qp_attr* attr, int attr_mask) {
  FfQp* qp = to_ff(ibqp);
  if (context_is_stale(*qp->ctx)) return EIO;
  flatbuffers::FlatBufferBuilder fbb;
  auto wire = proto::to_wire(*attr);
  auto body = proto::CreateModifyQp(fbb, qp->handle, static_cast<uint32_t>(attr_mask), &wire);
  if (int e = request<void>(fbb, body, "modify_qp").error; e != 0) return errno = e;  // "the value of errno"
  if ((attr_mask & IBV_QP_STATE) != 0) ibqp->state = attr->qp_state;
  if ((attr_mask & IBV_QP_STATE) != 0 && attr->qp_state == IBV_QPS_RESET) {
    {
      std::lock_guard lock(qp->send_mu);  // reset dropped every WR: no slot is taken
      qp->sends_retired.store(qp->sq.produced(), std::memory_order_release);
    }
    std::lock_guard lock(qp->recv_mu);
    qp->recvs_retired.store(qp->rq.produced(), std::memory_order_release);
  }
  return 0;
}

int ibv_query_qp(ibv_qp* ibqp, ibv_qp_attr* attr, int, ibv_qp_init_attr* init_attr) {
  FfQp* qp = to_ff(ibqp);
  if (context_is_stale(*qp->ctx)) return EIO;
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::QueryQpReply>(fbb, proto::CreateQueryQp(fbb, qp->handle));
  if (!reply) return reply.error;
  *attr = proto::from_wire(*reply->attr());
  attr->cap = qp->cap;
  ibqp->state = attr->qp_state;
  if (init_attr != nullptr) {
    std::memset(init_attr, 0, sizeof *init_attr);
    init_attr->qp_context = ibqp->qp_context;
    init_attr->send_cq = ibqp->send_cq;
    init_attr->recv_cq = ibqp->recv_cq;
    init_attr->srq = ibqp->srq;
    init_attr->cap = qp->cap;
    init_attr->qp_type = ibqp->qp_type;
  }
  return 0;
}

int ibv_destroy_qp(ibv_qp* ibqp) {
  FfQp* qp = to_ff(ibqp);
  std::unique_lock numbers(qp->ctx->qp_numbers);
  if (!context_is_stale(*qp->ctx)) {
    flatbuffers::FlatBufferBuilder fbb;
    int e = request<void>(fbb, proto::CreateDestroyQp(fbb, qp->handle)).error;
    if (e == EINVAL) return e;
  }
  qp->ctx->untrack(qp->handle);
  // Out of its CQs, with the completions it left there (once per CQ: the
  // send and the receive CQ may be one).
  FfSrq* srq = ibqp->srq != nullptr ? to_ff(ibqp->srq) : nullptr;
  auto leave = [&](ibv_cq* ibcq, bool receives) {
    FfCq* cq = to_ff(ibcq);
    std::lock_guard lock(cq->lock);
    cq->senders.erase(ibqp->qp_num);
    cq->receivers.erase(ibqp->qp_num);
    drop_completions_of(*cq, ibqp->qp_num, receives ? srq : nullptr);
  };
  if (ibqp->send_cq != nullptr) leave(ibqp->send_cq, ibqp->send_cq == ibqp->recv_cq);
  if (ibqp->recv_cq != nullptr && ibqp->recv_cq != ibqp->send_cq) leave(ibqp->recv_cq, true);
  numbers.unlock();
  // Verbs: destroy waits until every async event about the QP was acknowledged.
  pthread_mutex_lock(&ibqp->mutex);
  while (ibqp->events_completed != qp->async_delivered) pthread_cond_wait(&ibqp->cond, &ibqp->mutex);
  pthread_mutex_unlock(&ibqp->mutex);
  pthread_mutex_destroy(&ibqp->mutex);
  pthread_cond_destroy(&ibqp->cond);
  if (ibqp->pd != nullptr) release_parent_domain(ibqp->pd);
  delete qp;
  return 0;
}

}  // extern "C"
