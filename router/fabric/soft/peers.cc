#include "router/fabric/soft/peers.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>

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

constexpr auto kHandshakeTimeout = std::chrono::milliseconds(3000);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
// Connections being set up at once: 64, plus one per poller for each
// router of the directory (each opens one per poller), at most 512: more
// (a flood) are closed at once, so strangers cannot make the router hold
// memory or descriptors for them.
constexpr size_t kMaxHandshakes = 64;
constexpr size_t kMaxHandshakesEver = 512;
// Refusals logged one by one; after that every 1000th.
constexpr uint64_t kRefusalsLogged = 100;
// Control messages held for one router while its link comes up, and
// taken from all links but not yet handled.
constexpr size_t kMaxUnsentMessages = 4096;
constexpr size_t kMaxQueuedMessages = 4096;

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

Peers::Peers(asio::io_context& io, SoftFabric& fabric, Directory& directory, const std::string& listen,
             const LinkSecurity& security)
    : io_(io), fabric_(fabric), directory_(directory), acceptor_(io),
      incarnation_(std::random_device{}() | (uint64_t{std::random_device{}()} << 32) | 1),
      tls_(LinkTls::open(security, directory.self())) {
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
  for (size_t i = 0; i < fabric_.pollers(); ++i) {
    fabric_.engine(i).set_link_down_handler([this, i](Peer& peer, bool outbound, const std::string& why) {
      // On the poller: the rest happens on the Asio thread.
      asio::post(io_, [this, i, &peer, outbound, why] {
        State& s = state(peer.name, i);
        spdlog::warn("peer {}: {} connection{} lost: {}", peer.name, outbound ? "outbound" : "inbound",
                     fabric_.pollers() > 1 ? " of poller " + std::to_string(i) : std::string(), why);
        s.last_error = why;
        lose(s);  // messages on the lost connection may not have arrived
        if (outbound) connect_later(s, why);
      });
    });
    fabric_.engine(i).set_message_handler([this](Peer& peer, std::span<const std::byte> message) {
      // On the poller: handled on the Asio thread, at most kMaxQueuedMessages behind.
      if (messages_queued_.fetch_add(1, std::memory_order_relaxed) >= kMaxQueuedMessages) {
        messages_queued_.fetch_sub(1, std::memory_order_relaxed);
        return false;
      }
      asio::post(io_, [this, &peer, bytes = std::vector<std::byte>(message.begin(), message.end())] {
        messages_queued_.fetch_sub(1, std::memory_order_relaxed);
        if (on_message_) on_message_(peer.name, bytes);
      });
      return true;
    });
  }
  directory_.on_routers_changed([this] { asio::post(io_, [this] { refresh(); }); });
  fabric_.set_routes(this);
  spdlog::info("peers: listening on {}, directory {}, links {}", listen, directory_.describe(),
               tls_ ? tls_->describe() : "in the clear");
  if (!tls_)
    spdlog::warn("peers: links to other routers are neither authenticated nor encrypted (no --link-psk or "
                 "--link-cert): any host that reaches {} can pose as a router of the directory",
                 listen);
  accept_next();
  refresh();
}

Peers::~Peers() {
  fabric_.set_routes(nullptr);
  shutdown();
  directory_.on_routers_changed(nullptr);
  for (size_t i = 0; i < fabric_.pollers(); ++i) {
    Engine& e = fabric_.engine(i);
    e.run_sync([&e] {
      e.set_link_down_handler(nullptr);
      e.set_message_handler(nullptr);
    });
  }
}

void Peers::on_messages(MessageHandler message, LostHandler lost) {
  on_message_ = std::move(message);
  on_lost_ = std::move(lost);
}

