// XRC: domains, XRC SRQs, and opening a domain's receive QP. The router
// keeps the domains (router/control/xrc_domains.h); a domain opened on a
// file is named to it by the file's device and inode, as the kernel names
// it, and is shared with the tenant's other processes that name the same
// file.
#include <fcntl.h>
#include <sys/stat.h>

#include <new>

#include "libffverbs/request.h"

using namespace ff::verbs;
namespace proto = ff::proto;

namespace ff::verbs {

ibv_xrcd* ffv_open_xrcd(ibv_context* context, ibv_xrcd_init_attr* attr) {
  FfContext* ctx = to_ff(context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_xrcd>(EIO);
  if (attr->comp_mask >= IBV_XRCD_INIT_ATTR_RESERVED) return fail_ptr<ibv_xrcd>(EOPNOTSUPP);
  // rdma-core asks for both (ibv_cmd_open_xrcd).
  if ((attr->comp_mask & IBV_XRCD_INIT_ATTR_FD) == 0 || (attr->comp_mask & IBV_XRCD_INIT_ATTR_OFLAGS) == 0)
    return fail_ptr<ibv_xrcd>(EINVAL);
  struct stat st {};
  const bool shared = attr->fd != -1;
  if (shared && ::fstat(attr->fd, &st) != 0) return fail_ptr<ibv_xrcd>(EBADF);
  flatbuffers::FlatBufferBuilder fbb;
  auto body = proto::CreateOpenXrcd(fbb, ctx->handle, attr->oflags, shared, static_cast<uint64_t>(st.st_dev),
                                    static_cast<uint64_t>(st.st_ino));
  auto reply = request<proto::OpenXrcdReply>(fbb, body, "open_xrcd failed");
  if (!reply) return fail_ptr<ibv_xrcd>(reply.error);
  auto* xrcd = new (std::nothrow) FfXrcd();
  if (xrcd == nullptr) {
    flatbuffers::FlatBufferBuilder undo;
    request<void>(undo, proto::CreateCloseXrcd(undo, reply->xrcd()));
    return fail_ptr<ibv_xrcd>(ENOMEM);
  }
  xrcd->xrcd.context = context;
  xrcd->handle = reply->xrcd();
  return &xrcd->xrcd;
}

// EBUSY while this process's XRC SRQs or receive QPs use it.
int ffv_close_xrcd(ibv_xrcd* ibxrcd) {
  FfXrcd* xrcd = to_ff(ibxrcd);
  if (!context_is_stale(*to_ff(ibxrcd->context))) {
    flatbuffers::FlatBufferBuilder fbb;
    int e = request<void>(fbb, proto::CreateCloseXrcd(fbb, xrcd->handle)).error;
    if (e == EBUSY || e == EINVAL) return e;
  }
  delete xrcd;
  return 0;
}

// ibv_create_srq_ex comes here for anything but a basic SRQ named by its
// PD alone (verbs.h serves that through ibv_create_srq).
ibv_srq* ffv_create_srq_ex(ibv_context* context, ibv_srq_init_attr_ex* attr) {
  constexpr uint32_t kKnown = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_PD | IBV_SRQ_INIT_ATTR_XRCD |
                              IBV_SRQ_INIT_ATTR_CQ | IBV_SRQ_INIT_ATTR_TM;
  uint32_t m = attr->comp_mask;
  if ((m & ~kKnown) != 0) return fail_ptr<ibv_srq>(EOPNOTSUPP);
  if ((m & IBV_SRQ_INIT_ATTR_PD) == 0 || attr->pd == nullptr || attr->pd->context != context)
    return fail_ptr<ibv_srq>(EINVAL);
  ibv_srq_type type = (m & IBV_SRQ_INIT_ATTR_TYPE) != 0 ? attr->srq_type : IBV_SRQT_BASIC;
  ibv_srq_init_attr init{attr->srq_context, attr->attr};
  ibv_srq* srq = nullptr;
  switch (type) {
    case IBV_SRQT_BASIC:
      srq = create_srq(attr->pd, init, nullptr, nullptr);
      break;
    case IBV_SRQT_XRC: {
      constexpr uint32_t kXrc = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_XRCD | IBV_SRQ_INIT_ATTR_CQ;
      if ((m & kXrc) != kXrc || attr->xrcd == nullptr || attr->cq == nullptr) return fail_ptr<ibv_srq>(EINVAL);
      srq = create_srq(attr->pd, init, to_ff(attr->xrcd), attr->cq);
      break;
    }
    default:  // tag matching
      return fail_ptr<ibv_srq>(EOPNOTSUPP);
  }
  if (srq != nullptr) attr->attr = init.attr;
  return srq;
}

// EOPNOTSUPP for a basic SRQ: it has no number here (verbs' answer where
// the provider has none to give).
int ffv_get_srq_num(ibv_srq* ibsrq, uint32_t* srq_num) {
  FfSrq* srq = to_ff(ibsrq);
  if (srq->xrc_cq == nullptr) return EOPNOTSUPP;
  *srq_num = srq->srq_num;
  return 0;
}

// ibv_open_qp: an XRC receive QP of a domain this process has open, made by
// any process of the tenant; it lives while any of them holds it.
ibv_qp* ffv_open_qp(ibv_context* context, ibv_qp_open_attr* attr) {
  FfContext* ctx = to_ff(context);
  if (context_is_stale(*ctx)) return fail_ptr<ibv_qp>(EIO);
  constexpr uint32_t kRequired = IBV_QP_OPEN_ATTR_NUM | IBV_QP_OPEN_ATTR_XRCD | IBV_QP_OPEN_ATTR_TYPE;
  if ((attr->comp_mask & kRequired) != kRequired || attr->xrcd == nullptr) return fail_ptr<ibv_qp>(EINVAL);
  if (attr->comp_mask >= IBV_QP_OPEN_ATTR_RESERVED) return fail_ptr<ibv_qp>(EOPNOTSUPP);
  if (attr->qp_type != IBV_QPT_XRC_RECV) return fail_ptr<ibv_qp>(EINVAL);
  flatbuffers::FlatBufferBuilder fbb;
  auto body = proto::CreateOpenQp(fbb, to_ff(attr->xrcd)->handle, attr->qp_num);
  auto reply = request<proto::CreateQpReply>(fbb, body, "open_qp failed", 1);
  if (!reply) return fail_ptr<ibv_qp>(reply.error);
  ibv_qp_init_attr_ex init{};
  init.qp_context = (attr->comp_mask & IBV_QP_OPEN_ATTR_CONTEXT) != 0 ? attr->qp_context : nullptr;
  init.qp_type = IBV_QPT_XRC_RECV;
  init.xrcd = attr->xrcd;
  return adopt_qp(*ctx, reply.fd(0), *reply.body, init);
}

}  // namespace ff::verbs
