#include "router/fabric/soft/engine.h"

#include <algorithm>

#include "router/fabric/memory.h"

namespace ff::router::soft {

Engine::Engine(std::chrono::microseconds spin, PollerPlacement placement) : QueueCore(spin, std::move(placement)) {
  start();
}

Engine::~Engine() { stop(); }

bool Engine::work(uint64_t now) {
  now_ = now;
  next_round();
  bool busy = receive_links();
  const auto& all = qps();
  for (size_t i = 0, first = first_of_pass(); i < all.size(); ++i)
    busy |= service(static_cast<Qp&>(*all[(first + i) % all.size()]), now);
  busy |= flush_links();
  return busy;
}

// The local responder a QP waits on for a receive (RNR), if any.
Qp* Engine::rnr_responder(const Qp& q) const {
  return q.rnr_waiting && q.route == nullptr ? find_qp(q.attr.dest_qp_num) : nullptr;
}

bool Engine::service(Qp& q, uint64_t now) {
  if (q.state == IBV_QPS_ERR) return flush(q, /*sends=*/true, /*receives=*/true);
  if (q.state != IBV_QPS_RTS) return false;
  if (q.capped_until_ns > now) return false;  // its tenant's caps hold it
  if (q.wait_until_ns > now) {
    // An RNR wait ends early once the responder has a receive.
    Qp* t = rnr_responder(q);
    if (t == nullptr || t->receives().size_guess() == 0) return false;
  }
  q.wait_until_ns = 0;
  q.rnr_waiting = false;
  bool busy = q.route != nullptr ? service_remote(q, now) : service_local(q, now);
  busy |= fail_if_corrupt(q);
  return busy;
}

bool Engine::prepare_to_sleep(uint64_t now, uint64_t& deadline) {
  // Arm every send ring's wakeup request, then re-check (Dekker, see
  // shm/ring.h); a QP in ERR also its receive ring, whose posts must flush.
  // A QP waiting on a timer wakes us through the deadline.
  bool may_sleep = true;
  for (core::Qp* c : qps()) {
    auto& q = static_cast<Qp&>(*c);
    uint64_t capped = q.state == IBV_QPS_RTS ? q.capped_until_ns : 0;
    if (uint64_t until = std::max(q.wait_until_ns, capped); until > now) {
      // Its head waits on a timer (a retry, or its tenant's caps): what is
      // queued behind it is no work now.
      deadline = std::min(deadline, until);
    } else if (!q.sq.prepare_to_sleep()) {
      may_sleep = false;
    }
    if (q.state == IBV_QPS_ERR && q.srq == nullptr && !q.rq.prepare_to_sleep()) may_sleep = false;
    // A receive posted where an RNR wait is waiting wakes us.
    if (Qp* t = rnr_responder(q); t != nullptr && !t->receives().prepare_to_sleep()) may_sleep = false;
  }
  // A link whose socket was full wakes us once it takes bytes again; a
  // paused one (link.h) is not read until then.
  for (auto& l : links_) {
    // A command run while the poller slept (ibv_dereg_mr) may have taken
    // the pages a chunk was landing in: they go now, not at the next byte.
    l->recheck_placement([&](const wire::Header& h) { return placement_for(*l, h); });
    bool writable = l->tx_pending(), readable = !l->paused();
    if (writable != l->wants_writable || readable != l->wants_readable) {
      poller().set_interest(l->fd.get(), readable, writable);
      l->wants_writable = writable;
      l->wants_readable = readable;
    }
    if (readable && l->frame_ready()) may_sleep = false;
  }
  return may_sleep;
}

void Engine::cancel_sleep() {
  for (core::Qp* q : qps()) {
    q->sq.cancel_sleep();
    if (q->srq == nullptr) q->rq.cancel_sleep();
  }
  for (core::Srq* s : srqs()) s->ring.cancel_sleep();
}

void Engine::send_posted_datagrams(core::Qp& c) {
  auto& q = static_cast<Qp&>(c);
  // Until a pass takes none (its tenant's caps or share, a full link, an
  // error): at most one pass per datagram queued.
  while (q.state == IBV_QPS_RTS && q.sq.size_guess() > 0) {
    uint64_t before = q.sq.consumed();
    service(q, Poller::now_ns());
    if (q.sq.consumed() == before) break;
  }
}

void Engine::on_error(core::Qp& c) { responder_.flush_held_receive(static_cast<Qp&>(c)); }

void Engine::on_srq_gone(core::Qp& c) {
  auto& q = static_cast<Qp&>(c);
  q.held_recv.reset();  // its SRQ's, gone with it
  q.remote_resp.receiving = false;
}

void Engine::on_reset(core::Qp& c) {
  auto& q = static_cast<Qp&>(c);
  q.held_recv.reset();  // RESET empties the queues without completions
  if (q.xrc_target()) q.srq = nullptr;
  q.wait_until_ns = 0;
  q.rnr_waiting = false;
  q.rnr_backoff = 0;
  q.route = nullptr;
  q.remote_ip = 0;
  // Sequence numbers go on: answers to a former life stay stale.
  q.remote_req = RemoteRequester{.head_seq = q.remote_req.head_seq + 1024};
  q.remote_resp = RemoteResponder{};
}

// --- objects -------------------------------------------------------------------

// Extents are in MR order: a binary search, so that moving a message over
// an MR of thousands of segments costs n log n, not n squared.
std::byte* Mr::translate_searched(uint64_t addr, uint64_t len, uint64_t& contiguous) const {
  uint64_t off = addr - iova;
  auto after = std::upper_bound(extents.begin(), extents.end(), off,
                                [](uint64_t o, const Extent& e) { return o < e.mr_offset; });
  contiguous = 0;
  if (after == extents.begin()) return nullptr;
  const Extent& e = *std::prev(after);
  if (off - e.mr_offset >= e.length) return nullptr;
  uint64_t in = off - e.mr_offset;
  contiguous = std::min(len, e.length - in);
  return e.base + in;
}

void Mr::set_extents(std::vector<Extent> e) {
  extents = std::move(e);
  router_at_iova = extents.size() == 1 && extents[0].mr_offset == 0 && extents[0].length >= length ? extents[0].base : nullptr;
}

std::shared_ptr<const void> Mr::segment_holding(const std::byte* p) const {
  for (const auto& s : segments) {
    auto& m = static_cast<const MappedSegment&>(*s);
    if (p >= m.router_base() && p < m.router_base() + m.length()) return s;
  }
  return nullptr;
}

// Each object leaves the engine before its own members go: the poller may
// be looking at them until then.
Qp::~Qp() {
  ctx.core.run_sync([this] { ctx.core.unlink_qp(*this); });
}

Mr::~Mr() {
  core.run_sync([this] { core.unlink_mr(*this); });
}

Ah::~Ah() {
  core.run_sync([this] { core.unlink_ah(*this); });
}

}  // namespace ff::router::soft
