// libffverbs internals: the objects handed to apps and the link to the router.
//
// libffverbs is a verbs provider in disguise. Apps call the exported
// IBVERBS_1.x entry points (interposed here) and the static-inline verbs,
// which jump through the function pointers inside the objects we hand out.
// So every object embeds the public struct it stands for, and every function
// pointer slot is filled: unimplemented ones fail with EOPNOTSUPP, never NULL.
//
// Error convention (the verbs ABI, exactly): int returns are 0 or a positive
// errno; pointer returns are NULL with errno set.
#pragma once

#include <infiniband/verbs.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include <map>
#include <vector>

#include "proto/client.h"
#include "shm/descriptors.h"
#include "shm/segment.h"

namespace ff::proto {
struct CreateQpReply;
}

namespace ff::verbs {

struct FfXrcd;

// The single virtual device. `verbs_device_tail` stays zero: provider code
// linked into apps (libmlx5's mlx5dv_is_supported) reads the verbs_device
// fields right after struct ibv_device and must find a NULL ops pointer.
struct FfDevice {
  ibv_device device;
  uint8_t verbs_device_tail[256];
  uint64_t node_guid;  // host order
};

// What an asynchronous event can be about.
enum class EventElement : uint8_t { kQp, kCq, kSrq };

// A context: a full verbs_context so that verbs_get_ctx() and the extended
// inline verbs work. The app holds &vctx.context.
struct FfContext {
  verbs_context vctx{};  // must stay the first member (see to_ff)
  uint32_t handle = 0;       // the router's handle for this context
  uint64_t link_epoch = 0;   // RouterLink epoch this context was opened under
  int async_fd = -1;         // read end of the router's async-event pipe (also context.async_fd)
  int doorbell_fd = -1;      // write end of the pipe that wakes the router's poller (see RingProducer::consumer_needs_wakeup)
  std::atomic<bool> fatal_reported{false};  // IBV_EVENT_DEVICE_FATAL is delivered once
  // Async events: a ring the router writes; they name objects by handle.
  shm::Mapping async_segment;
  shm::RingConsumer<shm::AsyncEvent> async_events;
  std::mutex mu;  // guards async_events and elements
  std::map<uint32_t, std::pair<EventElement, void*>> elements;
  // Held from a QP's create request until its CQs know its number, and from
  // its destroy request until its completions left them: a number the
  // router hands out again (the device's, on the verbs fabric) never names
  // two QPs of one CQ at once, so a destroy takes only its own QP's
  // completions (as mlx5's qp_table_mutex).
  std::mutex qp_numbers;

  void track(uint32_t h, EventElement kind, void* object) {
    std::lock_guard lock(mu);
    elements[h] = {kind, object};
  }
  void untrack(uint32_t h) {
    std::lock_guard lock(mu);
    elements.erase(h);
  }
};

// A thread domain: the app promises to use what it is given to from one
// thread. The shim locks anyway (correct either way); it only counts the
// parent domains holding it.
struct FfTd {
  ibv_td td;  // first: apps hold &td
  std::atomic<uint32_t> refs{1};
};

// A protection domain, or a parent domain (`protection` set): the PD it
// stands in for, with its handle, plus a thread domain and the app's
// allocators. The shim makes no queue buffers in the app's memory (the
// router makes them), so the allocators are kept, never called; a provider
// may always use its own allocation. `refs` counts what holds it: parent
// domains of a PD; MRs, QPs and CQs made with a parent domain (an MR
// re-registered later must still find its PD).
struct FfPd {
  ibv_pd pd;  // first: apps hold &pd
  uint32_t handle = 0;
  FfPd* protection = nullptr;
  FfTd* td = nullptr;
  void* pd_context = nullptr;
  std::atomic<uint32_t> refs{1};
};
// A parent domain's reference taken by an object made with it (none for a
// plain PD, which the router counts).
void hold_parent_domain(ibv_pd* pd);
void release_parent_domain(ibv_pd* pd);

struct FfMr {
  ibv_mr mr;
  uint32_t handle;
  uint64_t pages;  // the lease on the shared pages this registration holds (shared_memory.h)
  uint64_t iova;   // what ibv_rereg_mr keeps when the translation stays
  unsigned access;
  std::atomic<uint32_t>* on_dm;  // a DM MR: its DM's count of MRs (dm.cc)
};

// A spinlock for the few-instruction critical sections of the data path.
class SpinLock {
 public:
  void lock() {
    while (flag_.test_and_set(std::memory_order_acquire)) __builtin_ia32_pause();
  }
  void unlock() { flag_.clear(std::memory_order_release); }

