// libffverbs internals: the objects handed to apps and the link to the router.
//
// libffverbs is a verbs provider in disguise. Apps call the exported
// IBVERBS_1.x entry points (interposed here) and the static-inline verbs,
// which jump through the function pointers inside the objects we hand out.
// So every object embeds the public struct it stands for, and every function
// pointer slot is filled: unimplemented ones fail with EOPNOTSUPP, never NULL.
//
// Error convention (the verbs ABI, exactly): int returns are 0 or a positive
// errno; pointer returns are NULL with errno set.
#pragma once

#include <infiniband/verbs.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>

#include "proto/client.h"

namespace ff::verbs {

// The single virtual device. `verbs_device_tail` stays zero: provider code
// linked into apps (libmlx5's mlx5dv_is_supported) reads the verbs_device
// fields right after struct ibv_device and must find a NULL ops pointer.
struct FfDevice {
  ibv_device device;
  uint8_t verbs_device_tail[256];
  uint64_t node_guid;  // host order
};

// A context: a full verbs_context so that verbs_get_ctx() and the extended
// inline verbs work. The app holds &vctx.context.
struct FfContext {
  verbs_context vctx;  // must stay the first member (see to_ff)
  uint32_t handle;         // the router's handle for this context
  uint64_t link_epoch;     // RouterLink epoch this context was opened under
  int async_fd;            // eventfd from the router (also context.async_fd)
  std::atomic<bool> fatal_reported;  // IBV_EVENT_DEVICE_FATAL is delivered once
};

struct FfPd {
  ibv_pd pd;
  uint32_t handle;
};

inline FfContext* to_ff(ibv_context* ctx) {
  return reinterpret_cast<FfContext*>(reinterpret_cast<char*>(ctx) -
                                      offsetof(FfContext, vctx.context));
}
inline FfPd* to_ff(ibv_pd* pd) { return reinterpret_cast<FfPd*>(pd); }

// Fills every slot of a context's ops tables (implemented or EOPNOTSUPP).
void init_context_ops(FfContext& ctx);

// Extension ops reached through verbs_context (query.cc).
int ffv_query_device_ex(ibv_context* context, const ibv_query_device_ex_input* input,
                        ibv_device_attr_ex* attr, size_t attr_size);
int ffv_query_port(ibv_context* context, uint8_t port_num, ibv_port_attr* attr, size_t attr_len);

// The process's one connection to the router. Connects lazily, on the first
// verb that needs it, never in a constructor (LD_PRELOAD is inherited by every
// child an app execs). Thread-safe.
class RouterLink {
 public:
  static RouterLink& get();

  // Connects and says Hello if not connected. 0 or an errno; the reason is
  // kept in last_error() and printed when FFV_DEBUG is set.
  int ensure_connected();
  proto::ControlClient& client() { return client_; }
  // Bumped whenever the connection is lost or the process forks: objects
  // from an older epoch belong to a router session that no longer exists.
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  uint32_t virtual_ip() const { return virtual_ip_; }
  std::string socket_path() const;
  void on_fork_child();

  // Performs a call; on transport failure bumps the epoch.
  proto::ControlClient::Result call(flatbuffers::FlatBufferBuilder& fbb, proto::RequestBody type,
                                    flatbuffers::Offset<void> body);

 private:
  RouterLink();
  std::mutex mu_;
  proto::ControlClient client_;
  std::atomic<uint64_t> epoch_{1};
  uint32_t virtual_ip_ = 0;
};

// True when FFV_DEBUG is set (read once).
bool debug_enabled();
// Prints "libffverbs: ..." to stderr when debugging is enabled.
void debug(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// errno-style helpers for the two verbs return conventions.
template <typename T>
T* fail_ptr(int e) {
  errno = e;
  return nullptr;
}
inline int fail_int(int e) {
  errno = e;
  return e;
}

// A context whose router session is gone (router restarted, or this is a
// forked child): verbs on it fail with EIO.
bool context_is_stale(const FfContext& ctx);

}  // namespace ff::verbs
