// Shared receive queues: a receive ring the router's poller takes from for
// every QP attached to it.
#include <mutex>
#include <new>

#include "libffverbs/request.h"

using namespace ff::verbs;
namespace shm = ff::shm;
namespace proto = ff::proto;

namespace ff::verbs {

int ffv_post_srq_recv(ibv_srq* ibsrq, ibv_recv_wr* wr, ibv_recv_wr** bad_wr) {
  FfSrq* srq = to_ff(ibsrq);
  std::lock_guard lock(srq->mu);
  int e = 0;
  for (; wr != nullptr; wr = wr->next) {
    shm::RecvWqe* slot = srq->room() ? srq->ring.sp_claim() : nullptr;
    e = slot == nullptr ? ENOMEM : build_recv(*wr, srq->max_sge, *slot);
    if (e != 0) break;
    srq->ring.sp_commit();
    ++srq->posted;
  }
  srq->ring.sp_publish();
  wake_router_if_asked(srq->ring, *srq->ctx);
  if (e != 0) *bad_wr = wr;
  return e;
}

ibv_srq* create_srq(ibv_pd* pd, ibv_srq_init_attr& init, FfXrcd* xrcd, ibv_cq* cq) {
  FfContext* ctx = to_ff(pd->context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_srq>(EIO);
  flatbuffers::FlatBufferBuilder fbb;
  auto body = proto::CreateCreateSrq(fbb, to_ff(pd)->handle, init.attr.max_wr, init.attr.max_sge, init.attr.srq_limit,
                                     xrcd != nullptr ? xrcd->handle : 0, cq != nullptr ? to_ff(cq)->handle : 0);
  auto reply = request<proto::CreateSrqReply>(fbb, body, "create_srq failed", 1);
  if (!reply) return fail_ptr<ibv_srq>(reply.error);
  auto* srq = new (std::nothrow) FfSrq();
  if (srq == nullptr) return fail_ptr<ibv_srq>(ENOMEM);
  uint32_t cap = reply->capacity();
  std::byte* ring = attach_ring<shm::RecvWqe>(reply.fd(0), shm::srq_segment_bytes(cap), shm::kSrqRingOffset,
                                              cap, srq->segment);
  if (ring == nullptr) {
    delete srq;
    return fail_ptr<ibv_srq>(EPROTO);
  }
  srq->ring = shm::RingProducer<shm::RecvWqe>(ring, cap);
  srq->handle = reply->srq();
  srq->ctx = ctx;
  srq->link_epoch = RouterLink::get().epoch();
  srq->max_sge = reply->max_sge();
  ibv_srq& s = srq->srq;
  s.context = pd->context;
  s.srq_context = init.srq_context;
  s.pd = pd;
  s.handle = srq->handle;
  pthread_mutex_init(&s.mutex, nullptr);
  pthread_cond_init(&s.cond, nullptr);
  srq->max_wr = reply->max_wr();
  init.attr.max_wr = reply->max_wr();  // verbs reports what it actually made
  init.attr.max_sge = reply->max_sge();
  if (cq != nullptr) {
    srq->srq_num = reply->srq_num();
    srq->xrc_cq = to_ff(cq);
    std::lock_guard lock(srq->xrc_cq->lock);
    srq->xrc_cq->xrc_srqs[srq->srq_num] = srq;
  }
  ctx->track(srq->handle, EventElement::kSrq, srq);
  return &s;
}

}  // namespace ff::verbs

extern "C" {

ibv_srq* ibv_create_srq(ibv_pd* pd, ibv_srq_init_attr* init) { return create_srq(pd, *init, nullptr, nullptr); }

// A resize (IBV_SRQ_MAX_WR): the router moves the receives waiting in the
// ring to a new one and the shim posts after them; no post runs meanwhile.
int ibv_modify_srq(ibv_srq* ibsrq, ibv_srq_attr* attr, int mask) {
  FfSrq* srq = to_ff(ibsrq);
  if (srq->link_epoch != RouterLink::get().epoch()) return EIO;
  bool resize = (mask & IBV_SRQ_MAX_WR) != 0;
  std::unique_lock lock(srq->mu, std::defer_lock);
  if (resize) lock.lock();
  flatbuffers::FlatBufferBuilder fbb;
  auto body = proto::CreateModifySrq(fbb, srq->handle, static_cast<uint32_t>(mask), attr->max_wr, attr->srq_limit);
  auto reply = request<proto::ModifySrqReply>(fbb, body, "modify_srq", resize ? 1 : 0);
  if (!reply || !resize) return reply.error;
  uint32_t cap = reply->max_wr();
  shm::Mapping segment;
  std::byte* ring =
      attach_ring<shm::RecvWqe>(reply.fd(0), shm::srq_segment_bytes(cap), shm::kSrqRingOffset, cap, segment);
  if (ring == nullptr) return EPROTO;
  srq->segment = std::move(segment);
  srq->ring = shm::RingProducer<shm::RecvWqe>::resume(ring, cap);
  srq->max_wr = cap;
  return 0;
}

int ibv_query_srq(ibv_srq* ibsrq, ibv_srq_attr* attr) {
  FfSrq* srq = to_ff(ibsrq);
  if (srq->link_epoch != RouterLink::get().epoch()) return EIO;
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::QuerySrqReply>(fbb, proto::CreateQuerySrq(fbb, srq->handle));
  if (!reply) return reply.error;
  attr->max_wr = reply->max_wr();
  attr->max_sge = reply->max_sge();
  attr->srq_limit = reply->srq_limit();
  return 0;
}

int ibv_destroy_srq(ibv_srq* ibsrq) {
  FfSrq* srq = to_ff(ibsrq);
  if (srq->link_epoch == RouterLink::get().epoch()) {
    flatbuffers::FlatBufferBuilder fbb;
    int e = request<void>(fbb, proto::CreateDestroySrq(fbb, srq->handle)).error;
    if (e == EBUSY || e == EINVAL) return e;  // QPs still use it
  }
  to_ff(ibsrq->context)->untrack(srq->handle);
  if (srq->xrc_cq != nullptr) {
    std::lock_guard lock(srq->xrc_cq->lock);
    srq->xrc_cq->xrc_srqs.erase(srq->srq_num);
  }
  pthread_mutex_lock(&ibsrq->mutex);
  while (ibsrq->events_completed != srq->async_delivered) pthread_cond_wait(&ibsrq->cond, &ibsrq->mutex);
  pthread_mutex_unlock(&ibsrq->mutex);
  pthread_mutex_destroy(&ibsrq->mutex);
  pthread_cond_destroy(&ibsrq->cond);
  delete srq;
  return 0;
}

}  // extern "C"