 private:
  std::atomic_flag flag_ = ATOMIC_FLAG_INIT;
};

struct FfCq;
struct FfSrq;
struct FfQp;

struct FfChannel {
  ibv_comp_channel channel;  // first: apps hold &channel
  uint32_t handle = 0;
  uint64_t link_epoch = 0;
  shm::Mapping segment;
  shm::RingConsumer<shm::ChannelEvent> events;
  std::mutex mu;
  std::map<uint32_t, FfCq*> cqs;  // by router handle, for get_cq_event
};

struct FfCq {
  ibv_cq_ex cq;  // first: apps hold &cq (as ibv_cq* or ibv_cq_ex*)
  uint32_t handle = 0;
  shm::Mapping segment;
  shm::CqControl* control = nullptr;
  shm::RingConsumer<shm::Cqe> ring;
  SpinLock lock;      // polls (from ibv_start_poll to ibv_end_poll)
  SpinLock arm_lock;  // ibv_req_notify_cq: the arm word moves with ibv_resize_cq
  FfChannel* channel = nullptr;
  ibv_pd* parent_domain = nullptr;  // IBV_CQ_INIT_ATTR_MASK_PD
  uint32_t events_delivered = 0;  // by get_cq_event; destroy waits for as many acks
  shm::Cqe current{};             // the entry ibv_start_poll/ibv_next_poll is on
  uint32_t async_delivered = 0;   // async events handed out; destroy waits for their acks
  std::map<uint32_t, FfQp*> senders;    // QPs whose send CQ this is, by QP number (under `lock`)
  std::map<uint32_t, FfQp*> receivers;  // ... whose receive CQ this is
  std::map<uint32_t, FfSrq*> xrc_srqs;  // XRC SRQs completing here, by srq_num (under `lock`)
};

// A polled completion frees its work requests' queue slots: a send
// completion those of the send WRs it retires, a receive completion (the
// one kind that retires no send) one slot of its QP's receive queue or SRQ.
// Under the CQ's lock.
void retire_slots(FfCq& cq, const shm::Cqe& c);
// A QP is gone (the router writes no more of its completions): the
// completions it left in the CQ go too, as mlx4 and mlx5 clean a destroyed
// QP's CQEs (libfabric's rxm reposts a receive on the endpoint of every
// receive completion it reads after closing that endpoint). Those of
// receives an SRQ gave it (`srq`, may be null) retire their SRQ slots.
// An XRC SRQ's completions stay: they name the SRQ, not this QP's receive
// queue. Under the CQ's lock.
void drop_completions_of(FfCq& cq, uint32_t qp_num, FfSrq* srq);

struct FfQp {
  ibv_qp_ex qpx;  // first: apps hold &qpx.qp_base (and ibv_qp_to_qp_ex gives &qpx)
  uint32_t handle = 0;
  FfContext* ctx = nullptr;
  shm::Mapping segment;
  ibv_qp_cap cap{};
  std::mutex send_mu;
  std::mutex recv_mu;
  shm::RingProducer<shm::SendWqe> sq;
  shm::RingProducer<shm::RecvWqe> rq;
  // Send WRs whose completion the app has polled (or that a reset dropped):
  // a send-queue slot is free once the completion of its WR (or of a later
  // one) has been polled, as on mlx5; until then ibv_post_send says ENOMEM.
  std::atomic<uint64_t> sends_retired{0};
  // The same for receives: a receive-queue slot is free once the app has
  // polled the receive's completion. The ring may be longer than the queue,
  // and a fabric that hands receives to a device ahead of time empties it
  // early: ibv_post_recv says ENOMEM by this count, as a device would.
  std::atomic<uint64_t> recvs_retired{0};
  bool recv_room() {
    uint64_t posted = rq.produced();
    return posted - std::min(recvs_retired.load(std::memory_order_acquire), posted) < cap.max_recv_wr;
  }
  // Whether `n` more send WRs fit. Under send_mu.
  bool send_room(size_t n) {
    uint64_t posted = sq.produced();
    uint64_t outstanding = posted - std::min(sends_retired.load(std::memory_order_acquire), posted);
    return outstanding + n <= cap.max_send_wr;
  }
  // The ibv_wr_* builder (between wr_start and wr_complete, under send_mu).
  std::vector<shm::SendWqe> pending;
  int pending_error = 0;
  uint32_t async_delivered = 0;  // async events handed out; destroy waits for their acks
};

// After publishing into a ring the router consumes: rings the context's
// doorbell if the router's poller asked to be woken (it sleeps otherwise).
template <typename Ring>
void wake_router_if_asked(Ring& ring, const FfContext& ctx) {
  if (ring.consumer_needs_wakeup()) {
    const char one = 1;
    ssize_t n = ::write(ctx.doorbell_fd, &one, 1);
    (void)n;  // EAGAIN: the pipe is full, the router is certain to wake
  }
}

// context->async_fd and channel->fd are the read ends of pipes the router
// writes one byte into per event it queues: the fd is readable while events
// are pending. Taking an event consumes its byte (never blocking: the byte
// may not have come yet, or another thread may have taken it).
void consume_wakeup(int fd);
// A verbs wait on such an fd (ibv_get_cq_event, ibv_get_async_event) once the
// ring had nothing: on an O_NONBLOCK fd, false with errno EAGAIN when no byte
// is there (a byte without an event is dropped: its event went with an
// earlier byte); on a blocking fd, waits until it is readable or `router_fd`
// hangs up (`hung_up` then). True: look at the ring again.
bool wait_for_wakeup(int fd, int router_fd, bool& stale, bool& hung_up);

struct FfSrq {
  ibv_srq srq;  // first: apps hold &srq
  FfContext* ctx = nullptr;
  uint32_t handle = 0;
  uint64_t link_epoch = 0;
  shm::Mapping segment;
  shm::RingProducer<shm::RecvWqe> ring;
  uint32_t max_sge = 0;
  uint32_t max_wr = 0;  // as reported: posts beyond it wait for completions (FfQp::recv_room)
  uint64_t posted = 0;  // receives ever posted (the ring changes with a resize); under `mu`
  std::atomic<uint64_t> retired{0};
  bool room() { return posted - std::min(retired.load(std::memory_order_acquire), posted) < max_wr; }
  std::mutex mu;  // posts, and a resize
  uint32_t async_delivered = 0;  // async events handed out; destroy waits for their acks
  // XRC: what senders name it by, and the CQ its receives complete on
  // (which frees its slots by that number: FfCq::xrc_srqs).
  uint32_t srq_num = 0;
  FfCq* xrc_cq = nullptr;
};

// An XRC domain.
struct FfXrcd {
  ibv_xrcd xrcd;  // first: apps hold &xrcd
  uint32_t handle = 0;
};

struct FfAh {
  ibv_ah ah;        // first: apps hold &ah
  uint32_t id = 0;  // what UD work requests carry
  uint64_t link_epoch = 0;
};

// vctx is FfContext's first member, so the context sits at the same offset
// in both.
inline FfContext* to_ff(ibv_context* ctx) {
  return reinterpret_cast<FfContext*>(reinterpret_cast<char*>(ctx) - offsetof(verbs_context, context));
}
inline FfPd* to_ff(ibv_pd* pd) { return reinterpret_cast<FfPd*>(pd); }
inline FfTd* to_ff(ibv_td* td) { return reinterpret_cast<FfTd*>(td); }
inline FfMr* to_ff(ibv_mr* mr) { return reinterpret_cast<FfMr*>(mr); }
inline FfCq* to_ff(ibv_cq* cq) { return reinterpret_cast<FfCq*>(cq); }
inline FfCq* to_ff(ibv_cq_ex* cq) { return reinterpret_cast<FfCq*>(cq); }
inline FfQp* to_ff(ibv_qp* qp) { return reinterpret_cast<FfQp*>(qp); }
inline FfQp* to_ff(ibv_qp_ex* qp) { return reinterpret_cast<FfQp*>(qp); }
inline FfChannel* to_ff(ibv_comp_channel* ch) { return reinterpret_cast<FfChannel*>(ch); }
inline FfSrq* to_ff(ibv_srq* srq) { return reinterpret_cast<FfSrq*>(srq); }
inline FfAh* to_ff(ibv_ah* ah) { return reinterpret_cast<FfAh*>(ah); }
inline FfXrcd* to_ff(ibv_xrcd* xrcd) { return reinterpret_cast<FfXrcd*>(xrcd); }

// Extension ops and the ops-table entries implemented in cq.cc and qp.cc.
int ffv_poll_cq(ibv_cq* cq, int num_entries, ibv_wc* wc);
int ffv_req_notify_cq(ibv_cq* cq, int solicited_only);
ibv_cq_ex* ffv_create_cq_ex(ibv_context* context, ibv_cq_init_attr_ex* attr);
ibv_td* ffv_alloc_td(ibv_context* context, ibv_td_init_attr* attr);
int ffv_query_rt_values(ibv_context* context, ibv_values_ex* values);
int ffv_dealloc_td(ibv_td* td);
ibv_pd* ffv_alloc_parent_domain(ibv_context* context, ibv_parent_domain_init_attr* attr);
int ffv_post_send(ibv_qp* qp, ibv_send_wr* wr, ibv_send_wr** bad_wr);
int ffv_post_recv(ibv_qp* qp, ibv_recv_wr* wr, ibv_recv_wr** bad_wr);
ibv_qp* ffv_create_qp_ex(ibv_context* context, ibv_qp_init_attr_ex* attr);
// The shim's QP for the router's CreateQpReply (a QP made, or an XRC
// receive QP opened) and its segment; attr names its CQs, SRQ and PD (null
// where it has none) and gets its capabilities.
ibv_qp* adopt_qp(FfContext& ctx, int segment_fd, const proto::CreateQpReply& reply, ibv_qp_init_attr_ex& attr);
// XRC (xrc.cc).
ibv_xrcd* ffv_open_xrcd(ibv_context* context, ibv_xrcd_init_attr* attr);
int ffv_close_xrcd(ibv_xrcd* xrcd);
ibv_srq* ffv_create_srq_ex(ibv_context* context, ibv_srq_init_attr_ex* attr);
int ffv_get_srq_num(ibv_srq* srq, uint32_t* srq_num);
ibv_qp* ffv_open_qp(ibv_context* context, ibv_qp_open_attr* attr);
// An SRQ (srq.cc): a basic one, or (xrcd, cq set) an XRC one.
ibv_srq* create_srq(ibv_pd* pd, ibv_srq_init_attr& init, FfXrcd* xrcd, ibv_cq* cq);
int ffv_post_srq_recv(ibv_srq* srq, ibv_recv_wr* wr, ibv_recv_wr** bad_wr);

// Builds a receive descriptor; 0 or EINVAL (too many SGEs).
int build_recv(const ibv_recv_wr& wr, uint32_t max_sge, shm::RecvWqe& r);
// The descriptor of a bind of `mw` with new rkey `rkey` (mw.cc); EINVAL
// without a window.
int encode_bind(shm::SendWqe& w, const ibv_mw* mw, uint32_t rkey, const ibv_mw_bind_info& info);
void init_mw_ops(ibv_context_ops& ops);
// Device memory, served from the shared arena (dm.cc): at most this much
// per allocation (ibv_device_attr_ex.max_dm_size).
inline constexpr uint64_t kMaxDmSize = 1 << 20;
void init_dm_ops(verbs_context& v);
// ibv_reg_mr_iova2 for the shim's own callers (mr.cc).
ibv_mr* register_range(ibv_pd* pd, void* addr, size_t length, uint64_t iova, unsigned access);

// Maps a ring segment the router sent and checks it: the segment's header,
// its size (at least `bytes`), and the ring of T at `ring_offset` holding
// `capacity` slots. The ring's start, or nullptr (the reason logged).
template <typename T>
std::byte* attach_ring(int fd, size_t bytes, size_t ring_offset, uint32_t capacity, shm::Mapping& out);

// Fills every slot of a context's ops tables (implemented or EOPNOTSUPP).
void init_context_ops(FfContext& ctx);

// Extension ops reached through verbs_context (query.cc).
int ffv_query_device_ex(ibv_context* context, const ibv_query_device_ex_input* input,
                        ibv_device_attr_ex* attr, size_t attr_size);
int ffv_query_port(ibv_context* context, uint8_t port_num, ibv_port_attr* attr, size_t attr_len);

// The process's one connection to the router. Connects lazily, on the first
// verb that needs it, never in a constructor (LD_PRELOAD is inherited by every
// child an app execs). Thread-safe.
class RouterLink {
 public:
  static RouterLink& get();

