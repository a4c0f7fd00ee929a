#include "router/fabric/verbs/device.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "policy/tenant.h"
#include "shm/descriptors.h"

namespace ff::router::verbs {
namespace {


std::string errno_text(int e) { return std::strerror(e != 0 ? e : EINVAL); }

// The device's NUMA node as sysfs says (-1: one node, or a device on none).
int read_numa_node(const std::string& name) {
  std::ifstream f("/sys/class/infiniband/" + name + "/device/numa_node");
  int node = -1;
  return f >> node ? node : -1;
}

// The GID to send from: a RoCE v2 GID holding an IPv4 address (what the
// virtual port reports too), else any RoCE v2 GID, else the first valid one.
int pick_gid_index(ibv_context* ctx, uint8_t port, int table_len) {
  int roce_v2 = -1, any = -1;
  for (int i = 0; i < table_len; ++i) {
    ibv_gid_entry e{};
    if (ibv_query_gid_ex(ctx, port, static_cast<uint32_t>(i), &e, 0) != 0) continue;
    bool zero = std::all_of(e.gid.raw, e.gid.raw + 16, [](uint8_t b) { return b == 0; });
    if (zero) continue;
    if (any < 0) any = i;
    if (e.gid_type == IBV_GID_TYPE_ROCE_V2) {
      if (policy::ipv4_of_gid(e.gid.raw)) return i;
      if (roce_v2 < 0) roce_v2 = i;
    }
  }
  return roce_v2 >= 0 ? roce_v2 : any;
}

// Largest inline size an RC QP of the device accepts (providers differ).
uint32_t probe_max_inline(ibv_pd* pd, ibv_cq* cq) {
  for (uint32_t size : {448u, 256u, 220u, 128u, 64u, 32u}) {
    ibv_qp_init_attr a{};
    a.send_cq = a.recv_cq = cq;
    a.qp_type = IBV_QPT_RC;
    a.cap.max_send_wr = a.cap.max_recv_wr = 1;
    a.cap.max_send_sge = a.cap.max_recv_sge = 1;
    a.cap.max_inline_data = size;
    if (ibv_qp* qp = ibv_create_qp(pd, &a)) {
      uint32_t got = std::max(size, a.cap.max_inline_data);
      ibv_destroy_qp(qp);
      return std::min<uint32_t>(got, shm::kMaxInline);
    }
  }
  return 0;
}

// A UD QP in RTS that never posts a receive: the device drops what is sent to it.
bool make_sink(Device& d, std::string& why) {
  d.sink_pd = ibv_alloc_pd(d.ctx);
  d.sink_cq = d.sink_pd != nullptr ? ibv_create_cq(d.ctx, 1, nullptr, nullptr, 0) : nullptr;
  if (d.sink_cq == nullptr) {
    why = "cannot allocate a PD and a CQ: " + errno_text(errno);
    return false;
  }
  d.max_inline = probe_max_inline(d.sink_pd, d.sink_cq);
  ibv_qp_init_attr a{};
  a.send_cq = a.recv_cq = d.sink_cq;
  a.qp_type = IBV_QPT_UD;
  a.cap.max_send_wr = a.cap.max_recv_wr = 1;
  a.cap.max_send_sge = a.cap.max_recv_sge = 1;
  d.sink_qp = ibv_create_qp(d.sink_pd, &a);
  if (d.sink_qp == nullptr) {
    why = "cannot create a UD QP: " + errno_text(errno);
    return false;
  }
  ibv_qp_attr m{};
  m.qp_state = IBV_QPS_INIT;
  m.port_num = d.port;
  m.qkey = 0x11111111;
  int rc = ibv_modify_qp(d.sink_qp, &m, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY);
  m.qp_state = IBV_QPS_RTR;
  if (rc == 0) rc = ibv_modify_qp(d.sink_qp, &m, IBV_QP_STATE);
  m.qp_state = IBV_QPS_RTS;
  if (rc == 0) rc = ibv_modify_qp(d.sink_qp, &m, IBV_QP_STATE | IBV_QP_SQ_PSN);
  if (rc != 0) {
    why = "cannot bring a UD QP to RTS: " + errno_text(rc);
    return false;
  }
  return true;
}

}  // namespace

uint32_t probe_qp_depth(Device& d, uint32_t depth, uint32_t sge, uint32_t inline_size) {
  auto makes = [&](uint32_t n) {
    ibv_cq* cq = ibv_create_cq(d.ctx, static_cast<int>(n), nullptr, nullptr, 0);
    if (cq == nullptr) return false;
    bool all = true;
    for (ibv_qp_type type : {IBV_QPT_RC, IBV_QPT_UC, IBV_QPT_UD}) {
      ibv_qp_init_attr a{};
      a.send_cq = a.recv_cq = cq;
      a.qp_type = type;
      a.cap = ibv_qp_cap{n, n, sge, sge, inline_size};
      ibv_qp* qp = ibv_create_qp(d.sink_pd, &a);
      if (qp == nullptr) {
        all = false;
        break;
      }
      ibv_destroy_qp(qp);
    }
    ibv_destroy_cq(cq);
    return all;
  };
  for (; depth > 1; depth /= 2)
    if (makes(depth)) return depth;
  return 1;
}

uint32_t probe_srq_depth(Device& d, uint32_t depth, uint32_t sge) {
  for (; depth > 1; depth /= 2) {
    ibv_srq_init_attr a{};
    a.attr.max_wr = depth;
    a.attr.max_sge = sge;
    ibv_cq* cq = ibv_create_cq(d.ctx, static_cast<int>(depth), nullptr, nullptr, 0);
    ibv_srq* srq = cq != nullptr ? ibv_create_srq(d.sink_pd, &a) : nullptr;
    if (srq != nullptr) ibv_destroy_srq(srq);
    if (cq != nullptr) ibv_destroy_cq(cq);
    if (srq != nullptr) return depth;
  }
  return 1;
}

std::unique_ptr<Device> open_device(const FabricConfig& o, std::string& why) {
  int n = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (list == nullptr || n == 0) {
    if (list != nullptr) ibv_free_device_list(list);
    why = "no RDMA device found. Load the HCA's driver, or create a SoftRoCE device "
          "(`rdma link add rxe0 type rxe netdev <ifname>`), or run with --fabric soft";
    return nullptr;
  }
  auto d = std::make_unique<Device>();
  std::string names;
  for (int i = 0; i < n && d->ctx == nullptr; ++i) {
    std::string name = ibv_get_device_name(list[i]);
    names += (names.empty() ? "" : ", ") + name;
    if (!o.device.empty() && name != o.device) continue;
    ibv_context* ctx = ibv_open_device(list[i]);
    if (ctx == nullptr) {
      why = "cannot open " + name + ": " + errno_text(errno) + " (is /dev/infiniband accessible?)";
      continue;
    }
    ibv_port_attr port{};
    if (ibv_query_port(ctx, 1, &port) != 0 || port.state != IBV_PORT_ACTIVE) {
      why = name + " port 1 is not ACTIVE (check `rdma link` and the netdev's state)";
      ibv_close_device(ctx);
      continue;
    }
    d->name = name;
    d->ctx = ctx;
    d->port_attr = port;
  }
  ibv_free_device_list(list);
  if (d->ctx == nullptr) {
    if (!o.device.empty() && why.empty())
      why = "no RDMA device named '" + o.device + "' (found: " + names + "); pick one with --device";
    return nullptr;
  }
  if (ibv_query_device_ex(d->ctx, nullptr, &d->attr) != 0) {
    why = d->name + ": ibv_query_device_ex failed: " + errno_text(errno);
    return nullptr;
  }
  d->gid_index = o.gid_index >= 0 ? o.gid_index : pick_gid_index(d->ctx, d->port, d->port_attr.gid_tbl_len);
  if (d->gid_index < 0 || d->gid_index >= d->port_attr.gid_tbl_len ||
      ibv_query_gid(d->ctx, d->port, d->gid_index, &d->gid) != 0 ||
      std::all_of(d->gid.raw, d->gid.raw + 16, [](uint8_t b) { return b == 0; })) {
    why = d->name + " port 1 has no usable GID" +
          (o.gid_index >= 0 ? " at index " + std::to_string(o.gid_index) : std::string()) +
          " (give the netdev an IP address, or pick one with --gid-index; see `show_gids`)";
    return nullptr;
  }
  d->numa_node = read_numa_node(d->name);
  d->channel = ibv_create_comp_channel(d->ctx);
  if (d->channel == nullptr) {
    why = d->name + ": cannot create a completion channel: " + errno_text(errno);
    return nullptr;
  }
  // The poller reads both without blocking.
  for (int fd : {d->channel->fd, d->ctx->async_fd}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  if (!make_sink(*d, why)) {
    why = d->name + ": " + why;
    return nullptr;
  }
  return d;
}


Device::~Device() {
  if (sink_qp != nullptr) ibv_destroy_qp(sink_qp);
  if (sink_cq != nullptr) ibv_destroy_cq(sink_cq);
  if (sink_pd != nullptr) ibv_dealloc_pd(sink_pd);
  if (channel != nullptr) ibv_destroy_comp_channel(channel);
  if (ctx != nullptr) ibv_close_device(ctx);
}

}  // namespace ff::router::verbs
