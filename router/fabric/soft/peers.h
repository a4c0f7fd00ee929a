// Peers: this router's connections to the other routers of the cluster, on
// the Asio (control) thread. It listens for peers, connects to every router
// the directory lists (and reconnects, with backoff, when a connection is
// lost or refused), exchanges Hellos, and hands each established connection
// to the engine's poller, which owns it from then on (link.h).
//
// It is the soft fabric's FabricCluster (the daemon owns it) and its
// SoftRoutes: where a tenant's virtual IP is.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "router/directory/directory.h"
#include "router/directory/endpoint.h"
#include "router/fabric/soft/soft_fabric.h"

namespace ff::router::soft {

class Peers final : public FabricCluster, public SoftRoutes {
 public:
  // Binds the listener (throws std::runtime_error with what to fix), routes
  // the fabric's traffic through this cluster and starts connecting to the
  // directory's routers.
  Peers(boost::asio::io_context& io, SoftFabric& fabric, Directory& directory, const std::string& listen);
  ~Peers() override;

  void shutdown() override;
  std::vector<PeerStatus> peers() const override;
  Result<Peer*> locate(std::string_view tenant, uint32_t vip) override;

 private:
  struct State {
    State(boost::asio::io_context& io, std::string name) : peer(std::move(name)), retry(io) {}
    Peer peer;
    bool connecting = false;
    boost::asio::steady_timer retry;
    std::chrono::milliseconds backoff{50};
    std::string last_error;
  };
  using Socket = boost::asio::ip::tcp::socket;

  State& state(const std::string& name);
  void refresh();  // connect to every router of the directory we are not connected to
  void connect(State& s);
  void connect_later(State& s, std::string why);
  void accept_next();
  void serve(std::shared_ptr<Socket> socket);
  void attach(Peer& peer, Socket& socket, bool outbound, uint64_t incarnation);

  boost::asio::io_context& io_;
  SoftFabric& fabric_;
  Engine& engine_;
  Directory& directory_;
  boost::asio::ip::tcp::acceptor acceptor_;
  const uint64_t incarnation_;
  std::map<std::string, std::unique_ptr<State>> states_;
  // Handshakes under way, closed by shutdown().
  std::vector<std::pair<std::weak_ptr<Socket>, std::weak_ptr<boost::asio::steady_timer>>> handshakes_;
  void track(const std::shared_ptr<Socket>& s, const std::shared_ptr<boost::asio::steady_timer>& t);
  bool stopping_ = false;
};

}  // namespace ff::router::soft
