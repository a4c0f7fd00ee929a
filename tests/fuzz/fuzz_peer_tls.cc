// libFuzzer: a hostile peer router on an authenticated link (TLS 1.3 with
// the cluster's pre-shared key, router/fabric/soft/tls.h): what fuzz_peer.cc
// does, with the bytes going through the TLS session the Link reads. Each
// input: its first byte says which link (odd: our outbound one, where this
// router is the TLS client; else the inbound one, where it is the server)
// and, with bit 1 set, that the rest goes onto the socket raw, after the
// handshake (a stranger on the path forging TLS records); otherwise it is
// the peer's application data, reaching the frame decoder. Nothing may
// crash, hang, or touch memory outside the MR.
#include <openssl/ssl.h>

#include <algorithm>

#include "peer_world.h"
#include "router/fabric/soft/tls.h"

namespace {

using ff::router::soft::LinkTls;
using ff::router::soft::Ssl;

const std::string kKey = "fuzz-key-fuzz-key-fuzz-key-fuzz-key-0123";

// Both ends' handshake, in this thread (the sockets are nonblocking).
bool handshake(ssl_st* a, ssl_st* b) {
  bool a_done = false, b_done = false;
  for (int i = 0; i < 1000 && !(a_done && b_done); ++i) {
    if (!a_done) {
      int r = SSL_do_handshake(a);
      if (r == 1) a_done = true;
      else if (int e = SSL_get_error(a, r); e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return false;
    }
    if (!b_done) {
      int r = SSL_do_handshake(b);
      if (r == 1) b_done = true;
      else if (int e = SSL_get_error(b, r); e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) return false;
    }
  }
  return a_done && b_done;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const auto router_tls = LinkTls::with_key(kKey, "fuzz-router");
  static const auto peer_tls = LinkTls::with_key(kKey, "fuzz-peer");
  fuzz_peer::World& w = fuzz_peer::world();
  w.reset();
  const bool answers = (data[0] & 1) != 0, raw = (data[0] & 2) != 0;
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) != 0) return 0;
  // On our outbound link this router connected: it is the TLS client.
  std::string claimed;
  Ssl mine = router_tls->session(sv[0], /*server=*/!answers, "fuzz-peer", &claimed);
  Ssl theirs = peer_tls->session(sv[1], /*server=*/answers, "fuzz-router", &claimed);
  if (!mine || !theirs || !handshake(mine.get(), theirs.get())) __builtin_trap();  // the honest setup must work
  SSL_set_app_data(mine.get(), nullptr);
  fuzz_peer::run(w, answers, sv[0], std::move(mine), sv[1], std::span(data + 1, size - 1),
                 [&](std::span<const uint8_t> b) -> size_t {
                   if (raw) {
                     ssize_t n = ::send(sv[1], b.data(), b.size(), MSG_NOSIGNAL);
                     return n > 0 ? static_cast<size_t>(n) : 0;
                   }
                   int n = SSL_write(theirs.get(), b.data(), static_cast<int>(std::min<size_t>(b.size(), 1 << 20)));
                   if (n > 0) return static_cast<size_t>(n);
                   int e = SSL_get_error(theirs.get(), n);
                   if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) return 0;
                   return b.size();  // the router closed the connection: the rest goes nowhere
                 });
  return 0;
}
