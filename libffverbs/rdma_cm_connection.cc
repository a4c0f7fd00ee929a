// librdmacm's QPs and connections: rdma_create_qp, rdma_connect,
// rdma_accept, rdma_reject, rdma_establish, rdma_disconnect (see rdma_cm.h).
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "libffverbs/rdma_cm.h"
#include "libffverbs/request.h"

namespace proto = ff::proto;
using namespace ff::verbs;
using namespace ff::verbs::cm;

namespace {

// librdmacm makes the CQs a QP lacks, each with its own completion channel.
int make_cqs(rdma_cm_id* id, ibv_qp_init_attr_ex& attr) {
  auto make = [&](ibv_comp_channel*& channel, ibv_cq*& cq, uint32_t depth) {
    channel = ibv_create_comp_channel(id->verbs);
    if (channel == nullptr) return false;
    cq = ibv_create_cq(id->verbs, static_cast<int>(depth), id, channel, 0);
    return cq != nullptr;
  };
  uint32_t recv_depth = attr.recv_cq != nullptr || id->recv_cq != nullptr ? 0 : attr.cap.max_recv_wr;
  uint32_t send_depth = attr.send_cq != nullptr || id->send_cq != nullptr ? 0 : attr.cap.max_send_wr;
  if (recv_depth != 0 && !make(id->recv_cq_channel, id->recv_cq, recv_depth)) return -1;
  if (send_depth != 0 && !make(id->send_cq_channel, id->send_cq, send_depth)) return -1;
  if (attr.recv_cq == nullptr) attr.recv_cq = id->recv_cq;
  if (attr.send_cq == nullptr) attr.send_cq = id->send_cq;
  return 0;
}

void destroy_cqs(rdma_cm_id* id) {
  if (id->recv_cq != nullptr) ibv_destroy_cq(id->recv_cq);
  if (id->recv_cq_channel != nullptr) ibv_destroy_comp_channel(id->recv_cq_channel);
  if (id->send_cq != nullptr && id->send_cq != id->recv_cq) ibv_destroy_cq(id->send_cq);
  if (id->send_cq_channel != nullptr && id->send_cq_channel != id->recv_cq_channel)
    ibv_destroy_comp_channel(id->send_cq_channel);
  id->recv_cq = id->send_cq = nullptr;
  id->recv_cq_channel = id->send_cq_channel = nullptr;
}

// INIT (and for UD, RTR and RTS at once): what rdma_create_qp leaves.
int move_new_qp(FfCmId& id) {
  ibv_qp_attr attr{};
  attr.qp_state = IBV_QPS_INIT;
  int mask = 0;
  if (init_qp_attr(id, attr, mask) != 0) return -1;
  if (int e = ibv_modify_qp(id.id.qp, &attr, mask); e != 0) return fail(e);
  if (id.id.qp_type != IBV_QPT_UD) return 0;
  attr = {};
  attr.qp_state = IBV_QPS_RTR;
  if (int e = ibv_modify_qp(id.id.qp, &attr, IBV_QP_STATE); e != 0) return fail(e);
  attr.qp_state = IBV_QPS_RTS;
  attr.sq_psn = 0;
  if (int e = ibv_modify_qp(id.id.qp, &attr, IBV_QP_STATE | IBV_QP_SQ_PSN); e != 0) return fail(e);
  return 0;
}

// The resources this side offers (rdma_connect, rdma_accept): 0xFF means
// the device's most; more than the device has is EINVAL.
int offered(uint8_t value, uint8_t device_max, uint8_t& out) {
  if (value == RDMA_MAX_RESP_RES) value = device_max;
  if (value > device_max) return fail(EINVAL);
  out = value;
  return 0;
}

// Sends this side's half of the handshake (CmConnect or CmAccept, made by
// `make`): its QP, the resources it settled on, its private data.
template <typename Make>
int send_half(FfCmId& id, const rdma_conn_param* param, const char* what, Make make) {
  const rdma_cm_id& cm_id = id.id;
  uint32_t qp_num = cm_id.qp != nullptr ? cm_id.qp->qp_num : param->qp_num;
  uint8_t srq = cm_id.srq != nullptr || (param != nullptr && param->srq != 0) ? 1 : 0;
  proto::CmConnParam wire(id.responder_resources, id.initiator_depth, param != nullptr ? param->flow_control : 0,
                          id.retry_count, id.rnr_retry_count, srq, qp_num);
  flatbuffers::FlatBufferBuilder fbb;
  auto data = param != nullptr && param->private_data_len != 0
                  ? fbb.CreateVector(static_cast<const uint8_t*>(param->private_data), param->private_data_len)
                  : 0;
  auto reply = request<void>(fbb, make(fbb, id.handle, &wire, data), what);
  return reply ? 0 : fail(reply.error);
}

}  // namespace

