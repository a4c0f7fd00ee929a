// Asynchronous events on context->async_fd, a real pollable eventfd from the
// router that honours O_NONBLOCK as set by the app.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "libffverbs/shim.h"

using namespace ff::verbs;

namespace {

// True once per context after its router session ended (router killed or
// restarted): the device is gone for good, which verbs reports as
// IBV_EVENT_DEVICE_FATAL. Later calls find no more events, as on real HCAs.
bool take_fatal(FfContext& ctx) {
  bool lost = context_is_stale(ctx) || !RouterLink::get().client().connected();
  return lost && !ctx.fatal_reported.exchange(true);
}

int deliver_fatal(ibv_async_event* event) {
  event->element.port_num = 0;
  event->event_type = IBV_EVENT_DEVICE_FATAL;
  return 0;
}

}  // namespace

extern "C" {

int ibv_get_async_event(ibv_context* context, ibv_async_event* event) {
  FfContext* ctx = to_ff(context);
  int flags = ::fcntl(ctx->async_fd, F_GETFL);
  bool nonblocking = flags >= 0 && (flags & O_NONBLOCK) != 0;
  for (;;) {
    if (take_fatal(*ctx)) return deliver_fatal(event);
    if (nonblocking) {
      errno = EAGAIN;
      return -1;
    }
    pollfd fds[2] = {{ctx->async_fd, POLLIN, 0}, {-1, POLLRDHUP, 0}};
    if (!ctx->fatal_reported) fds[1].fd = RouterLink::get().client().fd();
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return -1;
    if ((fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0 && !ctx->fatal_reported.exchange(true))
      return deliver_fatal(event);
    if ((fds[0].revents & POLLIN) != 0) {
      uint64_t pending;
      ssize_t n = ::read(ctx->async_fd, &pending, sizeof pending);
      (void)n;  // a wakeup only: the events themselves come from the router
    }
  }
}

void ibv_ack_async_event(ibv_async_event*) {
  // Nothing to release: the router keeps no per-event reference on the
  // app's behalf, so destroy never waits for an ack.
}

}  // extern "C"
