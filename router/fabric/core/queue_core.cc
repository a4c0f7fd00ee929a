#include "router/fabric/core/queue_core.h"

#include <algorithm>
#include <cerrno>

#include "policy/tenant.h"
#include "router/fabric/qp_transitions.h"

namespace ff::router::core {

QueueCore::QueueCore(std::chrono::microseconds spin, PollerPlacement placement)
    : poller_(spin, *this, std::move(placement)) {
  qps_.reserve(1024);
}

QueueCore::~QueueCore() { poller_.stop(); }

// --- registries ---------------------------------------------------------------

void QueueCore::link_qp(Qp& qp) {
  assert_poller();
  assert(!qp.linked && find_qp(qp.qpn) == nullptr && "a QP number is linked once");
  qps_.push_back(&qp);
  qps_by_num_[qp.qpn] = &qp;
  qp.linked = true;
}

void QueueCore::unlink_qp(Qp& qp) {
  assert_poller();
  if (!qp.linked) return;
  // The app rang the doorbell before it asked for the destroy: on a device
  // those datagrams are on the wire by the time the destroy returns (mckey
  // posts its last ones and destroys its QP at once).
  if (qp.init.type == IBV_QPT_UD && qp.state == IBV_QPS_RTS) send_posted_datagrams(qp);
  on_unlink(qp);
  qp.linked = false;
  qps_.erase(std::remove(qps_.begin(), qps_.end(), &qp), qps_.end());
  qps_by_num_.erase(qp.qpn);
  qp_cache_.clear();
  ++access_epoch_;
  while (qp.bound_windows != nullptr) unbind(*qp.bound_windows);
  if (qp.mcast_groups > 0) detach_all(qp);
  // Its number may be reused by any tenant's next QP: the QPs connected to
  // it must not reach that one. Their work fails at once, as toward a peer
  // that stopped answering, instead of retrying into the void.
  for (Qp* other : qps_)
    if (other->init.type != IBV_QPT_UD && other->attr.dest_qp_num == qp.qpn && connects_here(*other))
      other->peer_gone = true;
}

void QueueCore::link_mr(Mr& mr) {
  assert_poller();
  assert(!mr.linked && find_mr(mr.lkey_value) == nullptr && "a key is linked once");
  mrs_[mr.lkey_value] = &mr;
  mr.linked = true;
}

void QueueCore::unlink_mr(Mr& mr) {
  assert_poller();
  if (!mr.linked) return;
  mrs_.erase(mr.lkey_value);
  mr_cache_.clear();
  ++access_epoch_;
  mr.linked = false;
  while (mr.bound_windows != nullptr) unbind(*mr.bound_windows);  // the session is going: no dereg refused
}

void QueueCore::link_ah(Ah& ah) {
  assert_poller();
  ahs_[ah.ident] = &ah;
  ah.linked = true;
}

void QueueCore::unlink_ah(Ah& ah) {
  assert_poller();
  if (!ah.linked) return;
  // Datagrams posted to this address before it is destroyed go first, as
  // on a device (mckey destroys its AH, then its QP, right after posting):
  // those of the PD's UD QPs that have any queued.
  for (Qp* qp : qps_)
    if (&qp->pd == &ah.pd && qp->init.type == IBV_QPT_UD && qp->state == IBV_QPS_RTS && qp->sq.size_guess() > 0)
      send_posted_datagrams(*qp);
  ahs_.erase(ah.ident);
  ah.linked = false;
}

void QueueCore::link_srq(Srq& srq) {
  assert_poller();
  srqs_.push_back(&srq);
  if (srq.xrcd != 0) xrc_srqs_[srq.number] = &srq;
}

void QueueCore::unlink_srq(Srq& srq) {
  assert_poller();
  srqs_.erase(std::remove(srqs_.begin(), srqs_.end(), &srq), srqs_.end());
  if (srq.xrcd == 0) return;
  xrc_srqs_.erase(srq.number);
  // XRC receive QPs name SRQs per request, and outlive them: the one that
  // served a request last forgets it (a receive it held is gone with it).
  for (Qp* q : qps_)
    if (q->xrc_target() && q->srq == &srq) {
      on_srq_gone(*q);
      q->srq = nullptr;
    }
}

// --- queues -------------------------------------------------------------------

bool QueueCore::complete(VirtualCq& cq, const shm::Cqe& c) {
  assert_poller();
  if (c.status != IBV_WC_SUCCESS) error_completions_.add(1);
  return cq.add(c);
}

void QueueCore::complete_for(Qp& owner, VirtualCq* cq, const shm::Cqe& c) {
  // No CQ: work an XRC receive QP's client wrote into rings that QP does
  // not have (verbs gives it none); nobody can see it.
  if (cq == nullptr) return;
  if (!complete(*cq, c)) return set_error(owner, /*fatal=*/true);
  owner.traffic.completed(c);  // counted once written: an overrun CQ lost it
  owner.tenant.traffic.completed(c);
}

void QueueCore::complete_send(Qp& q, shm::Cqe c, uint64_t wr_index) {
  assert(wr_index >= q.sq_retired && "send completions come in send queue order");
  c.sends_retired = static_cast<uint32_t>(wr_index + 1 - q.sq_retired);
  q.sq_retired = wr_index + 1;
  complete_for(q, q.send_cq, c);
}

void QueueCore::set_error(Qp& qp, bool fatal) {
  if (qp.state == IBV_QPS_ERR) return;
  on_error(qp);
  enter_error(qp, fatal);
}

void QueueCore::enter_error(Qp& qp, bool fatal) {
  assert_poller();
  if (qp.state == IBV_QPS_ERR) return;
  qp.state = IBV_QPS_ERR;
  ++access_epoch_;
  if (fatal) qp.ctx.async.raise(IBV_EVENT_QP_FATAL, qp.tag);
  // Verbs raises this for every SRQ QP that enters ERR (not every device
  // does: rxe does not on modify, so the router raises it itself).
  if (qp.srq != nullptr && !qp.xrc_target()) qp.ctx.async.raise(IBV_EVENT_QP_LAST_WQE_REACHED, qp.tag);
}

bool QueueCore::flush(Qp& q, bool sends, bool receives) {
  assert_poller();
  int n = 0;
  shm::SendWqe w;
  while (sends && n < kBatch) {
    uint64_t index = q.sq.consumed();
    if (!q.sq.sc_try_pop(w)) break;
    complete_send(q, send_completion(w.wr_id, IBV_WC_WR_FLUSH_ERR, w.opcode, q.qpn), index);
    ++n;
  }
  shm::RecvWqe r;
  while (receives && q.srq == nullptr && n < kBatch && q.rq.sc_try_pop(r)) {
    complete_for(q, q.recv_cq, flushed_receive(r.wr_id, q.qpn));
    ++n;
  }
  return n > 0;
}

void QueueCore::check_srq_limit(Srq& srq) {
  assert_poller();
  if (srq.limit != 0 && srq_receives_held(srq) < srq.limit) {
    srq.limit = 0;
    srq.ctx.async.raise(IBV_EVENT_SRQ_LIMIT_REACHED, srq.tag);
  }
}

bool QueueCore::fail_if_corrupt(Qp& qp) {
  if (!qp.sq.corrupt() && !qp.rq.corrupt()) return false;
  set_error(qp, /*fatal=*/true);
  return true;
}

// --- ibv_modify_qp ------------------------------------------------------------

Status QueueCore::check_modify(const Qp& qp, const ibv_qp_attr& attr, int mask, bool dest_local) const {
  if (Status st = check_modify_qp(qp.init.type, qp.state, attr, mask); !st) return st;
  if ((mask & IBV_QP_DEST_QPN) == 0 || !dest_local) return {};
  // A known destination must be a QP of the same tenant, at the address
  // named: no connection ever crosses tenants.
  const Qp* dest = find_qp(attr.dest_qp_num);
  if (dest == nullptr) return {};
  if (dest->pd.owner.tenant != qp.pd.owner.tenant) return Error{EINVAL, "dest_qp_num belongs to another tenant"};
  auto ip = (mask & IBV_QP_AV) != 0 && attr.ah_attr.is_global != 0 ? policy::ipv4_of_gid(attr.ah_attr.grh.dgid.raw)
                                                                    : std::nullopt;
  if (ip && *ip != dest->pd.owner.virtual_ip) return Error{EINVAL, "dest_qp_num is not at the GID given in ah_attr"};
  return {};
}

void QueueCore::apply_modify(Qp& qp, const ibv_qp_attr& attr, int mask) {
  assert_poller();
  ++access_epoch_;
  ibv_qp_state next = next_state(qp.state, attr, mask);
  apply_qp_attr(qp.attr, attr, mask);
  if (next == IBV_QPS_RESET) {
    // Reset empties both queues without completions (and recovers rings a
    // client had corrupted).
    qp.sq.sc_reset_to_producer();
    qp.sq_retired = qp.sq.consumed();  // the app forgets them too (ibv_modify_qp to RESET)
    if (qp.srq == nullptr) qp.rq.sc_reset_to_producer();
    qp.attr = ibv_qp_attr{};
    qp.peer_gone = false;
    on_reset(qp);
  }
  if (next == IBV_QPS_ERR) {
    set_error(qp);  // with the fabric's on_error(), as for an error it found itself
    return;
  }
  qp.state = next;
}

ibv_qp_attr QueueCore::query(const Qp& qp) {
  ibv_qp_attr attr = qp.attr;
  attr.qp_state = qp.state;
  attr.cur_qp_state = qp.state;
  return attr;
}

TenantBlock& QueueCore::tenant_block(const std::string& tenant) {
  auto it = tenants_.find(tenant);
  if (it == tenants_.end()) it = tenants_.emplace(std::piecewise_construct, std::forward_as_tuple(tenant), std::tuple<>()).first;
  return it->second;
}

std::map<std::string, TrafficCounters> QueueCore::tenant_traffic() const {
  std::map<std::string, TrafficCounters> out;
  for (const auto& [tenant, block] : tenants_) {
    TrafficCounters& t = out.emplace(tenant, block.traffic.snapshot()).first->second;
    t.throttled_ns = block.share.throttled_ns();
  }
  return out;
}

void QueueCore::configure_tenant(const std::string& tenant, const policy::QosSpec& spec) {
  TenantBlock& block = tenant_block(tenant);
  run_sync([&] {
    block.share.configure(spec, Poller::now_ns());
    // QPs parked under the old caps ask again under the new ones.
    for (Qp* q : qps_)
      if (&q->tenant == &block) q->capped_until_ns = 0;
  });
}

FabricCounters QueueCore::counters() const {
  FabricCounters c;
  c.work_requests = wqes_.get();
  c.bytes = bytes_.get();
  c.error_completions = error_completions_.get();
  c.poller_sleeps = poller_.sleeps();
  c.poller_busy_ns = poller_.busy_ns();
  return c;
}

// --- objects ------------------------------------------------------------------

Context::Context(QueueCore& c) : core(c) {
  core.run_sync([this] { core.watch_doorbell(doorbell.fd()); });
}

Context::~Context() {
  core.run_sync([this] { core.unwatch_doorbell(doorbell.fd()); });
}

Mr::~Mr() {
  core.run_sync([this] { core.unlink_mr(*this); });
}

Srq::Srq(Context& c, shm::Mapping m, const Pd& p, uint32_t capacity, uint32_t max_sge, uint32_t lim, uint32_t t,
         uint32_t domain, VirtualCq* completions)
    : ctx(c), mapping(std::move(m)), pd(p), cap(capacity), sge(max_sge), tag(t), xrcd(domain), cq(completions),
      limit(lim) {
  shm::init_ring<shm::RecvWqe>(mapping.base() + shm::kSrqRingOffset, cap);
  ring = shm::RingConsumer<shm::RecvWqe>(mapping.base() + shm::kSrqRingOffset, cap);
}

Srq::~Srq() {
  ctx.core.run_sync([this] { ctx.core.unlink_srq(*this); });
}

Ah::Ah(QueueCore& c, const Pd& p, const ibv_ah_attr& a, uint32_t ip, uint32_t id)
    : core(c), pd(p), attr(a), virtual_ip(ip), ident(id) {}

Ah::~Ah() {
  core.run_sync([this] { core.unlink_ah(*this); });
}

Qp::Qp(Context& c, shm::Mapping m, const Pd& p, VirtualCq* scq, VirtualCq* rcq, Srq* s, const QpInit& i,
       uint32_t send_c, uint32_t recv_c, uint32_t t)
    : ctx(c), mapping(std::move(m)), pd(p), send_cq(scq), recv_cq(rcq), srq(s), init(i), send_cap(send_c),
      recv_cap(recv_c), tag(t), tenant(c.core.tenant_block(p.owner.tenant)) {
  std::byte* base = mapping.base();
  shm::init_ring<shm::SendWqe>(base + shm::kQpSendRingOffset, send_cap);
  shm::init_ring<shm::RecvWqe>(base + shm::qp_recv_ring_offset(send_cap), recv_cap);
  sq = shm::RingConsumer<shm::SendWqe>(base + shm::kQpSendRingOffset, send_cap);
  rq = shm::RingConsumer<shm::RecvWqe>(base + shm::qp_recv_ring_offset(send_cap), recv_cap);
}

Qp::~Qp() {
  ctx.core.run_sync([this] { ctx.core.unlink_qp(*this); });
  ctx.spare_segments.give(std::move(mapping));
}

}  // namespace ff::router::core
