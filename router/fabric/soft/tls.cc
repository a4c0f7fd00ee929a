#include "router/fabric/soft/tls.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/ssl/context.hpp>
#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>

#include "proto/fd.h"

namespace ff::router::soft {

void SslFree::operator()(ssl_st* s) const { SSL_free(s); }

namespace {

namespace asio_ssl = boost::asio::ssl;

constexpr size_t kMinKey = 32;
constexpr size_t kMaxKey = 512;  // OpenSSL's PSK_MAX_PSK_LEN
// Read ahead and write behind in pieces this large: a system call per 16 KiB
// record halved the multi-host throughput.
constexpr int kReadBuffer = 256 * 1024, kWriteBuffer = 256 * 1024;
constexpr const char* kMakeKey =
    "make one with `openssl rand -hex 32 > FILE && chmod 600 FILE` and give every router the same file";

// Where a context finds its LinkTls (not SSL_CTX's app data: asio owns that).
int owner_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// Opens a file that holds a secret: only its owner may read it, as ssh asks.
UniqueFd open_secret(const std::string& path, const std::string& knob) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw std::runtime_error(knob + " " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    throw std::runtime_error(knob + " " + path + ": not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 0777));
    throw std::runtime_error(knob + " " + path + ": mode " + mode +
                             " lets other users read the secret in it; run `chmod 600 " + path + "`");
  }
  return fd;
}

// OpenSSL's socket BIO writes with write(2), and a peer gone would raise
// SIGPIPE, which kills the router: this is the same BIO, writing with
// send(MSG_NOSIGNAL) (EPIPE instead).
int send_nosignal(BIO* b, const char* in, int n) {
  ssize_t r = ::send(static_cast<int>(BIO_get_fd(b, nullptr)), in, static_cast<size_t>(n), MSG_NOSIGNAL);
  BIO_clear_retry_flags(b);
  if (r <= 0 && BIO_sock_should_retry(static_cast<int>(r)) != 0) BIO_set_retry_write(b);
  return static_cast<int>(r);
}

BIO_METHOD* socket_method() {
  static BIO_METHOD* method = [] {
    const BIO_METHOD* base = BIO_s_socket();
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOCKET, "ffrouter socket");
    if (m == nullptr) return m;
    BIO_meth_set_write(m, send_nosignal);
    BIO_meth_set_read(m, BIO_meth_get_read(base));
    BIO_meth_set_puts(m, BIO_meth_get_puts(base));
    BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(base));
    BIO_meth_set_create(m, BIO_meth_get_create(base));
    BIO_meth_set_destroy(m, BIO_meth_get_destroy(base));
    return m;
  }();
  return method;
}

// Empty when `cert` names router `name` (a DNS subjectAltName, or the CN).
std::string name_check(X509* cert, std::string_view name) {
  if (cert != nullptr &&
      X509_check_host(cert, name.data(), name.size(), X509_CHECK_FLAG_NO_WILDCARDS, nullptr) == 1)
    return {};
  char subject[256] = "no certificate";
  if (cert != nullptr) X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
  return "its certificate (" + std::string(subject) + ") is not for '" + std::string(name) + "'";
}

std::string read_key(const std::string& path) {
  UniqueFd fd = open_secret(path, "--link-psk");
  std::string key(kMaxKey + 64, '\0');
  size_t got = 0;
  for (ssize_t n; got < key.size() && (n = ::read(fd.get(), key.data() + got, key.size() - got)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error("--link-psk " + path + ": " + std::strerror(errno));
    got += static_cast<size_t>(n);
  }
  key.resize(got);
  // An editor's or echo's line end is not part of the key.
  while (!key.empty() && std::strchr(" \t\r\n", key.back()) != nullptr) key.pop_back();
  if (key.size() < kMinKey || key.size() > kMaxKey)
    throw std::runtime_error("--link-psk " + path + ": the key is " + std::to_string(key.size()) + " bytes, not " +
                             std::to_string(kMinKey) + "-" + std::to_string(kMaxKey) + "; " + kMakeKey);
  return key;
}

}  // namespace

// The PSK callbacks OpenSSL calls during a handshake (TLS 1.3 uses them with
// TLS_AES_128_GCM_SHA256, which the context therefore offers alone).
struct TlsCallbacks {
  static const LinkTls& owner(SSL* s) {
    return *static_cast<const LinkTls*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), owner_index()));
  }
  // Client: our name as the identity, and the key.
  static unsigned client(SSL* s, const char*, char* identity, unsigned max_identity, unsigned char* psk,
                         unsigned max_psk) {
    const LinkTls& t = owner(s);
    if (t.self_.size() >= max_identity || t.psk_.size() > max_psk) return 0;
    std::memcpy(identity, t.self_.c_str(), t.self_.size() + 1);
    std::memcpy(psk, t.psk_.data(), t.psk_.size());
    return static_cast<unsigned>(t.psk_.size());
  }
  // Server: one key whoever the client claims to be; the claim is kept for
  // the log (and must match its Hello once the key has been proven).
  static unsigned server(SSL* s, const char* identity, unsigned char* psk, unsigned max_psk) {
    const LinkTls& t = owner(s);
    if (auto* claimed = static_cast<std::string*>(SSL_get_app_data(s)); claimed != nullptr)
      claimed->assign(identity, ::strnlen(identity, 63));
    if (t.psk_.size() > max_psk) return 0;
    std::memcpy(psk, t.psk_.data(), t.psk_.size());
    return static_cast<unsigned>(t.psk_.size());
  }
};

