#include "router/cm/connection_manager.h"
#include "router/common/addresses.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace ff::router::cm {

namespace {

constexpr uint16_t kEphemeralFirst = 32768, kEphemeralLast = 60999;  // Linux's ip_local_port_range
constexpr int kMaxBacklog = 1024;  // ucma's default max_backlog

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
  id->token_ = next_token_++;
  ids_[id->token_] = id;
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
  auto owners_at = [&](uint16_t port) -> std::vector<std::weak_ptr<Id>>* {
    auto it = ports_.find({id.tenant_, addr.ip, id.port_space_, port});
    if (it == ports_.end()) return nullptr;
    std::erase_if(it->second, [](const auto& w) { return w.expired(); });
    return it->second.empty() ? nullptr : &it->second;
  };
  if (addr.port == 0) {
    // The kernel picks at random in the ephemeral range a port nobody
    // holds; so do we.
    uint32_t span = kEphemeralLast - kEphemeralFirst + 1;
    auto start = static_cast<uint32_t>(random_() % span);
    for (uint32_t i = 0; i < span && addr.port == 0; ++i) {
      auto port = static_cast<uint16_t>(kEphemeralFirst + (start + i) % span);
      if (owners_at(port) == nullptr) addr.port = port;
    }
    if (addr.port == 0) return Error{EADDRNOTAVAIL, "no ephemeral port left for this address"};
  } else if (auto* owners = owners_at(addr.port)) {
    for (const auto& w : *owners)
      if (auto s = port_conflict(id, wildcard, *w.lock(), id.reuseaddr_); !s) return s;
  }
  // The id is owned by its session (a shared_ptr there); the table only watches it.
  ports_[{id.tenant_, addr.ip, id.port_space_, addr.port}].push_back(id.weak_from_this());
  id.src_ = addr;
  id.bound_ = true;
  id.wildcard_ = wildcard;
  return Status{};
}

// As the kernel's cma_check_port: ids that both set REUSEADDR share
// (unless `reuse` is false: a listen), otherwise EADDRNOTAVAIL when either
// is bound to the wildcard, EADDRINUSE when both name the address.
Status ConnectionManager::port_conflict(const Id& id, bool wildcard, const Id& other, bool reuse) const {
  if (&other == &id || (reuse && other.reuseaddr_)) return Status{};
  if (wildcard || other.wildcard_) return Error{EADDRNOTAVAIL, "another id is bound to that port"};
  return Error{EADDRINUSE, "another id is bound to that address and port"};
}

void ConnectionManager::release_port(Id& id) {
  if (!id.bound_) return;
  auto it = ports_.find({id.tenant_, id.src_.ip, id.port_space_, id.src_.port});
  if (it != ports_.end()) {
    std::erase_if(it->second, [&](const auto& w) {
      auto held = w.lock();
      return !held || held.get() == &id;
    });
    if (it->second.empty()) ports_.erase(it);
  }
  id.bound_ = false;
}

Status ConnectionManager::bind(Id& id, Endpoint addr) {
  if (id.state_ != Id::State::kIdle) return Error{EINVAL, "the id is already bound"};
  if (auto s = take_port(id, addr); !s) return s;
  id.state_ = Id::State::kBound;
  return Status{};
}

Status ConnectionManager::set_reuseaddr(Id& id, bool reuse) {
  // rdma_set_reuseaddr: on in any state but listening, off only when idle.
  if ((reuse && id.state_ == Id::State::kListening) || (!reuse && id.state_ != Id::State::kIdle))
    return Error{EINVAL, reuse ? "the id listens already" : "REUSEADDR is cleared only before binding"};
  id.reuseaddr_ = reuse;
  return Status{};
}

