// rdma_cm on virtual IPs: the router side of librdmacm for the clients of
// this router (libffverbs/rdma_cm.cc is the other side).
//
// A client's ids and event channels are objects of its session; this is
// where they meet: ports bound per tenant and address, listeners, the
// connection handshake (REQ, REP, RTU, REJ, DREQ, DREP) between two ids, and
// the events each id's channel queues. One tenant never sees another's ports
// or listeners: every table is keyed by tenant.
//
// The two ids of a connection talk only in CM messages (message.h), as two
// kernels' CMs do: an id knows its far end as a router and a token there.
// When both ids are on this router the message is handled at once; when
// the far end is on another router (Routes: the directory and the
// router-to-router link) it goes there and comes back as receive().
//
// Bounds: an id queues a few events per state it passes through, and ids
// are objects their session is charged for (--max-objects-per-session);
// a listener holds at most `backlog` requests not yet accepted or rejected,
// and at most kMaxWaiting more waiting for room (past that a request is
// dropped: its requester gets UNREACHABLE). So neither a client that does
// not read its events nor a peer router that floods requests grows it.
//
// Thread contract: the Asio thread (the control plane's), like sessions.
#pragma once

#include <rdma/rdma_cma.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "router/common/result.h"
#include "proto/fd.h"
#include "router/cm/message.h"

namespace ff::router::cm {

// What a port space's handshake is made of on RoCE: RC's REQ, REP and REJ
// (RDMA_PS_TCP, RDMA_PS_IB), or UD's SIDR REQ and REP (RDMA_PS_UDP,
// RDMA_PS_IPOIB). The private data sizes are each message's field less
// rdma_cm's own header, and what every event reports: the whole field,
// zero-padded, as the kernel's rdma_cm does. A refused requester gets
// `refused` with the status the CM message carries.
struct Handshake {
  size_t request, reply, reject;  // private data field sizes
  rdma_cm_event_type refused;
  int no_listener, rejected;  // statuses: nobody listens there; rdma_reject (or the passive id went)
};
inline constexpr Handshake kConnectedHandshake{56, 196, 148, RDMA_CM_EVENT_REJECTED, 8, 28};
inline constexpr Handshake kDatagramHandshake{180, 136, 136, RDMA_CM_EVENT_UNREACHABLE, 1, 2};
inline constexpr int kRejectTimeout = 4;  // IB CM: the requester went away

class Id;

// Where the ids' far ends are: the router serving a virtual IP, and the way
// to the other routers' connection managers. Without one (a single router)
// every address is this router's.
class Routes {
 public:
  virtual ~Routes() = default;
  // The router whose client has `vip` in `tenant`: "" for this router,
  // nullopt when none does.
  virtual std::optional<std::string> router_for(const std::string& tenant, uint32_t vip) = 0;
  // Sends `message` to the connection manager of `router`. It arrives
  // there (receive()), or the router is reported lost (router_lost()).
  virtual void send(const std::string& router, std::vector<std::byte> message) = 0;
};

// Time for the handshake's timeouts: the Asio thread's timers in the
// router, a hand-driven clock in tests. Without one nothing times out.
class Clock {
 public:
  virtual ~Clock() = default;
  // Calls `fire` once, `delay` from now (on the manager's thread).
  virtual void after(std::chrono::milliseconds delay, std::function<void()> fire) = 0;
};

// The kernel's CM timeouts on RoCE (av.timeout 19, CM response timeout 20,
// 15 retries): a DREQ nobody answers gives DISCONNECTED (-ETIMEDOUT), a
// request that waits for a full listener gives UNREACHABLE (-ETIMEDOUT),
// and an id leaves timewait (TIMEWAIT_EXIT) this long after its
// disconnect exchange ended.
inline constexpr std::chrono::milliseconds kDisconnectTimeout{16 * 6144};
inline constexpr std::chrono::milliseconds kRequestTimeout{16 * 4096};
inline constexpr std::chrono::milliseconds kTimewait{2048};

struct Event {
  uint32_t id = 0;         // handle of the id in the owning session
  uint32_t listen_id = 0;  // CONNECT_REQUEST: the listener's handle
  rdma_cm_event_type type = RDMA_CM_EVENT_ADDR_RESOLVED;
  int status = 0;
  Endpoint src, dst;
  ConnParam param;  // the peer's, as the event reports it
  std::vector<uint8_t> private_data;
  uint32_t remote_qp_num = 0, remote_psn = 0, local_psn = 0;
  uint16_t port_space = 0;
  uint8_t qp_type = 0;
  std::weak_ptr<Id> about;  // CONNECT_REQUEST: the new id (the manager's, never sent)
};

// An event channel: its events, and the pipe whose read end is the app's
// channel->fd. The pipe holds one byte while events are queued, so poll()
// on the fd says whether rdma_get_cm_event would find one; the client reads
// that byte before it asks for an event, and the router writes it again when
// events remain.
class Channel {
 public:
  // The read end goes to the client.
  static Result<std::pair<std::shared_ptr<Channel>, UniqueFd>> create();
  void post(Event e);
  std::optional<Event> take();
  // Drops the queued events of an id that goes away.
  void forget(uint32_t id);
  // Takes a queued CONNECT_REQUEST that came through listener `listen_id`.
  std::optional<Event> take_request_of(uint32_t listen_id);
  // Moves the queued events of `id` to `to` (rdma_migrate_id).
  void move_events(uint32_t id, Channel& to);

