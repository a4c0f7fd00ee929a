// libFuzzer: the frame reader against arbitrary bytes (and descriptors).
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

#include "proto/frame.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  // The first byte, if any, says how many fds to attach to the bytes.
  int fds[ff::proto::kMaxFds];
  size_t nfds = size > 0 ? data[0] % (ff::proto::kMaxFds + 1) : 0;
  for (size_t i = 0; i < nfds; ++i) fds[i] = sv[1];
  const uint8_t* body = size > 0 ? data + 1 : data;
  size_t len = size > 0 ? size - 1 : 0;
  if (len > 0) {
    iovec iov{const_cast<uint8_t*>(body), len};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * ff::proto::kMaxFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (nfds > 0) {
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      __builtin_memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    (void)::sendmsg(sv[1], &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  ::shutdown(sv[1], SHUT_WR);
  ff::proto::FrameReader reader;
  for (int rounds = 0; rounds < 64; ++rounds) {
    auto io = reader.read_some(sv[0], true);
    while (auto f = reader.next()) {
      if (f->payload.size() > ff::proto::kMaxPayload) __builtin_trap();
    }
    if (!reader.error().empty() || io != ff::proto::FrameReader::Io::kProgress) break;
  }
  ::close(sv[0]);
  ::close(sv[1]);
  return 0;
}
