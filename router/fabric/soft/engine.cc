#include "router/fabric/soft/engine.h"

#include <algorithm>

#include "policy/tenant.h"

namespace ff::router::soft {

Engine::Engine(std::chrono::microseconds spin) : poller_(spin, *this) {
  qps_.reserve(1024);
  poller_.start();
}

Engine::~Engine() { poller_.stop(); }

void Engine::link_qp(Qp* qp) {
  qps_.push_back(qp);
  qps_by_num_[qp->qpn] = qp;
}

void Engine::unlink_qp(Qp* qp) {
  qps_.erase(std::remove(qps_.begin(), qps_.end(), qp), qps_.end());
  qps_by_num_.erase(qp->qpn);
  // Its peers on this router now talk to nobody: their work fails at once
  // instead of retrying into the void.
  for (Qp* other : qps_)
    if (other->route == nullptr && other->attr.dest_qp_num == qp->qpn) other->peer_gone = true;
}

bool Engine::work(uint64_t now) {
  now_ = now;
  bool busy = receive_links();
  for (size_t i = 0; i < qps_.size(); ++i) busy |= service(*qps_[i], now);
  busy |= flush_links();
  return busy;
}

void Engine::check_srq_limit(Srq& srq) {
  if (srq.limit != 0 && srq.ring.size_guess() < srq.limit) {
    srq.limit = 0;
    srq.ctx.async.raise(IBV_EVENT_SRQ_LIMIT_REACHED, srq.tag);
  }
}

bool Engine::prepare_to_sleep(uint64_t now, uint64_t& deadline) {
  // Arm every send ring's wakeup request, then re-check (Dekker, see
  // shm/ring.h). A QP waiting on a timer wakes us through the deadline.
  bool may_sleep = true;
  for (Qp* q : qps_) {
    if (q->wait_until_ns > now) deadline = std::min(deadline, q->wait_until_ns);
    if (!q->sq.prepare_to_sleep()) may_sleep = false;
  }
  // A link whose socket was full wakes us once it takes bytes again.
  for (auto& l : links_) {
    bool want = l->tx_pending();
    if (want != l->wants_writable) {
      poller_.want_writable(l->fd.get(), want);
      l->wants_writable = want;
    }
  }
  return may_sleep;
}

void Engine::cancel_sleep() {
  for (Qp* q : qps_) q->sq.cancel_sleep();
}

// --- objects whose lifetime the engine must know about ---------------------

Mr::~Mr() {
  engine.run_sync([this] { engine.unlink_mr(this); });
}

std::byte* Mr::translate(uint64_t addr, uint64_t len, uint64_t& contiguous) const {
  uint64_t off = addr - iova;
  for (const Extent& e : extents) {
    if (off >= e.mr_offset && off - e.mr_offset < e.length) {
      uint64_t in = off - e.mr_offset;
      contiguous = std::min(len, e.length - in);
      return e.base + in;
    }
  }
  contiguous = 0;
  return nullptr;
}

Srq::Srq(Context& c, shm::Mapping m, const Pd& p, uint32_t capacity, uint32_t max_sge, uint32_t lim,
         uint32_t t)
    : ctx(c), mapping(std::move(m)), pd(p), cap(capacity), sge(max_sge), tag(t), limit(lim) {
  shm::init_ring<shm::RecvWqe>(mapping.base() + shm::kSrqRingOffset, cap);
  ring = shm::RingConsumer<shm::RecvWqe>(mapping.base() + shm::kSrqRingOffset, cap);
}

Ah::Ah(Engine& e, const Pd& p, const ibv_ah_attr& a, uint32_t id, Peer* r)
    : engine(e), pd(p), attr(a), virtual_ip(policy::ipv4_of_gid(a.grh.dgid.raw).value_or(0)), ident(id), route(r) {
  engine.run_sync([this] { engine.link_ah(this); });
}

Ah::~Ah() {
  engine.run_sync([this] { engine.unlink_ah(this); });
}

Qp::Qp(Engine& e, Context& c, shm::Mapping m, const Pd& p, Cq& scq, Cq& rcq, Srq* s,
       const QpInit& i, uint32_t send_c, uint32_t recv_c, uint32_t num, uint32_t t)
    : engine(e), ctx(c), mapping(std::move(m)), pd(p), send_cq(scq), recv_cq(rcq), srq(s), init(i),
      send_cap(send_c), recv_cap(recv_c), qpn(num), tag(t) {
  std::byte* base = mapping.base();
  shm::init_ring<shm::SendWqe>(base + shm::kQpSendRingOffset, send_cap);
  shm::init_ring<shm::RecvWqe>(base + shm::qp_recv_ring_offset(send_cap), recv_cap);
  sq = shm::RingConsumer<shm::SendWqe>(base + shm::kQpSendRingOffset, send_cap);
  rq = shm::RingConsumer<shm::RecvWqe>(base + shm::qp_recv_ring_offset(send_cap), recv_cap);
  engine.run_sync([this] { engine.link_qp(this); });
}

Qp::~Qp() {
  engine.run_sync([this] { engine.unlink_qp(this); });
}

}  // namespace ff::router::soft
