/* How the test programs and benchmarks connect an RC QP: INIT, RTR toward
 * QP `dest` at `gid` (port 1, PSN 0 both ways, global address), RTS.
 * Header-only C, for the C tools and the C++ benchmarks alike. */
#ifndef FFV_RC_CONNECT_H
#define FFV_RC_CONNECT_H
#include <infiniband/verbs.h>
#include <string.h>

struct ffv_rc_path {
  unsigned int access;    /* qp_access_flags */
  enum ibv_mtu mtu;
  uint8_t rd_atomic;      /* max_rd_atomic and max_dest_rd_atomic */
  uint8_t min_rnr_timer;
  uint8_t rnr_retry;
};

/* 0, or the error of the first move that failed; *step (when not NULL)
 * names that move ("INIT", "RTR", "RTS"). */
static inline int ffv_connect_rc(struct ibv_qp* qp, uint32_t dest, const union ibv_gid* gid,
                                 const struct ffv_rc_path* p, const char** step) {
  struct ibv_qp_attr a;
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  a.qp_access_flags = p->access;
  int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
  if (rc != 0) {
    if (step != NULL) *step = "INIT";
    return rc;
  }
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = p->mtu;
  a.dest_qp_num = dest;
  a.max_dest_rd_atomic = p->rd_atomic;
  a.min_rnr_timer = p->min_rnr_timer;
  a.ah_attr.is_global = 1;
  a.ah_attr.grh.dgid = *gid;
  a.ah_attr.grh.hop_limit = 1;
  a.ah_attr.port_num = 1;
  rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                 IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
  if (rc != 0) {
    if (step != NULL) *step = "RTR";
    return rc;
  }
  memset(&a, 0, sizeof a);
  a.qp_state = IBV_QPS_RTS;
  a.timeout = 14;
  a.retry_cnt = 7;
  a.rnr_retry = p->rnr_retry;
  a.max_rd_atomic = p->rd_atomic;
  rc = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                 IBV_QP_MAX_QP_RD_ATOMIC);
  if (rc != 0 && step != NULL) *step = "RTS";
  return rc;
}

#endif
