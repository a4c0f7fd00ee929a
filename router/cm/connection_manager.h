// rdma_cm on virtual IPs: the router side of librdmacm for the clients of
// this router (libffverbs/rdma_cm.cc is the other side).
//
// A client's ids and event channels are objects of its session; this is
// where they meet: ports bound per tenant and address, listeners, the
// connection handshake (REQ, REP, RTU, REJ, DREQ) between two ids, and the
// events each id's channel queues. One tenant never sees another's ports or
// listeners: every table is keyed by tenant.
//
// Bounds: an id queues a few events per state it passes through, and ids
// are objects their session is charged for (--max-objects-per-session);
// a listener holds at most `backlog` requests not yet accepted or rejected,
// and a connect beyond that is rejected. So a client cannot grow the router
// by not reading its events.
//
// Thread contract: the Asio thread (the control plane's), like sessions.
#pragma once

#include <rdma/rdma_cma.h>

#include <array>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "router/common/result.h"
#include "proto/fd.h"

namespace ff::router::cm {

struct Endpoint {
  uint32_t ip = 0;  // host order
  uint16_t port = 0;
  bool operator==(const Endpoint&) const = default;
};

// struct rdma_conn_param without the private data.
struct ConnParam {
  uint8_t responder_resources = 0, initiator_depth = 0, flow_control = 0, retry_count = 0,
          rnr_retry_count = 0, srq = 0;
  uint32_t qp_num = 0;
};

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
  Endpoint src_, dst_;
  uint32_t psn_ = 0;       // its QP's starting send PSN
  uint32_t qp_num_ = 0;    // its QP (from connect or accept)
  ConnParam param_;        // what it connected or accepted with
  std::vector<uint8_t> private_data_;
  std::weak_ptr<Id> peer_;  // the other end of a connection
  // Listeners: CONNECT_REQUESTs queued and not yet read by the app, at most
  // backlog_; requests past that wait (the kernel drops them and the
  // requester's CM retries until there is room).
  int backlog_ = 0;
  int pending_ = 0;
  std::deque<std::weak_ptr<Id>> waiting_;
  std::weak_ptr<Id> listener_;  // a passive id: the listener it came through, until its request is read
  bool disconnecting_ = false;  // sent a DREQ: DISCONNECTED comes with the peer's DREP
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

  // Ports an id of `tenant` holds, for tests and ffctl.
  size_t ports_in_use() const { return ports_.size(); }

 private:
  using PortKey = std::tuple<std::string, uint32_t, uint16_t, uint16_t>;  // tenant, ip, port space, port
  Status take_port(Id& id, Endpoint addr);
  void release_port(Id& id);
  void post(Id& id, Event e);
  Event event_for(const Id& id, rdma_cm_event_type type, int status = 0) const;
  std::shared_ptr<Id> listener_at(const Id& from, Endpoint dst) const;
  void request(Id& active, Id& listener);
  void end_pending(Id& passive);
  void refuse_requester(Id& active, int status, const std::vector<uint8_t>& private_data = {});
  void answer_disconnect(Id& waiting);
  void lose_peer(Id& id);

  std::map<PortKey, std::weak_ptr<Id>> ports_;
  std::mt19937 random_;
};

}  // namespace ff::router::cm
