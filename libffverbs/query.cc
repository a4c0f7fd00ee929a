// Device, port, GID and P_Key queries, served by the router.
#include <algorithm>
#include <cstring>

#include "libffverbs/request.h"
#include "proto/verbs_codec.h"

using namespace ff::verbs;
namespace proto = ff::proto;

// Not in the installed headers (rdma-core's driver.h); the ABI is an int-sized enum.
enum ibv_gid_type_sysfs { IBV_GID_TYPE_SYSFS_IB_ROCE_V1, IBV_GID_TYPE_SYSFS_ROCE_V2 };

namespace {

// Runs one query on a live context: the reply, or why there is none (EIO
// when the router session behind the context is gone).
template <typename Body, typename Build>
Answer<Body> query(ibv_context* context, Build build) {
  FfContext* ctx = to_ff(context);
  if (context_is_stale(*ctx)) return {.result = {}, .body = nullptr, .error = EIO};
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<Body>(fbb, build(fbb, ctx->handle));
  if (reply.result.error != 0) debug("query failed: %s", reply.result.message.c_str());
  return reply;
}

int query_device_ex_full(ibv_context* context, ibv_device_attr_ex& attr) {
  auto reply = query<proto::QueryDeviceReply>(
      context, [](auto& fbb, uint32_t h) { return proto::CreateQueryDevice(fbb, h); });
  if (!reply) return reply.error;
  attr = {};
  proto::from_wire_ex(*reply->attr(), attr);
  attr.orig_attr.node_guid = htobe64(attr.orig_attr.node_guid);
  attr.orig_attr.sys_image_guid = htobe64(attr.orig_attr.sys_image_guid);
  if (reply->fw_ver() != nullptr)
    std::snprintf(attr.orig_attr.fw_ver, sizeof attr.orig_attr.fw_ver, "%s", reply->fw_ver()->c_str());
  attr.phys_port_cnt_ex = attr.orig_attr.phys_port_cnt;
  attr.max_dm_size = kMaxDmSize;  // the shim's (dm.cc), on either fabric
  return 0;
}

int query_port_full(ibv_context* context, uint8_t port_num, ibv_port_attr& attr) {
  auto reply = query<proto::QueryPortReply>(
      context, [port_num](auto& fbb, uint32_t h) { return proto::CreateQueryPort(fbb, h, port_num); });
  if (!reply) return reply.error;
  attr = {};
  proto::from_wire(*reply->attr(), attr);
  return 0;
}

int query_gid_full(ibv_context* context, uint8_t port_num, int index, ibv_gid& gid, uint8_t& type) {
  auto reply = query<proto::QueryGidReply>(
      context, [&](auto& fbb, uint32_t h) { return proto::CreateQueryGid(fbb, h, port_num, index); });
  if (!reply) return reply.error;
  std::memcpy(gid.raw, reply->gid()->raw()->data(), sizeof gid.raw);
  type = reply->gid_type();
  return 0;
}

}  // namespace

namespace ff::verbs {

// verbs_context::query_rt_values: the clock completion timestamps count
// (shm::kCompletionClockKhz), as mlx5 reports it (the cycles in tv_nsec).
int ffv_query_rt_values(ibv_context*, ibv_values_ex* values) {
  if ((values->comp_mask & ~static_cast<uint32_t>(IBV_VALUES_MASK_RAW_CLOCK)) != 0) return EINVAL;
  uint32_t done = 0;
  if ((values->comp_mask & IBV_VALUES_MASK_RAW_CLOCK) != 0) {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    values->raw_clock.tv_sec = 0;
    values->raw_clock.tv_nsec = now.tv_sec * 1000000000L + now.tv_nsec;
    done |= IBV_VALUES_MASK_RAW_CLOCK;
  }
  values->comp_mask = done;
  return 0;
}

// verbs_context::query_device_ex: fills as much of `attr` as the app's
// struct holds (apps built against older headers pass a smaller size).
int ffv_query_device_ex(ibv_context* context, const ibv_query_device_ex_input* input,
                        ibv_device_attr_ex* attr, size_t attr_size) {
  if (input != nullptr && input->comp_mask != 0) return EINVAL;
  if (attr_size < sizeof(ibv_device_attr)) return EINVAL;
  ibv_device_attr_ex full;
  if (int e = query_device_ex_full(context, full); e != 0) return e;
  std::memcpy(attr, &full, std::min(attr_size, sizeof full));
  return 0;
}

// verbs_context::query_port, with the app's struct size.
int ffv_query_port(ibv_context* context, uint8_t port_num, ibv_port_attr* attr, size_t attr_len) {
  ibv_port_attr full;
  if (int e = query_port_full(context, port_num, full); e != 0) return e;
  std::memset(attr, 0, attr_len);
  std::memcpy(attr, &full, std::min(attr_len, sizeof full));
  return 0;
}

}  // namespace ff::verbs

