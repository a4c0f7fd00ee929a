// Completion queues and completion channels. The router writes completions
// into a shared ring; ibv_poll_cq reads them with no system call and no
// router round trip (an empty poll is two loads).
#include <fcntl.h>
#include <time.h>
#include <poll.h>
#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include "libffverbs/request.h"
#include "shm/idle_yield.h"

using namespace ff::verbs;
namespace shm = ff::shm;
namespace proto = ff::proto;

namespace {

void to_wc(const shm::Cqe& c, ibv_wc& wc) {
  wc.wr_id = c.wr_id;
  wc.status = static_cast<ibv_wc_status>(c.status);
  wc.opcode = static_cast<ibv_wc_opcode>(c.opcode);
  wc.vendor_err = c.vendor_err;
  wc.byte_len = c.byte_len;
  wc.imm_data = c.imm_data;
  wc.qp_num = c.qp_num;
  wc.src_qp = c.src_qp;
  wc.wc_flags = c.wc_flags;
  wc.pkey_index = c.pkey_index;
  wc.slid = c.slid;
  wc.sl = c.sl;
  wc.dlid_path_bits = c.dlid_path_bits;
}

// --- ibv_cq_ex polling (lock held from start_poll to end_poll) ------------
int cq_start_poll(ibv_cq_ex* ibcq, ibv_poll_cq_attr* attr) {
  FfCq* cq = to_ff(ibcq);
  if (attr != nullptr && attr->comp_mask != 0) return EINVAL;
  cq->lock.lock();
  if (!cq->ring.sc_try_pop(cq->current)) {
    cq->lock.unlock();
    return ENOENT;
  }
  retire_slots(*cq, cq->current);
  ibcq->wr_id = cq->current.wr_id;
  ibcq->status = static_cast<ibv_wc_status>(cq->current.status);
  return 0;
}
int cq_next_poll(ibv_cq_ex* ibcq) {
  FfCq* cq = to_ff(ibcq);
  if (!cq->ring.sc_try_pop(cq->current)) return ENOENT;
  retire_slots(*cq, cq->current);
  ibcq->wr_id = cq->current.wr_id;
  ibcq->status = static_cast<ibv_wc_status>(cq->current.status);
  return 0;
}
void cq_end_poll(ibv_cq_ex* ibcq) { to_ff(ibcq)->lock.unlock(); }
ibv_wc_opcode cq_read_opcode(ibv_cq_ex* c) { return static_cast<ibv_wc_opcode>(to_ff(c)->current.opcode); }
uint32_t cq_read_vendor_err(ibv_cq_ex* c) { return to_ff(c)->current.vendor_err; }
uint32_t cq_read_byte_len(ibv_cq_ex* c) { return to_ff(c)->current.byte_len; }
__be32 cq_read_imm_data(ibv_cq_ex* c) { return to_ff(c)->current.imm_data; }
uint32_t cq_read_qp_num(ibv_cq_ex* c) { return to_ff(c)->current.qp_num; }
uint32_t cq_read_src_qp(ibv_cq_ex* c) { return to_ff(c)->current.src_qp; }
unsigned int cq_read_wc_flags(ibv_cq_ex* c) { return to_ff(c)->current.wc_flags; }
uint32_t cq_read_slid(ibv_cq_ex* c) { return to_ff(c)->current.slid; }
uint8_t cq_read_sl(ibv_cq_ex* c) { return to_ff(c)->current.sl; }
uint8_t cq_read_dlid_path_bits(ibv_cq_ex* c) { return to_ff(c)->current.dlid_path_bits; }
uint64_t cq_read_completion_ts(ibv_cq_ex* c) { return to_ff(c)->current.completed_ns; }
// The router stamps CLOCK_MONOTONIC; the wall clock is that plus how far
// CLOCK_REALTIME is ahead now (only programs asking for it pay two reads).
uint64_t cq_read_completion_wallclock_ns(ibv_cq_ex* c) {
  timespec mono{}, real{};
  clock_gettime(CLOCK_MONOTONIC, &mono);
  clock_gettime(CLOCK_REALTIME, &real);
  int64_t ahead = (real.tv_sec - mono.tv_sec) * 1000000000LL + (real.tv_nsec - mono.tv_nsec);
  return to_ff(c)->current.completed_ns + static_cast<uint64_t>(ahead);
}
uint16_t cq_read_cvlan(ibv_cq_ex*) { return 0; }
uint32_t cq_read_flow_tag(ibv_cq_ex*) { return 0; }
void cq_read_tm_info(ibv_cq_ex*, ibv_wc_tm_info* info) { std::memset(info, 0, sizeof *info); }

constexpr uint64_t kTimestampWcFlags =
    IBV_WC_EX_WITH_COMPLETION_TIMESTAMP | IBV_WC_EX_WITH_COMPLETION_TIMESTAMP_WALLCLOCK;
constexpr uint64_t kSupportedWcFlags = IBV_WC_EX_WITH_BYTE_LEN | IBV_WC_EX_WITH_IMM |
                                       IBV_WC_EX_WITH_QP_NUM | IBV_WC_EX_WITH_SRC_QP |
                                       IBV_WC_EX_WITH_SLID | IBV_WC_EX_WITH_SL |
                                       IBV_WC_EX_WITH_DLID_PATH_BITS | kTimestampWcFlags;

ibv_cq_ex* create_cq(ibv_context* context, int cqe, void* cq_context, ibv_comp_channel* channel,
                     int comp_vector, bool timestamps) {
  FfContext* ctx = to_ff(context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_cq_ex>(EIO);
  FfChannel* ch = channel != nullptr ? to_ff(channel) : nullptr;
  flatbuffers::FlatBufferBuilder fbb;
  auto body = proto::CreateCreateCq(fbb, ctx->handle, cqe, ch != nullptr ? ch->handle : 0, comp_vector, timestamps);
  auto reply = request<proto::CreateCqReply>(fbb, body, "create_cq failed", 1);
  if (!reply) return fail_ptr<ibv_cq_ex>(reply.error);
  auto* cq = new (std::nothrow) FfCq();
  if (cq == nullptr) return fail_ptr<ibv_cq_ex>(ENOMEM);
  uint32_t capacity = reply->capacity();
  std::byte* ring = attach_ring<shm::Cqe>(reply.fd(0), shm::cq_segment_bytes(capacity), shm::kCqRingOffset,
                                          capacity, cq->segment);
  if (ring == nullptr) {
    delete cq;
    return fail_ptr<ibv_cq_ex>(EPROTO);
  }
  cq->handle = reply->cq();
  cq->control = reinterpret_cast<shm::CqControl*>(cq->segment.base() + shm::kCqControlOffset);
  cq->ring = shm::RingConsumer<shm::Cqe>(ring, capacity);
  cq->channel = ch;
  ibv_cq_ex& c = cq->cq;
  c.context = context;
  c.channel = channel;
  c.cq_context = cq_context;
  c.handle = cq->handle;
  c.cqe = static_cast<int>(capacity);
  pthread_mutex_init(&c.mutex, nullptr);
  pthread_cond_init(&c.cond, nullptr);
  c.start_poll = cq_start_poll;
  c.next_poll = cq_next_poll;
  c.end_poll = cq_end_poll;
  c.read_opcode = cq_read_opcode;
  c.read_vendor_err = cq_read_vendor_err;
  c.read_byte_len = cq_read_byte_len;
  c.read_imm_data = cq_read_imm_data;
  c.read_qp_num = cq_read_qp_num;
  c.read_src_qp = cq_read_src_qp;
  c.read_wc_flags = cq_read_wc_flags;
  c.read_slid = cq_read_slid;
  c.read_sl = cq_read_sl;
  c.read_dlid_path_bits = cq_read_dlid_path_bits;
  c.read_completion_ts = cq_read_completion_ts;
  c.read_cvlan = cq_read_cvlan;
  c.read_flow_tag = cq_read_flow_tag;
  c.read_tm_info = cq_read_tm_info;
  c.read_completion_wallclock_ns = cq_read_completion_wallclock_ns;
  if (ch != nullptr) {
    std::lock_guard lock(ch->mu);
    ch->cqs[cq->handle] = cq;
  }
  ctx->track(cq->handle, EventElement::kCq, cq);
  return &cq->cq;
}

}  // namespace

namespace ff::verbs {

void retire_slots(FfCq& cq, const shm::Cqe& c) {
  if (c.sends_retired != 0) {
    auto it = cq.senders.find(c.qp_num);
    if (it != cq.senders.end()) it->second->sends_retired.fetch_add(c.sends_retired, std::memory_order_release);
    return;
  }
  if (c.xrc_srq != 0) {  // the QP may be another process's: the SRQ is named
    auto srq = cq.xrc_srqs.find(c.xrc_srq);
    if (srq != cq.xrc_srqs.end()) srq->second->retired.fetch_add(1, std::memory_order_release);
    return;
  }
  auto it = cq.receivers.find(c.qp_num);
  if (it == cq.receivers.end()) return;
  ibv_srq* srq = it->second->qpx.qp_base.srq;
  if (srq != nullptr)
    to_ff(srq)->retired.fetch_add(1, std::memory_order_release);
  else
    it->second->recvs_retired.fetch_add(1, std::memory_order_release);
}

void drop_completions_of(FfCq& cq, uint32_t qp_num, FfSrq* srq) {
  uint64_t receives = 0;
  cq.ring.sc_remove_if([&](const shm::Cqe& c) {
    if (c.qp_num != qp_num || c.xrc_srq != 0) return false;
    if (c.sends_retired == 0) ++receives;
    return true;
  });
  if (srq != nullptr) srq->retired.fetch_add(receives, std::memory_order_release);
}

namespace {

// A thread's polling state. Initial-exec TLS: the shim is preloaded, so its
// TLS is static, and the general-dynamic model costs a __tls_get_addr call
// on every empty poll (a few percent of a spinning app's core); constant-
// initialized, so no guard either.
struct PollingThread {
  shm::IdleYield idle{0};
  uint32_t idleness = 0;
  bool ready = false;
};
[[gnu::tls_model("initial-exec")]] constinit thread_local PollingThread polling_thread;

}  // namespace

int ffv_poll_cq(ibv_cq* ibcq, int num_entries, ibv_wc* wc) {
  FfCq* cq = to_ff(ibcq);
  if (num_entries < 0) return -1;
  shm::Cqe batch[16];
  int done = 0;
  cq->lock.lock();
  while (done < num_entries) {
    size_t want = std::min<size_t>(16, static_cast<size_t>(num_entries - done));
    size_t got = cq->ring.sc_pop_burst(std::span<shm::Cqe>(batch, want));
    for (size_t i = 0; i < got; ++i) {
      retire_slots(*cq, batch[i]);
      to_wc(batch[i], wc[done + static_cast<int>(i)]);
    }
    done += static_cast<int>(got);
    if (got < want) break;
  }
  bool broken = done == 0 && (cq->ring.corrupt() || cq->control->error.load(std::memory_order_relaxed) != 0);
  cq->lock.unlock();
  // Let the router's poller (or the peer) run if it shares this core; the
  // spinning between yields adapts to whether it does (shm/idle_yield.h).
  // Per thread: it is the thread's core that is shared or not.
  PollingThread& me = polling_thread;
  if (!me.ready) {
    me.idle = shm::IdleYield(poll_yield_threshold());
    me.ready = true;
  }
  // Now and then (32 yields, or 32768 empty polls): is the router still
  // there? A program spinning on an idle CQ would otherwise never learn
  // that it is gone. (A check is a system call: not on every yield.)
  bool check_router = false;
  if (done == 0) {
    me.idleness += me.idle.idle() ? 1024u : 1u;
    check_router = me.idleness >= 32768;
    if (check_router) me.idleness = 0;
  } else {
    me.idle.busy();
  }
  if (check_router && (context_is_stale(*to_ff(ibcq->context)) || RouterLink::get().router_gone())) {
    errno = EIO;
    return -1;
  }
  return broken ? -1 : done;  // an overrun CQ lost completions: verbs reports an error
}

int ffv_req_notify_cq(ibv_cq* ibcq, int solicited_only) {
  FfCq* cq = to_ff(ibcq);
  if (cq->channel == nullptr) return EINVAL;
  std::lock_guard lock(cq->arm_lock);  // the arm word moves with ibv_resize_cq
  cq->control->arm.store(solicited_only != 0 ? shm::kArmSolicited : shm::kArmNext, std::memory_order_relaxed);
  // Dekker with the router's VirtualCq::add (router/fabric/virtual_queues.cc).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return 0;
}

ibv_cq_ex* ffv_create_cq_ex(ibv_context* context, ibv_cq_init_attr_ex* attr) {
  constexpr uint32_t kKnownMask = IBV_CQ_INIT_ATTR_MASK_FLAGS | IBV_CQ_INIT_ATTR_MASK_PD;
  if ((attr->comp_mask & ~kKnownMask) != 0) return fail_ptr<ibv_cq_ex>(EOPNOTSUPP);
  if ((attr->wc_flags & ~kSupportedWcFlags) != 0) return fail_ptr<ibv_cq_ex>(EOPNOTSUPP);
  if (attr->cqe > INT32_MAX) return fail_ptr<ibv_cq_ex>(EINVAL);
  ibv_pd* parent = (attr->comp_mask & IBV_CQ_INIT_ATTR_MASK_PD) != 0 ? attr->parent_domain : nullptr;
  // Only a parent domain stands there (as mlx5 checks).
  if ((attr->comp_mask & IBV_CQ_INIT_ATTR_MASK_PD) != 0 && (parent == nullptr || to_ff(parent)->protection == nullptr))
    return fail_ptr<ibv_cq_ex>(EINVAL);
  ibv_cq_ex* cq = create_cq(context, static_cast<int>(attr->cqe), attr->cq_context, attr->channel,
                            static_cast<int>(attr->comp_vector), (attr->wc_flags & kTimestampWcFlags) != 0);
  if (cq != nullptr && parent != nullptr) {
    to_ff(cq)->parent_domain = parent;
    hold_parent_domain(parent);
  }
  return cq;
}

}  // namespace ff::verbs

extern "C" {

ibv_cq* ibv_create_cq(ibv_context* context, int cqe, void* cq_context, ibv_comp_channel* channel,
                      int comp_vector) {
  return ibv_cq_ex_to_cq(create_cq(context, cqe, cq_context, channel, comp_vector, false));
}

int ibv_destroy_cq(ibv_cq* ibcq) {
  FfCq* cq = to_ff(ibcq);
  if (!context_is_stale(*to_ff(ibcq->context))) {
    flatbuffers::FlatBufferBuilder fbb;
    int e = request<void>(fbb, proto::CreateDestroyCq(fbb, cq->handle)).error;
    if (e == EBUSY || e == EINVAL) return e;  // QPs still use it
  }
  to_ff(ibcq->context)->untrack(cq->handle);
  // First out of the channel (ibv_get_cq_event hands out events under the
  // channel's lock), so that no event is handed out after the wait below.
  if (cq->channel != nullptr) {
    std::lock_guard lock(cq->channel->mu);
    cq->channel->cqs.erase(cq->handle);
  }
  // Verbs: destroy waits until every event handed out was acknowledged.
  pthread_mutex_lock(&ibcq->mutex);
  while (ibcq->comp_events_completed != cq->events_delivered ||
         ibcq->async_events_completed != cq->async_delivered)
    pthread_cond_wait(&ibcq->cond, &ibcq->mutex);
  pthread_mutex_unlock(&ibcq->mutex);
  pthread_mutex_destroy(&ibcq->mutex);
  pthread_cond_destroy(&ibcq->cond);
  if (cq->parent_domain != nullptr) release_parent_domain(cq->parent_domain);
  delete cq;
  return 0;
}

// The router moves the CQ to a new segment with the completions not yet
// polled and the arm; no poll (the CQ's lock) and no ibv_req_notify_cq (its
// arm lock) runs meanwhile, so none is lost or seen twice.
int ibv_resize_cq(ibv_cq* ibcq, int cqe) {
  FfCq* cq = to_ff(ibcq);
  if (context_is_stale(*to_ff(ibcq->context))) return EIO;
  std::lock_guard lock(cq->lock);
  std::lock_guard arm_lock(cq->arm_lock);
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::ResizeCqReply>(fbb, proto::CreateResizeCq(fbb, cq->handle, cqe), "resize_cq failed", 1);
  if (!reply) return reply.error;
  uint32_t capacity = reply->capacity();
  shm::Mapping segment;
  std::byte* ring = attach_ring<shm::Cqe>(reply.fd(0), shm::cq_segment_bytes(capacity), shm::kCqRingOffset,
                                          capacity, segment);
  if (ring == nullptr) return EPROTO;
  cq->segment = std::move(segment);
  cq->control = reinterpret_cast<shm::CqControl*>(cq->segment.base() + shm::kCqControlOffset);
  cq->ring = shm::RingConsumer<shm::Cqe>(ring, capacity);
  ibcq->cqe = static_cast<int>(capacity);
  return 0;
}

ibv_comp_channel* ibv_create_comp_channel(ibv_context* context) {
  FfContext* ctx = to_ff(context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_comp_channel>(EIO);
  flatbuffers::FlatBufferBuilder fbb;
  auto body = proto::CreateCreateCompChannel(fbb, ctx->handle);
  auto reply = request<proto::CreateCompChannelReply>(fbb, body, nullptr, 2);
  if (!reply) return fail_ptr<ibv_comp_channel>(reply.error);
  auto* ch = new (std::nothrow) FfChannel();
  if (ch == nullptr) return fail_ptr<ibv_comp_channel>(ENOMEM);
  uint32_t capacity = reply->capacity();
  std::byte* ring = attach_ring<shm::ChannelEvent>(reply.fd(1), shm::channel_segment_bytes(capacity),
                                                   shm::kChannelRingOffset, capacity, ch->segment);
  if (ring == nullptr) {
    delete ch;
    return fail_ptr<ibv_comp_channel>(EPROTO);
  }
  ch->events = shm::RingConsumer<shm::ChannelEvent>(ring, capacity);
  ch->handle = reply->channel();
  ch->link_epoch = RouterLink::get().epoch();
  ch->channel.context = context;
  ch->channel.fd = reply.release_fd(0);
  ch->channel.refcnt = 0;
  return &ch->channel;
}

int ibv_destroy_comp_channel(ibv_comp_channel* channel) {
  FfChannel* ch = to_ff(channel);
  if (ch->link_epoch == RouterLink::get().epoch()) {
    flatbuffers::FlatBufferBuilder fbb;
    int e = request<void>(fbb, proto::CreateDestroyCompChannel(fbb, ch->handle)).error;
    if (e == EBUSY || e == EINVAL) return e;  // CQs still use it
  }
  ::close(channel->fd);
  delete ch;
  return 0;
}

// Blocks on channel->fd (or fails with EAGAIN when the app made it
// non-blocking) until a CQ of this channel fired. Events travel in a ring;
// channel->fd (a pipe with one byte per event) only wakes, and is readable
// while events remain, so that poll()/epoll users see each one.
int ibv_get_cq_event(ibv_comp_channel* channel, ibv_cq** cq_out, void** cq_context) {
  FfChannel* ch = to_ff(channel);
  bool stale = false, hung_up = false;
  for (;;) {
    {
      std::lock_guard lock(ch->mu);
      shm::ChannelEvent ev;
      while (ch->events.sc_try_pop(ev)) {
        consume_wakeup(channel->fd);  // its byte: channel->fd stays readable while events remain
        auto it = ch->cqs.find(ev.cq);
        if (it == ch->cqs.end()) continue;  // the CQ was destroyed meanwhile
        FfCq* cq = it->second;
        pthread_mutex_lock(&cq->cq.mutex);
        ++cq->events_delivered;
        pthread_mutex_unlock(&cq->cq.mutex);
        *cq_out = ibv_cq_ex_to_cq(&cq->cq);
        *cq_context = cq->cq.cq_context;
        return 0;
      }
    }
    if (ch->link_epoch != RouterLink::get().epoch()) {
      errno = EIO;  // the router is gone: no event will ever come
      return -1;
    }
    // Wait for channel->fd, or for the router connection to drop.
    if (!wait_for_wakeup(channel->fd, RouterLink::get().client().fd(), stale, hung_up)) return -1;
    if (hung_up) {
      errno = EIO;
      return -1;
    }
  }
}

void ibv_ack_cq_events(ibv_cq* cq, unsigned int nevents) {
  pthread_mutex_lock(&cq->mutex);
  cq->comp_events_completed += nevents;
  pthread_cond_signal(&cq->cond);
  pthread_mutex_unlock(&cq->mutex);
}

}  // extern "C"
