// librdmacm's ids, event channels and connections, served by the router
// (see rdma_cm.h). Endpoint helpers and the rest of the API: rdma_cm_ep.cc.
#include "libffverbs/rdma_cm.h"

#include <arpa/inet.h>
#include <poll.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <vector>

#include "libffverbs/request.h"

namespace proto = ff::proto;
using namespace ff::verbs;
using namespace ff::verbs::cm;

namespace ff::verbs::cm {
namespace {

// The process's device for rdma_cm ids (librdmacm opens each device once
// and gives its ids one PD), opened on first use.
struct CmDevice {
  std::mutex mu;
  ibv_context* verbs = nullptr;
  ibv_pd* pd = nullptr;
  uint8_t max_responder_resources = 0, max_initiator_depth = 0;
  ibv_mtu mtu = IBV_MTU_1024;

  bool open() {
    std::lock_guard lock(mu);
    if (verbs != nullptr) return true;
    int n = 0;
    ibv_device** list = ibv_get_device_list(&n);
    if (list == nullptr || n == 0) {
      if (list != nullptr) ibv_free_device_list(list);
      return false;
    }
    ibv_context* ctx = ibv_open_device(list[0]);
    ibv_free_device_list(list);
    if (ctx == nullptr) return false;
    ibv_device_attr attr{};
    ibv_port_attr port{};
    ibv_pd* p = ibv_alloc_pd(ctx);
    if (p == nullptr || ibv_query_device(ctx, &attr) != 0 || ibv_query_port(ctx, 1, &port) != 0) {
      if (p != nullptr) ibv_dealloc_pd(p);
      ibv_close_device(ctx);
      return false;
    }
    max_responder_resources = static_cast<uint8_t>(std::min(attr.max_qp_rd_atom, 255));
    max_initiator_depth = static_cast<uint8_t>(std::min(attr.max_qp_init_rd_atom, 255));
    mtu = port.active_mtu;
    pd = p;
    verbs = ctx;
    return true;
  }
};

CmDevice& device() {
  static auto* d = new CmDevice();  // never destroyed: ids may outlive static destructors
  return *d;
}

}  // namespace

ibv_context* cm_device_context() { return device().open() ? device().verbs : nullptr; }

namespace {

// Ids by router handle: events name them so.
struct IdTable {
  std::mutex mu;
  std::map<uint32_t, FfCmId*> ids;
};
IdTable& id_table() {
  static auto* t = new IdTable();
  return *t;
}

FfCmId* find_id(uint32_t handle) {
  auto& t = id_table();
  std::lock_guard lock(t.mu);
  auto it = t.ids.find(handle);
  return it == t.ids.end() ? nullptr : it->second;
}

sockaddr_in to_sockaddr(const proto::CmAddr* a) {
  sockaddr_in s{};
  s.sin_family = AF_INET;
  if (a != nullptr) {
    s.sin_addr.s_addr = htonl(a->ip());
    s.sin_port = htons(a->port());
  }
  return s;
}

// ::ffff:a.b.c.d, the RoCE GID of an IPv4 address (the router's rule,
// policy::ipv4_mapped_gid, for the addresses it serves).
ibv_gid gid_of(const sockaddr_in& a) {
  ibv_gid g{};
  g.raw[10] = 0xff;
  g.raw[11] = 0xff;
  std::memcpy(&g.raw[12], &a.sin_addr.s_addr, 4);
  return g;
}

void set_addresses(FfCmId& id, const proto::CmAddr* src, const proto::CmAddr* dst) {
  rdma_addr& a = id.id.route.addr;
  a.src_sin = to_sockaddr(src);
  if (dst != nullptr) a.dst_sin = to_sockaddr(dst);
  a.addr.ibaddr.sgid = gid_of(a.src_sin);
  if (dst != nullptr) a.addr.ibaddr.dgid = gid_of(a.dst_sin);
}

// Gives the id the device, as librdmacm does once an address names it.
void attach_device(FfCmId& id) {
  CmDevice& d = device();
  if (id.id.verbs != nullptr || !d.open()) return;
  id.id.verbs = d.verbs;
  id.id.pd = d.pd;
  id.id.port_num = 1;
  id.responder_resources = id.max_responder_resources = d.max_responder_resources;
  id.initiator_depth = id.max_initiator_depth = d.max_initiator_depth;
}

// After ROUTE_RESOLVED: one path, as cma_resolve_iboe_route makes it.
void set_path(FfCmId& id) {
  rdma_route& r = id.id.route;
  if (r.path_rec == nullptr) r.path_rec = static_cast<ibv_sa_path_rec*>(std::calloc(1, sizeof(ibv_sa_path_rec)));
  if (r.path_rec == nullptr) return;
  ibv_sa_path_rec& p = *r.path_rec;
  p.dgid = r.addr.addr.ibaddr.dgid;
  p.sgid = r.addr.addr.ibaddr.sgid;
  p.hop_limit = 64;
  p.reversible = 1;
  p.pkey = htons(0xffff);
  p.traffic_class = id.tos;
  p.sl = static_cast<uint8_t>(id.tos >> 5);
  p.mtu_selector = 2;
  p.mtu = device().mtu;
  p.packet_life_time_selector = 2;
  p.packet_life_time = 18;
  r.num_paths = 1;
}

void track(FfCmId& id) {
  auto& t = id_table();
  std::lock_guard lock(t.mu);
  t.ids[id.handle] = &id;
}

FfCmId* new_id(rdma_event_channel* channel, void* context, rdma_port_space ps, uint32_t handle) {
  void* mem = std::calloc(1, sizeof(FfCmId));
  if (mem == nullptr) return nullptr;
  auto* id = new (mem) FfCmId();
  id->handle = handle;
  id->channel = to_ff(channel);
  id->id.channel = channel;
  id->id.context = context;
  id->id.ps = ps;
  id->id.qp_type = ps == RDMA_PS_UDP || ps == RDMA_PS_IPOIB ? IBV_QPT_UD : IBV_QPT_RC;
  track(*id);
  return id;
}

void free_id(FfCmId* id) {
  {
    auto& t = id_table();
    std::lock_guard lock(t.mu);
    t.ids.erase(id->handle);
  }
  std::free(id->id.route.path_rec);
  id->~FfCmId();
  std::free(id);
}

int qp_to_error(rdma_cm_id* id) {
  if (id->qp == nullptr) return 0;
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_ERR;
  return ibv_modify_qp(id->qp, &attr, IBV_QP_STATE);
}

struct FfCmEvent {
  rdma_cm_event event;  // first: apps hold &event
  FfCmId* counted = nullptr;  // whose events_reported it counts in
  uint8_t private_data[256];
};

void count_reported(FfCmId& id) {
  std::lock_guard lock(id.mu);
  ++id.events_reported;
}

// A CONNECT_REQUEST's new id, beside its listener.
FfCmId* id_for_request(const proto::CmEventReply& r, FfCmId& listener) {
  FfCmId* id = new_id(listener.id.channel, listener.id.context, listener.id.ps, r.id());
  if (id == nullptr) return nullptr;
  set_addresses(*id, r.src(), r.dst());
  attach_device(*id);
  return id;
}

void remember_remote(FfCmId& id, const proto::CmEventReply& r) {
  id.local_psn = r.local_psn();
  id.remote.qp_num = r.remote_qp_num();
  id.remote.psn = r.remote_psn();
  if (const auto* p = r.param()) {
    id.remote.responder_resources = p->responder_resources();
    id.remote.initiator_depth = p->initiator_depth();
    id.remote.retry_count = p->retry_count();
    id.remote.rnr_retry_count = p->rnr_retry_count();
  }
}

// The active side's QP on the connect response: RTR and RTS, then the RTU
// (librdmacm's ucma_process_conn_resp). False: the app gets CONNECT_ERROR.
bool complete_connection(FfCmId& id) {
  if (move_qp_to_rts(id) != 0) return false;
  flatbuffers::FlatBufferBuilder fbb;
  return request<void>(fbb, proto::CreateCmEstablish(fbb, id.handle), "rdma_cm establish").error == 0;
}

// Turns the router's event into the app's. Null: the event is for an id
// this process no longer has (skip it).
FfCmEvent* make_event(const proto::CmEventReply& r) {
  auto type = static_cast<rdma_cm_event_type>(r.event());
  FfCmId* listener = type == RDMA_CM_EVENT_CONNECT_REQUEST ? find_id(r.listen_id()) : nullptr;
  if (type == RDMA_CM_EVENT_CONNECT_REQUEST && listener == nullptr) return nullptr;
  FfCmId* id = listener != nullptr ? id_for_request(r, *listener) : find_id(r.id());
  if (id == nullptr) return nullptr;
  auto* ev = new (std::nothrow) FfCmEvent();
  if (ev == nullptr) return nullptr;
  ev->event.id = &id->id;
  ev->event.listen_id = listener != nullptr ? &listener->id : nullptr;
  ev->event.event = type;
  ev->event.status = r.status();
  ev->counted = listener != nullptr ? listener : id;
  bool datagram = id->id.ps == RDMA_PS_UDP || id->id.ps == RDMA_PS_IPOIB;
  if (const auto* p = r.param(); p != nullptr && !datagram) {
    rdma_conn_param& c = ev->event.param.conn;
    c.responder_resources = p->responder_resources();
    c.initiator_depth = p->initiator_depth();
    c.flow_control = p->flow_control();
    c.retry_count = p->retry_count();
    c.rnr_retry_count = p->rnr_retry_count();
    c.srq = p->srq();
    c.qp_num = p->qp_num();
  }
  if (const auto* data = r.private_data(); data != nullptr && data->size() != 0) {
    size_t n = std::min<size_t>(data->size(), sizeof ev->private_data);
    std::memcpy(ev->private_data, data->data(), n);
    // conn and ud start alike: the private data and its length
    ev->event.param.conn.private_data = ev->private_data;
    ev->event.param.conn.private_data_len = static_cast<uint8_t>(n);
  }
  if (type == RDMA_CM_EVENT_MULTICAST_JOIN && r.dst() != nullptr) joined(*id, r.dst()->ip(), ev->event);
  if (datagram && type == RDMA_CM_EVENT_ESTABLISHED) {
    // The SIDR reply: where the peer's QP is and how to address it.
    rdma_ud_param& ud = ev->event.param.ud;
    ud.qp_num = r.remote_qp_num();
    ud.qkey = RDMA_UDP_QKEY;
    ud.ah_attr.is_global = 1;
    ud.ah_attr.grh.dgid = id->id.route.addr.addr.ibaddr.dgid;
    ud.ah_attr.grh.sgid_index = 0;
    ud.ah_attr.grh.hop_limit = 64;
    ud.ah_attr.grh.traffic_class = id->tos;
    ud.ah_attr.port_num = id->id.port_num != 0 ? id->id.port_num : 1;
  }
  switch (type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
      set_addresses(*id, r.src(), r.dst());
      attach_device(*id);
      break;
    case RDMA_CM_EVENT_ROUTE_RESOLVED:
      set_path(*id);
      break;
    case RDMA_CM_EVENT_CONNECT_REQUEST:
      remember_remote(*id, r);
      break;
    case RDMA_CM_EVENT_CONNECT_RESPONSE:
      remember_remote(*id, r);
      if (id->id.qp != nullptr) {
        ev->event.event = complete_connection(*id) ? RDMA_CM_EVENT_ESTABLISHED : RDMA_CM_EVENT_CONNECT_ERROR;
        if (ev->event.event == RDMA_CM_EVENT_CONNECT_ERROR) qp_to_error(&id->id);
      }
      break;
    case RDMA_CM_EVENT_REJECTED:
      qp_to_error(&id->id);  // as librdmacm does
      break;
    default:
      break;
  }
  count_reported(*ev->counted);
  return ev;
}

// The router went away: like a removed device, every id of the channel
// gets one DEVICE_REMOVAL; after that the channel says ENODEV.
FfCmEvent* removal_event(FfCmChannel& ch) {
  FfCmId* id = nullptr;
  {
    auto& t = id_table();
    std::lock_guard lock(t.mu);
    for (auto& [handle, candidate] : t.ids) {
      if (candidate->channel == &ch && !candidate->removal_reported) {
        id = candidate;
        id->removal_reported = true;
        break;
      }
    }
  }
  if (id == nullptr) return nullptr;
  auto* ev = new (std::nothrow) FfCmEvent();
  if (ev == nullptr) return nullptr;
  ev->event.id = &id->id;
  ev->event.event = RDMA_CM_EVENT_DEVICE_REMOVAL;
  ev->counted = id;
  count_reported(*id);
  return ev;
}

// Waits for the channel's byte (the fd honours O_NONBLOCK) and asks the
// router for the event it stands for.
int next_event(FfCmChannel& ch, rdma_cm_event** out) {
  // The router went away, or the app destroyed this channel under this
  // thread (rping does, with its event thread still waiting; with the
  // kernel's rdma_cm that thread waits for ever). Either way, wait for the
  // router's connection to end: a dead router's socket hangs up, if a
  // moment after its pipes closed; a live one's never does.
  auto channel_gone = [&ch, out] {
    RouterLink::get().wait_until_gone();
    FfCmEvent* ev = removal_event(ch);
    if (ev == nullptr) return fail(ENODEV);
    *out = &ev->event;
    return 0;
  };
  for (;;) {
    char byte;
    ssize_t n = ::read(ch.channel.fd, &byte, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;  // EAGAIN on a non-blocking channel
    if (n == 0) return channel_gone();
    flatbuffers::FlatBufferBuilder fbb;
    auto reply = request<proto::CmEventReply>(fbb, proto::CreateCmGetEvent(fbb, ch.handle));
    if (reply.error == EAGAIN) continue;  // its event went with its id
    if (reply.error == EINVAL) return channel_gone();  // destroyed after its byte was read
    if (!reply) return fail(reply.error);
    if (FfCmEvent* ev = make_event(*reply.body)) {
      *out = &ev->event;
      return 0;
    }
  }
}

int address_call_done(FfCmId& id, proto::CmAddrReply const* r) {
  set_addresses(id, r->src(), r->dst());
  return 0;
}

}  // namespace

int init_qp_attr(FfCmId& id, ibv_qp_attr& attr, int& mask) {
  const Remote& r = id.remote;
  switch (attr.qp_state) {
    case IBV_QPS_INIT:
      attr.pkey_index = 0;
      attr.port_num = id.id.port_num != 0 ? id.id.port_num : 1;
      mask = IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT;
      if (id.id.qp_type == IBV_QPT_UD) {
        attr.qkey = RDMA_UDP_QKEY;
        mask |= IBV_QP_QKEY;
      } else {
        // Before a connection exists no access; after, what the CM agreed.
        attr.qp_access_flags = 0;
        if (r.qp_num != 0) {
          attr.qp_access_flags = IBV_ACCESS_REMOTE_WRITE;
          if (r.responder_resources != 0) attr.qp_access_flags |= IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
        }
        mask |= IBV_QP_ACCESS_FLAGS;
      }
      return 0;
    case IBV_QPS_RTR:
      if (r.qp_num == 0) return fail(EINVAL);
      attr.path_mtu = device().mtu;
      attr.dest_qp_num = r.qp_num;
      attr.rq_psn = id.local_psn;
      attr.max_dest_rd_atomic = r.responder_resources;
      attr.min_rnr_timer = 0;
      attr.ah_attr = {};
      attr.ah_attr.is_global = 1;
      attr.ah_attr.grh.dgid = id.id.route.addr.addr.ibaddr.dgid;
      attr.ah_attr.grh.sgid_index = 0;
      attr.ah_attr.grh.hop_limit = 64;
      attr.ah_attr.grh.traffic_class = id.tos;
      attr.ah_attr.port_num = attr.port_num = id.id.port_num != 0 ? id.id.port_num : 1;
      mask = IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
             IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER;
      return 0;
    case IBV_QPS_RTS:
      if (r.qp_num == 0) return fail(EINVAL);
      attr.sq_psn = r.psn;
      attr.retry_cnt = id.retry_count;
      attr.rnr_retry = r.rnr_retry_count;
      attr.max_rd_atomic = r.initiator_depth;
      attr.timeout = id.ack_timeout != 0 ? id.ack_timeout : 19;
      mask = IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC |
             IBV_QP_TIMEOUT;
      return 0;
    default:
      return fail(EINVAL);
  }
}

int move_qp_to_rts(FfCmId& id) {
  for (ibv_qp_state state : {IBV_QPS_INIT, IBV_QPS_RTR, IBV_QPS_RTS}) {
    ibv_qp_attr attr{};
    attr.qp_state = state;
    int mask = 0;
    if (init_qp_attr(id, attr, mask) != 0) return -1;
    if (int e = ibv_modify_qp(id.id.qp, &attr, mask); e != 0) return fail(e);
  }
  return 0;
}

// A sync id keeps its last event in id->event (public: apps read it),
// acked with the next (librdmacm's ucma_complete).
int wait_sync(FfCmId& id) {
  if (id.id.event != nullptr) {
    rdma_ack_cm_event(id.id.event);
    id.id.event = nullptr;
  }
  if (rdma_get_cm_event(id.id.channel, &id.id.event) != 0) return -1;
  int status = id.id.event->status;
  if (status == 0) return 0;
  if (id.id.event->event == RDMA_CM_EVENT_REJECTED) return fail(ECONNREFUSED);
  return fail(status < 0 ? -status : status);
}

}  // namespace ff::verbs::cm

extern "C" {

rdma_event_channel* rdma_create_event_channel(void) {
  if (int e = RouterLink::get().ensure_connected(); e != 0) return fail_ptr<rdma_event_channel>(ENODEV);
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::CmCreateChannelReply>(fbb, proto::CreateCmCreateChannel(fbb), "rdma_cm channel", 1);
  if (!reply) return fail_ptr<rdma_event_channel>(reply.error);
  auto* ch = static_cast<FfCmChannel*>(std::calloc(1, sizeof(FfCmChannel)));
  if (ch == nullptr) return fail_ptr<rdma_event_channel>(ENOMEM);
  ch->channel.fd = reply.release_fd(0);
  ch->handle = reply->channel();
  return &ch->channel;
}

void rdma_destroy_event_channel(rdma_event_channel* channel) {
  FfCmChannel* ch = to_ff(channel);
  flatbuffers::FlatBufferBuilder fbb;
  request<void>(fbb, proto::CreateCmDestroyChannel(fbb, ch->handle));
  ::close(ch->channel.fd);
  std::free(ch);
}

int rdma_create_id(rdma_event_channel* channel, rdma_cm_id** out, void* context, rdma_port_space ps) {
  if (out == nullptr) return fail(EINVAL);
  bool sync = channel == nullptr;
  if (sync && (channel = rdma_create_event_channel()) == nullptr) return -1;
  auto qp_type = static_cast<uint8_t>(ps == RDMA_PS_UDP || ps == RDMA_PS_IPOIB ? IBV_QPT_UD : IBV_QPT_RC);
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::CmCreateIdReply>(
      fbb, proto::CreateCmCreateId(fbb, to_ff(channel)->handle, static_cast<uint16_t>(ps), qp_type), "rdma_create_id");
  FfCmId* id = reply ? new_id(channel, context, ps, reply->id()) : nullptr;
  if (id == nullptr) {
    if (sync) rdma_destroy_event_channel(channel);
    return fail(reply ? ENOMEM : reply.error);
  }
  id->sync = sync;
  *out = &id->id;
  return 0;
}

int rdma_destroy_id(rdma_cm_id* cm_id) {
  FfCmId* id = to_ff(cm_id);
  if (cm_id->event != nullptr) rdma_ack_cm_event(cm_id->event);
  cm_id->event = nullptr;
  {
    // librdmacm waits for every event it handed out for the id to be acked.
    std::unique_lock lock(id->mu);
    id->acked.wait(lock, [id] { return id->events_completed >= id->events_reported; });
  }
  flatbuffers::FlatBufferBuilder fbb;
  request<void>(fbb, proto::CreateCmDestroyId(fbb, id->handle));
  if (id->sync) rdma_destroy_event_channel(cm_id->channel);
  free_id(id);
  return 0;
}

int rdma_bind_addr(rdma_cm_id* cm_id, sockaddr* addr) {
  if (addr == nullptr) return fail(EINVAL);
  if (addr->sa_family != AF_INET) return fail(addr->sa_family == AF_INET6 ? EAFNOSUPPORT : EINVAL);
  FfCmId* id = to_ff(cm_id);
  const auto* in = reinterpret_cast<const sockaddr_in*>(addr);
  proto::CmAddr a(ntohl(in->sin_addr.s_addr), ntohs(in->sin_port));
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::CmAddrReply>(fbb, proto::CreateCmBindAddr(fbb, id->handle, &a), "rdma_bind_addr");
  if (!reply) return fail(reply.error);
  cm_id->route.addr.src_sin = to_sockaddr(reply->src());
  cm_id->route.addr.addr.ibaddr.sgid = gid_of(cm_id->route.addr.src_sin);
  // A wildcard (0.0.0.0, or loopback, as the kernel takes it) names no device yet.
  if (in->sin_addr.s_addr != INADDR_ANY && (ntohl(in->sin_addr.s_addr) >> 24) != 127) attach_device(*id);
  return 0;
}

int rdma_listen(rdma_cm_id* cm_id, int backlog) {
  FfCmId* id = to_ff(cm_id);
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::CmAddrReply>(fbb, proto::CreateCmListen(fbb, id->handle, backlog), "rdma_listen");
  if (!reply) return fail(reply.error);
  cm_id->route.addr.src_sin = to_sockaddr(reply->src());
  return 0;
}

int rdma_resolve_addr(rdma_cm_id* cm_id, sockaddr* src, sockaddr* dst, int timeout_ms) {
  if (dst == nullptr || dst->sa_family != AF_INET) return fail(dst != nullptr && dst->sa_family == AF_INET6 ? EAFNOSUPPORT : EINVAL);
  if (src != nullptr && src->sa_family != AF_INET) return fail(EINVAL);
  FfCmId* id = to_ff(cm_id);
  const auto* d = reinterpret_cast<const sockaddr_in*>(dst);
  proto::CmAddr to(ntohl(d->sin_addr.s_addr), ntohs(d->sin_port)), from;
  if (src != nullptr) {
    const auto* s = reinterpret_cast<const sockaddr_in*>(src);
    from = proto::CmAddr(ntohl(s->sin_addr.s_addr), ntohs(s->sin_port));
  }
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::CmAddrReply>(
      fbb, proto::CreateCmResolveAddr(fbb, id->handle, src != nullptr, &from, &to, timeout_ms), "rdma_resolve_addr");
  if (!reply) return fail(reply.error);
  address_call_done(*id, reply.body);
  return id->sync ? wait_sync(*id) : 0;
}

int rdma_resolve_route(rdma_cm_id* cm_id, int /*timeout_ms*/) {
  FfCmId* id = to_ff(cm_id);
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<void>(fbb, proto::CreateCmResolveRoute(fbb, id->handle), "rdma_resolve_route");
  if (!reply) return fail(reply.error);
  return id->sync ? wait_sync(*id) : 0;
}

int rdma_get_cm_event(rdma_event_channel* channel, rdma_cm_event** event) {
  if (channel == nullptr || event == nullptr) return fail(EINVAL);
  return next_event(*to_ff(channel), event);
}

int rdma_ack_cm_event(rdma_cm_event* event) {
  if (event == nullptr) return fail(EINVAL);
  auto* ev = reinterpret_cast<FfCmEvent*>(event);
  if (FfCmId* id = ev->counted) {
    std::lock_guard lock(id->mu);
    ++id->events_completed;
    id->acked.notify_all();
  }
  delete ev;
  return 0;
}

int rdma_migrate_id(rdma_cm_id* cm_id, rdma_event_channel* channel) {
  FfCmId* id = to_ff(cm_id);
  bool to_sync = channel == nullptr;
  if (to_sync && id->sync) return fail(EINVAL);
  if (to_sync && (channel = rdma_create_event_channel()) == nullptr) return -1;
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<void>(fbb, proto::CreateCmMigrateId(fbb, id->handle, to_ff(channel)->handle), "rdma_migrate_id");
  if (!reply) {
    if (to_sync) rdma_destroy_event_channel(channel);
    return fail(reply.error);
  }
  {
    std::unique_lock lock(id->mu);  // events read on the old channel are acked first
    id->acked.wait(lock, [id, cm_id] { return id->events_completed + (cm_id->event != nullptr) >= id->events_reported; });
  }
  if (id->sync) {
    if (cm_id->event != nullptr) rdma_ack_cm_event(cm_id->event);
    cm_id->event = nullptr;
    rdma_destroy_event_channel(cm_id->channel);
  }
  id->sync = to_sync;
  id->channel = to_ff(channel);
  cm_id->channel = channel;
  return 0;
}

int rdma_init_qp_attr(rdma_cm_id* cm_id, ibv_qp_attr* qp_attr, int* qp_attr_mask) {
  if (qp_attr == nullptr || qp_attr_mask == nullptr) return fail(EINVAL);
  return init_qp_attr(*to_ff(cm_id), *qp_attr, *qp_attr_mask);
}

}  // extern "C"