extern "C" {

int rdma_create_qp_ex(rdma_cm_id* cm_id, ibv_qp_init_attr_ex* attr) {
  if (cm_id == nullptr || attr == nullptr || cm_id->qp != nullptr) return fail(EINVAL);
  FfCmId* id = to_ff(cm_id);
  if ((attr->comp_mask & IBV_QP_INIT_ATTR_PD) == 0 || attr->pd == nullptr) {
    attr->pd = cm_id->pd;
    attr->comp_mask |= IBV_QP_INIT_ATTR_PD;
  } else if (cm_id->verbs != attr->pd->context) {
    return fail(EINVAL);
  }
  if ((cm_id->recv_cq != nullptr && attr->recv_cq != nullptr && cm_id->recv_cq != attr->recv_cq) ||
      (cm_id->send_cq != nullptr && attr->send_cq != nullptr && cm_id->send_cq != attr->send_cq))
    return fail(EINVAL);
  if (attr->pd == nullptr) return fail(EINVAL);
  if (make_cqs(cm_id, *attr) != 0) {
    int e = errno;
    destroy_cqs(cm_id);
    return fail(e);
  }
  if (attr->srq == nullptr) attr->srq = cm_id->srq;
  ibv_qp* qp = ibv_create_qp_ex(cm_id->verbs, attr);
  if (qp == nullptr) {
    int e = errno;
    destroy_cqs(cm_id);
    return fail(e);
  }
  cm_id->qp = qp;
  if (move_new_qp(*id) != 0) {
    int e = errno;
    ibv_destroy_qp(qp);
    cm_id->qp = nullptr;
    destroy_cqs(cm_id);
    return fail(e);
  }
  cm_id->pd = qp->pd;
  return 0;
}

int rdma_create_qp(rdma_cm_id* cm_id, ibv_pd* pd, ibv_qp_init_attr* qp_init_attr) {
  if (cm_id == nullptr || qp_init_attr == nullptr) return fail(EINVAL);
  ibv_qp_init_attr_ex attr{};
  std::memcpy(&attr, qp_init_attr, sizeof *qp_init_attr);
  attr.comp_mask = IBV_QP_INIT_ATTR_PD;
  attr.pd = pd != nullptr ? pd : cm_id->pd;
  if (rdma_create_qp_ex(cm_id, &attr) != 0) return -1;
  qp_init_attr->send_cq = attr.send_cq;
  qp_init_attr->recv_cq = attr.recv_cq;
  qp_init_attr->srq = attr.srq;
  qp_init_attr->cap = attr.cap;
  return 0;
}

void rdma_destroy_qp(rdma_cm_id* cm_id) {
  if (cm_id->qp != nullptr) ibv_destroy_qp(cm_id->qp);
  cm_id->qp = nullptr;
  destroy_cqs(cm_id);  // the CQs rdma_create_qp made (an app's own are not the id's)
}

int rdma_connect(rdma_cm_id* cm_id, rdma_conn_param* param) {
  FfCmId* id = to_ff(cm_id);
  if (param == nullptr && cm_id->qp == nullptr) return fail(EINVAL);
  if (cm_id->verbs == nullptr) return fail(EINVAL);  // no address resolved
  if (param != nullptr) {
    if (cm_id->ps == RDMA_PS_TCP || cm_id->ps == RDMA_PS_IB) {
      // librdmacm clamps to the device (0xFF: its most) and refuses more.
      uint8_t dev_rr = id->max_responder_resources, dev_id = id->max_initiator_depth;
      if (offered(param->responder_resources, dev_rr, id->responder_resources) != 0 ||
          offered(param->initiator_depth, dev_id, id->initiator_depth) != 0)
        return -1;
    }
    id->retry_count = std::min<uint8_t>(param->retry_count, 7);
    id->rnr_retry_count = std::min<uint8_t>(param->rnr_retry_count, 7);
  }
  if (send_half(*id, param, "rdma_connect", proto::CreateCmConnect) != 0) return -1;
  return id->sync ? wait_sync(*id) : 0;
}

int rdma_accept(rdma_cm_id* cm_id, rdma_conn_param* param) {
  FfCmId* id = to_ff(cm_id);
  if (param == nullptr && cm_id->qp == nullptr) return fail(EINVAL);
  // What this side answers with: the request's values, within the device's
  // (0xFF, or no param: as much of what was asked as the device has).
  uint8_t dev_rr = id->max_responder_resources, dev_id = id->max_initiator_depth;
  uint8_t rr = param != nullptr ? param->responder_resources : uint8_t{RDMA_MAX_RESP_RES};
  uint8_t depth = param != nullptr ? param->initiator_depth : uint8_t{RDMA_MAX_INIT_DEPTH};
  id->responder_resources = rr == RDMA_MAX_RESP_RES ? std::min(id->remote.responder_resources, dev_rr) : rr;
  id->initiator_depth = depth == RDMA_MAX_INIT_DEPTH ? std::min(id->remote.initiator_depth, dev_id) : depth;
  id->retry_count = id->remote.retry_count;
  id->rnr_retry_count = param != nullptr ? std::min<uint8_t>(param->rnr_retry_count, 7) : 7;
  bool datagram = cm_id->qp_type == IBV_QPT_UD;
  if (cm_id->qp != nullptr && !datagram) {
    // librdmacm's overrides: RTR and RTS with what this side accepts.
    id->remote.responder_resources = id->responder_resources;
    id->remote.initiator_depth = id->initiator_depth;
    if (move_qp_to_rts(*id) != 0) return -1;
  }
  if (send_half(*id, param, "rdma_accept", proto::CreateCmAccept) != 0) {
    int e = errno;
    ibv_qp_attr err{};
    err.qp_state = IBV_QPS_ERR;
    if (cm_id->qp != nullptr) ibv_modify_qp(cm_id->qp, &err, IBV_QP_STATE);
    return fail(e);
  }
  return id->sync && !datagram ? wait_sync(*id) : 0;  // UD: the SIDR reply is all
}

int rdma_reject(rdma_cm_id* cm_id, const void* private_data, uint8_t private_data_len) {
  FfCmId* id = to_ff(cm_id);
  flatbuffers::FlatBufferBuilder fbb;
  auto data = private_data != nullptr && private_data_len != 0
                  ? fbb.CreateVector(static_cast<const uint8_t*>(private_data), private_data_len)
                  : 0;
  auto reply = request<void>(fbb, proto::CreateCmReject(fbb, id->handle, data), "rdma_reject");
  return reply ? 0 : fail(reply.error);
}

int rdma_establish(rdma_cm_id* cm_id) {
  FfCmId* id = to_ff(cm_id);
  if (cm_id->qp != nullptr && move_qp_to_rts(*id) != 0) return -1;
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<void>(fbb, proto::CreateCmEstablish(fbb, id->handle), "rdma_establish");
  return reply ? 0 : fail(reply.error);
}

int rdma_disconnect(rdma_cm_id* cm_id) {
  FfCmId* id = to_ff(cm_id);
  if (cm_id->qp != nullptr) {  // librdmacm flushes the QP first
    ibv_qp_attr attr{};
    attr.qp_state = IBV_QPS_ERR;
    if (int e = ibv_modify_qp(cm_id->qp, &attr, IBV_QP_STATE); e != 0) return fail(e);
  }
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<void>(fbb, proto::CreateCmDisconnect(fbb, id->handle), "rdma_disconnect");
  return reply ? 0 : fail(reply.error);
}

}  // extern "C"
