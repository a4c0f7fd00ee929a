// The rest of librdmacm's API over ids (see rdma_cm.h): address info,
// endpoints (rdma_create_ep, rdma_get_request), SRQs, options, devices,
// event names, and the calls this release does not serve.
#include <arpa/inet.h>
#include <netdb.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <rdma/rdma_verbs.h>

#include "libffverbs/rdma_cm.h"
#include "libffverbs/request.h"
#include "libffverbs/shim.h"

namespace proto = ff::proto;
using namespace ff::verbs;
using namespace ff::verbs::cm;

namespace {

sockaddr* copy_address(const sockaddr_in& a) {
  auto* out = static_cast<sockaddr_in*>(std::calloc(1, sizeof(sockaddr_in)));
  if (out != nullptr) *out = a;
  return reinterpret_cast<sockaddr*>(out);
}

}  // namespace

extern "C" {

// IPv4 only (the virtual IPs); names resolve through getaddrinfo(3). With
// RAI_PASSIVE the address is the source, otherwise the destination, as
// librdmacm fills it without ibacm (no route); the hints' own addresses fill
// what the name did not (with neither node nor service, they are all:
// libfabric's verbs provider asks so).
int rdma_getaddrinfo(const char* node, const char* service, const rdma_addrinfo* hints, rdma_addrinfo** res) {
  if (res == nullptr) return fail(EINVAL);
  int flags = hints != nullptr ? hints->ai_flags : 0;
  if (hints != nullptr && hints->ai_family != AF_UNSPEC && hints->ai_family != AF_INET) return fail(EAFNOSUPPORT);
  auto* ai = static_cast<rdma_addrinfo*>(std::calloc(1, sizeof(rdma_addrinfo)));
  if (ai == nullptr) return fail(ENOMEM);
  ai->ai_flags = flags;
  ai->ai_family = AF_INET;
  ai->ai_port_space = hints != nullptr && hints->ai_port_space != 0 ? hints->ai_port_space : RDMA_PS_TCP;
  ai->ai_qp_type = hints != nullptr && hints->ai_qp_type != 0 ? hints->ai_qp_type
                   : ai->ai_port_space == RDMA_PS_UDP ? IBV_QPT_UD
                                                       : IBV_QPT_RC;
  auto put = [](sockaddr*& slot, socklen_t& len, const sockaddr_in& a) {
    slot = copy_address(a);
    len = slot != nullptr ? sizeof(sockaddr_in) : 0;
  };
  if (node != nullptr || service != nullptr) {
    addrinfo want{}, *found = nullptr;
    want.ai_family = AF_INET;
    want.ai_flags = (flags & RAI_PASSIVE) != 0 ? AI_PASSIVE : 0;
    if ((flags & RAI_NUMERICHOST) != 0) want.ai_flags |= AI_NUMERICHOST;
    if (int e = ::getaddrinfo(node, service, &want, &found); e != 0) {
      std::free(ai);
      return e;
    }
    sockaddr_in addr{};
    std::memcpy(&addr, found->ai_addr, sizeof addr);
    ::freeaddrinfo(found);
    if ((flags & RAI_PASSIVE) != 0) put(ai->ai_src_addr, ai->ai_src_len, addr);
    else put(ai->ai_dst_addr, ai->ai_dst_len, addr);
  }
  auto from_hints = [&](const sockaddr* h, sockaddr*& slot, socklen_t& len) {
    if (slot == nullptr && h != nullptr && h->sa_family == AF_INET) put(slot, len, *reinterpret_cast<const sockaddr_in*>(h));
  };
  if (hints != nullptr) {
    from_hints(hints->ai_src_addr, ai->ai_src_addr, ai->ai_src_len);
    from_hints(hints->ai_dst_addr, ai->ai_dst_addr, ai->ai_dst_len);
  }
  if (ai->ai_src_addr == nullptr && ai->ai_dst_addr == nullptr) {
    rdma_freeaddrinfo(ai);
    return fail(node == nullptr && service == nullptr ? EINVAL : ENOMEM);
  }
  *res = ai;
  return 0;
}

void rdma_freeaddrinfo(rdma_addrinfo* res) {
  while (res != nullptr) {
    rdma_addrinfo* next = res->ai_next;
    std::free(res->ai_src_addr);
    std::free(res->ai_dst_addr);
    std::free(res->ai_src_canonname);
    std::free(res->ai_dst_canonname);
    std::free(res->ai_route);
    std::free(res->ai_connect);
    std::free(res);
    res = next;
  }
}

// A synchronous id, bound (passive) or resolved to its destination
// (active), with a QP when qp_init_attr is given (a passive endpoint keeps
// the attributes for the ids rdma_get_request hands out).
int rdma_create_ep(rdma_cm_id** out, rdma_addrinfo* res, ibv_pd* pd, ibv_qp_init_attr* qp_init_attr) {
  if (out == nullptr || res == nullptr) return fail(EINVAL);
  rdma_cm_id* cm_id = nullptr;
  if (rdma_create_id(nullptr, &cm_id, nullptr, static_cast<rdma_port_space>(res->ai_port_space)) != 0) return -1;
  FfCmId* id = to_ff(cm_id);
  cm_id->qp_type = static_cast<ibv_qp_type>(res->ai_qp_type);
  int rc = 0;
  if ((res->ai_flags & RAI_PASSIVE) != 0) {
    rc = rdma_bind_addr(cm_id, res->ai_src_addr);
    if (rc == 0 && pd != nullptr) cm_id->pd = pd;
    if (rc == 0 && qp_init_attr != nullptr) {
      id->listen_qp_attr = static_cast<ibv_qp_init_attr*>(std::malloc(sizeof(ibv_qp_init_attr)));
      if (id->listen_qp_attr == nullptr) {
        rc = fail(ENOMEM);
      } else {
        *id->listen_qp_attr = *qp_init_attr;
        id->listen_qp_attr->qp_type = static_cast<ibv_qp_type>(res->ai_qp_type);
      }
    }
  } else {
    rc = rdma_resolve_addr(cm_id, res->ai_src_addr, res->ai_dst_addr, 2000);
    if (rc == 0) rc = rdma_resolve_route(cm_id, 2000);
    if (rc == 0 && qp_init_attr != nullptr) {
      qp_init_attr->qp_type = static_cast<ibv_qp_type>(res->ai_qp_type);
      rc = rdma_create_qp(cm_id, pd, qp_init_attr);
    }
  }
  if (rc != 0) {
    int e = errno;
    rdma_destroy_ep(cm_id);
    return fail(e);
  }
  *out = cm_id;
  return 0;
}

void rdma_destroy_ep(rdma_cm_id* cm_id) {
  if (cm_id->qp != nullptr) rdma_destroy_qp(cm_id);
  if (cm_id->srq != nullptr) rdma_destroy_srq(cm_id);
  std::free(to_ff(cm_id)->listen_qp_attr);
  to_ff(cm_id)->listen_qp_attr = nullptr;
  rdma_destroy_id(cm_id);
}

// The next connection request of a synchronous listener; the new id is
// synchronous too, with the request as its event.
int rdma_get_request(rdma_cm_id* listen, rdma_cm_id** out) {
  FfCmId* l = to_ff(listen);
  if (!l->sync || out == nullptr) return fail(EINVAL);
  if (listen->event != nullptr) {
    rdma_ack_cm_event(listen->event);
    listen->event = nullptr;
  }
  rdma_cm_event* event = nullptr;
  if (rdma_get_cm_event(listen->channel, &event) != 0) return -1;
  auto refuse = [&](int e) {
    listen->event = event;
    return fail(e);
  };
  if (event->event == RDMA_CM_EVENT_REJECTED) return refuse(ECONNREFUSED);
  if (event->status != 0) return refuse(-event->status);
  if (event->event != RDMA_CM_EVENT_CONNECT_REQUEST) return refuse(EINVAL);
  if (rdma_migrate_id(event->id, nullptr) != 0) return refuse(errno);
  if (l->listen_qp_attr != nullptr) {
    ibv_qp_init_attr attr = *l->listen_qp_attr;
    if (rdma_create_qp(event->id, listen->pd, &attr) != 0) return refuse(errno);
  }
  *out = event->id;
  (*out)->event = event;
  return 0;
}

int rdma_create_srq_ex(rdma_cm_id* cm_id, ibv_srq_init_attr_ex* attr) {
  if (cm_id == nullptr || attr == nullptr || cm_id->verbs == nullptr) return fail(EINVAL);
  if ((attr->comp_mask & IBV_SRQ_INIT_ATTR_TYPE) != 0 && attr->srq_type != IBV_SRQT_BASIC) return fail(EOPNOTSUPP);
  ibv_pd* pd = (attr->comp_mask & IBV_SRQ_INIT_ATTR_PD) != 0 && attr->pd != nullptr ? attr->pd : cm_id->pd;
  ibv_srq_init_attr plain{};
  plain.srq_context = attr->srq_context;
  plain.attr = attr->attr;
  ibv_srq* srq = ibv_create_srq(pd, &plain);
  if (srq == nullptr) return -1;
  attr->attr = plain.attr;
  cm_id->srq = srq;
  return 0;
}

int rdma_create_srq(rdma_cm_id* cm_id, ibv_pd* pd, ibv_srq_init_attr* attr) {
  if (attr == nullptr) return fail(EINVAL);
  ibv_srq_init_attr_ex ex{};
  ex.srq_context = attr->srq_context;
  ex.attr = attr->attr;
  ex.comp_mask = IBV_SRQ_INIT_ATTR_PD;
  ex.pd = pd;
  if (rdma_create_srq_ex(cm_id, &ex) != 0) return -1;
  attr->attr = ex.attr;
  return 0;
}

void rdma_destroy_srq(rdma_cm_id* cm_id) {
  if (cm_id->srq != nullptr) ibv_destroy_srq(cm_id->srq);
  cm_id->srq = nullptr;
}

__be16 rdma_get_src_port(rdma_cm_id* id) {
  return id->route.addr.src_addr.sa_family == AF_INET ? id->route.addr.src_sin.sin_port : 0;
}
__be16 rdma_get_dst_port(rdma_cm_id* id) {
  return id->route.addr.dst_addr.sa_family == AF_INET ? id->route.addr.dst_sin.sin_port : 0;
}

// TOS and the ACK timeout shape the QP's attributes; AFONLY concerns IPv6
// only; REUSEADDR is the router's (ports are its). IB path records are not
// served (ENOSYS).
int rdma_set_option(rdma_cm_id* cm_id, int level, int optname, void* optval, size_t optlen) {
  if (cm_id == nullptr || optval == nullptr) return fail(EINVAL);
  FfCmId* id = to_ff(cm_id);
  if (level == RDMA_OPTION_ID) {
    switch (optname) {
      case RDMA_OPTION_ID_TOS:
        if (optlen != sizeof(uint8_t)) return fail(EINVAL);
        id->tos = *static_cast<uint8_t*>(optval);
        return 0;
      case RDMA_OPTION_ID_AFONLY:
        return optlen == sizeof(int) ? 0 : fail(EINVAL);
      case RDMA_OPTION_ID_ACK_TIMEOUT:
        if (optlen != sizeof(uint8_t)) return fail(EINVAL);
        id->ack_timeout = *static_cast<uint8_t*>(optval);
        return 0;
      case RDMA_OPTION_ID_REUSEADDR: {
        if (optlen != sizeof(int)) return fail(EINVAL);
        flatbuffers::FlatBufferBuilder fbb;
        auto reply = request<void>(fbb, proto::CreateCmSetReuseAddr(fbb, id->handle, *static_cast<int*>(optval) != 0),
                                   "rdma_set_option(REUSEADDR)");
        return reply ? 0 : fail(reply.error);
      }
      default:
        break;
    }
  }
  return fail(ENOSYS);
}

ibv_context** rdma_get_devices(int* num_devices) {
  auto** list = static_cast<ibv_context**>(std::calloc(2, sizeof(ibv_context*)));
  if (list == nullptr) return ff::verbs::fail_ptr<ibv_context*>(ENOMEM);
  list[0] = cm_device_context();
  if (num_devices != nullptr) *num_devices = list[0] != nullptr ? 1 : 0;
  if (list[0] == nullptr) {
    std::free(list);
    return nullptr;
  }
  return list;
}

void rdma_free_devices(ibv_context** list) { std::free(list); }

const char* rdma_event_str(rdma_cm_event_type event) {
  static const char* const names[] = {
      "RDMA_CM_EVENT_ADDR_RESOLVED",    "RDMA_CM_EVENT_ADDR_ERROR",       "RDMA_CM_EVENT_ROUTE_RESOLVED",
      "RDMA_CM_EVENT_ROUTE_ERROR",      "RDMA_CM_EVENT_CONNECT_REQUEST",  "RDMA_CM_EVENT_CONNECT_RESPONSE",
      "RDMA_CM_EVENT_CONNECT_ERROR",    "RDMA_CM_EVENT_UNREACHABLE",      "RDMA_CM_EVENT_REJECTED",
      "RDMA_CM_EVENT_ESTABLISHED",      "RDMA_CM_EVENT_DISCONNECTED",     "RDMA_CM_EVENT_DEVICE_REMOVAL",
      "RDMA_CM_EVENT_MULTICAST_JOIN",   "RDMA_CM_EVENT_MULTICAST_ERROR",  "RDMA_CM_EVENT_ADDR_CHANGE",
      "RDMA_CM_EVENT_TIMEWAIT_EXIT"};
  auto i = static_cast<unsigned>(event);
  return i < sizeof names / sizeof names[0] ? names[i] : "UNKNOWN EVENT";
}

// Not served yet (README): rdma_notify, and ECE (the virtual device
// negotiates no vendor options).
int rdma_notify(rdma_cm_id*, ibv_event_type) { return fail(ENOSYS); }
int rdma_get_remote_ece(rdma_cm_id*, ibv_ece*) { return fail(EOPNOTSUPP); }
int rdma_set_local_ece(rdma_cm_id*, ibv_ece*) { return fail(EOPNOTSUPP); }
int rdma_reject_ece(rdma_cm_id*, const void*, uint8_t) { return fail(EOPNOTSUPP); }

// rsockets live inside librdmacm and reach into its private id structures,
// which the shim's ids are not (left to librdmacm, rstream crashed): the
// entry point refuses, so rstream, riostream and librspreload say why.
int rsocket(int, int, int) {
  static std::once_flag said;
  std::call_once(said, [] {
    std::fprintf(stderr, "libffverbs: rsocket is not served through the router (ENOSYS); connect with "
                         "rdma_cm or verbs\n");
  });
  return fail(ENOSYS);
}

}  // extern "C"
