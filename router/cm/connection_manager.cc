#include "router/cm/connection_manager.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace ff::router::cm {

namespace {

constexpr uint16_t kEphemeralFirst = 32768, kEphemeralLast = 60999;  // Linux's ip_local_port_range
constexpr int kMaxBacklog = 1024;  // ucma's default max_backlog

// The peer's parameters as the event reports them: what the peer offers to
// answer is what this side may ask for, and the other way round.
ConnParam as_seen_by_peer(const ConnParam& p) {
  ConnParam seen = p;
  seen.responder_resources = p.initiator_depth;
  seen.initiator_depth = p.responder_resources;
  return seen;
}

std::vector<uint8_t> padded(const std::vector<uint8_t>& data, size_t field) {
  std::vector<uint8_t> out(field, 0);
  std::copy_n(data.begin(), std::min(data.size(), field), out.begin());
  return out;
}

bool connected_or_connecting(Id::State s) {
  return s == Id::State::kAccepted || s == Id::State::kResponded || s == Id::State::kConnected;
}

}  // namespace

// --- Channel ----------------------------------------------------------------

Result<std::pair<std::shared_ptr<Channel>, UniqueFd>> Channel::create() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Error{errno, "cannot make an event channel's pipe"};
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  // The router's end never blocks (it holds at most one byte anyway).
  ::fcntl(write_end.get(), F_SETFL, O_NONBLOCK);
  std::shared_ptr<Channel> ch(new Channel(std::move(write_end)));
  return std::make_pair(std::move(ch), std::move(read_end));
}

void Channel::signal() {
  const char one = 1;
  ssize_t n = ::write(write_end_.get(), &one, 1);
  (void)n;  // EAGAIN: a client that never reads its byte keeps one it has
}

void Channel::post(Event e) {
  events_.push_back(std::move(e));
  if (events_.size() == 1) signal();
}

std::optional<Event> Channel::take() {
  if (events_.empty()) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop_front();
  if (!events_.empty()) signal();
  return e;
}

void Channel::forget(uint32_t id) {
  std::erase_if(events_, [id](const Event& e) { return e.id == id; });
}

std::optional<Event> Channel::take_request_of(uint32_t listen_id) {
  auto it = std::find_if(events_.begin(), events_.end(), [listen_id](const Event& e) {
    return e.type == RDMA_CM_EVENT_CONNECT_REQUEST && e.listen_id == listen_id;
  });
  if (it == events_.end()) return std::nullopt;
  Event e = std::move(*it);
  events_.erase(it);
  return e;
}

void Channel::move_events(uint32_t id, Channel& to) {
  for (auto it = events_.begin(); it != events_.end();) {
    if (it->id == id) {
      to.post(std::move(*it));
      it = events_.erase(it);
    } else {
      ++it;
    }
  }
}

// --- ConnectionManager --------------------------------------------------------

ConnectionManager::ConnectionManager() : random_(std::random_device{}()) {}

std::shared_ptr<Id> ConnectionManager::create_id(const std::string& tenant, uint32_t vip, IdOwner& owner,
                                                 std::shared_ptr<Channel> channel, uint16_t port_space,
                                                 uint8_t qp_type) {
  auto id = std::make_shared<Id>();
  id->tenant_ = tenant;
  id->vip_ = vip;
  id->owner_ = &owner;
  id->channel_ = channel;
  id->port_space_ = port_space;
  id->qp_type_ = qp_type;
  id->psn_ = static_cast<uint32_t>(random_() & 0xffffff);
  return id;
}

Event ConnectionManager::event_for(const Id& id, rdma_cm_event_type type, int status) const {
  Event e;
  e.id = id.handle_;
  e.type = type;
  e.status = status;
  e.src = id.src_;
  e.dst = id.dst_;
  e.local_psn = id.psn_;
  e.port_space = id.port_space_;
  e.qp_type = id.qp_type_;
  return e;
}

void ConnectionManager::post(Id& id, Event e) {
  if (auto ch = id.channel_.lock()) ch->post(std::move(e));
}

