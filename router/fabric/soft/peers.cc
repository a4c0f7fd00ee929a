#include "router/fabric/soft/peers.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include "policy/tenant.h"

namespace ff::router::soft {
namespace {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

constexpr auto kHandshakeTimeout = std::chrono::seconds(3);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);

tcp::endpoint to_asio(const Endpoint& e) { return {asio::ip::address_v4(e.ip), e.port}; }

// Latency over throughput (answers are small), and a dead peer noticed
// within seconds even when no FIN or RST ever comes (its host vanished).
void tune(int fd) {
  int one = 1, idle = 2, interval = 1, count = 3;
  unsigned timeout_ms = 6000;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout_ms, sizeof timeout_ms);
}

}  // namespace

Peers::Peers(asio::io_context& io, SoftFabric& fabric, Directory& directory, const std::string& listen)
    : io_(io), fabric_(fabric), engine_(fabric.engine()), directory_(directory), acceptor_(io),
      incarnation_(std::random_device{}() | (uint64_t{std::random_device{}()} << 32) | 1) {
  auto ep = parse_endpoint(listen);
  if (!ep) throw std::runtime_error("--listen '" + listen + "' is not HOST:PORT (an IPv4 address and a port)");
  error_code ec;
  acceptor_.open(tcp::v4(), ec);
  if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(to_asio(*ep), ec);
  if (!ec) acceptor_.listen(64, ec);
  if (ec)
    throw std::runtime_error("cannot listen for peer routers on " + listen + ": " + ec.message() +
                             " (is the address on this host, the port free?)");
  engine_.set_link_down_handler([this](Peer& peer, bool outbound, const std::string& why) {
    // On the poller: the rest happens on the Asio thread.
    asio::post(io_, [this, &peer, outbound, why] {
      spdlog::warn("peer {}: {} connection lost: {}", peer.name, outbound ? "outbound" : "inbound", why);
      State& s = state(peer.name);
      s.last_error = why;
      if (outbound) connect_later(s, why);
    });
  });
  directory_.on_routers_changed([this] { asio::post(io_, [this] { refresh(); }); });
  fabric_.set_routes(this);
  spdlog::info("peers: listening on {}, directory {}", listen, directory_.describe());
  accept_next();
  refresh();
}

Peers::~Peers() {
  fabric_.set_routes(nullptr);
  shutdown();
  directory_.on_routers_changed(nullptr);
  engine_.run_sync([this] { engine_.set_link_down_handler(nullptr); });
}

void Peers::shutdown() {
  stopping_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  for (auto& [name, s] : states_) s->retry.cancel();
  for (auto& [socket, timer] : handshakes_) {
    if (auto t = timer.lock()) t->cancel();
    if (auto k = socket.lock()) k->close(ignored);
  }
  handshakes_.clear();
}

void Peers::track(const std::shared_ptr<Socket>& s, const std::shared_ptr<asio::steady_timer>& t) {
  std::erase_if(handshakes_, [](const auto& h) { return h.first.expired(); });
  handshakes_.emplace_back(s, t);
}

Peers::State& Peers::state(const std::string& name) {
  auto& s = states_[name];
  if (!s) s = std::make_unique<State>(io_, name);
  return *s;
}

Result<Peer*> Peers::locate(std::string_view tenant, uint32_t vip) {
  auto router = directory_.router_for(tenant, vip);
  if (!router) {
    directory_.refresh();
    router = directory_.router_for(tenant, vip);
  }
  if (!router)
    return Error{EINVAL, "no router serves virtual IP " + policy::format_ipv4(vip) + " in tenant " +
                             std::string(tenant) + " (directory: " + directory_.describe() +
                             "): not an address of this tenant's network"};
  if (*router == directory_.self()) return nullptr;
  State& s = state(*router);
  if (!s.peer.out_up.load(std::memory_order_relaxed)) connect(s);
  return &s.peer;
}

void Peers::refresh() {
  if (stopping_) return;
  for (const auto& r : directory_.routers())
    if (r.name != directory_.self()) {
      State& s = state(r.name);
      if (!s.peer.out_up.load(std::memory_order_relaxed)) connect(s);
    }
}

void Peers::connect_later(State& s, std::string why) {
  s.connecting = false;
  s.last_error = std::move(why);
  if (stopping_) return;
  s.retry.expires_after(s.backoff);
  s.backoff = std::min(s.backoff * 2, kMaxBackoff);
  s.retry.async_wait([this, &s](error_code ec) {
    if (!ec) connect(s);
  });
}

