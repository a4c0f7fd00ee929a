// What a CM message does where it arrives (connection_manager.h): the far
// end's half of each step of the handshake, and a router that goes away.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>

#include "router/cm/connection_manager.h"

namespace ff::router::cm {

void ConnectionManager::receive(const std::string& router, std::span<const std::byte> bytes) {
  std::string why;
  auto m = decode(bytes, why);
  if (!m || router.empty()) {
    ++messages_refused_;
    spdlog::warn("rdma_cm: dropped a message from router {}: {}", router, m ? "no router name" : why);
    return;
  }
  deliver(router, *m);
}

void ConnectionManager::deliver(const std::string& router, const Message& m) {
  switch (m.type) {
    case MessageType::kRequest: return on_request(router, m);
    case MessageType::kReply: return on_reply(router, m);
    case MessageType::kReadyToUse: return on_ready_to_use(router, m);
    case MessageType::kReject: return on_reject(router, m);
    case MessageType::kDisconnectRequest: return on_disconnect_request(router, m);
    case MessageType::kDisconnectReply: return on_disconnect_reply(router, m);
  }
}

std::shared_ptr<Id> ConnectionManager::addressee(const std::string& router, const Message& m) const {
  auto it = ids_.find(m.to);
  auto id = it == ids_.end() ? nullptr : it->second.lock();
  // Only the id's own far end may speak for its connection.
  if (!id || id->tenant_ != m.tenant || id->far_router_ != router || (id->far_ != 0 && id->far_ != m.from))
    return nullptr;
  return id;
}

void ConnectionManager::on_request(const std::string& router, const Message& m) {
  ++requests_received_;
  auto listener = listener_at(m.tenant, m.port_space, m.dst);
  const Handshake& h = m.port_space == RDMA_PS_UDP || m.port_space == RDMA_PS_IPOIB ? kDatagramHandshake
                                                                                       : kConnectedHandshake;
  Message answer = answer_to(m, MessageType::kReject);
  if (!listener) {
    answer.status = h.no_listener;
    return send(router, std::move(answer));
  }
  if (listener->pending_ >= listener->backlog_) {
    if (listener->waiting_.size() >= kMaxWaiting) {
      answer.unreachable = true;  // dropped: the requester's CM gives up
      return send(router, std::move(answer));
    }
    return wait_for_room(*listener, router, m);
  }
  request(*listener, router, m);
}

// Delivers request `m` to a new id beside `listener`.
void ConnectionManager::request(Id& listener, const std::string& router, const Message& m) {
  auto passive = create_id(listener.tenant_, listener.vip_, *listener.owner_, listener.channel_.lock(),
                           listener.port_space_, m.qp_type);
  std::optional<uint32_t> handle = listener.owner_->adopt(passive);
  if (!handle) {  // the listener's session holds all the objects it may
    Message no = answer_to(m, MessageType::kReject);
    no.status = passive->handshake().rejected;
    ids_.erase(passive->token_);
    return send(router, std::move(no));
  }
  passive->handle_ = *handle;
  passive->state_ = Id::State::kRequestReceived;
  passive->src_ = {m.dst.ip, listener.src_.port};
  passive->dst_ = m.src;
  passive->far_router_ = router;
  passive->far_ = m.from;
  passive->listener_ = listener.weak_from_this();
  requests_[{router, m.from}] = passive;
  ++listener.pending_;
  Event e = event_for(*passive, RDMA_CM_EVENT_CONNECT_REQUEST);
  e.listen_id = listener.handle_;
  e.param = as_seen_by_peer(m.param);
  e.private_data = padded(m.private_data, passive->handshake().request);
  e.remote_qp_num = m.param.qp_num;
  e.remote_psn = m.psn;
  e.about = passive;
  post(*passive, std::move(e));
}

void ConnectionManager::on_reply(const std::string& router, const Message& m) {
  auto active = addressee(router, m);
  if (!active || active->state_ != Id::State::kConnecting) return;  // it gave up: its REJ is on the way
  if (active->datagram()) {
    active->state_ = Id::State::kConnected;
    forget_far(*active);
    Event e = event_for(*active, RDMA_CM_EVENT_ESTABLISHED);
    e.private_data = padded(m.private_data, active->handshake().reply);
    e.remote_qp_num = m.param.qp_num;
    return post(*active, std::move(e));
  }
  active->far_ = m.from;
  active->state_ = Id::State::kResponded;
  Event e = event_for(*active, RDMA_CM_EVENT_CONNECT_RESPONSE);
  e.param = as_seen_by_peer(m.param);
  e.private_data = padded(m.private_data, active->handshake().reply);
  e.remote_qp_num = m.param.qp_num;
  e.remote_psn = m.psn;
  post(*active, std::move(e));
}

void ConnectionManager::on_ready_to_use(const std::string& router, const Message& m) {
  auto passive = addressee(router, m);
  if (!passive || passive->state_ != Id::State::kAccepted) return;
  requests_.erase({router, m.from});
  passive->state_ = Id::State::kConnected;
  post(*passive, event_for(*passive, RDMA_CM_EVENT_ESTABLISHED));
}

void ConnectionManager::on_reject(const std::string& router, const Message& m) {
  if (m.to == 0) {
    // A requester gave up: its request waiting for room goes, or the
    // passive id it made learns it.
    if (auto listener = listener_at(m.tenant, m.port_space, m.dst)) {
      std::erase_if(listener->waiting_, [&](const Id::Waiting& w) { return w.router == router && w.request.from == m.from; });
    }
    auto it = requests_.find({router, m.from});
    auto passive = it == requests_.end() ? nullptr : it->second.lock();
    if (!passive || passive->tenant_ != m.tenant) return;
    forget_far(*passive);
    if (passive->datagram()) return;  // a SIDR REQ has nothing to take back
    if (passive->state_ != Id::State::kRequestReceived && passive->state_ != Id::State::kAccepted) return;
    passive->state_ = Id::State::kRejected;
    Event e = event_for(*passive, RDMA_CM_EVENT_REJECTED, m.status);
    e.private_data = padded(m.private_data, passive->handshake().reject);
    return post(*passive, std::move(e));
  }
  auto active = addressee(router, m);
  if (!active || active->state_ != Id::State::kConnecting) return;
  if (m.unreachable) return unreachable(*active);
  refuse_requester(*active, m.status, m.private_data);
}

void ConnectionManager::on_disconnect_request(const std::string& router, const Message& m) {
  auto id = addressee(router, m);
  if (id && id->holds_connection()) {
    id->state_ = Id::State::kDisconnected;
    post(*id, event_for(*id, RDMA_CM_EVENT_DISCONNECTED));
    return;
  }
  // Not (or no longer) connected to it: the DREP at once.
  if (id && !id->disconnecting_) forget_far(*id);
  send(router, answer_to(m, MessageType::kDisconnectReply));
}

void ConnectionManager::on_disconnect_reply(const std::string& router, const Message& m) {
  auto id = addressee(router, m);
  if (!id) return;
  if (id->disconnecting_)
    answer_disconnect(*id);
  else if (id->state_ == Id::State::kDisconnected)
    forget_far(*id);
}

void ConnectionManager::router_lost(const std::string& router) {
  if (router.empty()) return;
  std::vector<std::shared_ptr<Id>> affected;
  for (const auto& [token, weak] : ids_) {
    auto id = weak.lock();
    if (!id) continue;
    if (id->far_router_ == router && (id->far_ != 0 || id->requested_)) affected.push_back(id);
    if (id->state_ == Id::State::kListening)
      std::erase_if(id->waiting_, [&](const Id::Waiting& w) { return w.router == router; });
  }
  for (auto& id : affected) {
    switch (id->state_) {
      case Id::State::kConnecting:
        unreachable(*id);
        break;
      case Id::State::kRequestReceived:
      case Id::State::kAccepted: {
        forget_far(*id);
        if (id->datagram()) break;
        id->state_ = Id::State::kRejected;
        Event e = event_for(*id, RDMA_CM_EVENT_REJECTED, kRejectTimeout);
        e.private_data = padded({}, id->handshake().reject);
        post(*id, std::move(e));
        break;
      }
      case Id::State::kResponded:
      case Id::State::kConnected:
        forget_far(*id);
        id->state_ = Id::State::kDisconnected;
        post(*id, event_for(*id, RDMA_CM_EVENT_DISCONNECTED));
        break;
      case Id::State::kDisconnected:
        if (id->disconnecting_)
          answer_disconnect(*id, -ETIMEDOUT);  // its DREQ times out
        else
          forget_far(*id);
        break;
      default:
        forget_far(*id);
    }
  }
  std::erase_if(requests_, [&](const auto& entry) { return entry.first.first == router; });
}

}  // namespace ff::router::cm