Status ConnectionManager::take_port(Id& id, Endpoint addr) {
  // A container has one address, its virtual IP: 0.0.0.0 is that address,
  // and so is loopback, which the kernel's rdma_cm takes as a wildcard too
  // (cma_any_addr; libfabric's verbs provider binds 127.0.0.1).
  bool wildcard = addr.ip == 0 || (addr.ip >> 24) == 127;
  if (wildcard) addr.ip = id.vip_;
  // ENODEV, as the kernel's rdma_cm says on 6.1 for an address no RDMA
  // device has (measured on rxe: tests/hw/guest/test_rdma_cm_direct.sh).
  if (addr.ip != id.vip_)
    return Error{ENODEV, "that address is not the container's: bind its own virtual IP, or 0.0.0.0"};
  std::shared_ptr<Id> holder;
  auto free_at = [&](uint16_t port) {
    auto it = ports_.find({id.tenant_, addr.ip, id.port_space_, port});
    holder = it == ports_.end() ? nullptr : it->second.lock();
    return holder == nullptr;
  };
  if (addr.port == 0) {
    // The kernel picks at random in the ephemeral range; so do we.
    uint32_t span = kEphemeralLast - kEphemeralFirst + 1;
    auto start = static_cast<uint32_t>(random_() % span);
    for (uint32_t i = 0; i < span && addr.port == 0; ++i) {
      auto port = static_cast<uint16_t>(kEphemeralFirst + (start + i) % span);
      if (free_at(port)) addr.port = port;
    }
    if (addr.port == 0) return Error{EADDRNOTAVAIL, "no ephemeral port left for this address"};
  } else if (!free_at(addr.port)) {
    // As the kernel says it: EADDRNOTAVAIL when either bind is to the wildcard.
    if (wildcard || holder->wildcard_) return Error{EADDRNOTAVAIL, "another id is bound to that port"};
    return Error{EADDRINUSE, "another id is bound to that address and port"};
  }
  // The id is owned by its session (a shared_ptr there); the table only watches it.
  ports_[{id.tenant_, addr.ip, id.port_space_, addr.port}] = id.weak_from_this();
  id.src_ = addr;
  id.bound_ = true;
  id.wildcard_ = wildcard;
  return Status{};
}

void ConnectionManager::release_port(Id& id) {
  if (!id.bound_) return;
  ports_.erase({id.tenant_, id.src_.ip, id.port_space_, id.src_.port});
  id.bound_ = false;
}

Status ConnectionManager::bind(Id& id, Endpoint addr) {
  if (id.state_ != Id::State::kIdle) return Error{EINVAL, "the id is already bound"};
  if (auto s = take_port(id, addr); !s) return s;
  id.state_ = Id::State::kBound;
  return Status{};
}

Status ConnectionManager::listen(Id& id, int backlog) {
  if (id.state_ == Id::State::kIdle) {
    if (auto s = bind(id, {}); !s) return s;
  }
  if (id.state_ != Id::State::kBound) return Error{EINVAL, "only a bound id that is not connected may listen"};
  id.backlog_ = backlog > 0 && backlog < kMaxBacklog ? backlog : kMaxBacklog;
  id.state_ = Id::State::kListening;
  return Status{};
}

Status ConnectionManager::resolve_addr(Id& id, std::optional<Endpoint> src, Endpoint dst, std::optional<bool> served) {
  if (id.state_ == Id::State::kIdle) {
    if (auto s = bind(id, src.value_or(Endpoint{})); !s) return s;
  } else if (src && src->ip != 0 && src->ip != id.src_.ip) {
    return Error{EINVAL, "the id is bound to another address"};
  }
  if (id.state_ != Id::State::kBound) return Error{EINVAL, "the id is not idle or bound"};
  id.dst_ = dst;
  id.state_ = Id::State::kAddrQuery;
  if (served) address_answer(id, *served);
  return Status{};
}