void Peers::connect(State& s) {
  if (s.connecting || stopping_) return;
  auto address = directory_.address_of(s.peer.name);
  if (!address) return;  // not (or no longer) in the directory
  auto ep = parse_endpoint(*address);
  if (!ep) return connect_later(s, "bad address " + *address);
  s.connecting = true;
  auto socket = std::make_shared<Socket>(io_);
  auto timer = std::make_shared<asio::steady_timer>(io_, kHandshakeTimeout);
  timer->async_wait([socket](error_code ec) {
    if (!ec) socket->close();
  });
  track(socket, timer);
  auto fail = [this, &s, timer](const std::string& why) {
    timer->cancel();
    connect_later(s, why);
  };
  socket->async_connect(to_asio(*ep), [this, &s, socket, timer, fail, address](error_code ec) {
    if (ec) return fail("connect to " + *address + ": " + ec.message());
    auto mine = std::make_shared<wire::Hello>(wire::make_hello(directory_.self(), incarnation_));
    asio::async_write(*socket, asio::buffer(mine.get(), sizeof *mine),
                      [this, &s, socket, timer, fail, mine, address](error_code wrote, size_t) {
      if (wrote) return fail("hello to " + *address + ": " + wrote.message());
      auto theirs = std::make_shared<wire::Hello>();
      asio::async_read(*socket, asio::buffer(theirs.get(), sizeof *theirs),
                       [this, &s, socket, timer, fail, theirs, address](error_code read, size_t) {
        if (read) return fail("hello from " + *address + ": " + read.message());
        if (auto why = wire::check_hello(*theirs); !why.empty()) return fail(*address + ": " + why);
        if (s.peer.name != theirs->name)
          return fail(*address + " is router '" + std::string(theirs->name) + "', the directory says '" +
                      s.peer.name + "'");
        timer->cancel();
        s.connecting = false;
        s.backoff = std::chrono::milliseconds(50);
        s.last_error.clear();
        attach(s.peer, *socket, /*outbound=*/true, theirs->incarnation);
      });
    });
  });
}

void Peers::accept_next() {
  acceptor_.async_accept([this](error_code ec, Socket socket) {
    if (ec == asio::error::operation_aborted || stopping_) return;
    if (!ec) serve(std::make_shared<Socket>(std::move(socket)));
    accept_next();
  });
}

void Peers::serve(std::shared_ptr<Socket> socket) {
  auto timer = std::make_shared<asio::steady_timer>(io_, kHandshakeTimeout);
  timer->async_wait([socket](error_code ec) {
    if (!ec) socket->close();
  });
  track(socket, timer);
  auto theirs = std::make_shared<wire::Hello>();
  asio::async_read(*socket, asio::buffer(theirs.get(), sizeof *theirs), [this, socket, timer, theirs](error_code ec, size_t) {
    if (ec) return;
    error_code ignored;
    auto from = socket->remote_endpoint(ignored).address().to_string();
    if (auto why = wire::check_hello(*theirs); !why.empty()) {
      spdlog::warn("peers: refused a connection from {}: {}", from, why);
      timer->cancel();
      return;
    }
    std::string name = theirs->name;
    if (name == directory_.self() || !directory_.address_of(name)) {
      spdlog::warn("peers: refused a connection from {} calling itself '{}': not a router of the directory", from,
                   name);
      timer->cancel();
      return;
    }
    auto mine = std::make_shared<wire::Hello>(wire::make_hello(directory_.self(), incarnation_));
    asio::async_write(*socket, asio::buffer(mine.get(), sizeof *mine),
                      [this, socket, timer, theirs, mine, name](error_code wrote, size_t) {
      timer->cancel();
      if (wrote) return;
      attach(state(name).peer, *socket, /*outbound=*/false, theirs->incarnation);
    });
  });
}

void Peers::attach(Peer& peer, Socket& socket, bool outbound, uint64_t incarnation) {
  int fd = socket.release();
  tune(fd);
  auto link = std::make_unique<Link>(peer, UniqueFd(fd), outbound);
  engine_.run_sync([&] { engine_.attach_link(std::move(link), incarnation); });
  spdlog::info("peer {}: {} connection up", peer.name, outbound ? "outbound" : "inbound");
}

std::vector<PeerStatus> Peers::peers() const {
  std::vector<PeerStatus> out;
  for (const auto& [name, s] : states_) {
    const Peer& p = s->peer;
    PeerStatus st;
    st.name = name;
    st.address = directory_.address_of(name).value_or("(gone from the directory)");
    st.out_up = p.out_up.load();
    st.in_up = p.in_up.load();
    st.frames_sent = p.frames_sent.load();
    st.frames_received = p.frames_received.load();
    st.bytes_sent = p.bytes_sent.load();
    st.bytes_received = p.bytes_received.load();
    st.connects = p.connects.load();
    st.failures = p.failures.load();
    st.qps_failed = p.qps_failed.load();
    st.last_error = s->last_error;
    out.push_back(std::move(st));
  }
  return out;
}

}  // namespace ff::router::soft