#undef ibv_query_port

extern "C" {

int ibv_query_device(ibv_context* context, ibv_device_attr* device_attr) {
  ibv_device_attr_ex full;
  if (int e = query_device_ex_full(context, full); e != 0) return e;
  *device_attr = full.orig_attr;
  return 0;
}

// The exported symbol takes the compat struct: ibv_port_attr without the
// trailing port_cap_flags2 (verbs.h). Write only that prefix.
int ibv_query_port(ibv_context* context, uint8_t port_num, _compat_ibv_port_attr* port_attr) {
  ibv_port_attr full;
  if (int e = query_port_full(context, port_num, full); e != 0) return e;
  std::memcpy(port_attr, &full, offsetof(ibv_port_attr, port_cap_flags2));
  return 0;
}

// An empty GID table entry is ENODATA for ibv_query_gid_ex and a zero GID
// (RoCE v1 type) for the older calls, as libibverbs does.
int ibv_query_gid(ibv_context* context, uint8_t port_num, int index, ibv_gid* gid) {
  uint8_t type;
  int e = query_gid_full(context, port_num, index, *gid, type);
  if (e == ENODATA) *gid = {};
  return e == 0 || e == ENODATA ? 0 : -1;  // verbs: -1 on failure
}

int ibv_query_gid_type(ibv_context* context, uint8_t port_num, unsigned int index,
                       ibv_gid_type_sysfs* type) {
  ibv_gid gid;
  uint8_t t = 0;
  if (index > INT32_MAX) return fail_int(EINVAL);
  int e = query_gid_full(context, port_num, static_cast<int>(index), gid, t);
  if (e != 0 && e != ENODATA) return fail_int(e);
  *type = t == 1 ? IBV_GID_TYPE_SYSFS_ROCE_V2 : IBV_GID_TYPE_SYSFS_IB_ROCE_V1;
  return 0;
}

int _ibv_query_gid_ex(ibv_context* context, uint32_t port_num, uint32_t gid_index,
                      ibv_gid_entry* entry, uint32_t flags, size_t entry_size) {
  if (flags != 0 || port_num > 255 || gid_index > INT32_MAX) return EINVAL;
  ibv_gid_entry full{};
  uint8_t type;
  if (int e = query_gid_full(context, static_cast<uint8_t>(port_num), static_cast<int>(gid_index),
                             full.gid, type); e != 0)
    return e;
  full.gid_index = gid_index;
  full.port_num = port_num;
  full.gid_type = type == 1 ? IBV_GID_TYPE_ROCE_V2 : IBV_GID_TYPE_ROCE_V1;
  full.ndev_ifindex = 0;
  std::memcpy(entry, &full, std::min(entry_size, sizeof full));
  return 0;
}

// The valid entries of every port's table (the virtual device has port 1).
ssize_t _ibv_query_gid_table(ibv_context* context, ibv_gid_entry* entries, size_t max_entries,
                             uint32_t flags, size_t entry_size) {
  if (flags != 0 || entry_size < offsetof(ibv_gid_entry, ndev_ifindex)) return -EINVAL;
  ibv_port_attr port;
  if (int e = query_port_full(context, 1, port); e != 0) return -e;
  size_t found = 0;
  for (int i = 0; i < port.gid_tbl_len; ++i) {
    ibv_gid_entry entry{};
    int e = _ibv_query_gid_ex(context, 1, static_cast<uint32_t>(i), &entry, 0, sizeof entry);
    if (e == ENODATA) continue;
    if (e != 0) return -e;
    if (found == max_entries) return -EINVAL;  // the table holds more than the app's array
    std::memcpy(reinterpret_cast<char*>(entries) + found * entry_size, &entry, std::min(entry_size, sizeof entry));
    ++found;
  }
  return static_cast<ssize_t>(found);
}

int ibv_query_pkey(ibv_context* context, uint8_t port_num, int index, __be16* pkey) {
  auto reply = query<proto::QueryPkeyReply>(
      context, [&](auto& fbb, uint32_t h) { return proto::CreateQueryPkey(fbb, h, port_num, index); });
  if (!reply) return -1;  // verbs: -1 on failure
  *pkey = htobe16(reply->pkey());
  return 0;
}

int ibv_get_pkey_index(ibv_context* context, uint8_t port_num, __be16 pkey) {
  __be16 only;
  if (ibv_query_pkey(context, port_num, 0, &only) != 0) return -1;
  // Membership bit (0x8000) ignored, as the kernel's P_Key match does.
  return (be16toh(only) & 0x7fff) == (be16toh(pkey) & 0x7fff) ? 0 : -1;
}

}  // extern "C"
