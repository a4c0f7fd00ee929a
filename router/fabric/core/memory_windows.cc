// Memory windows: the bind, invalidation and access rules, written once
// for every fabric that offers windows (IBA 10.6.7, o10-36 .. C10-75, as
// rdma-core's providers and rxe apply them).
//
//   bind (BIND_MW): the window and the MR belong to the binding QP's PD;
//     a type 1 window is named by its current rkey, a type 2 one must be
//     free; the new rkey keeps the window's index; the MR allows binding
//     (IBV_ACCESS_MW_BIND), local write where the window grants remote write
//     or atomics, and holds the range; the access is remote read, write and
//     atomic only (no zero-based windows). Anything else: IBV_WC_MW_BIND_ERR.
//   a type 1 bind with no MR and an empty range unbinds the window;
//   LOCAL_INV and remote invalidation free a bound type 2 window, named by
//     its exact rkey, of the QP's PD (remote: bound through that QP);
//   access through a window: its exact rkey, the responder's PD (type 2:
//     its QP), the access granted, the range inside the window's.
#include <infiniband/verbs.h>

#include "router/fabric/core/queue_core.h"

namespace ff::router::core {

namespace {
constexpr unsigned kWindowAccess = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC;

bool within(uint64_t addr, uint64_t len, uint64_t base, uint64_t length) {
  return addr >= base && len <= length && addr - base <= length - len;
}
}  // namespace

void QueueCore::link_mw(Mw& mw) {
  assert_poller();
  assert(!mw.linked && mws_.count(mw.index()) == 0 && "a window index is linked once");
  mws_[mw.index()] = &mw;
  mw.linked = true;
}

void QueueCore::unlink_mw(Mw& mw) {
  assert_poller();
  if (!mw.linked) return;
  unbind(mw);
  mws_.erase(mw.index());
  mw.linked = false;
}

Mw* QueueCore::find_window(uint32_t rkey) const {
  Mw* mw = find(mws_, rkey >> 8);
  return mw != nullptr && mw->current_rkey == rkey ? mw : nullptr;
}

bool QueueCore::key_index_used(uint32_t index) const {
  if (mws_.count(index) != 0) return true;
  for (uint32_t low = 0; low < 256; ++low)
    if (mrs_.count((index << 8) | low) != 0) return true;
  return false;
}

namespace {
// Puts `mw` at the head of a list (`head`), or takes it out, through its
// links `member` (Mw::on_mr or Mw::on_qp).
void push(Mw*& head, Mw& mw, Mw::Links Mw::*member) {
  (mw.*member).prev = nullptr;
  (mw.*member).next = head;
  if (head != nullptr) (head->*member).prev = &mw;
  head = &mw;
}
void take_out(Mw*& head, Mw& mw, Mw::Links Mw::*member) {
  Mw::Links& l = mw.*member;
  if (l.prev != nullptr) (l.prev->*member).next = l.next; else head = l.next;
  if (l.next != nullptr) (l.next->*member).prev = l.prev;
  l = {};
}
}  // namespace

void QueueCore::unbind(Mw& mw) {
  ++access_epoch_;
  if (mw.mr != nullptr) {
    mw.mr->windows.fetch_sub(1, std::memory_order_relaxed);
    take_out(mw.mr->bound_windows, mw, &Mw::on_mr);
  }
  if (mw.qp != nullptr) take_out(mw.qp->bound_windows, mw, &Mw::on_qp);
  mw.mr = nullptr;
  mw.qp = nullptr;
  mw.addr = mw.length = 0;
  mw.access = 0;
}

ibv_wc_status QueueCore::bind_window(Qp& qp, const shm::SendWqe& w) {
  Mw* mw = find(mws_, w.rkey >> 8);
  if (mw == nullptr || &mw->pd != &qp.pd || (w.remote_qkey >> 8) != (w.rkey >> 8)) return IBV_WC_MW_BIND_ERR;
  if (mw->type == IBV_MW_TYPE_1 ? mw->current_rkey != w.rkey : mw->bound()) return IBV_WC_MW_BIND_ERR;
  if (mw->type == IBV_MW_TYPE_2 && w.compare_add == 0) return IBV_WC_MW_BIND_ERR;  // o10-37.2.40: no empty type 2
  const uint64_t addr = w.remote_addr, length = w.compare_add;
  const unsigned access = static_cast<unsigned>(w.swap);
  const uint32_t lkey = w.payload.sge[0].lkey;
  if (mw->type == IBV_MW_TYPE_1 && lkey == 0 && addr == 0 && length == 0) {  // unbind
    unbind(*mw);
    mw->current_rkey = w.remote_qkey;
    return IBV_WC_SUCCESS;
  }
  Mr* mr = find_mr(lkey);
  if (mr == nullptr || mr->pd != &qp.pd || (access & ~kWindowAccess) != 0 ||
      (mr->access & IBV_ACCESS_MW_BIND) == 0 || !mr->contains(addr, length))
    return IBV_WC_MW_BIND_ERR;
  if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) != 0 &&
      (mr->access & IBV_ACCESS_LOCAL_WRITE) == 0)
    return IBV_WC_MW_BIND_ERR;
  unbind(*mw);  // a type 1 window may be bound again
  mw->mr = mr;
  mr->windows.fetch_add(1, std::memory_order_relaxed);
  push(mr->bound_windows, *mw, &Mw::on_mr);
  if (mw->type == IBV_MW_TYPE_2) {
    mw->qp = &qp;
    push(qp.bound_windows, *mw, &Mw::on_qp);
  }
  mw->addr = addr;
  mw->length = length;
  mw->access = access;
  mw->current_rkey = w.remote_qkey;
  return IBV_WC_SUCCESS;
}

ibv_wc_status QueueCore::execute_local(Qp& qp, const shm::SendWqe& w) {
  assert_poller();
  if (w.opcode == IBV_WR_BIND_MW) return bind_window(qp, w);
  Mw* mw = find_window(w.imm_data);
  if (mw == nullptr || mw->type != IBV_MW_TYPE_2 || !mw->bound() || &mw->pd != &qp.pd) return IBV_WC_LOC_QP_OP_ERR;
  unbind(*mw);
  return IBV_WC_SUCCESS;
}

bool QueueCore::invalidate_window(Qp& t, uint32_t rkey) {
  assert_poller();
  Mw* mw = find_window(rkey);
  if (mw == nullptr || mw->type != IBV_MW_TYPE_2 || mw->qp != &t) return false;
  unbind(*mw);
  return true;
}

const Mr* QueueCore::window_grants(const Qp& t, uint32_t rkey, unsigned need, uint64_t addr, uint64_t len) const {
  const Mw* mw = find_window(rkey);
  if (mw == nullptr || !mw->bound() || &mw->pd != t.memory_pd() || (mw->type == IBV_MW_TYPE_2 && mw->qp != &t) ||
      (mw->access & need) != need || !within(addr, len, mw->addr, mw->length))
    return nullptr;
  return mw->mr;
}

Mw::~Mw() {
  core.run_sync([this] { core.unlink_mw(*this); });
}

}  // namespace ff::router::core
