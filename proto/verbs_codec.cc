#include "proto/verbs_codec.h"

namespace ff::proto {

DeviceAttr to_wire(const ibv_device_attr& a, const ibv_device_attr_ex& ex, uint32_t max_inline) {
  return DeviceAttr(
      a.node_guid, a.sys_image_guid, a.max_mr_size, a.page_size_cap, a.vendor_id, a.vendor_part_id,
      a.hw_ver, a.max_qp, a.max_qp_wr, a.device_cap_flags, a.max_sge, a.max_sge_rd, a.max_cq,
      a.max_cqe, a.max_mr, a.max_pd, a.max_qp_rd_atom, a.max_ee_rd_atom, a.max_res_rd_atom,
      a.max_qp_init_rd_atom, a.max_ee_init_rd_atom, static_cast<int32_t>(a.atomic_cap), a.max_ee,
      a.max_rdd, a.max_mw, a.max_raw_ipv6_qp, a.max_raw_ethy_qp, a.max_mcast_grp,
      a.max_mcast_qp_attach, a.max_total_mcast_qp_attach, a.max_ah, a.max_fmr, a.max_map_per_fmr,
      a.max_srq, a.max_srq_wr, a.max_srq_sge, a.max_pkeys, a.local_ca_ack_delay, a.phys_port_cnt,
      ex.completion_timestamp_mask, ex.hca_core_clock, ex.device_cap_flags_ex, max_inline);
}

void from_wire(const DeviceAttr& w, ibv_device_attr& o) {
  o.node_guid = w.node_guid();
  o.sys_image_guid = w.sys_image_guid();
  o.max_mr_size = w.max_mr_size();
  o.page_size_cap = w.page_size_cap();
  o.vendor_id = w.vendor_id();
  o.vendor_part_id = w.vendor_part_id();
  o.hw_ver = w.hw_ver();
  o.max_qp = w.max_qp();
  o.max_qp_wr = w.max_qp_wr();
  o.device_cap_flags = w.device_cap_flags();
  o.max_sge = w.max_sge();
  o.max_sge_rd = w.max_sge_rd();
  o.max_cq = w.max_cq();
  o.max_cqe = w.max_cqe();
  o.max_mr = w.max_mr();
  o.max_pd = w.max_pd();
  o.max_qp_rd_atom = w.max_qp_rd_atom();
  o.max_ee_rd_atom = w.max_ee_rd_atom();
  o.max_res_rd_atom = w.max_res_rd_atom();
  o.max_qp_init_rd_atom = w.max_qp_init_rd_atom();
  o.max_ee_init_rd_atom = w.max_ee_init_rd_atom();
  o.atomic_cap = static_cast<ibv_atomic_cap>(w.atomic_cap());
  o.max_ee = w.max_ee();
  o.max_rdd = w.max_rdd();
  o.max_mw = w.max_mw();
  o.max_raw_ipv6_qp = w.max_raw_ipv6_qp();
  o.max_raw_ethy_qp = w.max_raw_ethy_qp();
  o.max_mcast_grp = w.max_mcast_grp();
  o.max_mcast_qp_attach = w.max_mcast_qp_attach();
  o.max_total_mcast_qp_attach = w.max_total_mcast_qp_attach();
  o.max_ah = w.max_ah();
  o.max_fmr = w.max_fmr();
  o.max_map_per_fmr = w.max_map_per_fmr();
  o.max_srq = w.max_srq();
  o.max_srq_wr = w.max_srq_wr();
  o.max_srq_sge = w.max_srq_sge();
  o.max_pkeys = w.max_pkeys();
  o.local_ca_ack_delay = w.local_ca_ack_delay();
  o.phys_port_cnt = w.phys_port_cnt();
}

void from_wire_ex(const DeviceAttr& w, ibv_device_attr_ex& o) {
  from_wire(w, o.orig_attr);
  o.completion_timestamp_mask = w.completion_timestamp_mask();
  o.hca_core_clock = w.hca_core_clock();
  o.device_cap_flags_ex = w.device_cap_flags_ex();
}

PortAttr to_wire(const ibv_port_attr& a) {
  return PortAttr(a.state, a.max_mtu, a.active_mtu, a.gid_tbl_len, a.port_cap_flags, a.max_msg_sz,
                  a.bad_pkey_cntr, a.qkey_viol_cntr, a.pkey_tbl_len, a.lid, a.sm_lid, a.lmc,
                  a.max_vl_num, a.sm_sl, a.subnet_timeout, a.init_type_reply, a.active_width,
                  a.active_speed, a.phys_state, a.link_layer, a.flags, a.port_cap_flags2);
}

void from_wire(const PortAttr& w, ibv_port_attr& o) {
  o.state = static_cast<ibv_port_state>(w.state());
  o.max_mtu = static_cast<ibv_mtu>(w.max_mtu());
  o.active_mtu = static_cast<ibv_mtu>(w.active_mtu());
  o.gid_tbl_len = w.gid_tbl_len();
  o.port_cap_flags = w.port_cap_flags();
  o.max_msg_sz = w.max_msg_sz();
  o.bad_pkey_cntr = w.bad_pkey_cntr();
  o.qkey_viol_cntr = w.qkey_viol_cntr();
  o.pkey_tbl_len = w.pkey_tbl_len();
  o.lid = w.lid();
  o.sm_lid = w.sm_lid();
  o.lmc = w.lmc();
  o.max_vl_num = w.max_vl_num();
  o.sm_sl = w.sm_sl();
  o.subnet_timeout = w.subnet_timeout();
  o.init_type_reply = w.init_type_reply();
  o.active_width = w.active_width();
  o.active_speed = w.active_speed();
  o.phys_state = w.phys_state();
  o.link_layer = w.link_layer();
  o.flags = w.flags();
  o.port_cap_flags2 = w.port_cap_flags2();
}

}  // namespace ff::proto