 private:
  explicit Channel(UniqueFd write_end) : write_end_(std::move(write_end)) {}
  void signal();
  UniqueFd write_end_;
  std::deque<Event> events_;
};

class ConnectionManager;

// What owns ids: a session. The manager asks it to take a new id for each
// connection request its listener gets.
class IdOwner {
 public:
  virtual ~IdOwner() = default;
  // The new id's handle in the owner, or nullopt when the owner can hold no
  // more objects.
  virtual std::optional<uint32_t> adopt(std::shared_ptr<Id> id) = 0;
  // Destroys an id the owner adopted that its app never saw (its listener
  // went first).
  virtual void drop(uint32_t handle) = 0;
};

// One rdma_cm_id. Made by ConnectionManager::create_id (or for a connection
// request); the owner keeps it alive and calls ConnectionManager::destroy
// when it goes.
class Id : public std::enable_shared_from_this<Id> {
 public:
  enum class State {
    kIdle, kBound, kListening, kAddrQuery, kAddrResolved, kRouteResolved,
    kConnecting,       // active: REQ sent
    kRequestReceived,  // passive: the app has CONNECT_REQUEST
    kAccepted,         // passive: REP sent, waiting for the RTU
    kResponded,        // active: CONNECT_RESPONSE delivered, RTU not sent yet
    kConnected, kDisconnected, kRejected,
  };
  State state() const { return state_; }
  // Accepted, responded or connected: a DREQ ends its connection.
  bool holds_connection() const {
    return state_ == State::kAccepted || state_ == State::kResponded || state_ == State::kConnected;
  }
  bool datagram() const { return port_space_ == RDMA_PS_UDP || port_space_ == RDMA_PS_IPOIB; }
  const Handshake& handshake() const { return datagram() ? kDatagramHandshake : kConnectedHandshake; }
  const Endpoint& src() const { return src_; }
  const Endpoint& dst() const { return dst_; }
  uint32_t handle() const { return handle_; }

 private:
  friend class ConnectionManager;
  std::string tenant_;
  uint32_t vip_ = 0;  // the owner's virtual IP
  IdOwner* owner_ = nullptr;
  uint32_t handle_ = 0;
  std::weak_ptr<Channel> channel_;
  uint16_t port_space_ = RDMA_PS_TCP;
  uint8_t qp_type_ = 0;
  State state_ = State::kIdle;
  bool bound_ = false;     // holds src_.port in the port table
  bool wildcard_ = false;  // bound to 0.0.0.0 (its client's own address)
  bool reuseaddr_ = false;  // RDMA_OPTION_ID_REUSEADDR
  Endpoint src_, dst_;
  uint32_t psn_ = 0;       // its QP's starting send PSN
  uint32_t qp_num_ = 0;    // its QP (from connect or accept)
  ConnParam param_;        // what it connected or accepted with
  uint64_t token_ = 0;     // its name in CM messages
  // The other end of its connection: an id `far_` on router `far_router_`
  // ("" this one). An active id knows the router from its REQ on and the
  // id from the REP; 0 when there is none (any more).
  std::string far_router_;
  uint64_t far_ = 0;
  bool requested_ = false;  // an active id sent its REQ to far_router_
  // Listeners: CONNECT_REQUESTs queued and not yet read by the app, at most
  // backlog_; requests past that wait (the kernel drops them and the
  // requester's CM retries until there is room).
  struct Waiting {
    std::string router;
    Message request;
  };
  int backlog_ = 0;
  int pending_ = 0;
  std::deque<Waiting> waiting_;
  std::vector<uint32_t> groups_;  // multicast groups joined (rdma_join_multicast)
  std::weak_ptr<Id> listener_;  // a passive id: the listener it came through, until its request is read
  bool disconnecting_ = false;  // sent a DREQ: DISCONNECTED comes with the peer's DREP
  bool in_timewait_ = false;    // its disconnect exchange ended: TIMEWAIT_EXIT follows
};

class ConnectionManager {
 public:
  ConnectionManager();

  // `vip` is the owner's virtual IP; the id queues its events on `channel`.
  std::shared_ptr<Id> create_id(const std::string& tenant, uint32_t vip, IdOwner& owner,
                                std::shared_ptr<Channel> channel, uint16_t port_space, uint8_t qp_type);
  void set_handle(Id& id, uint32_t handle) { id.handle_ = handle; }
  // The owner destroys the id: its port, its queued events and its
  // connection go (the peer gets DISCONNECTED or REJECTED, as from a
  // destroyed kernel id).
  void destroy(Id& id);
  void migrate(Id& id, std::shared_ptr<Channel> channel);
  // The next event of a channel (rdma_get_cm_event).
  std::optional<Event> take_event(Channel& channel);

