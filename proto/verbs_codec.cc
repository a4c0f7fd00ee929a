#include "proto/verbs_codec.h"

#include <cstring>
#include <type_traits>

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

QpCap to_wire(const ibv_qp_cap& c) {
  return QpCap(c.max_send_wr, c.max_recv_wr, c.max_send_sge, c.max_recv_sge, c.max_inline_data);
}

ibv_qp_cap from_wire(const QpCap& w) {
  ibv_qp_cap c{};
  c.max_send_wr = w.max_send_wr();
  c.max_recv_wr = w.max_recv_wr();
  c.max_send_sge = w.max_send_sge();
  c.max_recv_sge = w.max_recv_sge();
  c.max_inline_data = w.max_inline_data();
  return c;
}

AhAttr to_wire(const ibv_ah_attr& a) {
  Gid gid(flatbuffers::span<const uint8_t, 16>(a.grh.dgid.raw, 16));
  return AhAttr(gid, a.grh.flow_label, a.grh.sgid_index, a.grh.hop_limit, a.grh.traffic_class,
                a.is_global != 0, a.dlid, a.sl, a.src_path_bits, a.static_rate, a.port_num);
}

ibv_ah_attr from_wire(const AhAttr& w) {
  ibv_ah_attr a{};
  std::memcpy(a.grh.dgid.raw, w.dgid().raw()->data(), 16);
  a.grh.flow_label = w.flow_label();
  a.grh.sgid_index = w.sgid_index();
  a.grh.hop_limit = w.hop_limit();
  a.grh.traffic_class = w.traffic_class();
  a.is_global = w.is_global() ? 1 : 0;
  a.dlid = w.dlid();
  a.sl = w.sl();
  a.src_path_bits = w.src_path_bits();
  a.static_rate = w.static_rate();
  a.port_num = w.port_num();
  return a;
}

namespace {

// An enum field of an app's struct as the integer it holds: a field the
// attribute mask does not name may hold anything (ibv_xsrq_pingpong leaves
// them uninitialized), and loading such a value as the enum type is
// undefined behaviour.
template <typename E>
uint8_t raw_enum(const E& field) {
  std::underlying_type_t<E> v;
  static_assert(sizeof v == sizeof field);
  std::memcpy(&v, &field, sizeof v);
  return static_cast<uint8_t>(v);
}

}  // namespace

QpAttr to_wire(const ibv_qp_attr& a) {
  return QpAttr(raw_enum(a.qp_state), raw_enum(a.cur_qp_state), raw_enum(a.path_mtu), raw_enum(a.path_mig_state), a.qkey,
                a.rq_psn, a.sq_psn, a.dest_qp_num, static_cast<uint32_t>(a.qp_access_flags),
                to_wire(a.ah_attr), a.pkey_index, a.sq_draining, a.max_rd_atomic,
                a.max_dest_rd_atomic, a.min_rnr_timer, a.port_num, a.timeout, a.retry_cnt,
                a.rnr_retry, a.en_sqd_async_notify, 0);
}

ibv_qp_attr from_wire(const QpAttr& w) {
  ibv_qp_attr a{};
  a.qp_state = static_cast<ibv_qp_state>(w.qp_state());
  a.cur_qp_state = static_cast<ibv_qp_state>(w.cur_qp_state());
  a.path_mtu = static_cast<ibv_mtu>(w.path_mtu());
  a.path_mig_state = static_cast<ibv_mig_state>(w.path_mig_state());
  a.qkey = w.qkey();
  a.rq_psn = w.rq_psn();
  a.sq_psn = w.sq_psn();
  a.dest_qp_num = w.dest_qp_num();
  a.qp_access_flags = static_cast<unsigned>(w.qp_access_flags());
  a.ah_attr = from_wire(w.ah_attr());
  a.pkey_index = w.pkey_index();
  a.sq_draining = w.sq_draining();
  a.max_rd_atomic = w.max_rd_atomic();
  a.max_dest_rd_atomic = w.max_dest_rd_atomic();
  a.min_rnr_timer = w.min_rnr_timer();
  a.port_num = w.port_num();
  a.timeout = w.timeout();
  a.retry_cnt = w.retry_cnt();
  a.rnr_retry = w.rnr_retry();
  a.en_sqd_async_notify = w.en_sqd_async_notify();
  return a;
}

}  // namespace ff::proto
