// A connection to or from a peer router while Peers sets it up, on the Asio
// thread: TCP, then TLS when the cluster secures its links (tls.h), then
// the Hellos. Nothing here waits on the peer: TLS runs on the nonblocking
// socket, each OpenSSL call made again when asio says the socket is ready,
// and a deadline closes the connection however far it got. Once set up, a
// Link (link.h) takes the socket and its TLS session to the poller.
//
// Why not asio::ssl::stream: it keeps TLS behind a memory BIO pair and
// buffers of its own, so the session could not go on in the poller's
// nonblocking reads and writes of the socket itself.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "proto/fd.h"
#include "router/fabric/soft/tls.h"
#include "router/fabric/soft/wire.h"

namespace ff::router::soft {

class Handshake : public std::enable_shared_from_this<Handshake> {
 public:
  // Called with an empty string on success, else with what went wrong.
  using Done = std::function<void(const std::string& error)>;

  // Sets up `socket` (connected, or about to connect); `tls` null: in the
  // clear. The deadline starts now.
  static std::shared_ptr<Handshake> start(boost::asio::ip::tcp::socket socket, const LinkTls* tls,
                                          std::chrono::milliseconds deadline);
  Handshake(boost::asio::ip::tcp::socket socket, const LinkTls* tls);

  boost::asio::ip::tcp::socket& socket() { return socket_; }
  // The peer's address, for log lines ("10.99.0.3:41234").
  const std::string& remote();

  // Server, before TLS: waits for the first bytes and, when they are a
  // plaintext Hello (a router without link security, or an impostor),
  // reports it with the name it claims (empty if it came cut short).
  void sniff(std::function<void(const std::string& error, std::optional<std::string> plaintext_hello)> done);
  // The TLS handshake as a client toward router `expected`, or as a server;
  // nothing without TLS.
  void secure(bool server, const std::string& expected, Done done);
  void send_hello(const wire::Hello& mine, Done done);
  void read_hello(Done done);  // into theirs()
  const wire::Hello& theirs() const { return theirs_; }
  // Server, TLS: the router the client named in its handshake ("" if none).
  const std::string& claimed() const { return claimed_; }
  // Server, after the Hellos: empty when the authenticated peer may be
  // `name`, otherwise why not.
  std::string check_name(const std::string& name) const;
  bool secured() const { return tls_ != nullptr; }

  // Ends the setup: the socket closes and whatever waits fails.
  void close();
  // Ends the setup successfully: the socket (blocking mode unchanged) and
  // its TLS session, for a Link.
  std::pair<UniqueFd, Ssl> release();

 private:
  // Runs `op` (an OpenSSL call: > 0 when done) until it is done or fails.
  void drive(std::function<int()> op, Done done);
  // The Hello through TLS, in as many records and waits as it takes.
  void move_hello(bool send, Done done);
  std::string failure(const boost::system::error_code& ec) const;

  boost::asio::ip::tcp::socket socket_;
  boost::asio::steady_timer deadline_;
  const LinkTls* tls_;
  Ssl ssl_;
  std::string claimed_, remote_;
  bool timed_out_ = false;
  wire::Hello mine_{}, theirs_{};
  size_t moved_ = 0;  // bytes of the Hello read or written so far (TLS)
};

}  // namespace ff::router::soft
