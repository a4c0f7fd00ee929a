#include "router/fabric/soft/handshake.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>

namespace ff::router::soft {

namespace asio = boost::asio;
using asio::ip::tcp;
using boost::system::error_code;

std::shared_ptr<Handshake> Handshake::start(tcp::socket socket, const LinkTls* tls,
                                            std::chrono::milliseconds deadline) {
  auto h = std::make_shared<Handshake>(std::move(socket), tls);
  h->deadline_.expires_after(deadline);
  h->deadline_.async_wait([weak = std::weak_ptr<Handshake>(h)](error_code ec) {
    auto self = weak.lock();
    if (ec || !self) return;
    self->timed_out_ = true;
    error_code ignored;
    self->socket_.close(ignored);
  });
  return h;
}

Handshake::Handshake(tcp::socket socket, const LinkTls* tls)
    : socket_(std::move(socket)), deadline_(socket_.get_executor()), tls_(tls) {}

const std::string& Handshake::remote() {
  if (remote_.empty()) {
    error_code ec;
    auto ep = socket_.remote_endpoint(ec);
    remote_ = ec ? "(an unknown address)" : ep.address().to_string() + ":" + std::to_string(ep.port());
  }
  return remote_;
}

std::string Handshake::failure(const error_code& ec) const {
  if (timed_out_) return "no handshake within the deadline";
  if (ec == asio::error::eof) return "the peer closed the connection";
  return ec.message();
}

void Handshake::sniff(std::function<void(const std::string&, std::optional<std::string>)> done) {
  socket_.async_wait(tcp::socket::wait_read, [self = shared_from_this(), done = std::move(done)](error_code ec) {
    if (ec) return done(self->failure(ec), std::nullopt);
    wire::Hello h{};
    ssize_t n = ::recv(self->socket_.native_handle(), &h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0) return done("the peer closed the connection before it sent anything", std::nullopt);
    // Too short to tell, or not our magic: TLS decides.
    if (n < static_cast<ssize_t>(sizeof h.magic) || h.magic != wire::kMagic) return done({}, std::nullopt);
    bool whole = n == static_cast<ssize_t>(sizeof h) && std::memchr(h.name, 0, sizeof h.name) != nullptr;
    done({}, whole ? std::string(h.name) : std::string());
  });
}

void Handshake::secure(bool server, const std::string& expected, Done done) {
  if (tls_ == nullptr) return done({});
  error_code ec;
  socket_.non_blocking(true, ec);  // OpenSSL reads and writes the socket itself
  if (!ec) ssl_ = tls_->session(socket_.native_handle(), server, expected, &claimed_);
  if (ec || !ssl_) return done("cannot start TLS: " + (ec ? ec.message() : std::string("out of memory")));
  drive([this] { return SSL_do_handshake(ssl_.get()); }, std::move(done));
}

void Handshake::drive(std::function<int()> op, Done done) {
  ERR_clear_error();
  int r = op();
  if (r > 0) return done({});
  int kind = SSL_get_error(ssl_.get(), r);
  if (kind != SSL_ERROR_WANT_READ && kind != SSL_ERROR_WANT_WRITE) {
    std::string why = tls_error_text(ssl_.get(), r);
    return done(timed_out_ ? "no handshake within the deadline" : why);
  }
  auto wait = kind == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write;
  auto retry = [self = shared_from_this(), op = std::move(op), done = std::move(done)](error_code ec) mutable {
    if (ec) return done(self->failure(ec));
    self->drive(std::move(op), std::move(done));
  };
  socket_.async_wait(wait, std::move(retry));
}

void Handshake::move_hello(bool send, Done done) {
  moved_ = 0;
  drive(
      [this, send] {
        auto* bytes = reinterpret_cast<char*>(send ? &mine_ : &theirs_);
        while (moved_ < sizeof(wire::Hello)) {
          int left = static_cast<int>(sizeof(wire::Hello) - moved_);
          int r = send ? SSL_write(ssl_.get(), bytes + moved_, left) : SSL_read(ssl_.get(), bytes + moved_, left);
          if (r <= 0) return r;
          moved_ += static_cast<size_t>(r);
        }
        return 1;
      },
      std::move(done));
}

void Handshake::send_hello(const wire::Hello& mine, Done done) {
  mine_ = mine;
  if (ssl_) return move_hello(/*send=*/true, std::move(done));
  asio::async_write(socket_, asio::buffer(&mine_, sizeof mine_),
                    [self = shared_from_this(), done = std::move(done)](error_code ec, size_t) {
                      done(ec ? self->failure(ec) : std::string());
                    });
}

void Handshake::read_hello(Done done) {
  if (ssl_) return move_hello(/*send=*/false, std::move(done));
  asio::async_read(socket_, asio::buffer(&theirs_, sizeof theirs_),
                   [self = shared_from_this(), done = std::move(done)](error_code ec, size_t) {
                     done(ec ? self->failure(ec) : std::string());
                   });
}

std::string Handshake::check_name(const std::string& name) const {
  return tls_ == nullptr ? std::string() : tls_->check_name(ssl_.get(), name, claimed_);
}

void Handshake::close() {
  deadline_.cancel();
  error_code ignored;
  socket_.close(ignored);
}

std::pair<UniqueFd, Ssl> Handshake::release() {
  deadline_.cancel();
  if (ssl_) SSL_set_app_data(ssl_.get(), nullptr);  // claimed_ goes with this object
  error_code ignored;
  UniqueFd fd(socket_.release(ignored));
  // The poller never waits on it (TLS reads and writes it without flags).
  ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
  return {std::move(fd), std::move(ssl_)};
}

}  // namespace ff::router::soft