void ConnectionManager::address_answer(Id& id, bool found) {
  if (id.state_ != Id::State::kAddrQuery) return;  // destroyed, or answered
  if (!found) {
    id.state_ = Id::State::kBound;
    post(id, event_for(id, RDMA_CM_EVENT_ADDR_ERROR, -ETIMEDOUT));  // as an address no one answers ARP for
    return;
  }
  id.state_ = Id::State::kAddrResolved;
  post(id, event_for(id, RDMA_CM_EVENT_ADDR_RESOLVED));
}

Status ConnectionManager::resolve_route(Id& id) {
  if (id.state_ != Id::State::kAddrResolved) return Error{EINVAL, "resolve the address first"};
  id.state_ = Id::State::kRouteResolved;
  post(id, event_for(id, RDMA_CM_EVENT_ROUTE_RESOLVED));
  return Status{};
}

std::shared_ptr<Id> ConnectionManager::listener_at(const Id& from, Endpoint dst) const {
  // A wildcard listener is in the table under its client's own address.
  auto it = ports_.find({from.tenant_, dst.ip, from.port_space_, dst.port});
  auto id = it == ports_.end() ? nullptr : it->second.lock();
  return id && id->state_ == Id::State::kListening ? id : nullptr;
}

Status ConnectionManager::connect(Id& id, const ConnParam& param, const std::vector<uint8_t>& private_data) {
  if (id.state_ != Id::State::kRouteResolved) return Error{EINVAL, "resolve the route first"};
  if (private_data.size() > id.handshake().request)
    return Error{EINVAL, "private data longer than the request carries (" + std::to_string(id.handshake().request) + " bytes)"};
  id.qp_num_ = param.qp_num;
  id.param_ = param;
  id.private_data_ = private_data;
  id.state_ = Id::State::kConnecting;
  auto listener = listener_at(id, id.dst_);
  if (!listener) {
    refuse_requester(id, id.handshake().no_listener);
    return Status{};
  }
  if (listener->pending_ >= listener->backlog_) {
    listener->waiting_.push_back(id.weak_from_this());  // its REQ is retried when there is room
    return Status{};
  }
  request(id, *listener);
  return Status{};
}

void ConnectionManager::refuse_requester(Id& active, int status, const std::vector<uint8_t>& private_data) {
  active.state_ = Id::State::kRejected;
  active.peer_.reset();
  Event e = event_for(active, active.handshake().refused, status);
  e.private_data = padded(private_data, active.handshake().reject);
  post(active, std::move(e));
}

// Delivers the request of `active` to a new id beside `listener`.
void ConnectionManager::request(Id& active, Id& listener) {
  auto passive = create_id(listener.tenant_, listener.vip_, *listener.owner_, listener.channel_.lock(),
                           listener.port_space_, active.qp_type_);
  std::optional<uint32_t> handle = listener.owner_->adopt(passive);
  if (!handle) {  // the listener's session holds all the objects it may
    refuse_requester(active, active.handshake().rejected);
    return;
  }
  passive->handle_ = *handle;
  passive->state_ = Id::State::kRequestReceived;
  passive->src_ = {active.dst_.ip, listener.src_.port};
  passive->dst_ = active.src_;
  passive->peer_ = active.weak_from_this();
  passive->listener_ = listener.weak_from_this();
  active.peer_ = passive;
  ++listener.pending_;
  Event e = event_for(*passive, RDMA_CM_EVENT_CONNECT_REQUEST);
  e.listen_id = listener.handle_;
  e.param = as_seen_by_peer(active.param_);
  e.private_data = padded(active.private_data_, active.handshake().request);
  e.remote_qp_num = active.qp_num_;
  e.remote_psn = active.psn_;
  e.about = passive;
  post(*passive, std::move(e));
}

std::optional<Event> ConnectionManager::take_event(Channel& channel) {
  auto e = channel.take();
  if (e && e->type == RDMA_CM_EVENT_CONNECT_REQUEST) {
    if (auto passive = e->about.lock()) end_pending(*passive);  // the backlog counts unread requests
  }
  return e;
}

