// The requester's rules of the soft transport, whether the responder is on
// this router (requester.cc) or on another one (link_requester.cc): what a
// work request's local side must be, and what an RC requester does when its
// request is refused or not answered.
//
// What verbs promises and the requesters keep:
//   * completions in order per QP; error completions always, success ones
//     when signaled (or sq_sig_all);
//   * RNR: a SEND or WRITE_WITH_IMM finding no receive waits min_rnr_timer
//     and retries rnr_retry times (7: forever), then IBV_WC_RNR_RETRY_EXC_ERR;
//   * no answer (peer not ready, or gone): retry after `timeout`, retry_cnt
//     times, then IBV_WC_RETRY_EXC_ERR (at once when the peer was destroyed);
//   * bad lkey, SGE outside its MR, missing local access: IBV_WC_LOC_PROT_ERR;
//   * after an error completion the QP is in ERR and everything outstanding
//     completes with IBV_WC_WR_FLUSH_ERR.
// UC and UD are unreliable: what RC would retry or fail at the responder is
// dropped, and the requester completes successfully, as on the wire.
// Poller thread.
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>

#include "router/fabric/soft/responder.h"
#include "router/fabric/soft/transfer.h"

namespace ff::router::soft {

// The 8-byte atomics: one request, answered by the word's old value.
inline bool is_atomic(uint32_t op) {
  return op == IBV_WR_ATOMIC_CMP_AND_SWP || op == IBV_WR_ATOMIC_FETCH_AND_ADD || op == IBV_WR_ATOMIC_WRITE;
}
// READ and atomics: the responder answers with data.
inline bool answered_with_data(uint32_t op) { return op == IBV_WR_RDMA_READ || is_atomic(op); }
// ... which lands in local SGEs, but for ATOMIC WRITE's (its value is in
// the WQE, and its answer only acknowledges it).
inline bool lands_locally(uint32_t op) { return answered_with_data(op) && op != IBV_WR_ATOMIC_WRITE; }

// The local side of a work request: its source (SEND, WRITE: inline data or
// SGEs) or its destination (READ, atomics: SGEs with LOCAL_WRITE, one
// 8-byte SGE for an atomic), resolved into `s`. IBV_WC_LOC_QP_OP_ERR for an
// opcode the QP type does not carry, IBV_WC_LOC_LEN_ERR for a UD datagram
// larger than the port MTU.
ibv_wc_status resolve_request(const Engine& e, const Qp& q, const shm::SendWqe& w, Sges& s);

// The head WQE starts afresh: its retry counters are full again, nothing of
// it has moved.
inline void reset_retries(Qp& q) {
  q.head_moved = 0;
  q.rnr_left = q.attr.rnr_retry;
  q.retry_left = q.attr.retry_cnt;
  q.rnr_backoff = 0;
  q.rnr_waiting = false;
}

// What an RC requester does with its refused or unanswered head WQE: wait
// and retry it (q.wait_until_ns set; IBV_WC_SUCCESS returned), or fail it
// with the status returned. RNR waits at least the responder's
// min_rnr_timer, doubling with each retry of the same WQE up to 8 ms (the
// timer is a minimum): a peer that never posts a receive costs the router
// ~100 wakeups a second, not a core; a receive posted meanwhile at a
// responder on this router ends the wait at once (Engine::service).
ibv_wc_status retry_or_fail(Qp& q, const Verdict& v, uint64_t now);

// The success completion of a send work request.
shm::Cqe send_success(const Qp& q, const shm::SendWqe& w, uint64_t bytes);

// The Q_Key a UD send uses: the high bit asks for the QP's own.
inline uint32_t datagram_qkey(const Qp& q, const shm::SendWqe& w) {
  return (w.remote_qkey & 0x80000000u) != 0 ? q.attr.qkey : w.remote_qkey;
}

}  // namespace ff::router::soft
