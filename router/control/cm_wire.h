// rdma_cm's control messages <-> the connection manager's types.
#pragma once

#include <vector>

#include "proto/control_generated.h"
#include "router/cm/connection_manager.h"
#include "router/control/session.h"

namespace ff::router {

inline cm::Endpoint from_wire(const proto::CmAddr* a) {
  return a == nullptr ? cm::Endpoint{} : cm::Endpoint{a->ip(), a->port()};
}
inline proto::CmAddr to_wire(const cm::Endpoint& e) { return proto::CmAddr(e.ip, e.port); }

inline cm::ConnParam from_wire(const proto::CmConnParam* p) {
  if (p == nullptr) return {};
  return cm::ConnParam{p->responder_resources(), p->initiator_depth(), p->flow_control(), p->retry_count(),
                       p->rnr_retry_count(),     p->srq(),             p->qp_num()};
}
inline proto::CmConnParam to_wire(const cm::ConnParam& p) {
  return proto::CmConnParam(p.responder_resources, p.initiator_depth, p.flow_control, p.retry_count,
                            p.rnr_retry_count, p.srq, p.qp_num);
}

inline std::vector<uint8_t> bytes_of(const flatbuffers::Vector<uint8_t>* v) {
  return v == nullptr ? std::vector<uint8_t>{} : std::vector<uint8_t>(v->begin(), v->end());
}

inline CmIdObject* find_cm_id(Session& s, uint32_t handle) {
  return s.objects().find<CmIdObject>(handle, ObjectKind::kCmId);
}
inline CmChannelObject* find_cm_channel(Session& s, uint32_t handle) {
  return s.objects().find<CmChannelObject>(handle, ObjectKind::kCmChannel);
}

}  // namespace ff::router