LinkTls::LinkTls(const std::string& self)
    : ctx_(std::make_unique<asio_ssl::context>(asio_ssl::context::tlsv13)), self_(self) {
  SSL_CTX* c = ctx_->native_handle();
  SSL_CTX_set_ex_data(c, owner_index(), this);
  // No session tickets: every connection proves the key afresh, and nothing
  // follows the handshake that a Link would have to read before its frames.
  SSL_CTX_set_num_tickets(c, 0);
  // A connection closed without close_notify is just closed (frames delimit
  // themselves; a cut one is refused by the decoder).
  SSL_CTX_set_options(c, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_TICKET);
  // The Link's transmit buffer moves when it grows, and takes partial writes.
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read the socket in large pieces, not a record header and then its body
  // (two system calls per 16 KiB). What TLS reads ahead stays inside it,
  // unseen by epoll: Link::fill() reads until TLS says it needs the socket.
  SSL_CTX_set_read_ahead(c, 1);
  SSL_CTX_set_default_read_buffer_len(c, kReadBuffer);
}

LinkTls::~LinkTls() { SSL_CTX_set_ex_data(ctx_->native_handle(), owner_index(), nullptr); }

std::unique_ptr<LinkTls> LinkTls::open(const LinkSecurity& security, const std::string& self) {
  if (!security.psk_file.empty() && !security.cert_file.empty())
    throw std::runtime_error("--link-psk and --link-cert exclude each other: choose one way to secure the links");
  if (security.cert_file.empty() != security.ca_file.empty())
    throw std::runtime_error("--link-cert and --link-ca go together: this router's certificate and the CA that "
                             "signs every router's");
  if (!security.psk_file.empty()) return with_key(read_key(security.psk_file), self);
  if (security.cert_file.empty()) return nullptr;
  std::unique_ptr<LinkTls> t(new LinkTls(self));
  t->use_certificates(security);
  return t;
}

std::unique_ptr<LinkTls> LinkTls::with_key(std::string key, const std::string& self) {
  std::unique_ptr<LinkTls> t(new LinkTls(self));
  t->use_psk(std::move(key));
  return t;
}

void LinkTls::use_psk(std::string key) {
  if (key.size() < kMinKey || key.size() > kMaxKey) throw std::runtime_error("pre-shared key of a wrong size");
  psk_ = std::move(key);
  SSL_CTX* c = ctx_->native_handle();
  SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256");
  SSL_CTX_set_psk_client_callback(c, &TlsCallbacks::client);
  SSL_CTX_set_psk_server_callback(c, &TlsCallbacks::server);
}

void LinkTls::use_certificates(const LinkSecurity& s) {
  open_secret(s.cert_file, "--link-cert");  // it holds the private key
  boost::system::error_code ec;
  ctx_->use_certificate_chain_file(s.cert_file, ec);
  if (!ec) ctx_->use_private_key_file(s.cert_file, asio_ssl::context::pem, ec);
  if (ec)
    throw std::runtime_error("--link-cert " + s.cert_file + ": " + ec.message() +
                             " (expected PEM: this router's certificate, its chain, and its private key)");
  if (SSL_CTX_check_private_key(ctx_->native_handle()) != 1)
    throw std::runtime_error("--link-cert " + s.cert_file + ": the private key is not the certificate's");
  // The other routers will hold it to our name: say so now, not at each link.
  if (auto why = name_check(SSL_CTX_get0_certificate(ctx_->native_handle()), self_); !why.empty())
    throw std::runtime_error("--link-cert " + s.cert_file + ": " + why + ", this router's --router-name");
  ctx_->load_verify_file(s.ca_file, ec);
  if (ec)
    throw std::runtime_error("--link-ca " + s.ca_file + ": " + ec.message() +
                             " (expected PEM: the certificate of the CA that signs every router's certificate)");
  ctx_->set_verify_mode(asio_ssl::verify_peer | asio_ssl::verify_fail_if_no_peer_cert);
}

const char* LinkTls::hint() const {
  return psk_.empty() ? "every router needs a certificate for its name signed by the CA of --link-ca"
                      : "every router of the cluster needs the same --link-psk key";
}