void Peers::send_message(const std::string& router, std::vector<std::byte> message) {
  if (stopping_ || router == directory_.self() || !directory_.address_of(router) ||
      message.size() > kMaxClusterMessage) {
    spdlog::warn("peers: a control message for router '{}' cannot go ({})", router,
                 stopping_ ? "stopping" : message.size() > kMaxClusterMessage ? "too long" : "not in the directory");
    auto lost = on_lost_;
    if (lost) asio::post(io_, [lost, router] { lost(router); });
    return;
  }
  State& s = state(router);
  if (s.unsent.empty() && s.peer.out_up.load(std::memory_order_relaxed)) {
    bool sent = false;
    engine(s).run_sync([&] { sent = engine(s).send_message(s.peer, message); });
    if (sent) return;
  }
  if (s.unsent.size() >= kMaxUnsentMessages) {
    spdlog::warn("peer {}: {} control messages wait for its link already", router, kMaxUnsentMessages);
    return lose(s);
  }
  s.unsent.push_back(std::move(message));
  connect(s);
}

void Peers::flush_unsent(State& s) {
  engine(s).run_sync([&] {
    while (!s.unsent.empty() && engine(s).send_message(s.peer, s.unsent.front())) s.unsent.pop_front();
  });
}

void Peers::lose(State& s) {
  s.unsent.clear();
  if (s.poller == 0 && on_lost_) on_lost_(s.peer.name);  // the messages' links
}

void Peers::shutdown() {
  stopping_ = true;
  error_code ignored;
  acceptor_.close(ignored);
  for (auto& [name, s] : states_) s->retry.cancel();
  for (auto& weak : handshakes_)
    if (auto h = weak.lock()) h->close();
  handshakes_.clear();
}

std::shared_ptr<Handshake> Peers::handshake(Socket socket) {
  auto h = Handshake::start(std::move(socket), tls_.get(), kHandshakeTimeout);
  std::erase_if(handshakes_, [](const auto& weak) { return weak.expired(); });
  handshakes_.push_back(h);
  return h;
}

Peers::State& Peers::state(const std::string& name, size_t poller) {
  auto& s = states_[{name, poller}];
  if (!s) s = std::make_unique<State>(io_, name, poller);
  return *s;
}

void Peers::connect_all(const std::string& name) {
  for (size_t i = 0; i < fabric_.pollers(); ++i) {
    State& s = state(name, i);
    if (!s.peer.out_up.load(std::memory_order_relaxed)) connect(s);
  }
}

std::string Peers::check_pollers(const wire::Hello& theirs) const {
  if (theirs.pollers == fabric_.pollers()) return {};
  return "it runs " + std::to_string(theirs.pollers) + " poller(s) and this router " +
         std::to_string(fabric_.pollers()) + ": every router of a cluster runs the same --pollers";
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
  State& s = state(*router, poller_of(tenant, fabric_.pollers()));
  if (!s.peer.out_up.load(std::memory_order_relaxed)) connect(s);
  return &s.peer;
}

std::vector<Peer*> Peers::peers_of(std::string_view tenant) {
  std::vector<Peer*> out;
  for (const DirectoryEntry& e : directory_.entries()) {
    if (e.tenant != tenant || e.router == directory_.self()) continue;
    State& s = state(e.router, poller_of(tenant, fabric_.pollers()));
    if (std::find(out.begin(), out.end(), &s.peer) != out.end()) continue;
    if (!s.peer.out_up.load(std::memory_order_relaxed)) connect(s);
    out.push_back(&s.peer);
  }
  return out;
}

void Peers::refresh() {
  if (stopping_) return;
  for (const auto& r : directory_.routers())
    if (r.name != directory_.self()) connect_all(r.name);
}

void Peers::connect_later(State& s, std::string why) {
  s.connecting = false;
  if (!s.unsent.empty()) lose(s);  // messages do not wait through a failed connect
  if (why != s.last_error && !stopping_)
    spdlog::warn("peer {}: cannot connect{}: {}", s.peer.name,
                 fabric_.pollers() > 1 ? " poller " + std::to_string(s.poller) : std::string(), why);
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
  auto h = handshake(Socket(io_));
  h->socket().async_connect(to_asio(*ep), [this, &s, h, address = *address](error_code ec) {
    if (ec) {
      h->close();
      return connect_later(s, "connect to " + address + ": " + ec.message());
    }
    h->secure(/*server=*/false, s.peer.name, [this, &s, h, address](const std::string& why) {
      if (why.empty()) return greet(s, h, address);
      h->close();
      connect_later(s, "TLS with " + address + ": " + why + " (" + tls_->hint() + ")");
    });
  });
}

