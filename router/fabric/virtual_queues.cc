#include "router/fabric/virtual_queues.h"

#include "router/fabric/poller.h"

#include <atomic>
#include <utility>

namespace ff::router {

AsyncEvents::AsyncEvents()
    : mapping_(shm::Mapping::create("ffr-async", shm::SegmentKind::kRing, shm::async_segment_bytes())) {
  std::byte* ring = mapping_.base() + shm::kAsyncRingOffset;
  shm::init_ring<shm::AsyncEvent>(ring, shm::kAsyncRingCapacity);
  ring_ = shm::RingProducer<shm::AsyncEvent>(ring, shm::kAsyncRingCapacity);
}

void AsyncEvents::raise(ibv_event_type type, uint32_t handle) {
  // A full ring means the app stopped reading events; the newest is lost,
  // the app still wakes.
  (void)ring_.sp_try_push(shm::AsyncEvent{static_cast<uint32_t>(type), handle});
  bell_.ring();
}

VirtualChannel::VirtualChannel()
    : mapping_(shm::Mapping::create("ffr-channel", shm::SegmentKind::kRing,
                                    shm::channel_segment_bytes(kCapacity))) {
  shm::init_ring<shm::ChannelEvent>(mapping_.base() + shm::kChannelRingOffset, kCapacity);
  events_ = shm::RingProducer<shm::ChannelEvent>(mapping_.base() + shm::kChannelRingOffset, kCapacity);
}

void VirtualChannel::fire(uint32_t cq_tag) {
  // Full: the app has thousands of unread events; it still wakes and finds
  // its completions by polling.
  (void)events_.sp_try_push(shm::ChannelEvent{cq_tag, 0});
  bell_.ring();
}

VirtualCq::Segment::Segment(uint32_t cap)
    : mapping(shm::Mapping::create("ffr-cq", shm::SegmentKind::kRing, shm::cq_segment_bytes(cap))),
      capacity(cap),
      control(new (mapping.base() + shm::kCqControlOffset) shm::CqControl{}) {
  shm::init_ring<shm::Cqe>(mapping.base() + shm::kCqRingOffset, cap);
  ring = shm::RingProducer<shm::Cqe>(mapping.base() + shm::kCqRingOffset, cap);
}

VirtualCq::VirtualCq(AsyncEvents& async, uint32_t capacity, VirtualChannel* channel, uint32_t tag, bool timestamps)
    : async_(async), seg_(capacity), channel_(channel), tag_(tag), timestamps_(timestamps) {}

bool VirtualCq::add(const shm::Cqe& c) {
  shm::CqControl& control = *seg_.control;
  bool pushed = false;
  if (timestamps_) {  // a clock read per completion, only for the CQs that asked
    shm::Cqe stamped = c;
    stamped.completed_ns = Poller::now_ns();
    pushed = seg_.ring.sp_try_push(stamped);
  } else {
    pushed = seg_.ring.sp_try_push(c);
  }
  if (!pushed) {
    if (control.error.exchange(1, std::memory_order_relaxed) == 0) async_.raise(IBV_EVENT_CQ_ERR, tag_);
    return false;
  }
  if (channel_ == nullptr) return true;
  // Dekker with the app's req_notify_cq: it stores `arm` then polls the
  // ring; we publish the CQE then load `arm`. One of us sees the other.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  uint32_t arm = control.arm.load(std::memory_order_relaxed);
  if (arm == 0) return true;
  if (arm == shm::kArmSolicited && c.solicited == 0 && c.status == IBV_WC_SUCCESS) return true;
  if (control.arm.exchange(0, std::memory_order_relaxed) != 0) channel_->fire(tag_);
  return true;
}

bool VirtualCq::move_to(Segment& next) {
  if (!seg_.ring.move_unconsumed_to(next.ring)) return false;
  // Whatever the app wrote there: the arm is one of its values or none.
  uint32_t arm = seg_.control->arm.load(std::memory_order_relaxed);
  next.control->arm.store(arm == shm::kArmNext || arm == shm::kArmSolicited ? arm : 0, std::memory_order_relaxed);
  next.control->error.store(seg_.control->error.load(std::memory_order_relaxed) != 0 ? 1 : 0,
                            std::memory_order_relaxed);
  std::swap(seg_, next);
  return true;
}

ibv_wc_opcode completion_opcode(uint32_t wr_opcode) {
  switch (wr_opcode) {
    case IBV_WR_RDMA_WRITE:
    case IBV_WR_RDMA_WRITE_WITH_IMM:
      return IBV_WC_RDMA_WRITE;
    case IBV_WR_SEND:
    case IBV_WR_SEND_WITH_IMM:
      return IBV_WC_SEND;
    case IBV_WR_RDMA_READ:
      return IBV_WC_RDMA_READ;
    case IBV_WR_ATOMIC_CMP_AND_SWP:
      return IBV_WC_COMP_SWAP;
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
      return IBV_WC_FETCH_ADD;
    case IBV_WR_ATOMIC_WRITE:
      return IBV_WC_ATOMIC_WRITE;
    case IBV_WR_BIND_MW:
      return IBV_WC_BIND_MW;
    case IBV_WR_LOCAL_INV:
      return IBV_WC_LOCAL_INV;
    default:
      return IBV_WC_SEND;
  }
}

}  // namespace ff::router
