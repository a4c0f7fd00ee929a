// The verbs fabric's engine and the lifetime of its objects: each shadow
// object leaves the engine's registries before the device frees it.
#include <sys/mman.h>

#include "router/fabric/verbs/engine.h"

namespace ff::router::verbs {

constexpr uint64_t kDatagramGraceNs = 10'000'000;  // a destroyed UD QP's last sends on the device

Engine::Engine(Device& device, std::chrono::microseconds spin, PollerPlacement placement)
    : QueueCore(spin, std::move(placement)), device_(device) {
  poller().watch_other(device_.channel->fd);
  poller().watch_other(device_.ctx->async_fd);
  start();
}

Engine::~Engine() { stop(); }

void Engine::on_unlink(core::Qp& c) { drain_device_cqs(static_cast<Qp&>(c)); }

// The device is given what the app posted and finishes it before its QP is
// destroyed (a datagram completes locally, in microseconds; kDatagramGraceNs
// bounds a device that does not answer). What cannot go now (its tenant's
// caps, a far destination not yet known) is dropped: the poller never waits
// on what a tenant controls.
void Engine::send_posted_datagrams(core::Qp& c) {
  auto& q = static_cast<Qp&>(c);
  if (q.device_changing) return;
  const uint64_t give_up = Poller::now_ns() + kDatagramGraceNs;
  for (;;) {
    poll_sends(q);
    if (q.state != IBV_QPS_RTS || q.sq.size_guess() == 0 || Poller::now_ns() >= give_up) break;
    uint64_t before = q.sq.consumed();
    q.sends_visible = static_cast<uint32_t>(q.sq.size_guess());
    post_sends(q, Poller::now_ns());
    // None taken and none on the device to wait for: what is left cannot go now.
    if (q.sq.consumed() == before && q.sends.used() == 0) break;
  }
  while (q.sends.used() > 0 && Poller::now_ns() < give_up) poll_sends(q);
}

// Discards what the shadow CQs hold (a reset or a destroy): the app never
// sees those completions, but an SRQ's slots come back.
void Engine::drain_device_cqs(Qp& q) {
  ibv_wc wc[core::kBatch];
  while (ibv_poll_cq(q.device_send_cq, core::kBatch, wc) > 0) {
  }
  int n;
  while ((n = ibv_poll_cq(q.device_recv_cq, core::kBatch, wc)) > 0) {
    if (q.srq == nullptr) continue;
    for (int i = 0; i < n; ++i)
      if (q.device_srq()->posted.valid(wc[i].wr_id)) q.device_srq()->posted.release(static_cast<uint32_t>(wc[i].wr_id));
  }
  q.sends.release_all();
  q.receives.release_all();
}

Mr::~Mr() {
  core.run_sync([this] { core.unlink_mr(*this); });
  if (mr != nullptr) ibv_dereg_mr(mr);  // null: the device refused the registration
  if (composed != nullptr) ::munmap(composed, composed_length);
}

Srq::~Srq() {
  ctx.core.run_sync([this] { ctx.core.unlink_srq(*this); });
  ibv_destroy_srq(srq);
}

Ah::~Ah() {
  core.run_sync([this] { core.unlink_ah(*this); });
  if (ah != nullptr) ibv_destroy_ah(ah);  // null: toward another host, never used
}

// The device's objects go on the control thread (firmware commands on real
// hardware), once the poller no longer knows the QP.
Qp::~Qp() {
  if (qp != nullptr) ctx.core.run_sync([&] { ctx.core.unlink_qp(*this); });
  if (qp != nullptr) ibv_destroy_qp(qp);
  static_cast<const Engine&>(ctx.core).qp_destroyed(*this);
  // The poller acknowledges every CQ event as it reads it, so nothing
  // blocks these.
  if (device_send_cq != nullptr) ibv_destroy_cq(device_send_cq);
  if (device_recv_cq != nullptr) ibv_destroy_cq(device_recv_cq);
}

}  // namespace ff::router::verbs
