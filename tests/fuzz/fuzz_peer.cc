// libFuzzer: a hostile peer router. Each input is the byte stream a peer
// sends on one connection: to this router's inbound link (requests: the
// responder half executes them against a local RC QP, a UD QP and an MR)
// or, when the first byte is odd, on its outbound link (answers: the
// requester half matches them against a send queue with work in flight).
// Whatever the frames say, nothing may crash, hang, or touch memory outside
// the MR; the stream ends (EOF) and the link is dropped, failing the QPs
// routed through that peer, which the next input sets up again.
// (fuzz_peer_tls.cc: the same through an authenticated TLS link.)
#include "peer_world.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  fuzz_peer::World& w = fuzz_peer::world();
  w.reset();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  fuzz_peer::run(w, (data[0] & 1) != 0, sv[0], nullptr, sv[1], std::span(data + 1, size - 1),
                 [&](std::span<const uint8_t> b) -> size_t {
                   ssize_t n = ::send(sv[1], b.data(), b.size(), MSG_NOSIGNAL);
                   return n > 0 ? static_cast<size_t>(n) : 0;
                 });
  return 0;
}