// Outbound, connected (and secured): the Hellos, then the link.
void Peers::greet(State& s, const std::shared_ptr<Handshake>& h, const std::string& address) {
  auto fail = [this, &s, h](const std::string& why) {
    h->close();
    connect_later(s, why);
  };
  auto mine = wire::make_hello(directory_.self(), incarnation_, static_cast<uint16_t>(s.poller),
                               static_cast<uint16_t>(fabric_.pollers()));
  h->send_hello(mine, [this, &s, h, fail, address](const std::string& wrote) {
    if (!wrote.empty()) return fail("hello to " + address + ": " + wrote);
    h->read_hello([this, &s, h, fail, address](const std::string& read) {
      if (!read.empty())
        return fail("hello from " + address + ": " + read +
                    (h->secured() ? ""
                                  : " (if that router secures its links, this one must too: --link-psk or "
                                    "--link-cert)"));
      const wire::Hello& theirs = h->theirs();
      if (auto why = wire::check_hello(theirs); !why.empty()) return fail(address + ": " + why);
      if (s.peer.name != theirs.name)
        return fail(address + " is router '" + std::string(theirs.name) + "', the directory says '" +
                    s.peer.name + "'");
      if (auto why = check_pollers(theirs); !why.empty()) return fail(address + ": " + why);
      if (theirs.poller != s.poller)
        return fail(address + " answered for its poller " + std::to_string(theirs.poller) + ", not " +
                    std::to_string(s.poller));
      s.connecting = false;
      s.backoff = std::chrono::milliseconds(50);
      s.last_error.clear();
      attach(s, *h, /*outbound=*/true, theirs.incarnation);
    });
  });
}

void Peers::accept_next() {
  acceptor_.async_accept([this](error_code ec, Socket socket) {
    if (ec == asio::error::operation_aborted || stopping_) return;
    std::erase_if(handshakes_, [](const auto& weak) { return weak.expired(); });
    const size_t most =
        std::min(kMaxHandshakesEver, kMaxHandshakes + fabric_.pollers() * directory_.routers().size());
    if (!ec && handshakes_.size() < most) {
      serve(handshake(std::move(socket)));
    } else if (!ec) {
      auto h = Handshake::start(std::move(socket), nullptr, kHandshakeTimeout);
      refuse(*h, "", std::to_string(most) + " connections are being set up already");
    }
    accept_next();
  });
}

// Inbound: with link security, a plaintext Hello is refused by name before
// TLS would refuse it as noise; then TLS, then the Hellos.
void Peers::serve(const std::shared_ptr<Handshake>& h) {
  h->remote();  // while the socket is open, for the log
  if (!tls_) return welcome(h);
  h->sniff([this, h](const std::string& error, std::optional<std::string> plaintext) {
    if (!error.empty()) return refuse(*h, "", error, /*quiet=*/true);
    if (plaintext)
      return refuse(*h, *plaintext,
                    std::string("it sent a plaintext Hello, and this router's links use ") + tls_->describe() + ": " +
                        tls_->hint());
    h->secure(/*server=*/true, {}, [this, h](const std::string& why) {
      if (!why.empty()) return refuse(*h, h->claimed(), "TLS handshake failed: " + why + " (" + tls_->hint() + ")");
      welcome(h);
    });
  });
}