Status ConnectionManager::listen(Id& id, int backlog) {
  if (id.state_ == Id::State::kIdle) {
    if (auto s = bind(id, {}); !s) return s;
  }
  if (id.state_ != Id::State::kBound) return Error{EINVAL, "only a bound id that is not connected may listen"};
  if (id.reuseaddr_) {  // a port it shares: it listens only if it may have it alone
    auto it = ports_.find({id.tenant_, id.src_.ip, id.port_space_, id.src_.port});
    for (const auto& w : it != ports_.end() ? it->second : std::vector<std::weak_ptr<Id>>{})
      if (auto other = w.lock())
        if (auto s = port_conflict(id, id.wildcard_, *other, /*reuse=*/false); !s) return s;
  }
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

Status ConnectionManager::join_multicast(Id& id, uint32_t group) {
  if (!id.datagram()) return Error{EINVAL, "multicast needs a datagram id (RDMA_PS_UDP or RDMA_PS_IPOIB)"};
  if (!is_multicast_ipv4(group)) return Error{EINVAL, "not an IPv4 multicast address (224.0.0.0/4)"};
  if (!id.bound_ && id.state_ < Id::State::kAddrResolved) return Error{EINVAL, "bind or resolve the id's address first"};
  if (std::find(id.groups_.begin(), id.groups_.end(), group) != id.groups_.end())
    return Error{EADDRINUSE, "the id joined that group already"};
  if (id.groups_.size() >= kMaxGroupsPerId) return Error{ENOMEM, "an id joins at most 64 groups"};
  id.groups_.push_back(group);
  Event e = event_for(id, RDMA_CM_EVENT_MULTICAST_JOIN);
  e.dst = Endpoint{group, 0};
  post(id, std::move(e));
  return Status{};
}

Status ConnectionManager::leave_multicast(Id& id, uint32_t group) {
  auto it = std::find(id.groups_.begin(), id.groups_.end(), group);
  if (it == id.groups_.end()) return Error{EADDRNOTAVAIL, "the id has not joined that group"};
  id.groups_.erase(it);
  return Status{};
}

Status ConnectionManager::resolve_route(Id& id) {
  if (id.state_ != Id::State::kAddrResolved) return Error{EINVAL, "resolve the address first"};
  id.state_ = Id::State::kRouteResolved;
  post(id, event_for(id, RDMA_CM_EVENT_ROUTE_RESOLVED));
  return Status{};
}

std::shared_ptr<Id> ConnectionManager::listener_at(const std::string& tenant, uint16_t port_space,
                                                   Endpoint dst) const {
  // A wildcard listener is in the table under its client's own address.
  auto it = ports_.find({tenant, dst.ip, port_space, dst.port});
  if (it == ports_.end()) return nullptr;
  for (const auto& w : it->second)
    if (auto id = w.lock(); id && id->state_ == Id::State::kListening) return id;
  return nullptr;
}

// --- the handshake, as each side starts it ------------------------------------

Status ConnectionManager::connect(Id& id, const ConnParam& param, const std::vector<uint8_t>& private_data) {
  if (id.state_ != Id::State::kRouteResolved) return Error{EINVAL, "resolve the route first"};
  if (private_data.size() > id.handshake().request)
    return Error{EINVAL, "private data longer than the request carries (" + std::to_string(id.handshake().request) + " bytes)"};
  id.qp_num_ = param.qp_num;
  id.param_ = param;
  id.state_ = Id::State::kConnecting;
  std::optional<std::string> router = routes_ ? routes_->router_for(id.tenant_, id.dst_.ip) : std::nullopt;
  id.far_router_ = router.value_or("");  // nobody's: this router's listeners, where none listens
  id.far_ = 0;
  id.requested_ = true;
  Message m = message(id, MessageType::kRequest);
  m.src = id.src_;
  m.dst = id.dst_;
  m.param = param;
  m.private_data = private_data;
  send(id.far_router_, std::move(m));
  return Status{};
}

Status ConnectionManager::accept(Id& id, const ConnParam& param, const std::vector<uint8_t>& private_data) {
  if (id.state_ != Id::State::kRequestReceived) return Error{EINVAL, "the id has no connection request to accept"};
  if (private_data.size() > id.handshake().reply)
    return Error{EINVAL, "private data longer than the reply carries (" + std::to_string(id.handshake().reply) + " bytes)"};
  id.qp_num_ = param.qp_num;
  Message m = message(id, MessageType::kReply);
  m.param = param;
  m.private_data = private_data;
  std::string router = id.far_router_;
  if (id.datagram()) {
    // The SIDR REP: the requester has the QP number and Q_Key it sends to;
    // the passive side gets no event, and neither side is connected.
    id.state_ = Id::State::kConnected;
    forget_far(id);
  } else {
    id.state_ = Id::State::kAccepted;
  }
  send(router, std::move(m));
  return Status{};
}

Status ConnectionManager::establish(Id& id) {
  if (id.state_ != Id::State::kResponded || id.datagram()) return Error{EINVAL, "the id has no connection response to establish"};
  id.state_ = Id::State::kConnected;
  if (id.far_ != 0) send(id.far_router_, message(id, MessageType::kReadyToUse));
  return Status{};
}

Status ConnectionManager::reject(Id& id, const std::vector<uint8_t>& private_data) {
  if (id.state_ != Id::State::kRequestReceived) return Error{EINVAL, "the id has no connection request to reject"};
  if (private_data.size() > id.handshake().reject)
    return Error{EINVAL, "private data longer than the reject carries (" + std::to_string(id.handshake().reject) + " bytes)"};
  id.state_ = Id::State::kRejected;
  Message m = message(id, MessageType::kReject);
  m.status = id.handshake().rejected;
  m.private_data = private_data;
  std::string router = id.far_router_;
  forget_far(id);
  send(router, std::move(m));
  return Status{};
}

// rdma_disconnect sends a DREQ, or the DREP to a DREQ received: the peer
// gets DISCONNECTED at once, the side that asked when the peer answers
// (with its own rdma_disconnect, or by destroying its id).
Status ConnectionManager::disconnect(Id& id) {
  if (id.datagram()) return Error{EINVAL, "a UD id has no connection"};
  switch (id.state_) {
    case Id::State::kAccepted:
    case Id::State::kResponded:
    case Id::State::kConnected:
      id.state_ = Id::State::kDisconnected;
      if (id.far_ == 0) {  // its peer is gone already
        post(id, event_for(id, RDMA_CM_EVENT_DISCONNECTED));
        return Status{};
      }
      id.disconnecting_ = true;
      if (clock_ != nullptr) {
        clock_->after(kDisconnectTimeout, [this, weak = id.weak_from_this()] {
          if (auto waiting = weak.lock(); waiting && waiting->disconnecting_) answer_disconnect(*waiting, -ETIMEDOUT);
        });
      }
      send(id.far_router_, message(id, MessageType::kDisconnectRequest));
      return Status{};
    case Id::State::kDisconnected:
      if (id.far_ != 0 && !id.disconnecting_) {
        std::string router = id.far_router_;
        Message drep = message(id, MessageType::kDisconnectReply);
        forget_far(id);
        enter_timewait(id);
        send(router, std::move(drep));
      }
      return Status{};
    case Id::State::kConnecting:
    case Id::State::kRequestReceived:
    case Id::State::kRejected:
      return Status{};  // the kernel's DREQ and DREP both fail there, and it says 0
    default:
      return Error{EINVAL, "the id never connected"};
  }
}

void ConnectionManager::refuse_requester(Id& active, int status, const std::vector<uint8_t>& private_data) {
  active.state_ = Id::State::kRejected;
  forget_far(active);
  Event e = event_for(active, active.handshake().refused, status);
  e.private_data = padded(private_data, active.handshake().reject);
  post(active, std::move(e));
}

// Its REQ got no answer (dropped, or the far router went): the kernel's CM
// gives up retrying with UNREACHABLE and -ETIMEDOUT.
void ConnectionManager::unreachable(Id& active) {
  active.state_ = Id::State::kRejected;
  forget_far(active);
  post(active, event_for(active, RDMA_CM_EVENT_UNREACHABLE, -ETIMEDOUT));
}

// The DREP (or, with -ETIMEDOUT, none in time): `waiting` sent a DREQ and
// now has its DISCONNECTED.
void ConnectionManager::answer_disconnect(Id& waiting, int status) {
  waiting.disconnecting_ = false;
  forget_far(waiting);
  post(waiting, event_for(waiting, RDMA_CM_EVENT_DISCONNECTED, status));
  enter_timewait(waiting);
}

// Its disconnect exchange is over (it got its DREP, or sent one): the
// kernel's CM keeps the connection in timewait, then says TIMEWAIT_EXIT.
void ConnectionManager::enter_timewait(Id& id) {
  if (id.in_timewait_ || clock_ == nullptr) return;
  id.in_timewait_ = true;
  clock_->after(kTimewait, [this, weak = id.weak_from_this()] {
    if (auto left = weak.lock(); left && left->state_ == Id::State::kDisconnected)
      post(*left, event_for(*left, RDMA_CM_EVENT_TIMEWAIT_EXIT));
  });
}

// A request for a listener with no room waits, as the kernel's requester
// retries its REQ, until the app reads one, or it times out (UNREACHABLE).
void ConnectionManager::wait_for_room(Id& listener, const std::string& router, const Message& request) {
  listener.waiting_.push_back({router, request});
  if (clock_ == nullptr) return;
  clock_->after(kRequestTimeout, [this, weak = listener.weak_from_this(), router, request] {
    auto l = weak.lock();
    if (!l) return;
    auto it = std::find_if(l->waiting_.begin(), l->waiting_.end(), [&](const Id::Waiting& w) {
      return w.router == router && w.request.from == request.from;
    });
    if (it == l->waiting_.end()) return;
    l->waiting_.erase(it);
    Message dropped = answer_to(request, MessageType::kReject);
    dropped.unreachable = true;
    send(router, std::move(dropped));
  });
}

void ConnectionManager::forget_far(Id& id) {
  // A passive id's requester indexes it until it answers.
  if (auto it = requests_.find({id.far_router_, id.far_}); it != requests_.end() && it->second.lock().get() == &id)
    requests_.erase(it);
  id.far_ = 0;
  id.requested_ = false;
}

// `id` goes away: its far end learns it as from a destroyed kernel id.
void ConnectionManager::leave(Id& id) {
  bool knows_far = id.far_ != 0 || id.requested_;
  if (!knows_far) return;
  std::string router = id.far_router_;
  Message m;
  switch (id.state_) {
    case Id::State::kConnecting:  // a REJ for the request it gave up on
      m = message(id, MessageType::kReject);
      m.status = kRejectTimeout;
      m.dst = id.dst_;
      break;
    case Id::State::kRequestReceived:  // a REJ for the request it never answered
      m = message(id, MessageType::kReject);
      m.status = id.handshake().rejected;
      break;
    case Id::State::kAccepted:
    case Id::State::kResponded:
    case Id::State::kConnected:
      m = message(id, MessageType::kDisconnectRequest);
      break;
    case Id::State::kDisconnected:  // the DREP its peer may wait for
      if (id.disconnecting_) {
        forget_far(id);
        return;
      }
      m = message(id, MessageType::kDisconnectReply);
      break;
    default:
      forget_far(id);
      return;
  }
  forget_far(id);
  send(router, std::move(m));
}

// --- messages -------------------------------------------------------------------

Message ConnectionManager::message(const Id& id, MessageType type) const {
  Message m;
  m.type = type;
  m.tenant = id.tenant_;
  m.from = id.token_;
  m.to = id.far_;
  m.port_space = id.port_space_;
  m.qp_type = id.qp_type_;
  m.psn = id.psn_;
  return m;
}

void ConnectionManager::send(const std::string& router, Message m) {
  if (router.empty()) return deliver("", m);
  if (routes_ != nullptr) routes_->send(router, encode(m));  // none: the router is stopping
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
    Id::Waiting next = std::move(listener->waiting_.front());
    listener->waiting_.pop_front();
    request(*listener, next.router, next.request);
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
      Message no = answer_to(w.request, MessageType::kReject);
      no.status = id.handshake().no_listener;
      send(w.router, std::move(no));
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
  leave(id);
  ids_.erase(id.token_);
  id.state_ = Id::State::kIdle;
}

}  // namespace ff::router::cm
