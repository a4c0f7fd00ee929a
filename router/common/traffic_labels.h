// Short lowercase names for the indices of the router's traffic counters
// (TrafficCounters: ibv_wr_opcode, ibv_wc_status), as ffctl prints them and
// /metrics labels them. One table, so both always agree.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string_view>

namespace ff {

// ibv_wr_opcode IBV_WR_RDMA_WRITE (0) .. IBV_WR_ATOMIC_FETCH_AND_ADD (6),
// then IBV_WR_ATOMIC_WRITE (TrafficCounters::opcode_index).
inline constexpr std::array<std::string_view, 8> kOpcodeLabels = {
    "write", "write_imm", "send", "send_imm", "read", "cmp_swap", "fetch_add", "atomic_write"};

// ibv_wc_status IBV_WC_SUCCESS (0) .. IBV_WC_GENERAL_ERR (21), as
// ibv_wc_status_str names them, shortened.
inline constexpr std::array<std::string_view, 22> kStatusLabels = {
    "success",        "loc_len_err",    "loc_qp_op_err",     "loc_eec_op_err", "loc_prot_err",
    "wr_flush_err",   "mw_bind_err",    "bad_resp_err",      "loc_access_err", "rem_inv_req_err",
    "rem_access_err", "rem_op_err",     "retry_exc_err",     "rnr_retry_exc_err", "loc_rdd_viol_err",
    "rem_inv_rd_req_err", "rem_abort_err", "inv_eecn_err",   "inv_eec_state_err", "fatal_err",
    "resp_timeout_err", "general_err"};

inline std::string_view label_at(std::span<const std::string_view> labels, size_t i) {
  return i < labels.size() ? labels[i] : std::string_view("other");
}

}  // namespace ff
