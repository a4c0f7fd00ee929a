// Address handles. On this RoCE port an address is the IPv4-mapped GID of a
// virtual IP; the router resolves it.
#include <arpa/inet.h>

#include <cstring>
#include <new>

#include "libffverbs/request.h"
#include "proto/verbs_codec.h"

using namespace ff::verbs;
namespace proto = ff::proto;

extern "C" {

ibv_ah* ibv_create_ah(ibv_pd* pd, ibv_ah_attr* attr) {
  FfContext* ctx = to_ff(pd->context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_ah>(EIO);
  flatbuffers::FlatBufferBuilder fbb;
  auto wire = proto::to_wire(*attr);
  auto reply = request<proto::CreateAhReply>(fbb, proto::CreateCreateAh(fbb, to_ff(pd)->handle, &wire),
                                             "create_ah failed");
  if (!reply) return fail_ptr<ibv_ah>(reply.error);
  auto* ah = new (std::nothrow) FfAh();
  if (ah == nullptr) return fail_ptr<ibv_ah>(ENOMEM);
  ah->ah.context = pd->context;
  ah->ah.pd = pd;
  ah->ah.handle = reply->ah();
  ah->id = reply->id();
  ah->link_epoch = RouterLink::get().epoch();
  return &ah->ah;
}

int ibv_destroy_ah(ibv_ah* ibah) {
  FfAh* ah = to_ff(ibah);
  if (ah->link_epoch == RouterLink::get().epoch()) {
    flatbuffers::FlatBufferBuilder fbb;
    int e = request<void>(fbb, proto::CreateDestroyAh(fbb, ibah->handle)).error;
    if (e == EINVAL) return e;
  }
  delete ah;
  return 0;
}

namespace {

// The router names the sender from the completion: the GRH in the app's
// buffer may be the device's own (its addresses, not virtual ones) when the
// device already wrote a later datagram there (receives sharing a buffer).
// When it cannot answer (a router gone, a QP destroyed since), the GRH is
// all there is, as on a device.
void sender_address(ibv_context* context, const ibv_wc& wc, ibv_gid& gid) {
  if (context == nullptr || context_is_stale(*to_ff(context))) return;
  flatbuffers::FlatBufferBuilder fbb;
  proto::Gid seen(flatbuffers::span<const uint8_t, 16>(gid.raw, 16));
  auto reply = request<proto::SenderAddressReply>(fbb, proto::CreateSenderAddress(fbb, wc.qp_num, wc.src_qp, &seen),
                                                  "the sender of a datagram");
  if (reply) std::memcpy(gid.raw, reply->gid()->raw()->data(), sizeof gid.raw);
}

}  // namespace

// The reply address of a received datagram, from its GRH. On this RoCE v2
// port (IPv4 GIDs) the GRH holds the datagram's IPv4 header in its last 20
// bytes, as real devices write it; a GRH in the IPv6 form is read as such.
int ibv_init_ah_from_wc(ibv_context* context, uint8_t port_num, ibv_wc* wc, ibv_grh* grh, ibv_ah_attr* attr) {
  std::memset(attr, 0, sizeof *attr);
  attr->dlid = wc->slid;
  attr->sl = wc->sl;
  attr->src_path_bits = wc->dlid_path_bits;
  attr->port_num = port_num;
  if ((wc->wc_flags & IBV_WC_GRH) == 0) return fail_int(EINVAL);  // RoCE: addresses are GIDs
  attr->is_global = 1;
  attr->grh.sgid_index = 0;
  const auto* ip = reinterpret_cast<const uint8_t*>(grh) + 20;
  if ((ip[0] >> 4) == 4) {
    attr->grh.dgid.raw[10] = 0xff;
    attr->grh.dgid.raw[11] = 0xff;
    std::memcpy(attr->grh.dgid.raw + 12, ip + 12, 4);  // the IPv4 source address
    attr->grh.traffic_class = ip[1];
  } else {
    uint32_t flow = ntohl(grh->version_tclass_flow);
    attr->grh.dgid = grh->sgid;
    attr->grh.flow_label = flow & 0xfffff;
    attr->grh.traffic_class = static_cast<uint8_t>((flow >> 20) & 0xff);
  }
  attr->grh.hop_limit = 0xff;
  sender_address(context, *wc, attr->grh.dgid);
  return 0;
}

ibv_ah* ibv_create_ah_from_wc(ibv_pd* pd, ibv_wc* wc, ibv_grh* grh, uint8_t port_num) {
  ibv_ah_attr attr;
  if (ibv_init_ah_from_wc(pd->context, port_num, wc, grh, &attr) != 0) return nullptr;
  return ibv_create_ah(pd, &attr);
}

// UD multicast: the router keeps the groups (router/fabric/core/multicast.cc);
// `lid` means nothing on a RoCE port.
static int mcast(ibv_qp* qp, const ibv_gid* gid, bool attach) {
  if (qp == nullptr || gid == nullptr) return EINVAL;
  if (context_is_stale(*to_ff(qp->context))) return EIO;
  flatbuffers::FlatBufferBuilder fbb;
  proto::Gid wire(flatbuffers::span<const uint8_t, 16>(gid->raw, 16));
  uint32_t handle = to_ff(qp)->handle;
  if (attach) return request<void>(fbb, proto::CreateAttachMcast(fbb, handle, &wire, 0), "attach_mcast failed").error;
  return request<void>(fbb, proto::CreateDetachMcast(fbb, handle, &wire, 0), "detach_mcast failed").error;
}

int ibv_attach_mcast(ibv_qp* qp, const ibv_gid* gid, uint16_t) { return mcast(qp, gid, true); }
int ibv_detach_mcast(ibv_qp* qp, const ibv_gid* gid, uint16_t) { return mcast(qp, gid, false); }

}  // extern "C"