  // Connects and says Hello if not connected. 0 or an errno; the reason is
  // kept in last_error() and printed when FFV_DEBUG is set.
  int ensure_connected();
  proto::ControlClient& client() { return client_; }
  // Bumped whenever the connection is lost or the process forks: objects
  // from an older epoch belong to a router session that no longer exists.
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  uint32_t virtual_ip() const { return virtual_ip_; }
  // True when the router closed the connection (a poll(2) with no wait);
  // marks every object stale. For callers that otherwise never talk to the
  // router (ibv_poll_cq on an idle CQ).
  bool router_gone();
  // Blocks until the router closes the connection (marking objects stale,
  // as router_gone() does); at once when there is none.
  void wait_until_gone();
  std::string socket_path() const;
  void on_fork_child();

  // Performs a call (with `fds` attached); on transport failure bumps the epoch.
  // Verbs use request() (request.h), which also checks the reply.
  proto::ControlClient::Result call(flatbuffers::FlatBufferBuilder& fbb, proto::RequestBody type,
                                    flatbuffers::Offset<void> body, std::span<const int> fds = {});

 private:
  RouterLink();
  std::mutex mu_;
  proto::ControlClient client_;
  std::atomic<uint64_t> epoch_{1};
  uint32_t virtual_ip_ = 0;
};

// The fewest consecutive empty ibv_poll_cq calls after which the calling
// thread yields its CPU (FFV_POLL_YIELD, default 32; 0: never); more while
// its yields find no other thread wanting the core (shm/idle_yield.h).
// Apps that spin on an empty CQ would otherwise starve the router's poller
// on a machine with few cores.
uint32_t poll_yield_threshold();

// True when FFV_DEBUG is set (read once).
bool debug_enabled();
// Prints "libffverbs: ..." to stderr when debugging is enabled.
void debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// glibc's dlopen: the shim's own dlopen gives itself for libibverbs
// (dlopen.cc), so the shim reaches the host's library through this.
void* host_dlopen(const char* file, int flags);

// errno-style helpers for the two verbs return conventions.
template <typename T>
T* fail_ptr(int e) {
  errno = e;
  return nullptr;
}
inline int fail_int(int e) {
  errno = e;
  return e;
}

// A context whose router session is gone (router restarted, or this is a
// forked child): verbs on it fail with EIO.
bool context_is_stale(const FfContext& ctx);

template <typename T>
std::byte* attach_ring(int fd, size_t bytes, size_t ring_offset, uint32_t capacity, shm::Mapping& out) {
  try {
    out = shm::Mapping::attach(fd, shm::SegmentKind::kRing);
  } catch (const std::exception& e) {
    debug("bad segment from the router: %s", e.what());
    return nullptr;
  }
  std::byte* ring = out.base() + ring_offset;
  if (out.size() < bytes || !shm::ring_matches<T>(ring, capacity)) {
    debug("the router's segment does not hold the announced ring");
    return nullptr;
  }
  return ring;
}

}  // namespace ff::verbs
