#include "router/fabric/qp_transitions.h"

#include "shm/descriptors.h"

#include <array>
#include <cerrno>
#include <cstdio>

namespace ff::router {
namespace {

struct Rule {
  bool valid = false;
  int required[3] = {0, 0, 0};  // per QP kind: RC, UC, UD
  int optional[3] = {0, 0, 0};
};

enum Kind { kRc = 0, kUc = 1, kUd = 2 };

constexpr int kNumStates = IBV_QPS_ERR + 1;

constexpr int kPathOpt = IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX;

// table[cur][next]
std::array<std::array<Rule, kNumStates>, kNumStates> make_table() {
  std::array<std::array<Rule, kNumStates>, kNumStates> t{};
  auto set = [&](ibv_qp_state from, ibv_qp_state to, std::array<int, 3> req, std::array<int, 3> opt) {
    Rule& r = t[from][to];
    r.valid = true;
    for (int k = 0; k < 3; ++k) {
      r.required[k] = req[static_cast<size_t>(k)];
      r.optional[k] = opt[static_cast<size_t>(k)];
    }
  };
  // Reset and error are reachable from every state with no other attribute.
  for (int s = 0; s < kNumStates; ++s) {
    set(static_cast<ibv_qp_state>(s), IBV_QPS_RESET, {0, 0, 0}, {0, 0, 0});
    set(static_cast<ibv_qp_state>(s), IBV_QPS_ERR, {0, 0, 0}, {0, 0, 0});
  }
  const int init_rc = IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS;
  const int init_ud = IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY;
  set(IBV_QPS_RESET, IBV_QPS_INIT, {init_rc, init_rc, init_ud}, {0, 0, 0});
  set(IBV_QPS_INIT, IBV_QPS_INIT, {0, 0, 0}, {init_rc, init_rc, init_ud});
  set(IBV_QPS_INIT, IBV_QPS_RTR,
      {IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
           IBV_QP_MIN_RNR_TIMER,
       IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN, 0},
      {kPathOpt, kPathOpt, IBV_QP_PKEY_INDEX | IBV_QP_QKEY});
  const int rts_opt_rc = IBV_QP_CUR_STATE | IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS |
                         IBV_QP_MIN_RNR_TIMER | IBV_QP_PATH_MIG_STATE;
  const int rts_opt_uc = IBV_QP_CUR_STATE | IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS |
                         IBV_QP_PATH_MIG_STATE;
  const int rts_opt_ud = IBV_QP_CUR_STATE | IBV_QP_QKEY;
  set(IBV_QPS_RTR, IBV_QPS_RTS,
      {IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC,
       IBV_QP_SQ_PSN, IBV_QP_SQ_PSN},
      {rts_opt_rc, rts_opt_uc, rts_opt_ud});
  set(IBV_QPS_RTS, IBV_QPS_RTS, {0, 0, 0}, {rts_opt_rc, rts_opt_uc, rts_opt_ud});
  set(IBV_QPS_RTS, IBV_QPS_SQD, {0, 0, 0},
      {IBV_QP_EN_SQD_ASYNC_NOTIFY, IBV_QP_EN_SQD_ASYNC_NOTIFY, IBV_QP_EN_SQD_ASYNC_NOTIFY});
  set(IBV_QPS_SQD, IBV_QPS_RTS, {0, 0, 0}, {rts_opt_rc, rts_opt_uc, rts_opt_ud});
  const int sqd_opt_rc = IBV_QP_AV | IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX |
                         IBV_QP_MIN_RNR_TIMER | IBV_QP_PATH_MIG_STATE | IBV_QP_TIMEOUT |
                         IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC |
                         IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_CUR_STATE;
  set(IBV_QPS_SQD, IBV_QPS_SQD, {0, 0, 0},
      {sqd_opt_rc, IBV_QP_AV | IBV_QP_ALT_PATH | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX |
                       IBV_QP_PATH_MIG_STATE | IBV_QP_CUR_STATE,
       IBV_QP_PKEY_INDEX | IBV_QP_QKEY | IBV_QP_CUR_STATE});
  set(IBV_QPS_SQE, IBV_QPS_RTS, {0, 0, 0}, {0, IBV_QP_CUR_STATE | IBV_QP_ACCESS_FLAGS, IBV_QP_CUR_STATE | IBV_QP_QKEY});
  return t;
}

int kind_of(ibv_qp_type type) {
  switch (type) {
    case IBV_QPT_RC:
    case IBV_QPT_XRC_SEND:  // RC's table, less what applicable_qp_mask takes away
    case IBV_QPT_XRC_RECV:
      return kRc;
    case IBV_QPT_UC:
      return kUc;
    case IBV_QPT_UD:
      return kUd;
    default:
      return -1;
  }
}

Error invalid(std::string text) { return Error{EINVAL, std::move(text)}; }

std::string hex(int bits) {
  char b[16];
  std::snprintf(b, sizeof b, "%x", bits);
  return b;
}

// The ranges of the values a valid mask carries.
Status check_values(const ibv_qp_attr& attr, int mask) {
  if ((mask & IBV_QP_PORT) != 0 && attr.port_num != 1) return invalid("port_num must be 1");
  if ((mask & IBV_QP_PKEY_INDEX) != 0 && attr.pkey_index != 0) return invalid("pkey_index must be 0");
  if ((mask & IBV_QP_PATH_MTU) != 0 && (attr.path_mtu < IBV_MTU_256 || attr.path_mtu > IBV_MTU_4096))
    return invalid("path_mtu out of range");
  if ((mask & IBV_QP_MAX_QP_RD_ATOMIC) != 0 && attr.max_rd_atomic > 16)
    return invalid("max_rd_atomic exceeds the device's max_qp_init_rd_atom (16)");
  if ((mask & IBV_QP_MAX_DEST_RD_ATOMIC) != 0 && attr.max_dest_rd_atomic > 16)
    return invalid("max_dest_rd_atomic exceeds the device's max_qp_rd_atom (16)");
  if ((mask & IBV_QP_TIMEOUT) != 0 && attr.timeout > 31) return invalid("timeout out of range");
  if ((mask & IBV_QP_RETRY_CNT) != 0 && attr.retry_cnt > 7) return invalid("retry_cnt out of range");
  if ((mask & IBV_QP_RNR_RETRY) != 0 && attr.rnr_retry > 7) return invalid("rnr_retry out of range");
  if ((mask & IBV_QP_MIN_RNR_TIMER) != 0 && attr.min_rnr_timer > 31) return invalid("min_rnr_timer out of range");
  if ((mask & IBV_QP_ACCESS_FLAGS) != 0 &&
      (attr.qp_access_flags & ~static_cast<unsigned>(IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ |
                                                     IBV_ACCESS_REMOTE_ATOMIC | IBV_ACCESS_LOCAL_WRITE)) != 0)
    return invalid("qp_access_flags has unknown bits");
  if ((mask & IBV_QP_AV) != 0) {
    if (attr.ah_attr.port_num != 0 && attr.ah_attr.port_num != 1) return invalid("ah_attr.port_num must be 1");
    if (attr.ah_attr.is_global == 0) return invalid(kRoceNeedsGrh);
    if (attr.ah_attr.is_global != 0 && attr.ah_attr.grh.sgid_index != 0)
      return invalid("ah_attr.grh.sgid_index must be 0 (the port has one GID)");
  }
  if ((mask & IBV_QP_DEST_QPN) != 0 && attr.dest_qp_num > 0xffffff) return invalid("dest_qp_num exceeds 24 bits");
  return {};
}

}  // namespace

const char* qp_state_name(ibv_qp_state s) {
  switch (s) {
    case IBV_QPS_RESET: return "RESET";
    case IBV_QPS_INIT: return "INIT";
    case IBV_QPS_RTR: return "RTR";
    case IBV_QPS_RTS: return "RTS";
    case IBV_QPS_SQD: return "SQD";
    case IBV_QPS_SQE: return "SQE";
    case IBV_QPS_ERR: return "ERR";
    default: return "UNKNOWN";
  }
}

Status check_modify_qp(ibv_qp_type type, ibv_qp_state cur, const ibv_qp_attr& attr, int mask) {
  static const auto table = make_table();
  int kind = kind_of(type);
  if (kind < 0) return invalid("unsupported QP type");
  if (cur < 0 || cur >= kNumStates) return invalid("QP is in an unknown state");
  if ((mask & IBV_QP_CUR_STATE) != 0 && attr.cur_qp_state != cur)
    return invalid(std::string("cur_qp_state does not match the QP's state ") + qp_state_name(cur));
  ibv_qp_state next = next_state(cur, attr, mask);
  if (next < 0 || next >= kNumStates) return invalid("qp_state is not a QP state");
  const Rule& r = table[cur][next];
  const int not_applicable = ~applicable_qp_mask(type, ~0);
  if (!r.valid || (kind == kRc && cur == IBV_QPS_SQE && next == IBV_QPS_RTS))  // UC/UD only
    return invalid(std::string("no transition from ") + qp_state_name(cur) + " to " + qp_state_name(next));
  int given = mask & ~IBV_QP_STATE;
  int missing = r.required[kind] & ~not_applicable & ~given;
  if (missing != 0) return invalid("attribute mask lacks required bits 0x" + hex(missing));
  int extra = given & ~((r.required[kind] | r.optional[kind]) & ~not_applicable);
  if (extra != 0)
    return invalid("attribute mask has bits 0x" + hex(extra) + " not allowed for " + qp_state_name(cur) + "->" +
                   qp_state_name(next));
  return check_values(attr, mask);
}

Status check_modify_srq(uint32_t mask, uint32_t max_wr, uint32_t srq_limit, uint32_t capacity,
                        uint32_t armed_limit, uint32_t max_srq_wr) {
  if ((mask & ~static_cast<uint32_t>(IBV_SRQ_LIMIT | IBV_SRQ_MAX_WR)) != 0)
    return invalid("unknown SRQ attribute mask bits");
  uint32_t limit = (mask & IBV_SRQ_LIMIT) != 0 ? srq_limit : armed_limit;
  if ((mask & IBV_SRQ_MAX_WR) != 0) {
    if (max_wr == 0 || max_wr > max_srq_wr)
      return invalid("max_wr must be 1.." + std::to_string(max_srq_wr) + " (max_srq_wr)");
    if (max_wr < limit) return invalid("max_wr is below the SRQ's limit");
    capacity = shm::ring_capacity_for(max_wr);
  }
  if (srq_limit > capacity && (mask & IBV_SRQ_LIMIT) != 0) return invalid("srq_limit exceeds max_wr");
  return {};
}

void apply_qp_attr(ibv_qp_attr& to, const ibv_qp_attr& from, int mask) {
  if (mask & IBV_QP_PKEY_INDEX) to.pkey_index = from.pkey_index;
  if (mask & IBV_QP_PORT) to.port_num = from.port_num;
  if (mask & IBV_QP_ACCESS_FLAGS) to.qp_access_flags = from.qp_access_flags;
  if (mask & IBV_QP_QKEY) to.qkey = from.qkey;
  if (mask & IBV_QP_AV) to.ah_attr = from.ah_attr;
  if (mask & IBV_QP_PATH_MTU) to.path_mtu = from.path_mtu;
  if (mask & IBV_QP_DEST_QPN) to.dest_qp_num = from.dest_qp_num;
  if (mask & IBV_QP_RQ_PSN) to.rq_psn = from.rq_psn;
  if (mask & IBV_QP_MAX_DEST_RD_ATOMIC) to.max_dest_rd_atomic = from.max_dest_rd_atomic;
  if (mask & IBV_QP_MIN_RNR_TIMER) to.min_rnr_timer = from.min_rnr_timer;
  if (mask & IBV_QP_SQ_PSN) to.sq_psn = from.sq_psn;
  if (mask & IBV_QP_TIMEOUT) to.timeout = from.timeout;
  if (mask & IBV_QP_RETRY_CNT) to.retry_cnt = from.retry_cnt;
  if (mask & IBV_QP_RNR_RETRY) to.rnr_retry = from.rnr_retry;
  if (mask & IBV_QP_MAX_QP_RD_ATOMIC) to.max_rd_atomic = from.max_rd_atomic;
  if (mask & IBV_QP_PATH_MIG_STATE) to.path_mig_state = from.path_mig_state;
  if (mask & IBV_QP_EN_SQD_ASYNC_NOTIFY) to.en_sqd_async_notify = from.en_sqd_async_notify;
}

}  // namespace ff::router
