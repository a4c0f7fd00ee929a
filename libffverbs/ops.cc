// The function-pointer tables inside each context. The static-inline verbs
// (ibv_post_send, ibv_poll_cq, ibv_create_qp_ex, ...) jump through these, so
// no slot may ever be NULL: what libffverbs does not implement fails with
// EOPNOTSUPP exactly as a provider without the feature does.
#include <type_traits>

#include "libffverbs/shim.h"

namespace ff::verbs {
namespace {

// Unsupported<decltype(slot)>::call has the slot's exact signature and fails
// with the convention of its return type.
template <typename Fn>
struct Unsupported;
template <typename R, typename... Args>
struct Unsupported<R (*)(Args...)> {
  static R call(Args...) {
    errno = EOPNOTSUPP;
    if constexpr (std::is_pointer_v<R>) {
      return nullptr;
    } else if constexpr (std::is_void_v<R>) {
      return;
    } else {
      return static_cast<R>(EOPNOTSUPP);
    }
  }
};

template <typename Fn>
void unsupported(Fn& slot) {
  slot = &Unsupported<Fn>::call;
}

// Legacy slots, kept as libibverbs fills them for apps built against 1.1.8.
void init_legacy_ops(ibv_context_ops& ops) {
  ops._compat_query_device = +[](ibv_context* c, ibv_device_attr* a) { return ibv_query_device(c, a); };
  ops._compat_query_port = +[](ibv_context* c, uint8_t p, _compat_ibv_port_attr* a) {
    return ffv_query_port(c, p, reinterpret_cast<ibv_port_attr*>(a),
                          offsetof(ibv_port_attr, port_cap_flags2));
  };
  unsupported(ops._compat_alloc_pd);
  unsupported(ops._compat_dealloc_pd);
  unsupported(ops._compat_reg_mr);
  unsupported(ops._compat_rereg_mr);
  unsupported(ops._compat_dereg_mr);
  init_mw_ops(ops);
  unsupported(ops._compat_create_cq);
  ops.poll_cq = ffv_poll_cq;
  ops.req_notify_cq = ffv_req_notify_cq;
  unsupported(ops._compat_cq_event);
  unsupported(ops._compat_resize_cq);
  unsupported(ops._compat_destroy_cq);
  unsupported(ops._compat_create_srq);
  unsupported(ops._compat_modify_srq);
  unsupported(ops._compat_query_srq);
  unsupported(ops._compat_destroy_srq);
  ops.post_srq_recv = ffv_post_srq_recv;
  unsupported(ops._compat_create_qp);
  unsupported(ops._compat_query_qp);
  unsupported(ops._compat_modify_qp);
  unsupported(ops._compat_destroy_qp);
  ops.post_send = ffv_post_send;
  ops.post_recv = ffv_post_recv;
  unsupported(ops._compat_create_ah);
  unsupported(ops._compat_destroy_ah);
  unsupported(ops._compat_attach_mcast);
  unsupported(ops._compat_detach_mcast);
  unsupported(ops._compat_async_event);
}

// Extended ops, in verbs_context order (newest first).
void init_extended_ops(verbs_context& v) {
  v.query_port = ffv_query_port;
  unsupported(v.advise_mr);
  unsupported(v.alloc_null_mr);
  unsupported(v.read_counters);
  unsupported(v.attach_counters_point_flow);
  unsupported(v.create_counters);
  unsupported(v.destroy_counters);
  init_dm_ops(v);
  unsupported(v.modify_flow_action_esp);
  unsupported(v.destroy_flow_action);
  unsupported(v.create_flow_action_esp);
  unsupported(v.modify_qp_rate_limit);
  v.alloc_parent_domain = ffv_alloc_parent_domain;
  v.dealloc_td = ffv_dealloc_td;
  v.alloc_td = ffv_alloc_td;
  unsupported(v.modify_cq);
  unsupported(v.post_srq_ops);
  unsupported(v.destroy_rwq_ind_table);
  unsupported(v.create_rwq_ind_table);
  unsupported(v.destroy_wq);
  unsupported(v.modify_wq);
  unsupported(v.create_wq);
  v.query_rt_values = ffv_query_rt_values;
  v.create_cq_ex = ffv_create_cq_ex;
  v.priv = nullptr;  // never read by inline code; the real library's private state
  v.query_device_ex = ffv_query_device_ex;
  unsupported(v.ibv_destroy_flow);
  v.ABI_placeholder2 = reinterpret_cast<void (*)()>(v.ibv_destroy_flow);
  unsupported(v.ibv_create_flow);
  v.ABI_placeholder1 = reinterpret_cast<void (*)()>(v.ibv_create_flow);
  v.open_qp = ffv_open_qp;
  v.create_qp_ex = ffv_create_qp_ex;
  v.get_srq_num = ffv_get_srq_num;
  v.create_srq_ex = ffv_create_srq_ex;
  v.open_xrcd = ffv_open_xrcd;
  v.close_xrcd = ffv_close_xrcd;
}

}  // namespace

void init_context_ops(FfContext& ctx) {
  init_legacy_ops(ctx.vctx.context.ops);
  init_extended_ops(ctx.vctx);
  ctx.vctx.sz = sizeof(verbs_context);
  ctx.vctx.context.abi_compat = __VERBS_ABI_IS_EXTENDED;
}

}  // namespace ff::verbs
