// Memory windows: ibv_alloc_mw, ibv_dealloc_mw and ibv_bind_mw (type 1),
// and the descriptor of a bind, which ibv_post_send (IBV_WR_BIND_MW) and
// ibv_wr_bind_mw write too. The router keeps the windows and applies every
// rule (router/fabric/core/memory_windows.cc); binds and invalidations are
// work requests, executed in order with the QP's others.
#include <cstdlib>

#include "libffverbs/request.h"

using namespace ff::verbs;
namespace proto = ff::proto;
namespace shm = ff::shm;

namespace {

struct FfMw {
  ibv_mw mw;  // first: apps hold &mw
  uint32_t handle;
};

ibv_mw* alloc_mw(ibv_pd* pd, ibv_mw_type type) {
  if (context_is_stale(*to_ff(pd->context))) return fail_ptr<ibv_mw>(EIO);
  flatbuffers::FlatBufferBuilder fbb;
  auto body = proto::CreateAllocMw(fbb, to_ff(pd)->handle, static_cast<uint8_t>(type));
  auto reply = request<proto::AllocMwReply>(fbb, body, "alloc_mw failed");
  if (!reply) return fail_ptr<ibv_mw>(reply.error);
  auto* mw = static_cast<FfMw*>(std::calloc(1, sizeof(FfMw)));
  if (mw == nullptr) {
    flatbuffers::FlatBufferBuilder undo;
    (void)request<void>(undo, proto::CreateDeallocMw(undo, reply->mw()));
    return fail_ptr<ibv_mw>(ENOMEM);
  }
  mw->mw.context = pd->context;
  mw->mw.pd = pd;
  mw->mw.rkey = reply->rkey();
  mw->mw.handle = reply->mw();
  mw->mw.type = type;
  mw->handle = reply->mw();
  hold_parent_domain(pd);
  return &mw->mw;
}

// A bound window goes unbound with it (rdma-core: always allowed).
int dealloc_mw(ibv_mw* ibmw) {
  auto* mw = reinterpret_cast<FfMw*>(ibmw);
  if (!context_is_stale(*to_ff(ibmw->context))) {
    flatbuffers::FlatBufferBuilder fbb;
    if (int e = request<void>(fbb, proto::CreateDeallocMw(fbb, mw->handle)).error; e == EINVAL) return e;
  }
  release_parent_domain(ibmw->pd);
  std::free(mw);
  return 0;
}

// Type 1, through the QP's send queue (libibverbs checked the type, the MR's
// PD and an empty range without MR). The window's rkey changes at post, as
// the verbs API says; the bind itself completes as IBV_WC_BIND_MW.
int bind_mw(ibv_qp* qp, ibv_mw* mw, ibv_mw_bind* bind) {
  ibv_send_wr wr{};
  wr.wr_id = bind->wr_id;
  wr.opcode = IBV_WR_BIND_MW;
  wr.send_flags = bind->send_flags;
  wr.bind_mw.mw = mw;
  wr.bind_mw.rkey = ibv_inc_rkey(mw->rkey);
  wr.bind_mw.bind_info = bind->bind_info;
  ibv_send_wr* bad = nullptr;
  if (int e = ffv_post_send(qp, &wr, &bad); e != 0) return e;
  mw->rkey = wr.bind_mw.rkey;
  return 0;
}

}  // namespace

namespace ff::verbs {

int encode_bind(shm::SendWqe& w, const ibv_mw* mw, uint32_t rkey, const ibv_mw_bind_info& info) {
  if (mw == nullptr) return EINVAL;
  w.rkey = mw->rkey;
  w.remote_qkey = rkey;
  w.remote_addr = info.addr;
  w.compare_add = info.length;
  w.swap = info.mw_access_flags;
  w.num_sge = 0;
  w.payload.sge[0] = {0, 0, info.mr != nullptr ? info.mr->lkey : 0};
  return 0;
}

void init_mw_ops(ibv_context_ops& ops) {
  ops.alloc_mw = alloc_mw;
  ops.dealloc_mw = dealloc_mw;
  ops.bind_mw = bind_mw;
}

}  // namespace ff::verbs