Ssl LinkTls::session(int fd, bool server, const std::string& expected, std::string* claimed) const {
  Ssl s(SSL_new(ctx_->native_handle()));
  // Reads and writes on BIOs of their own: tls_buffer_writes() replaces the
  // writing one.
  BIO* r = s && socket_method() != nullptr ? BIO_new(socket_method()) : nullptr;
  BIO* w = r != nullptr ? BIO_new(socket_method()) : nullptr;
  if (w == nullptr) {
    BIO_free(r);
    return nullptr;
  }
  BIO_set_fd(r, fd, BIO_NOCLOSE);
  BIO_set_fd(w, fd, BIO_NOCLOSE);
  SSL_set_bio(s.get(), r, w);
  SSL_set_app_data(s.get(), claimed);
  if (server) {
    SSL_set_accept_state(s.get());
  } else {
    SSL_set_connect_state(s.get());
    // Certificates: the server must be the router we meant to reach.
    SSL_set_hostflags(s.get(), X509_CHECK_FLAG_NO_WILDCARDS);
    if (psk_.empty() && SSL_set1_host(s.get(), expected.c_str()) != 1) return nullptr;
  }
  return s;
}

std::string LinkTls::check_name(ssl_st* ssl, std::string_view name, std::string_view claimed) const {
  if (!psk_.empty()) {
    if (claimed == name) return {};
    return "it offered the key as '" + std::string(claimed) + "' but its Hello says '" + std::string(name) + "'";
  }
  return name_check(SSL_get0_peer_certificate(ssl), name);
}

std::string tls_error_text(ssl_st* ssl, int result) {
  int err = errno;
  int kind = SSL_get_error(ssl, result);
  std::string why;
  for (unsigned long e; (e = ERR_get_error()) != 0;) {
    const char* reason = ERR_reason_error_string(e);
    if (!why.empty()) why += "; ";
    why += reason != nullptr ? reason : "error " + std::to_string(ERR_GET_REASON(e));
  }
  if (long v = SSL_get_verify_result(ssl); v != X509_V_OK) why += std::string(": ") + X509_verify_cert_error_string(v);
  if (!why.empty()) return why;
  if (kind == SSL_ERROR_SYSCALL && err != 0) return std::strerror(err);
  return "the peer closed the connection";
}

bool tls_buffer_writes(ssl_st* ssl) {
  BIO* buffer = BIO_new(BIO_f_buffer());
  BIO* socket = socket_method() != nullptr ? BIO_new(socket_method()) : nullptr;
  if (buffer == nullptr || socket == nullptr || BIO_set_write_buffer_size(buffer, kWriteBuffer) != 1) {
    BIO_free(buffer);
    BIO_free(socket);
    return false;
  }
  BIO_set_fd(socket, SSL_get_wfd(ssl), BIO_NOCLOSE);
  SSL_set0_wbio(ssl, BIO_push(buffer, socket));
  return true;
}

int tls_flush(ssl_st* ssl, std::string& why) {
  BIO* w = SSL_get_wbio(ssl);
  if (BIO_wpending(w) == 0 || BIO_flush(w) > 0) return 1;
  if (BIO_should_retry(w)) return 0;
  why = std::string("send: ") + std::strerror(errno);
  return -1;
}

bool tls_has_pending(ssl_st* ssl) { return SSL_has_pending(ssl) == 1; }

size_t tls_unsent(ssl_st* ssl) {
  int n = BIO_wpending(SSL_get_wbio(ssl));
  return n > 0 ? static_cast<size_t>(n) : 0;
}

ssize_t tls_read(ssl_st* ssl, void* to, size_t n, std::string& why) {
  ERR_clear_error();
  int r = SSL_read(ssl, to, static_cast<int>(std::min<size_t>(n, INT_MAX)));
  if (r > 0) return r;
  int kind = SSL_get_error(ssl, r);
  // WANT_WRITE: an answer TLS itself owes (a key update) waits for room.
  if (kind == SSL_ERROR_WANT_READ || kind == SSL_ERROR_WANT_WRITE) return 0;
  why = kind == SSL_ERROR_ZERO_RETURN ? "the peer closed the connection" : "TLS: " + tls_error_text(ssl, r);
  return -1;
}

ssize_t tls_write(ssl_st* ssl, const void* from, size_t n, std::string& why) {
  ERR_clear_error();
  int r = SSL_write(ssl, from, static_cast<int>(std::min<size_t>(n, INT_MAX)));
  if (r > 0) return r;
  int kind = SSL_get_error(ssl, r);
  if (kind == SSL_ERROR_WANT_WRITE || kind == SSL_ERROR_WANT_READ) return 0;
  why = "TLS: " + tls_error_text(ssl, r);
  return -1;
}

}  // namespace ff::router::soft
