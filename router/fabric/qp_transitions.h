// Which ibv_modify_qp calls verbs accepts: the state-transition table with
// each transition's required and optional attribute masks (InfiniBand spec
// 11.2.5 / the kernel's table), plus range checks on the values. Pure logic,
// shared by every fabric.
#pragma once

#include <infiniband/verbs.h>

#include <string>

#include "router/common/result.h"

namespace ff::router {

// Whether `mask` with `attr` is a valid modify of a `type` QP in state
// `cur`; if not, EINVAL saying which attribute is missing, extra or out of
// range.
Status check_modify_qp(ibv_qp_type type, ibv_qp_state cur, const ibv_qp_attr& attr, int mask);

// The attributes of `mask` that apply to a `type` QP: an XRC send QP has no
// responder (no MAX_DEST_RD_ATOMIC, MIN_RNR_TIMER), an XRC receive QP no
// requester (no MAX_QP_RD_ATOMIC, RETRY_CNT, RNR_RETRY). ibv_modify_qp drops
// the others before any check, as the kernel does, so that programs may
// drive XRC QPs with their RC masks (perftest does).
inline int applicable_qp_mask(ibv_qp_type type, int mask) {
  if (type == IBV_QPT_XRC_SEND) return mask & ~(IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
  if (type == IBV_QPT_XRC_RECV) return mask & ~(IBV_QP_MAX_QP_RD_ATOMIC | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY);
  return mask;
}

// The state the QP is in after a valid modify.
inline ibv_qp_state next_state(ibv_qp_state cur, const ibv_qp_attr& attr, int mask) {
  return (mask & IBV_QP_STATE) != 0 ? attr.qp_state : cur;
}

const char* qp_state_name(ibv_qp_state s);

// The virtual port is RoCE: every address (an AH, a QP's path) carries a
// GRH naming the peer's GID, as every RoCE device requires (EINVAL).
inline constexpr const char* kRoceNeedsGrh =
    "the port is RoCE: an address needs a GRH (ah_attr.is_global = 1 with the peer's GID; "
    "ibv_*_pingpong take -g 0)";

// Whether ibv_modify_srq's `mask` and values are ones the fabrics carry
// out, for an SRQ of `capacity` whose armed limit is `armed_limit`:
// IBV_SRQ_MAX_WR within 1..max_srq_wr and not below the limit (as rxe),
// IBV_SRQ_LIMIT within the capacity (the new one when both); EINVAL else.
Status check_modify_srq(uint32_t mask, uint32_t max_wr, uint32_t srq_limit, uint32_t capacity,
                        uint32_t armed_limit, uint32_t max_srq_wr);

// Copies the attributes named in `mask` (all but the state).
void apply_qp_attr(ibv_qp_attr& to, const ibv_qp_attr& from, int mask);

}  // namespace ff::router
