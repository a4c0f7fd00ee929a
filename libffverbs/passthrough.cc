// Pure helpers that never touch a device, context or object: forwarded to
// the host's libibverbs, so their text and tables are exactly rdma-core's.
// They are defined here (rather than left unbound) so that every ibv_* import
// of an app binds to libffverbs, which the binding test checks.
#include <dlfcn.h>

#include <cerrno>

#include "libffverbs/shim.h"

namespace {

// The host library, loaded privately if the app did not load it.
void* host_libibverbs() {
  static void* handle = [] {
    void* h = ff::verbs::host_dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    return h != nullptr ? h : ff::verbs::host_dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
  }();
  return handle;
}

template <typename Fn>
Fn host_symbol(const char* name, const char* version) {
  void* h = host_libibverbs();
  void* sym = h != nullptr ? ::dlvsym(h, name, version) : nullptr;
  if (sym == nullptr) ff::verbs::debug("host libibverbs has no %s@%s", name, version);
  return reinterpret_cast<Fn>(sym);
}

}  // namespace

// Forwards NAME@VERSION with the given signature; FALLBACK when the host
// library is missing.
#define FFV_PASSTHROUGH(RET, NAME, VERSION, FALLBACK, PARAMS, ARGS)          \
  extern "C" RET NAME PARAMS {                                               \
    using Fn = RET(*) PARAMS;                                                \
    static const Fn real = host_symbol<Fn>(#NAME, VERSION);                  \
    if (real == nullptr) return FALLBACK;                                    \
    return real ARGS;                                                        \
  }

FFV_PASSTHROUGH(const char*, ibv_wc_status_str, "IBVERBS_1.1", "unknown", (ibv_wc_status s), (s))
FFV_PASSTHROUGH(const char*, ibv_event_type_str, "IBVERBS_1.1", "unknown", (ibv_event_type e), (e))
FFV_PASSTHROUGH(const char*, ibv_node_type_str, "IBVERBS_1.1", "unknown", (ibv_node_type t), (t))
FFV_PASSTHROUGH(const char*, ibv_port_state_str, "IBVERBS_1.1", "unknown", (ibv_port_state s), (s))
FFV_PASSTHROUGH(int, ibv_rate_to_mult, "IBVERBS_1.0", 0, (ibv_rate r), (r))
FFV_PASSTHROUGH(ibv_rate, mult_to_ibv_rate, "IBVERBS_1.0", IBV_RATE_MAX, (int m), (m))
FFV_PASSTHROUGH(int, ibv_rate_to_mbps, "IBVERBS_1.1", 0, (ibv_rate r), (r))
FFV_PASSTHROUGH(ibv_rate, mbps_to_ibv_rate, "IBVERBS_1.1", IBV_RATE_MAX, (int m), (m))
// Not in the installed public headers; declared by their rdma-core ABI.
FFV_PASSTHROUGH(const char*, ibv_get_sysfs_path, "IBVERBS_1.0", "/sys", (), ())
FFV_PASSTHROUGH(int, ibv_read_sysfs_file, "IBVERBS_1.0", -1,
                (const char* dir, const char* file, char* buf, size_t size), (dir, file, buf, size))
// The kernel-ABI copy helpers only convert structs; pointers keep the ABI.
FFV_PASSTHROUGH(void, ibv_copy_path_rec_from_kern, "IBVERBS_1.0", void(), (void* dst, void* src), (dst, src))
FFV_PASSTHROUGH(void, ibv_copy_path_rec_to_kern, "IBVERBS_1.0", void(), (void* dst, void* src), (dst, src))
FFV_PASSTHROUGH(void, ibv_copy_qp_attr_from_kern, "IBVERBS_1.0", void(), (void* dst, void* src), (dst, src))
FFV_PASSTHROUGH(void, ibv_copy_ah_attr_from_kern, "IBVERBS_1.1", void(), (void* dst, void* src), (dst, src))
