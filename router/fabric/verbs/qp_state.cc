// The verbs fabric's QP state (see engine.h): ibv_modify_qp carried out on
// the shadow QP with the virtual address translated to the device's, the
// core's hooks for ERR and RESET, and the device's asynchronous events.
#include <cerrno>
#include <cstring>
#include <utility>

#include "policy/tenant.h"
#include "router/fabric/verbs/engine.h"

namespace ff::router::verbs {

Status Engine::begin_modify(Qp& q, const ibv_qp_attr& attr, int mask, DeviceModify& out,
                            const std::optional<RemoteQp>* far) {
  if ((mask & IBV_QP_AV) != 0 && attr.ah_attr.is_global != 0 && !policy::ipv4_of_gid(attr.ah_attr.grh.dgid.raw))
    return Error{EINVAL, "ah_attr.grh.dgid must be an IPv4-mapped GID (::ffff:a.b.c.d) of a virtual IP"};
  // The device never sees a connection across tenants: a destination QP of
  // another tenant is refused; one that does not exist (yet) is not given
  // to the device at all, since the device would hand its number out to
  // whoever creates a QP next: the device connects to the sink QP instead,
  // and the router fails the QP's sends as toward no QP (peer_gone).
  // A destination on another host is the QP its router named, on its
  // device; it checked the tenant and the address (cluster.h).
  if (Status st = check_modify(q, attr, mask, /*dest_local=*/far == nullptr); !st) return st;
  out.dest_missing = (mask & IBV_QP_DEST_QPN) != 0 &&
                     (far != nullptr ? !far->has_value() : find_qp(attr.dest_qp_num) == nullptr);
  out.attr = attr;
  if ((mask & IBV_QP_PORT) != 0) out.attr.port_num = device_.port;
  if ((mask & IBV_QP_AV) != 0) out.attr.ah_attr = device_address(device_, attr.ah_attr);
  if (out.dest_missing) {
    out.attr.dest_qp_num = device_.sink_qp->qp_num;  // on this device, at this device's address
  } else if (far != nullptr && far->has_value()) {
    out.attr.dest_qp_num = (*far)->qpn;
    out.attr.ah_attr.grh.dgid = (*far)->gid;
  }
  out.from = q.state;
  q.device_changing = true;
  return {};
}

Status Engine::modify_device(Qp& q, const DeviceModify& change, int mask) const {
  ibv_qp_attr dev = change.attr;
  int rc = ibv_modify_qp(q.qp, &dev, mask);  // the error itself, not errno (which may be stale)
  if (rc == 0) return {};
  int e = rc > 0 ? rc : errno != 0 ? errno : EINVAL;
  return Error{e, "the device (" + device_.name + ") refused the change: " + std::strerror(e)};
}

Status Engine::end_modify(Qp& q, const ibv_qp_attr& attr, int mask, const DeviceModify& change, Status device) {
  q.device_changing = false;
  if (!device) return device;
  // The device reported an error for the QP meanwhile: it stays in ERR,
  // which is no failure when ERR is where it was going (the flushes of a
  // move to ERR are such reports).
  bool to_error = (mask & IBV_QP_STATE) != 0 && attr.qp_state == IBV_QPS_ERR;
  if (q.state != change.from && !(to_error && q.state == IBV_QPS_ERR))
    return Error{EINVAL, "the QP went to the error state while it was being modified"};
  if ((mask & IBV_QP_STATE) != 0) q.device_in_error = attr.qp_state == IBV_QPS_ERR;
  apply_modify(q, attr, mask);
  if (change.dest_missing) q.peer_gone = true;
  if ((mask & IBV_QP_DEST_QPN) != 0) q.far_router = change.dest_missing ? std::string{} : change.far_router;
  return {};
}

void Engine::fail_qps_toward(const std::string& router) {
  for (core::Qp* c : qps()) {
    auto& q = static_cast<Qp&>(*c);
    if (q.far_router == router && core::answers(q.state)) set_error(q);
    // Its QP numbers may now be anyone's: datagrams ask again.
    std::erase_if(q.far_destinations, [&](const auto& d) { return d.second.router == router; });
    far_senders_gone(q, [&](const FarSenderKey&, const FarSender& s) { return s.router == router; });
  }
}

ibv_ah_attr device_address(const Device& d, const ibv_ah_attr& virt) {
  // One router per device: every virtual address this router serves is the
  // device itself; which QP is meant is the QP number's business. (Virtual
  // addresses are always global: the virtual port is RoCE.) An InfiniBand
  // device routes by LID: its own, the one address it is given here.
  ibv_ah_attr a{};
  a.port_num = d.port;
  a.sl = virt.sl;
  a.static_rate = virt.static_rate;
  if (d.port_attr.link_layer == IBV_LINK_LAYER_INFINIBAND) a.dlid = d.port_attr.lid;
  a.is_global = 1;
  a.grh.dgid = d.gid;
  a.grh.sgid_index = static_cast<uint8_t>(d.gid_index);
  a.grh.hop_limit = virt.grh.hop_limit != 0 ? virt.grh.hop_limit : 64;
  a.grh.traffic_class = virt.grh.traffic_class;
  a.grh.flow_label = virt.grh.flow_label;
  return a;
}

void Engine::on_error(core::Qp& c) {
  auto& q = static_cast<Qp&>(c);
  if (std::exchange(q.device_in_error, true)) return;  // an ibv_modify_qp to ERR did it
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_ERR;
  ibv_modify_qp(q.qp, &a, IBV_QP_STATE);  // the device flushes what it holds
}

void Engine::on_reset(core::Qp& c) {
  auto& q = static_cast<Qp&>(c);
  // The device dropped whatever it held, without completions; so do we.
  drain_device_cqs(q);
  q.solicited.clear();
  q.far_router.clear();
}

void Engine::handle_async_events() {
  ibv_async_event ev;
  while (ibv_get_async_event(device_.ctx, &ev) == 0) {
    switch (ev.event_type) {
      case IBV_EVENT_QP_FATAL:
      case IBV_EVENT_QP_REQ_ERR:
      case IBV_EVENT_QP_ACCESS_ERR:
      case IBV_EVENT_SQ_DRAINED:
      case IBV_EVENT_COMM_EST:
      case IBV_EVENT_PATH_MIG:
      case IBV_EVENT_PATH_MIG_ERR: {
        Qp* q = find_qp(ev.element.qp->qp_num);
        if (q == nullptr) break;
        if (ev.event_type == IBV_EVENT_QP_FATAL || ev.event_type == IBV_EVENT_QP_REQ_ERR ||
            ev.event_type == IBV_EVENT_QP_ACCESS_ERR)
          enter_error(*q);
        q->ctx.async.raise(ev.event_type, q->tag);
        break;
      }
      case IBV_EVENT_CQ_ERR:
        // A shadow CQ overran (they are sized not to): its QP cannot go on.
        for (core::Qp* c : qps()) {
          auto* q = static_cast<Qp*>(c);
          if (q->device_send_cq == ev.element.cq || q->device_recv_cq == ev.element.cq) set_error(*q, true);
        }
        break;
      case IBV_EVENT_SRQ_ERR:
        for (core::Srq* s : srqs())
          if (static_cast<Srq*>(s)->srq == ev.element.srq) s->ctx.async.raise(ev.event_type, s->tag);
        break;
      case IBV_EVENT_SRQ_LIMIT_REACHED:     // the router keeps SRQ limits itself (ring plus device)
      case IBV_EVENT_QP_LAST_WQE_REACHED:  // and raises this one itself (enter_error)
        break;
      case IBV_EVENT_DEVICE_FATAL:
        for (core::Qp* q : qps()) enter_error(*q, /*fatal=*/true);
        break;
      default:
        break;  // port events: the virtual port never changes state
    }
    ibv_ack_async_event(&ev);
  }
}

}  // namespace ff::router::verbs