// A request of the listener was read (or went unread with its id): room
// for the next one waiting.
void ConnectionManager::end_pending(Id& passive) {
  auto listener = passive.listener_.lock();
  passive.listener_.reset();
  if (!listener) return;
  --listener->pending_;
  while (!listener->waiting_.empty() && listener->pending_ < listener->backlog_) {
    auto active = listener->waiting_.front().lock();
    listener->waiting_.pop_front();
    if (active && active->state_ == Id::State::kConnecting && !active->peer_.lock()) request(*active, *listener);
  }
}

Status ConnectionManager::accept(Id& id, const ConnParam& param, const std::vector<uint8_t>& private_data) {
  if (id.state_ != Id::State::kRequestReceived) return Error{EINVAL, "the id has no connection request to accept"};
  if (private_data.size() > id.handshake().reply)
    return Error{EINVAL, "private data longer than the reply carries (" + std::to_string(id.handshake().reply) + " bytes)"};
  id.qp_num_ = param.qp_num;
  auto peer = id.peer_.lock();
  if (id.datagram()) {
    // The SIDR REP: the requester has the QP number and Q_Key it sends to;
    // the passive side gets no event, and neither side is connected.
    id.state_ = Id::State::kConnected;
    id.peer_.reset();
    if (peer && peer->state_ == Id::State::kConnecting) {
      peer->state_ = Id::State::kConnected;
      peer->peer_.reset();
      Event e = event_for(*peer, RDMA_CM_EVENT_ESTABLISHED);
      e.private_data = padded(private_data, id.handshake().reply);
      e.remote_qp_num = param.qp_num;
      post(*peer, std::move(e));
    }
    return Status{};
  }
  if (!peer || peer->state_ != Id::State::kConnecting) {
    // The requester went away: its REP would go unanswered.
    id.state_ = Id::State::kDisconnected;
    post(id, event_for(id, RDMA_CM_EVENT_CONNECT_ERROR, -ETIMEDOUT));
    return Status{};
  }
  id.state_ = Id::State::kAccepted;
  peer->state_ = Id::State::kResponded;
  Event e = event_for(*peer, RDMA_CM_EVENT_CONNECT_RESPONSE);
  e.param = as_seen_by_peer(param);
  e.private_data = padded(private_data, id.handshake().reply);
  e.remote_qp_num = param.qp_num;
  e.remote_psn = id.psn_;
  post(*peer, std::move(e));
  return Status{};
}

Status ConnectionManager::establish(Id& id) {
  if (id.state_ != Id::State::kResponded || id.datagram()) return Error{EINVAL, "the id has no connection response to establish"};
  id.state_ = Id::State::kConnected;
  auto peer = id.peer_.lock();
  if (peer && peer->state_ == Id::State::kAccepted) {
    peer->state_ = Id::State::kConnected;
    post(*peer, event_for(*peer, RDMA_CM_EVENT_ESTABLISHED));
  }
  return Status{};
}

Status ConnectionManager::reject(Id& id, const std::vector<uint8_t>& private_data) {
  if (id.state_ != Id::State::kRequestReceived) return Error{EINVAL, "the id has no connection request to reject"};
  if (private_data.size() > id.handshake().reject)
    return Error{EINVAL, "private data longer than the reject carries (" + std::to_string(id.handshake().reject) + " bytes)"};
  id.state_ = Id::State::kRejected;
  if (auto peer = id.peer_.lock(); peer && peer->state_ == Id::State::kConnecting)
    refuse_requester(*peer, id.handshake().rejected, private_data);
  id.peer_.reset();
  return Status{};
}

