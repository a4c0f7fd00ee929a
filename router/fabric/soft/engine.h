// The soft fabric's engine: the poller's work for the soft fabric. On top of
// the queue core (registries, completions, errors, flushes) it executes
// every QP's work requests itself: the requester half runs send queues
// (requester.cc toward QPs of this router, link_requester.cc toward other
// routers), the responder rules (responder.h) decide what the receiving QP
// does, and the links (links.cc) carry requests and answers to and from
// other routers (link_responder.cc executes what arrives).
//
// Thread contract: see router/fabric/core/queue_core.h. When idle it arms
// every send ring's doorbell request and the poller sleeps.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "router/fabric/core/queue_core.h"
#include "router/fabric/soft/link.h"
#include "router/fabric/soft/objects.h"
#include "router/fabric/soft/responder.h"
#include "router/fabric/soft/wire.h"

namespace ff::router::soft {

struct Sges;

// Sending a UD datagram to another router.
enum class Datagram { kSent, kWait, kDropped };

// Called on the poller when a connection to a peer is lost.
using LinkDownHandler = std::function<void(Peer& peer, bool outbound, const std::string& why)>;
// Called on the poller with a control message from a peer; false when it
// cannot be taken now (the link is then closed as flooding).
using MessageHandler = std::function<bool(Peer& peer, std::span<const std::byte> message)>;

class Engine final : public core::QueueCore {
 public:
  explicit Engine(std::chrono::microseconds spin, PollerPlacement placement = {});
  ~Engine() override;

  // The registries, with the soft fabric's own types.
  Qp* find_qp(uint32_t qpn) const { return static_cast<Qp*>(QueueCore::find_qp(qpn)); }
  const Mr* find_mr(uint32_t key) const { return static_cast<const Mr*>(QueueCore::find_mr(key)); }
  const Ah* find_ah(uint32_t id) const { return static_cast<const Ah*>(QueueCore::find_ah(id)); }
  Responder& responder() { return responder_; }

  // --- other routers (links.cc) ---
  // Hands a connection set up by Peers to the poller (inside run_sync). An
  // inbound connection from a restarted peer fails the QPs of its old life.
  void attach_link(std::unique_ptr<Link> link, uint64_t incarnation);
  // Set once, before any link is attached.
  void set_link_down_handler(LinkDownHandler h) { on_link_down_ = std::move(h); }
  void set_message_handler(MessageHandler h) { on_message_ = std::move(h); }
  // Queues a control message on the link to `peer` (inside run_sync); false
  // when that link is not up.
  bool send_message(Peer& peer, std::span<const std::byte> message);
  // A UD datagram to a QP behind `ah` on another router (link_requester.cc).
  Datagram send_remote_datagram(Qp& q, const Ah& ah, const shm::SendWqe& w, const Sges& src, uint32_t qkey,
                                uint64_t now);
  // Puts that datagram on `peer`'s outbound link (a multicast one: to the
  // members there); false when the link is down or full.
  bool put_datagram(Qp& q, const Ah& ah, Peer& peer, const shm::SendWqe& w, const Sges& src, uint32_t qkey);
  // Whether a multicast datagram to `ah` may go now: kWait while a router
  // of its fanout is being connected (within the grace a unicast datagram
  // gets) or its link is full, so that no member anywhere got it before it
  // goes again; a router that stays unreachable loses its copy.
  Datagram fanout_ready(const Ah& ah, uint64_t now);
  // Completes the send queue's head WQE of a QP routed to another router:
  // a completion when signaled (always on error), then the QP goes to ERR
  // on error.
  void complete_remote_head(Qp& q, const shm::SendWqe& w, ibv_wc_status status, uint64_t bytes);

 private:
  bool work(uint64_t now) override;
  bool prepare_to_sleep(uint64_t now, uint64_t& deadline) override;
  void cancel_sleep() override;
  void on_error(core::Qp& qp) override;  // a receive held by a message flushes
  void on_reset(core::Qp& qp) override;
  void on_srq_gone(core::Qp& qp) override;
  void send_posted_datagrams(core::Qp& qp) override;
  bool connects_here(const core::Qp& qp) const override { return static_cast<const Qp&>(qp).route == nullptr; }

  Qp* rnr_responder(const Qp& q) const;
  // One QP's send queue: true when it did any work.
  bool service(Qp& qp, uint64_t now);
  bool service_local(Qp& qp, uint64_t now);   // requester.cc
  bool service_remote(Qp& qp, uint64_t now);  // link_requester.cc
  // links.cc
  bool receive_links();
  bool flush_links();  // and drops the dead ones
  void on_frame(Link& link, const wire::Header& h, std::span<const std::byte> payload);
  void drop_link(Link& link);
  void fail_routes_to(Peer& peer);
  // link_requester.cc
  void on_answer(Link& link, const wire::Header& h, std::span<const std::byte> payload);
  // link_responder.cc
  void on_request(Link& link, const wire::Header& h, std::span<const std::byte> payload);
  void on_datagram(Link& link, const wire::Header& h, std::span<const std::byte> payload);
  Link::Placement placement_for(const Link& link, const wire::Header& h) const;

  Responder responder_{*this};
  std::vector<std::unique_ptr<Link>> links_;
  LinkDownHandler on_link_down_;
  MessageHandler on_message_;
  uint64_t now_ = 0;  // of the current poller pass
};

}  // namespace ff::router::soft
