// The conformance suite's shared helpers (fixture.h).
#include <fcntl.h>
#include <poll.h>

#include <chrono>
#include <cstdlib>

#include "fixture.h"

namespace conformance {

bool expect_shim() { return std::getenv("FF_EXPECT_SHIM") != nullptr; }

uint8_t gid_index() {
  const char* v = std::getenv("FF_RXE_GID_INDEX");
  return static_cast<uint8_t>(v != nullptr ? std::atoi(v) : 0);
}

void fill(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>((i * 131 + seed * 7 + (i >> 8)) & 0xff);
}

bool await_async(ibv_context* ctx, ibv_event_type type, ibv_async_event& out, int ms) {
  int flags = fcntl(ctx->async_fd, F_GETFL);
  fcntl(ctx->async_fd, F_SETFL, flags | O_NONBLOCK);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{ctx->async_fd, POLLIN, 0};
    if (poll(&p, 1, 50) != 1) continue;
    if (ibv_get_async_event(ctx, &out) != 0) continue;
    bool match = out.event_type == type;
    ibv_ack_async_event(&out);
    if (match) return true;
  }
  return false;
}

}  // namespace conformance