// rdma_disconnect sends a DREQ, or the DREP to a DREQ received: the peer
// gets DISCONNECTED at once, the side that asked when the peer answers
// (with its own rdma_disconnect, or by destroying its id).
Status ConnectionManager::disconnect(Id& id) {
  if (id.datagram()) return Error{EINVAL, "a UD id has no connection"};
  auto peer = id.peer_.lock();
  switch (id.state_) {
    case Id::State::kAccepted:
    case Id::State::kResponded:
    case Id::State::kConnected:
      id.state_ = Id::State::kDisconnected;
      if (peer && connected_or_connecting(peer->state_)) {
        id.disconnecting_ = true;
        peer->state_ = Id::State::kDisconnected;
        post(*peer, event_for(*peer, RDMA_CM_EVENT_DISCONNECTED));
      } else {
        post(id, event_for(id, RDMA_CM_EVENT_DISCONNECTED));
      }
      return Status{};
    case Id::State::kDisconnected:
      if (peer && peer->disconnecting_) answer_disconnect(*peer);
      return Status{};
    case Id::State::kConnecting:
    case Id::State::kRequestReceived:
    case Id::State::kRejected:
      return Status{};  // the kernel's DREQ and DREP both fail there, and it says 0
    default:
      return Error{EINVAL, "the id never connected"};
  }
}

// The DREP: `waiting` sent a DREQ and now has its DISCONNECTED.
void ConnectionManager::answer_disconnect(Id& waiting) {
  waiting.disconnecting_ = false;
  if (auto peer = waiting.peer_.lock()) peer->peer_.reset();
  waiting.peer_.reset();
  post(waiting, event_for(waiting, RDMA_CM_EVENT_DISCONNECTED));
}

// `id` goes away: its peer learns it as from a destroyed kernel id.
void ConnectionManager::lose_peer(Id& id) {
  auto peer = id.peer_.lock();
  id.peer_.reset();
  if (!peer) return;
  switch (peer->state_) {
    case Id::State::kAccepted:
    case Id::State::kResponded:
    case Id::State::kConnected:  // a DREQ
      peer->peer_.reset();
      peer->state_ = Id::State::kDisconnected;
      post(*peer, event_for(*peer, RDMA_CM_EVENT_DISCONNECTED));
      break;
    case Id::State::kDisconnected:  // the DREP it waits for
      if (peer->disconnecting_) answer_disconnect(*peer);
      peer->peer_.reset();
      break;
    case Id::State::kConnecting:  // its request's passive id went before answering
      refuse_requester(*peer, peer->handshake().rejected);
      break;
    case Id::State::kRequestReceived: {  // its requester went
      peer->peer_.reset();
      if (peer->datagram()) break;  // a SIDR REQ has nothing to take back
      peer->state_ = Id::State::kRejected;
      Event e = event_for(*peer, RDMA_CM_EVENT_REJECTED, kRejectTimeout);
      e.private_data = padded({}, peer->handshake().reject);
      post(*peer, std::move(e));
      break;
    }
    default:
      peer->peer_.reset();
  }
}

void ConnectionManager::migrate(Id& id, std::shared_ptr<Channel> channel) {
  if (auto old = id.channel_.lock(); old && old != channel) old->move_events(id.handle_, *channel);
  id.channel_ = channel;
}

void ConnectionManager::destroy(Id& id) {
  release_port(id);
  if (id.state_ == Id::State::kListening) {
    id.state_ = Id::State::kIdle;
    // Requests that waited for room retry and find no one listening.
    auto waiting = std::move(id.waiting_);
    for (auto& w : waiting) {
      if (auto active = w.lock(); active && active->state_ == Id::State::kConnecting && !active->peer_.lock())
        refuse_requester(*active, active->handshake().no_listener);
    }
    // Requests the app has not read go with their listener (their
    // requesters are rejected as each goes).
    if (auto ch = id.channel_.lock()) {
      std::vector<uint32_t> unread;
      while (auto e = ch->take_request_of(id.handle_)) unread.push_back(e->id);
      for (uint32_t h : unread) id.owner_->drop(h);
    }
  }
  if (auto ch = id.channel_.lock()) ch->forget(id.handle_);
  end_pending(id);
  lose_peer(id);
  id.state_ = Id::State::kIdle;
}

}  // namespace ff::router::cm
