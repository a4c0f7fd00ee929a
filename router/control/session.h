// A Session is one client connection. It owns every object the client
// created and destroys all of them when the connection ends, for whatever
// reason (exit, crash, SIGKILL, protocol violation).
//
// Thread contract: everything runs on the router's Asio thread.
#pragma once

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/tenant.h"
#include "proto/control_generated.h"
#include "proto/frame.h"
#include "router/common/result.h"
#include "router/control/objects.h"
#include "router/control/services.h"
#include "router/control/peer_identity.h"

namespace ff::router {

class ReplyWriter {
 public:
  flatbuffers::FlatBufferBuilder& fbb() { return fbb_; }
  template <typename T>
  void set_body(flatbuffers::Offset<T> body) {
    type_ = proto::ReplyBodyTraits<T>::enum_value;
    body_ = body.Union();
  }
  void add_fd(UniqueFd fd) { fds_.push_back(std::move(fd)); }

 private:
  friend class Session;
  bool later_ = false;  // Session::answer_later took the reply
  flatbuffers::FlatBufferBuilder fbb_{512};
  proto::ReplyBody type_ = proto::ReplyBody::NONE;
  flatbuffers::Offset<void> body_;
  std::vector<UniqueFd> fds_;
};

enum class SessionRole { kTenant, kAdmin };

class Session : public std::enable_shared_from_this<Session>, public cm::IdOwner {
 public:
  using Socket = boost::asio::local::stream_protocol::socket;

  Session(ControlServices& services, SessionRole role, const policy::TenantSpec* tenant, Socket socket,
          uint64_t id);
  ~Session();

  void start();
  // Tears down every object, closes the socket, leaves the router's registry.
  void close(const std::string& why);
  // Verifies, dispatches and answers one request frame (the socket loop
  // calls it; so does the control-plane fuzz target).
  void handle_frame(proto::Frame& frame);

  ControlServices& services() { return services_; }
  // The Asio thread's executor, for a handler's timers.
  boost::asio::any_io_executor executor() { return socket_.get_executor(); }
  Fabric& fabric() { return services_.fabric(); }
  SessionRole role() const { return role_; }
  const policy::TenantSpec* tenant() const { return tenant_; }
  uint64_t id() const { return id_; }
  const PeerIdentity& peer() const { return peer_; }
  ObjectTable& objects() { return objects_; }
  const ObjectTable& objects() const { return objects_; }

  // Registered segments by the client address they start at (handles).
  std::map<uint64_t, uint32_t>& segments_by_base() { return segments_by_base_; }
  // The owner identity fabric objects of this session carry.
  Owner owner() const;

  // Holds this session's replies, and its further requests, until the
  // returned function is called (from any thread, once): how a handler waits
  // on something slow, e.g. the etcd directory, without blocking the control
  // thread and every other client with it. One client holds nothing more
  // meanwhile: its requests stay in its socket.
  std::function<void()> hold();

  // A handler that must wait for something before it knows its status (an
  // answer from another router) takes its reply with answer_later and
  // returns; the returned function sends the reply with that status (on
  // the control thread, once). Meanwhile the session takes no further
  // request, so the client's replies keep their order. Nothing happens when
  // it is called after the session closed.
  using Answer = std::function<void(Status)>;
  Answer answer_later(ReplyWriter& w, uint64_t request_id);

  // cm::IdOwner: an id for a connection request to one of this session's
  // listeners (counted as any object), and its removal.
  std::optional<uint32_t> adopt(std::shared_ptr<cm::Id> id) override;
  void drop(uint32_t handle) override;

  // A new QoS spec for the tenant: a request waiting for its turn under the
  // old rate goes now.
  void release_control_wait() { control_timer_.cancel(); }

  // Set by the Hello handler.
  bool greeted() const { return virtual_ip_.has_value(); }
  void set_virtual_ip(uint32_t ip) { virtual_ip_ = ip; }
  uint32_t virtual_ip() const { return virtual_ip_.value_or(0); }

 private:
  void arm_read();
  void on_readable(const boost::system::error_code& ec);
  bool handle_buffered();  // false once closed or held
  // Whether the tenant's control rate makes `frame` wait: then it is kept
  // in delayed_, and the session reads and handles nothing more (its
  // replies still go out) until resume_delayed.
  bool must_wait(proto::Frame& frame);
  void resume_delayed();
  void release_hold();
  Status dispatch(proto::Frame& frame, const proto::Request& req, ReplyWriter& w);
  void queue(ReplyWriter& w, uint64_t request_id, const Status& status);
  void flush();

  struct Outgoing {
    std::vector<uint8_t> bytes;  // header + payload
    std::vector<UniqueFd> fds;   // sent with the first byte
    size_t sent = 0;
  };

  ControlServices& services_;
  const SessionRole role_;
  const policy::TenantSpec* tenant_;
  Socket socket_;
  const uint64_t id_;
  PeerIdentity peer_;
  std::optional<uint32_t> virtual_ip_;
  ObjectTable objects_;
  std::map<uint64_t, uint32_t> segments_by_base_;
  proto::FrameReader reader_;
  std::optional<proto::Frame> delayed_;  // read, waiting for its turn in the tenant's control rate
  uint64_t delayed_since_ns_ = 0;
  boost::asio::steady_timer control_timer_;
  std::deque<Outgoing> out_;
  size_t out_bytes_ = 0;
  bool reading_ = false;
  bool writing_ = false;
  bool closed_ = false;
  int holds_ = 0;
};

}  // namespace ff::router
