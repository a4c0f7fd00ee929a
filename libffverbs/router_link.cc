#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "libffverbs/request.h"
#include "libffverbs/shared_memory.h"
#include "libffverbs/shim.h"

namespace ff::verbs {

namespace {
constexpr const char* kDefaultSocket = "/run/ffrouter/ffrouter.sock";
}

bool debug_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("FFV_DEBUG");
    return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
  }();
  return on;
}

uint32_t poll_yield_threshold() {
  static const uint32_t n = [] {
    const char* v = std::getenv("FFV_POLL_YIELD");
    return v != nullptr && *v != '\0' ? static_cast<uint32_t>(std::strtoul(v, nullptr, 10)) : 32u;
  }();
  return n;
}

void debug(const char* fmt, ...) {
  if (!debug_enabled()) return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "libffverbs[%d]: %s\n", static_cast<int>(::getpid()), line);
}

RouterLink& RouterLink::get() {
  // Never destroyed: apps may call verbs from atexit handlers and other
  // threads after static destructors started.
  static RouterLink* link = new RouterLink();
  return *link;
}

RouterLink::RouterLink() {
  pthread_atfork(shared_memory_before_fork, shared_memory_after_fork_parent,
                 [] { RouterLink::get().on_fork_child(); });
}

std::string RouterLink::socket_path() const {
  const char* p = std::getenv("FFV_SOCKET");
  return p != nullptr && *p != '\0' ? p : kDefaultSocket;
}

void RouterLink::on_fork_child() {
  // The child shares the parent's socket; it must never speak on it. Objects
  // it inherited belong to the parent's session.
  client_.disconnect();
  ++epoch_;
  shared_memory_after_fork_child();
}

int RouterLink::ensure_connected() {
  std::lock_guard lock(mu_);
  if (client_.connected()) return 0;
  const std::string path = socket_path();
  int e = client_.connect(path);
  if (e != 0) {
    debug("cannot connect to the router at %s: %s (set FFV_SOCKET to the tenant socket, and "
          "check that ffrouter runs and the socket directory is mounted)",
          path.c_str(), std::strerror(e));
    return e;
  }
  flatbuffers::FlatBufferBuilder fbb;
  char exe[256] = {};
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n < 0) exe[0] = '\0';
  auto hello = proto::CreateHello(fbb, proto::kProtocolVersion,
                                  fbb.CreateString(exe));
  // Not through call(): that takes mu_ when the connection drops.
  auto reply =
      answer<proto::HelloReply>(client_.call(fbb, proto::RequestBody::Hello, hello.Union()), nullptr);
  if (!reply) {
    if (reply.result.error != 0)
      debug("the router at %s refused this process: %s", path.c_str(), reply.result.message.c_str());
    client_.disconnect();
    return reply.error;
  }
  virtual_ip_ = reply->virtual_ipv4();
  ++epoch_;
  debug("connected to %s as tenant %s, session %llu, virtual IP %u.%u.%u.%u", path.c_str(),
        reply->tenant() != nullptr ? reply->tenant()->c_str() : "?",
        static_cast<unsigned long long>(reply->session_id()), virtual_ip_ >> 24,
        (virtual_ip_ >> 16) & 255, (virtual_ip_ >> 8) & 255, virtual_ip_ & 255);
  return 0;
}

proto::ControlClient::Result RouterLink::call(flatbuffers::FlatBufferBuilder& fbb,
                                              proto::RequestBody type,
                                              flatbuffers::Offset<void> body,
                                              std::span<const int> fds) {
  auto r = client_.call(fbb, type, body, fds);
  if (!client_.connected()) {
    std::lock_guard lock(mu_);
    ++epoch_;
    debug("router connection lost: %s", r.message.c_str());
  }
  return r;
}

bool RouterLink::router_gone() {
  int fd = client_.fd();
  if (fd < 0) return true;
  pollfd p{fd, POLLRDHUP, 0};
  if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) {
    client_.disconnect();
    ++epoch_;
    debug("the router closed the connection");
    return true;
  }
  return false;
}

void RouterLink::wait_until_gone() {
  for (;;) {
    int fd = client_.fd();
    if (fd < 0) return;
    pollfd p{fd, POLLRDHUP, 0};
    int r = ::poll(&p, 1, -1);  // a cancellation point
    if (r < 0 && errno != EINTR) return;
    if (r > 0 && router_gone()) return;
  }
}

bool context_is_stale(const FfContext& ctx) { return ctx.link_epoch != RouterLink::get().epoch(); }

}  // namespace ff::verbs