void Peers::welcome(const std::shared_ptr<Handshake>& h) {
  h->read_hello([this, h](const std::string& error) {
    if (!error.empty()) return refuse(*h, h->claimed(), "no Hello: " + error, /*quiet=*/!h->secured());
    const wire::Hello& theirs = h->theirs();
    if (auto why = wire::check_hello(theirs); !why.empty()) return refuse(*h, h->claimed(), why);
    std::string name = theirs.name;
    if (name == directory_.self() || !directory_.address_of(name))
      return refuse(*h, "", "it calls itself '" + name + "': not a router of the directory");
    if (auto why = h->check_name(name); !why.empty()) return refuse(*h, name, why);
    if (auto why = check_pollers(theirs); !why.empty()) return refuse(*h, name, why);
    const uint16_t poller = theirs.poller;
    auto mine = wire::make_hello(directory_.self(), incarnation_, poller, static_cast<uint16_t>(fabric_.pollers()));
    h->send_hello(mine, [this, h, name, poller](const std::string& wrote) {
      if (!wrote.empty()) return refuse(*h, name, "hello to it: " + wrote, /*quiet=*/true);
      attach(state(name, poller), *h, /*outbound=*/false, h->theirs().incarnation);
    });
  });
}

void Peers::refuse(Handshake& h, const std::string& claimed, const std::string& why, bool quiet) {
  const std::string& from = h.remote();  // before the socket closes
  h.close();
  // A router of the directory it claimed to be: its failures count it.
  bool member = !claimed.empty() && claimed != directory_.self() && directory_.address_of(claimed);
  if (member) state(claimed).peer.failures.fetch_add(1, std::memory_order_relaxed);
  std::string who = claimed.empty() ? "" : " claiming to be '" + claimed + "'";
  if (quiet) return spdlog::debug("peers: closed a connection from {}{}: {}", from, who, why);
  if (++refused_ > kRefusalsLogged && refused_ % 1000 != 0) return;
  spdlog::warn("peers: refused a connection from {}{}: {}{}", from, who, why,
               refused_ == kRefusalsLogged ? " (from now on, every 1000th refusal is logged)" : "");
}

void Peers::attach(State& s, Handshake& h, bool outbound, uint64_t incarnation) {
  auto [fd, tls] = h.release();
  tune(fd.get());
  auto link = std::make_unique<Link>(s.peer, std::move(fd), outbound, std::move(tls));
  engine(s).run_sync([&] { engine(s).attach_link(std::move(link), incarnation); });
  spdlog::info("peer {}: {} connection{} up ({})", s.peer.name, outbound ? "outbound" : "inbound",
               fabric_.pollers() > 1 ? " of poller " + std::to_string(s.poller) : std::string(),
               tls_ ? tls_->describe() : "in the clear");
  if (s.incarnation != 0 && s.incarnation != incarnation) lose(s);  // it restarted: its ids are gone
  s.incarnation = incarnation;
  if (outbound) flush_unsent(s);
}

// A router's row sums its pollers' links; a direction is up when every
// poller's link is.
std::vector<PeerStatus> Peers::peers() const {
  std::vector<PeerStatus> out;
  for (const auto& [key, s] : states_) {
    const auto& [name, poller] = key;
    const Peer& p = s->peer;
    if (poller == 0 || out.empty() || out.back().name != name) {
      PeerStatus first;
      first.name = name;
      first.address = directory_.address_of(name).value_or("(gone from the directory)");
      first.out_up = first.in_up = true;
      out.push_back(std::move(first));
    }
    PeerStatus& st = out.back();
    st.out_up = st.out_up && p.out_up.load();
    st.in_up = st.in_up && p.in_up.load();
    st.frames_sent += p.frames_sent.load();
    st.frames_received += p.frames_received.load();
    st.bytes_sent += p.bytes_sent.load();
    st.bytes_received += p.bytes_received.load();
    st.connects += p.connects.load();
    st.failures += p.failures.load();
    st.qps_failed += p.qps_failed.load();
    if (st.last_error.empty()) st.last_error = s->last_error;
  }
  return out;
}

}  // namespace ff::router::soft
