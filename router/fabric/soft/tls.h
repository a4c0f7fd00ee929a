// Link security: TLS 1.3 on the connections between routers, so that only
// routers of the cluster can join it and nobody on the network between hosts
// reads or changes what the links carry (docs/SECURITY.md). Two ways to say
// who belongs (the --link-* knobs, LinkSecurity in fabric.h):
//
//  * a pre-shared key (--link-psk FILE): every router holds the same secret;
//    holding it is being a member. The client offers its router name as the
//    PSK identity, which must then match its Hello. A member can still claim
//    another member's name: the key proves membership, not identity.
//  * certificates (--link-cert FILE --link-ca FILE): each router has its own
//    key and a certificate the cluster's CA signed for its name (a DNS
//    subjectAltName, or the CN); both ends verify the other's, and the name
//    must be the one in its Hello (inbound) or the directory's (outbound).
//    A router cannot pose as another.
//
// Handshakes run on the Asio thread (handshake.h), then the TLS session goes
// with its socket to the poller's Link, which reads and writes it with
// tls_read/tls_write below. The SSL_CTX is shared, read-only once built.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>

#include "router/fabric/fabric.h"

struct ssl_st;
namespace boost::asio::ssl {
class context;
}

namespace ff::router::soft {

struct SslFree {
  void operator()(ssl_st* s) const;
};
// One TLS session (an OpenSSL SSL object).
using Ssl = std::unique_ptr<ssl_st, SslFree>;

class LinkTls {
 public:
  // From the knobs; nullptr when none is set (links in the clear). Reads and
  // checks the files: throws std::runtime_error naming the file and the fix.
  static std::unique_ptr<LinkTls> open(const LinkSecurity& security, const std::string& self);
  // With a pre-shared key given as bytes (tests, the fuzzer).
  static std::unique_ptr<LinkTls> with_key(std::string key, const std::string& self);
  ~LinkTls();
  LinkTls(const LinkTls&) = delete;
  LinkTls& operator=(const LinkTls&) = delete;

  // A TLS session on the nonblocking socket `fd` (which stays the caller's).
  // A client toward router `expected` (its certificate must name it); a
  // server learns the claimed name through `claimed` (the PSK identity the
  // client offered), which must outlive the handshake.
  Ssl session(int fd, bool server, const std::string& expected, std::string* claimed) const;
  // After the handshake (server side): empty when the authenticated peer may
  // call itself `name`; otherwise why not.
  std::string check_name(ssl_st* ssl, std::string_view name, std::string_view claimed) const;
  // "TLS 1.3, pre-shared key" or "TLS 1.3, certificates".
  const char* describe() const { return psk_.empty() ? "TLS 1.3, certificates" : "TLS 1.3, pre-shared key"; }
  // What every router must have in common, for error messages.
  const char* hint() const;

 private:
  friend struct TlsCallbacks;
  explicit LinkTls(const std::string& self);
  void use_psk(std::string key);
  void use_certificates(const LinkSecurity& security);

  std::unique_ptr<boost::asio::ssl::context> ctx_;
  std::string self_;
  std::string psk_;  // empty: certificates
};

// Why an OpenSSL call failed (the error queue, emptied), for a log line.
std::string tls_error_text(ssl_st* ssl, int result);

// After the handshake, for the poller: records written collect in a 256 KiB
// buffer that tls_flush() sends with one system call, instead of one per
// 16 KiB record. False when out of memory.
bool tls_buffer_writes(ssl_st* ssl);

// One nonblocking read or write through TLS on the poller, as recv/send
// would: bytes moved, 0 when it would block (whatever TLS waits for), -1
// when the connection failed or closed (`why` says which). What tls_write
// took may wait in the buffer: tls_flush() sends it (1 all sent, 0 would
// block, -1 failed), tls_unsent() says how much waits.
ssize_t tls_read(ssl_st* ssl, void* to, size_t n, std::string& why);
ssize_t tls_write(ssl_st* ssl, const void* from, size_t n, std::string& why);
int tls_flush(ssl_st* ssl, std::string& why);
size_t tls_unsent(ssl_st* ssl);
// Whether TLS holds bytes read from the socket that no read took yet (read
// ahead, or decrypted): epoll cannot see them.
bool tls_has_pending(ssl_st* ssl);

}  // namespace ff::router::soft
