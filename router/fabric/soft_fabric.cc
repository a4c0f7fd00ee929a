#include "router/fabric/soft_fabric.h"

#include <cerrno>
#include <cstring>

namespace ff::router {

// A soft PD is an owner tag: the MRs, QPs and AHs created under it refer to it
// and the transport checks that they match. Nothing else to hold.
class SoftPd final : public FabricPd {
 public:
  explicit SoftPd(SoftFabric& fabric) : fabric_(fabric) { ++fabric_.live_pds_; }
  ~SoftPd() override { --fabric_.live_pds_; }
  SoftPd(const SoftPd&) = delete;
  SoftPd& operator=(const SoftPd&) = delete;

 private:
  SoftFabric& fabric_;
};

SoftFabric::SoftFabric(const RouterOptions& options) {
  ibv_device_attr& a = limits_.attr.orig_attr;
  std::snprintf(a.fw_ver, sizeof a.fw_ver, "ffrouter-0.1.0 soft");
  a.max_mr_size = uint64_t{1} << 40;
  a.page_size_cap = 4096;
  a.vendor_id = options.vendor_id;
  a.vendor_part_id = options.vendor_part_id;
  a.hw_ver = 1;
  a.max_qp = 16384;
  a.max_qp_wr = 16384;
  a.device_cap_flags = IBV_DEVICE_RC_RNR_NAK_GEN | IBV_DEVICE_SRQ_RESIZE |
                       IBV_DEVICE_PORT_ACTIVE_EVENT | IBV_DEVICE_SYS_IMAGE_GUID |
                       IBV_DEVICE_CHANGE_PHY_PORT | IBV_DEVICE_N_NOTIFY_CQ;
  a.max_sge = 16;
  a.max_sge_rd = 16;
  a.max_cq = 16384;
  a.max_cqe = 1 << 20;
  a.max_mr = 1 << 18;
  a.max_pd = 1 << 16;
  a.max_qp_rd_atom = 16;
  a.max_res_rd_atom = 16 * 16384;
  a.max_qp_init_rd_atom = 16;
  a.atomic_cap = IBV_ATOMIC_HCA;
  a.max_ah = 1 << 16;
  a.max_srq = 4096;
  a.max_srq_wr = 16384;
  a.max_srq_sge = 16;
  a.max_pkeys = 1;
  a.local_ca_ack_delay = 15;
  a.phys_port_cnt = 1;
  limits_.max_inline_data = 256;
}

ibv_port_attr SoftFabric::port_attr() const {
  ibv_port_attr p{};
  p.state = IBV_PORT_ACTIVE;
  p.max_mtu = IBV_MTU_4096;
  p.active_mtu = IBV_MTU_4096;
  p.gid_tbl_len = 1;
  p.port_cap_flags = IBV_PORT_CM_SUP;
  p.max_msg_sz = 1u << 31;
  p.pkey_tbl_len = 1;
  p.max_vl_num = 1;
  p.active_width = 2;   // 4X
  p.active_speed = 32;  // EDR: 4X EDR = 100 Gb/s
  p.phys_state = 5;     // LinkUp
  p.link_layer = IBV_LINK_LAYER_ETHERNET;
  return p;
}

std::unique_ptr<FabricPd> SoftFabric::alloc_pd() {
  if (live_pds_ >= static_cast<uint32_t>(limits_.attr.orig_attr.max_pd)) {
    errno = ENOMEM;
    return nullptr;
  }
  return std::make_unique<SoftPd>(*this);
}

}  // namespace ff::router
