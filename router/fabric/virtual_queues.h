// What every fabric shows a client, whatever executes the work: the rings in
// shared memory a client polls without system calls. The async-event queue
// of a context, completion channels and completion queues. Both fabrics
// (soft and verbs) fill them the same way, from their poller thread.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>

#include "router/fabric/fabric.h"
#include "shm/descriptors.h"
#include "shm/doorbell.h"
#include "shm/segment.h"

namespace ff::router {

// A context's asynchronous events: a ring the app reads, woken through the
// eventfd it sees as context->async_fd.
class AsyncEvents {
 public:
  // Creates the segment; throws std::system_error.
  AsyncEvents();
  UniqueFd take_client_event_fd() { return UniqueFd(bell_.release_peer_end()); }
  int segment_fd() const { return mapping_.fd(); }
  // Queues an event and wakes the app. Poller thread.
  void raise(ibv_event_type type, uint32_t handle);

 private:
  shm::Mapping mapping_;
  // The app's end is context->async_fd: one byte per event, room for two
  // rings' worth (a byte may outlive its event).
  shm::PipeDoorbell bell_{shm::PipeDoorbell::Keep::kWriteEnd, 2 * shm::kAsyncRingCapacity};
  shm::RingProducer<shm::AsyncEvent> ring_;  // poller thread
};

// A completion channel: an eventfd plus a ring of "CQ x fired" events.
class VirtualChannel final : public FabricChannel {
 public:
  static constexpr uint32_t kCapacity = 4096;
  VirtualChannel();  // throws std::system_error
  UniqueFd take_client_event_fd() override { return UniqueFd(bell_.release_peer_end()); }
  int segment_fd() const override { return mapping_.fd(); }
  uint32_t capacity() const override { return kCapacity; }
  void fire(uint32_t cq_tag);  // poller thread

 private:
  shm::Mapping mapping_;
  // The app's end is channel->fd: one byte per event, room for two rings' worth.
  shm::PipeDoorbell bell_{shm::PipeDoorbell::Keep::kWriteEnd, 2 * kCapacity};
  shm::RingProducer<shm::ChannelEvent> events_;  // poller thread
};

// A completion queue as the app sees it: a ring of Cqe plus the arm word,
// in one segment; ibv_resize_cq moves it to a segment of another size.
class VirtualCq : public FabricCq {
 public:
  // The shared part: control word and ring. `capacity` is a power of two;
  // throws std::system_error.
  struct Segment {
    explicit Segment(uint32_t capacity);
    shm::Mapping mapping;
    uint32_t capacity;
    shm::CqControl* control;
    shm::RingProducer<shm::Cqe> ring;  // poller thread
  };

  // `timestamps`: each completion carries when it was written (Cqe::completed_ns).
  VirtualCq(AsyncEvents& async, uint32_t capacity, VirtualChannel* channel, uint32_t tag, bool timestamps);
  int segment_fd() const override { return seg_.mapping.fd(); }
  uint32_t capacity() const override { return seg_.capacity; }
  uint32_t tag() const { return tag_; }

  // Adds a completion and fires the channel if the app armed it. False when
  // the ring is full: completions are lost, the app gets IBV_EVENT_CQ_ERR
  // (once) and the CQ's error word. Poller thread.
  bool add(const shm::Cqe& c);

  // Moves to `next` (made on the control thread) with the completions the
  // app has not polled, its arm and its error word; `next` then holds the
  // old segment, for the control thread to unmap. False, nothing changed,
  // when they do not fit or the app corrupted the ring. Poller thread, while
  // the app does not poll (libffverbs holds the CQ's lock).
  bool move_to(Segment& next);

 private:
  AsyncEvents& async_;
  Segment seg_;
  VirtualChannel* channel_;  // may be null
  uint32_t tag_;             // the client's handle
  bool timestamps_;
};

// The opcode of the completion of a work request (ibv_wr_opcode).
ibv_wc_opcode completion_opcode(uint32_t wr_opcode);

// The completion of a send work request (`wr_opcode`, an ibv_wr_opcode)
// with no data counted: errors, flushes, refusals.
inline shm::Cqe send_completion(uint64_t wr_id, ibv_wc_status status, uint32_t wr_opcode, uint32_t qp_num) {
  shm::Cqe c{};
  c.wr_id = wr_id;
  c.status = status;
  c.opcode = completion_opcode(wr_opcode);
  c.qp_num = qp_num;
  return c;
}

// A receive work request flushed by a QP in error.
inline shm::Cqe flushed_receive(uint64_t wr_id, uint32_t qp_num) {
  shm::Cqe c{};
  c.wr_id = wr_id;
  c.status = IBV_WC_WR_FLUSH_ERR;
  c.opcode = IBV_WC_RECV;
  c.qp_num = qp_num;
  return c;
}

}  // namespace ff::router
