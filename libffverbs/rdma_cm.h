// libffverbs internals: librdmacm served by the router (router/cm/).
//
// librdmacm itself cannot run in a container (it needs the kernel's
// /dev/infiniband/rdma_cm, which knows nothing of virtual IPs), so the shim
// exports the whole rdma_* API under librdmacm's own version nodes. Ids and
// event channels are router objects; the addresses are the containers'
// virtual IPs; the QP transitions librdmacm performs (INIT at
// rdma_create_qp, RTR and RTS at rdma_accept and on the connect response,
// ERR at rdma_disconnect and on a reject) are done here, with the
// attributes rdma_init_qp_attr gives, so a program sees what librdmacm on a
// RoCE device shows it.
//
// The rdma_cm ABI convention: int calls return 0, or -1 with errno set;
// pointer calls return NULL with errno set.
#pragma once

#include <rdma/rdma_cma.h>

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

namespace ff::verbs::cm {

struct FfCmChannel {
  rdma_event_channel channel;  // first: apps hold &channel (channel.fd is the pipe's read end)
  uint32_t handle = 0;
};

// The peer's half of a connection as the last CM message said it: what the
// QP transitions need.
struct Remote {
  uint32_t qp_num = 0, psn = 0;
  uint8_t responder_resources = 0, initiator_depth = 0;  // as the event reports them
  uint8_t retry_count = 7, rnr_retry_count = 7;
};

struct FfCmId {
  rdma_cm_id id;  // first: apps hold &id
  uint32_t handle = 0;
  FfCmChannel* channel = nullptr;
  bool sync = false;  // made with no channel: calls wait for their event
  bool removal_reported = false;  // DEVICE_REMOVAL was delivered (the router went away)
  uint32_t local_psn = 0;
  Remote remote;
  // What this side asks for (rdma_connect / rdma_accept), after librdmacm's
  // defaults and clamps.
  uint8_t responder_resources = 0, initiator_depth = 0, retry_count = 7, rnr_retry_count = 7;
  uint8_t max_responder_resources = 0, max_initiator_depth = 0;  // the device's
  uint8_t tos = 0, ack_timeout = 0;  // rdma_set_option; ack_timeout 0: the default
  ibv_qp_init_attr* listen_qp_attr = nullptr;  // rdma_create_ep on a passive endpoint
  // Multicast groups joined (rdma_join_multicast): the app's context for
  // the join event, and whether the id's QP joins too (not send-only).
  struct Join {
    uint32_t group;  // IPv4, host order
    void* context;
    bool attach;
  };
  std::vector<Join> joins;  // under mu
  // rdma_destroy_id waits until every event handed out for this id is acked.
  std::mutex mu;
  std::condition_variable acked;
  uint64_t events_reported = 0, events_completed = 0;
};

inline FfCmId* to_ff(rdma_cm_id* id) { return reinterpret_cast<FfCmId*>(id); }
inline FfCmChannel* to_ff(rdma_event_channel* ch) { return reinterpret_cast<FfCmChannel*>(ch); }

// -1 with errno = e (the rdma_cm convention).
inline int fail(int e) {
  errno = e;
  return -1;
}

// The device every id is given once an address names it (opened on first
// use), or nullptr when the router lists none.
ibv_context* cm_device_context();
// The QP attributes rdma_init_qp_attr gives for attr.qp_state (rdma_cm.cc).
int init_qp_attr(FfCmId& id, ibv_qp_attr& attr, int& mask);
// Moves the id's QP through INIT (again, with the connection's access flags),
// RTR and RTS; 0 or -1 with errno.
int move_qp_to_rts(FfCmId& id);
// A sync id's call waits here for its event; 0, or -1 with errno as
// librdmacm gives it (ECONNREFUSED for a reject, the status otherwise).
int wait_sync(FfCmId& id);
// The router's MULTICAST_JOIN for `group` (host order) made into the app's
// event (rdma_cm_multicast.cc).
void joined(FfCmId& id, uint32_t group, rdma_cm_event& ev);

}  // namespace ff::verbs::cm
