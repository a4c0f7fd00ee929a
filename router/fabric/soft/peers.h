// Peers: this router's connections to the other routers of the cluster, on
// the Asio (control) thread. It listens for peers, connects to every router
// the directory lists (and reconnects, with backoff, when a connection is
// lost or refused), secures each connection (TLS, when configured: tls.h)
// and exchanges Hellos (handshake.h), and hands each established connection
// to the engine's poller, which owns it from then on (link.h). Whoever
// fails to prove it belongs is refused with a log line that names its
// address and why, counted in the failures of the router it claimed to be.
//
// Routers are joined poller to poller: with --pollers N, each pair of
// routers has N pairs of links, link i served by poller i at both ends, and
// a tenant's traffic goes on the links of the poller that serves it (the
// same index on every router; a peer that runs another number of pollers
// is refused, by name). So no work request ever crosses pollers.
//
// It is the soft fabric's FabricCluster (the daemon owns it) and its
// SoftRoutes: where a tenant's virtual IP is. It also carries the control
// planes' messages (rdma_cm) on the same links: a message for a router whose
// link is not up waits for it (a bounded number of them), and is reported
// lost with its router when the link cannot be made.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "router/directory/directory.h"
#include "router/directory/endpoint.h"
#include "router/fabric/soft/handshake.h"
#include "router/fabric/soft/soft_fabric.h"
#include "router/fabric/soft/tls.h"

namespace ff::router::soft {

class Peers final : public FabricCluster, public SoftRoutes {
 public:
  // Reads the link security's files and binds the listener (throws
  // std::runtime_error with what to fix), routes the fabric's traffic
  // through this cluster and starts connecting to the directory's routers.
  Peers(boost::asio::io_context& io, SoftFabric& fabric, Directory& directory, const std::string& listen,
        const LinkSecurity& security);
  ~Peers() override;

  void shutdown() override;
  std::vector<PeerStatus> peers() const override;
  void on_messages(MessageHandler message, LostHandler lost) override;
  void send_message(const std::string& router, std::vector<std::byte> message) override;
  Result<Peer*> locate(std::string_view tenant, uint32_t vip) override;
  std::vector<Peer*> peers_of(std::string_view tenant) override;

 private:
  // One poller's links to one router (its `peer`, on that poller's engine).
  struct State {
    State(boost::asio::io_context& io, std::string name, size_t i) : peer(std::move(name)), poller(i), retry(io) {}
    Peer peer;
    const size_t poller;
    bool connecting = false;
    boost::asio::steady_timer retry;
    std::chrono::milliseconds backoff{50};
    std::string last_error;
    uint64_t incarnation = 0;  // of the peer last attached
    std::deque<std::vector<std::byte>> unsent;  // messages waiting for the outbound link (poller 0's)
  };
  using Socket = boost::asio::ip::tcp::socket;

  // Control messages travel on poller 0's links.
  State& state(const std::string& name, size_t poller = 0);
  Engine& engine(const State& s) { return fabric_.engine(s.poller); }
  // Connects every poller's links to `name` that are not up.
  void connect_all(const std::string& name);
  void refresh();  // connect to every router of the directory we are not connected to
  void connect(State& s);
  void greet(State& s, const std::shared_ptr<Handshake>& h, const std::string& address);
  void connect_later(State& s, std::string why);
  void accept_next();
  void serve(const std::shared_ptr<Handshake>& h);
  void welcome(const std::shared_ptr<Handshake>& h);
  // Closes a connection that did not prove itself; `claimed` is the router
  // it claimed to be ("" if none).
  void refuse(Handshake& h, const std::string& claimed, const std::string& why, bool quiet = false);
  void attach(State& s, Handshake& h, bool outbound, uint64_t incarnation);
  // What the peer's Hello says of its pollers that this router cannot
  // take (empty: fine).
  std::string check_pollers(const wire::Hello& theirs) const;
  std::shared_ptr<Handshake> handshake(Socket socket);
  // The messages to and from `name` are gone: its handler learns it.
  void lose(State& s);
  void flush_unsent(State& s);

  boost::asio::io_context& io_;
  SoftFabric& fabric_;
  Directory& directory_;
  boost::asio::ip::tcp::acceptor acceptor_;
  const uint64_t incarnation_;
  const std::unique_ptr<LinkTls> tls_;  // null: links in the clear
  std::map<std::pair<std::string, size_t>, std::unique_ptr<State>> states_;  // by router and poller
  // Handshakes under way (closed by shutdown()), at most 64 plus one per
  // poller for each router of the directory.
  std::vector<std::weak_ptr<Handshake>> handshakes_;
  uint64_t refused_ = 0;  // connections refused, for the log's rate limit
  bool stopping_ = false;
  MessageHandler on_message_;
  LostHandler on_lost_;
  // Messages the poller took from the links and the Asio thread has not
  // handled yet: a peer that sends more than kMaxQueuedMessages loses its link.
  std::atomic<size_t> messages_queued_{0};
};

}  // namespace ff::router::soft
