#include "router/fabric/soft/engine.h"

#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace ff::router::soft {
namespace {

inline void cpu_relax() { __builtin_ia32_pause(); }

}  // namespace

Engine::Engine(std::chrono::microseconds spin) : spin_(spin) {
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  qps_.reserve(1024);
  watch_doorbell(command_bell_.fd());
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  stop_ = true;
  command_bell_.ring();
  thread_.join();
  ::close(epoll_fd_);
}

void Engine::run_sync(const std::function<void()>& fn) {
  Command c;
  c.fn = &fn;
  while (!commands_.push(&c)) std::this_thread::yield();  // 256 queued: the poller is behind
  command_bell_.ring();
  c.done.wait(false, std::memory_order_acquire);  // pairs with the poller's store-release
}

bool Engine::drain_commands() {
  bool any = false;
  Command* c;
  while (commands_.pop(c)) {
    (*c->fn)();
    c->done.store(true, std::memory_order_release);
    c->done.notify_one();
    any = true;
  }
  return any;
}

void Engine::watch_doorbell(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
}

void Engine::unwatch_doorbell(int fd) { ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr); }

void Engine::link_qp(Qp* qp) {
  qps_.push_back(qp);
  qps_by_num_[qp->qpn] = qp;
}

void Engine::unlink_qp(Qp* qp) {
  qps_.erase(std::remove(qps_.begin(), qps_.end(), qp), qps_.end());
  qps_by_num_.erase(qp->qpn);
  // Its peers now talk to nobody: their work fails at once instead of
  // retrying into the void.
  for (Qp* other : qps_)
    if (other->attr.dest_qp_num == qp->qpn) other->peer_gone = true;
}

void Engine::loop() {
  uint64_t idle_since = 0;
  uint64_t idle_spins = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    bool busy = drain_commands();
    uint64_t now = now_ns();
    for (size_t i = 0; i < qps_.size(); ++i) busy |= service(*qps_[i], now);
    if (busy) {
      idle_since = 0;
      continue;
    }
    if (idle_since == 0) idle_since = now;
    if (now - idle_since < static_cast<uint64_t>(spin_.count())) {
      // Idle spinning yields too: on a machine with few cores the apps we
      // serve need the CPU to post the next request.
      if (++idle_spins % 64 == 0) sched_yield(); else cpu_relax();
      continue;
    }
    sleep_until_work();
    idle_since = 0;
  }
  drain_commands();
}

void Engine::check_srq_limit(Srq& srq) {
  if (srq.limit != 0 && srq.ring.size_guess() < srq.limit) {
    srq.limit = 0;
    raise(srq.ctx, IBV_EVENT_SRQ_LIMIT_REACHED, srq.tag);
  }
}

void Engine::raise(Context& ctx, ibv_event_type type, uint32_t handle) {
  // A full ring means the app stopped reading events; the newest is lost,
  // the app still wakes.
  (void)ctx.async_events.sp_try_push(shm::AsyncEvent{static_cast<uint32_t>(type), handle});
  ctx.async_bell.ring();
}

void Engine::sleep_until_work() {
  // Arm every send ring's wakeup request, then re-check (Dekker, see
  // shm/ring.h). A QP waiting on a timer wakes us through the timeout.
  uint64_t now = now_ns();
  uint64_t next_deadline = UINT64_MAX;
  bool work = false;
  for (Qp* q : qps_) {
    if (q->wait_until_ns > now) next_deadline = std::min(next_deadline, q->wait_until_ns);
    if (!q->sq.prepare_to_sleep()) work = true;
  }
  if (!work && next_deadline - now < 1'000'000) work = true;  // < 1 ms: keep spinning
  if (!work) {
    int timeout_ms = next_deadline == UINT64_MAX
                         ? -1
                         : static_cast<int>((next_deadline - now) / 1'000'000);
    epoll_event events[16];
    stats_.sleeps.fetch_add(1, std::memory_order_relaxed);
    int n = ::epoll_wait(epoll_fd_, events, 16, timeout_ms);
    for (int i = 0; i < n; ++i) {
      uint64_t v;
      ssize_t r = ::read(events[i].data.fd, &v, sizeof v);
      (void)r;  // only the wakeup matters
    }
  }
  for (Qp* q : qps_) q->sq.cancel_sleep();
}

// --- objects whose lifetime the engine must know about ---------------------

Context::Context(Engine& e, shm::Mapping async_segment) : engine(e), async_mapping(std::move(async_segment)) {
  std::byte* ring = async_mapping.base() + shm::kAsyncRingOffset;
  shm::init_ring<shm::AsyncEvent>(ring, shm::kAsyncRingCapacity);
  async_events = shm::RingProducer<shm::AsyncEvent>(ring, shm::kAsyncRingCapacity);
  engine.run_sync([this] { engine.watch_doorbell(doorbell.fd()); });
}

Context::~Context() {
  engine.run_sync([this] { engine.unwatch_doorbell(doorbell.fd()); });
}

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

Channel::Channel(shm::Mapping m, uint32_t capacity) : mapping(std::move(m)), cap(capacity) {
  shm::init_ring<shm::ChannelEvent>(mapping.base() + shm::kChannelRingOffset, cap);
  events = shm::RingProducer<shm::ChannelEvent>(mapping.base() + shm::kChannelRingOffset, cap);
}

Cq::Cq(Context& c, shm::Mapping m, uint32_t capacity, Channel* ch, uint32_t tag)
    : ctx(c), mapping(std::move(m)), cap(capacity), channel(ch), event_tag(tag) {
  control = new (mapping.base() + shm::kCqControlOffset) shm::CqControl{};
  shm::init_ring<shm::Cqe>(mapping.base() + shm::kCqRingOffset, cap);
  ring = shm::RingProducer<shm::Cqe>(mapping.base() + shm::kCqRingOffset, cap);
}

Srq::Srq(Context& c, shm::Mapping m, const Pd& p, uint32_t capacity, uint32_t max_sge, uint32_t lim,
         uint32_t t)
    : ctx(c), mapping(std::move(m)), pd(p), cap(capacity), sge(max_sge), tag(t), limit(lim) {
  shm::init_ring<shm::RecvWqe>(mapping.base() + shm::kSrqRingOffset, cap);
  ring = shm::RingConsumer<shm::RecvWqe>(mapping.base() + shm::kSrqRingOffset, cap);
}

namespace {
uint32_t ip_of(const ibv_gid& g) {
  return (uint32_t{g.raw[12]} << 24) | (uint32_t{g.raw[13]} << 16) | (uint32_t{g.raw[14]} << 8) | g.raw[15];
}
}  // namespace

Ah::Ah(Engine& e, const Pd& p, const ibv_ah_attr& a, uint32_t id)
    : engine(e), pd(p), attr(a), virtual_ip(ip_of(a.grh.dgid)), ident(id) {
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