  Status bind(Id& id, Endpoint addr);
  // RDMA_OPTION_ID_REUSEADDR: ids that all set it may bind one port (only
  // one of them may listen). Set in any state but listening; cleared only
  // before binding.
  Status set_reuseaddr(Id& id, bool reuse);
  Status listen(Id& id, int backlog);
  // `served` says whether a client of the tenant has that virtual IP here;
  // nullopt: not yet known (the caller answers with address_answer, as ARP
  // would: within the app's timeout).
  Status resolve_addr(Id& id, std::optional<Endpoint> src, Endpoint dst, std::optional<bool> served);
  // ADDR_RESOLVED or (not found) ADDR_ERROR for an id still resolving.
  void address_answer(Id& id, bool found);
  Status resolve_route(Id& id);
  Status connect(Id& id, const ConnParam& param, const std::vector<uint8_t>& private_data);
  Status accept(Id& id, const ConnParam& param, const std::vector<uint8_t>& private_data);
  Status reject(Id& id, const std::vector<uint8_t>& private_data);
  Status establish(Id& id);
  Status disconnect(Id& id);
  // rdma_join_multicast of a UDP id with an address: MULTICAST_JOIN at once
  // (the groups are the fabric's, no subnet manager to ask), with the group
  // as the event's destination. EINVAL for another port space, an unbound
  // id or an address that is no IPv4 multicast group; EADDRINUSE when joined
  // already; ENOMEM past kMaxGroupsPerId. The id's QP is attached by the
  // client, as librdmacm does.
  Status join_multicast(Id& id, uint32_t group);
  // rdma_leave_multicast: EADDRNOTAVAIL when not joined.
  Status leave_multicast(Id& id, uint32_t group);
  static constexpr size_t kMaxGroupsPerId = 64;

  // Multi-host: where other routers' ids are (null: this router alone).
  // Cleared before the routes go.
  void set_routes(Routes* routes) { routes_ = routes; }
  void set_clock(Clock* clock) { clock_ = clock; }
  // A message from the connection manager of `router`; garbage is dropped
  // with a log line.
  void receive(const std::string& router, std::span<const std::byte> message);
  // `router` went away or restarted: every connection with it ends as when
  // its messages stop coming (UNREACHABLE, REJECTED, DISCONNECTED).
  void router_lost(const std::string& router);

  // Ports an id of `tenant` holds, for tests and ffctl.
  size_t ports_in_use() const { return ports_.size(); }
  // Connection requests that reached a listener's address here (REQ and
  // SIDR REQ, from this router or another), for ffctl.
  uint64_t requests() const { return requests_received_; }
  // Messages from other routers dropped as garbage.
  uint64_t messages_refused() const { return messages_refused_; }

 private:
  using PortKey = std::tuple<std::string, uint32_t, uint16_t, uint16_t>;  // tenant, ip, port space, port
  Status take_port(Id& id, Endpoint addr);
  // Why `id` may not share its port with `other` (0: it may).
  Status port_conflict(const Id& id, bool wildcard, const Id& other, bool reuse) const;
  void release_port(Id& id);
  void post(Id& id, Event e);
  Event event_for(const Id& id, rdma_cm_event_type type, int status = 0) const;
  std::shared_ptr<Id> listener_at(const std::string& tenant, uint16_t port_space, Endpoint dst) const;
  void end_pending(Id& passive);
  void refuse_requester(Id& active, int status, const std::vector<uint8_t>& private_data = {});
  void unreachable(Id& active);
  void answer_disconnect(Id& waiting, int status = 0);
  void enter_timewait(Id& id);
  void wait_for_room(Id& listener, const std::string& router, const Message& request);
  void leave(Id& id);
  void forget_far(Id& id);

  // Messages: a new one from `id` to its far end, sending one, and what
  // each does where it arrives (`router`: where it came from).
  Message message(const Id& id, MessageType type) const;
  void send(const std::string& router, Message m);
  void deliver(const std::string& router, const Message& m);
  // The id `m` is for, if it is that router's id's far end.
  std::shared_ptr<Id> addressee(const std::string& router, const Message& m) const;
  void on_request(const std::string& router, const Message& m);
  void request(Id& listener, const std::string& router, const Message& m);
  void on_reply(const std::string& router, const Message& m);
  void on_ready_to_use(const std::string& router, const Message& m);
  void on_reject(const std::string& router, const Message& m);
  void on_disconnect_request(const std::string& router, const Message& m);
  void on_disconnect_reply(const std::string& router, const Message& m);

  static constexpr size_t kMaxWaiting = 1024;  // requests waiting for a full listener's room
  std::map<PortKey, std::vector<std::weak_ptr<Id>>> ports_;  // the ids bound to each
  std::map<uint64_t, std::weak_ptr<Id>> ids_;  // by token
  // Passive ids by their requester (router, token), until they answer it:
  // a requester that gives up names only itself.
  std::map<std::pair<std::string, uint64_t>, std::weak_ptr<Id>> requests_;
  uint64_t next_token_ = 1;
  Routes* routes_ = nullptr;
  Clock* clock_ = nullptr;
  uint64_t messages_refused_ = 0;
  uint64_t requests_received_ = 0;
  std::mt19937 random_;
};

}  // namespace ff::router::cm
