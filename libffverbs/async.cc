// Asynchronous events. The router writes them into a ring in shared memory
// and wakes context->async_fd, the read end of a pipe (one byte per event)
// that starts out blocking and honours O_NONBLOCK once the app sets it; the
// fd is readable while events are pending. The router going away is IBV_EVENT_DEVICE_FATAL.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "libffverbs/shim.h"

using namespace ff::verbs;

namespace {

// True once per context after its router session ended (router killed or
// restarted): the device is gone for good. Later calls find no more events,
// as on real HCAs.
bool take_fatal(FfContext& ctx) {
  bool lost = context_is_stale(ctx) || !RouterLink::get().client().connected();
  return lost && !ctx.fatal_reported.exchange(true);
}

int deliver_fatal(ibv_async_event* event) {
  event->element.port_num = 0;
  event->event_type = IBV_EVENT_DEVICE_FATAL;
  return 0;
}

// Counts an event against its object (destroy waits for the acks).
template <typename Obj, typename Ib>
void delivered(Obj* obj, Ib* ib) {
  pthread_mutex_lock(&ib->mutex);
  ++obj->async_delivered;
  pthread_mutex_unlock(&ib->mutex);
}

// Counts an acknowledgement on the object (its destroy waits for them).
template <typename Ib>
void acknowledged(Ib* obj, uint32_t Ib::*completed) {
  pthread_mutex_lock(&obj->mutex);
  ++(obj->*completed);
  pthread_cond_signal(&obj->cond);
  pthread_mutex_unlock(&obj->mutex);
}

// The next queued event about a live object; false when none is queued.
bool take_event(FfContext& ctx, ibv_async_event* event) {
  std::lock_guard lock(ctx.mu);
  ff::shm::AsyncEvent ev;
  while (ctx.async_events.sc_try_pop(ev)) {
    auto it = ctx.elements.find(ev.handle);
    if (it == ctx.elements.end()) continue;  // destroyed meanwhile
    event->event_type = static_cast<ibv_event_type>(ev.type);
    switch (it->second.first) {
      case EventElement::kQp: {
        auto* qp = static_cast<FfQp*>(it->second.second);
        event->element.qp = &qp->qpx.qp_base;
        delivered(qp, event->element.qp);
        break;
      }
      case EventElement::kCq: {
        auto* cq = static_cast<FfCq*>(it->second.second);
        event->element.cq = ibv_cq_ex_to_cq(&cq->cq);
        delivered(cq, event->element.cq);
        break;
      }
      case EventElement::kSrq: {
        auto* srq = static_cast<FfSrq*>(it->second.second);
        event->element.srq = &srq->srq;
        delivered(srq, event->element.srq);
        break;
      }
    }
    consume_wakeup(ctx.async_fd);  // the fd stays readable while events remain
    return true;
  }
  return false;
}

}  // namespace

extern "C" {

int ibv_get_async_event(ibv_context* context, ibv_async_event* event) {
  FfContext* ctx = to_ff(context);
  bool stale = false, hung_up = false;
  for (;;) {
    if (take_event(*ctx, event)) return 0;
    if (take_fatal(*ctx)) return deliver_fatal(event);
    int router_fd = ctx->fatal_reported ? -1 : RouterLink::get().client().fd();
    if (!wait_for_wakeup(ctx->async_fd, router_fd, stale, hung_up)) return -1;
    if (hung_up && !ctx->fatal_reported.exchange(true)) return deliver_fatal(event);
  }
}

void ibv_ack_async_event(ibv_async_event* event) {
  switch (event->event_type) {
    case IBV_EVENT_CQ_ERR:
      acknowledged(event->element.cq, &ibv_cq::async_events_completed);
      break;
    case IBV_EVENT_QP_FATAL:
    case IBV_EVENT_QP_REQ_ERR:
    case IBV_EVENT_QP_ACCESS_ERR:
    case IBV_EVENT_COMM_EST:
    case IBV_EVENT_SQ_DRAINED:
    case IBV_EVENT_PATH_MIG:
    case IBV_EVENT_PATH_MIG_ERR:
    case IBV_EVENT_QP_LAST_WQE_REACHED:
      acknowledged(event->element.qp, &ibv_qp::events_completed);
      break;
    case IBV_EVENT_SRQ_ERR:
    case IBV_EVENT_SRQ_LIMIT_REACHED:
      acknowledged(event->element.srq, &ibv_srq::events_completed);
      break;
    default:
      break;  // port and device events name no object
  }
}

}  // extern "C"

namespace ff::verbs {

void consume_wakeup(int fd) {
  // Callers hold the ring's lock: no other thread of ours reads between
  // the poll and the read.
  pollfd pf{fd, POLLIN, 0};
  char byte;
  if (::poll(&pf, 1, 0) == 1) {
    ssize_t n = ::read(fd, &byte, 1);
    (void)n;
  }
}

bool wait_for_wakeup(int fd, int router_fd, bool& stale, bool& hung_up) {
  char byte;
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) != 0) return ::read(fd, &byte, 1) == 1;  // EAGAIN: nothing pending
  // Readable last time and the ring still empty: that byte's event went
  // with an earlier byte. Drop it, or this would spin.
  if (stale) consume_wakeup(fd);
  pollfd fds[2] = {{fd, POLLIN, 0}, {router_fd, POLLRDHUP, 0}};
  if (::poll(fds, 2, -1) < 0 && errno != EINTR) return false;
  hung_up = (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  stale = (fds[0].revents & POLLIN) != 0;
  return true;
}

}  // namespace ff::verbs
