// The verbs fabric's data path (see engine.h): rings to the device, the
// device's completions back to the rings, translated.
#include <algorithm>
#include <cstring>

#include "policy/tenant.h"
#include "router/fabric/poller.h"
#include "router/fabric/verbs/engine.h"

namespace ff::router::verbs {
namespace {

using core::kBatch;
using shm::Cqe;
using shm::RecvWqe;
using shm::SendWqe;

constexpr uint8_t kRoceIpv4PacketType = 2;  // what mlx5 reports in wc.sl for UD over IPv4
constexpr uint64_t kAsyncCheckNs = 1'000'000;

void fill_sges(ibv_sge* out, const shm::WireSge* in, uint32_t n, uint64_t& bytes) {
  for (uint32_t i = 0; i < n; ++i) {
    out[i] = ibv_sge{in[i].addr, in[i].length, in[i].lkey};
    bytes += in[i].length;
  }
}

bool writes_locally(uint32_t op) {
  return op == IBV_WR_RDMA_READ || op == IBV_WR_ATOMIC_CMP_AND_SWP || op == IBV_WR_ATOMIC_FETCH_AND_ADD;
}

}  // namespace

bool Engine::work(uint64_t now) {
  if (now >= next_async_check_ns_) {
    handle_async_events();
    next_async_check_ns_ = now + kAsyncCheckNs;
  }
  next_round();
  bool busy = false;
  // Completions first: they free device slots.
  for (core::Qp* c : qps()) {
    auto& q = static_cast<Qp&>(*c);
    busy |= poll_sends(q);
    busy |= poll_receives(q);
    if (q.state == IBV_QPS_ERR) busy |= flush(q, q.sends.used() == 0, q.receives.used() == 0);
    fail_if_corrupt(q);
    // Which sends were published before the receives are looked at below:
    // only those go out in this pass. A receive an app posted before a send
    // (in any process, the send's QP or another) is then on the device
    // before the send is, as if both had gone to hardware directly.
    q.sends_visible = q.state == IBV_QPS_RTS && !q.device_changing ? static_cast<uint32_t>(q.sq.size_guess()) : 0;
  }
  for (core::Srq* s : srqs()) busy |= post_srq_receives(static_cast<Srq&>(*s));
  for (core::Qp* c : qps())
    if (c->srq == nullptr && c->state != IBV_QPS_RESET && c->state != IBV_QPS_ERR &&
        !static_cast<Qp*>(c)->device_changing)
      busy |= post_receives(static_cast<Qp&>(*c));
  const auto& all = qps();
  for (size_t i = 0, first = first_of_pass(); i < all.size(); ++i) {
    auto& q = static_cast<Qp&>(*all[(first + i) % all.size()]);
    if (q.sends_visible > 0 && q.state == IBV_QPS_RTS && q.capped_until_ns <= now) busy |= post_sends(q, now);
  }
  return busy;
}

// The status of a send the router refuses before the device sees it (what
// the device would refuse at post time, or reports differently from one
// device to the next); IBV_WC_SUCCESS when it may go.
ibv_wc_status Engine::check_send(const Qp& q, const SendWqe& w, const Ah*& ah) const {
  if (!shm::opcode_allowed(q.init.type, w.opcode)) return IBV_WC_LOC_QP_OP_ERR;
  // The device path has no ATOMIC WRITE (rxe before 6.2 answers so too).
  if (w.opcode == IBV_WR_ATOMIC_WRITE) return IBV_WC_LOC_QP_OP_ERR;
  // Nor memory windows (not reported: the keys would need translating).
  if (shm::is_local_op(w.opcode) || w.opcode == IBV_WR_SEND_WITH_INV) return IBV_WC_LOC_QP_OP_ERR;
  uint64_t total = 0;
  if ((w.send_flags & IBV_SEND_INLINE) != 0) {
    if (writes_locally(w.opcode)) return IBV_WC_LOC_QP_OP_ERR;
    if (w.inline_len > q.init.cap.max_inline_data) return IBV_WC_LOC_LEN_ERR;
    total = w.inline_len;
  } else {
    if (w.num_sge > q.init.cap.max_send_sge) return IBV_WC_LOC_LEN_ERR;
    // Local keys: the device checks them too, but says so differently from
    // one device to the next (rxe: LOC_QP_OP_ERR); verbs says LOC_PROT_ERR.
    unsigned need = writes_locally(w.opcode) ? IBV_ACCESS_LOCAL_WRITE : 0;
    for (uint32_t i = 0; i < w.num_sge; ++i) {
      const shm::WireSge& g = w.payload.sge[i];
      total += g.length;
      if (g.length == 0) continue;
      const Mr* mr = find_mr(g.lkey);
      if (mr == nullptr || !mr->grants(q.pd, need, g.addr, g.length)) return IBV_WC_LOC_PROT_ERR;
    }
  }
  if (q.init.type == IBV_QPT_UD) {
    ah = find_ah(w.ah);
    if (ah == nullptr || &ah->pd != &q.pd) return IBV_WC_LOC_QP_OP_ERR;
    if (total > (128u << device_.port_attr.active_mtu)) return IBV_WC_LOC_LEN_ERR;  // one packet
  }
  return IBV_WC_SUCCESS;
}

// The device's work request for a checked WQE (its wr_id is set by the caller).
void Engine::build_send(Qp& q, const SendWqe& w, const Ah* ah, ibv_send_wr& wr, ibv_sge* sges, uint64_t& bytes) {
  wr = ibv_send_wr{};
  wr.opcode = static_cast<ibv_wr_opcode>(w.opcode);
  wr.send_flags = IBV_SEND_SIGNALED | (w.send_flags & (IBV_SEND_FENCE | IBV_SEND_SOLICITED | IBV_SEND_INLINE));
  wr.imm_data = w.imm_data;
  wr.sg_list = sges;
  if ((w.send_flags & IBV_SEND_INLINE) != 0) {
    // `w` is the caller's copy: the device reads inline data from it at post time.
    sges[0] = ibv_sge{reinterpret_cast<uint64_t>(w.payload.inline_data), w.inline_len, 0};
    wr.num_sge = w.inline_len > 0 ? 1 : 0;
    bytes += w.inline_len;
  } else {
    fill_sges(sges, w.payload.sge, w.num_sge, bytes);
    wr.num_sge = static_cast<int>(w.num_sge);
  }
  if (w.opcode == IBV_WR_ATOMIC_CMP_AND_SWP || w.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD) {
    wr.wr.atomic = {w.remote_addr, w.compare_add, w.swap, w.rkey};
  } else if (w.opcode == IBV_WR_RDMA_WRITE || w.opcode == IBV_WR_RDMA_WRITE_WITH_IMM || w.opcode == IBV_WR_RDMA_READ) {
    wr.wr.rdma = {w.remote_addr, w.rkey};
  } else if (q.init.type == IBV_QPT_UD) {
    // Datagrams reach QPs of the same tenant at the address named, or
    // nobody: anything else goes to the sink, where the device drops it.
    // (One on another host was allowed by its router: far_verdict.)
    const Qp* t = ah->far_router.empty() ? find_qp(w.remote_qpn) : nullptr;
    bool allowed = !ah->far_router.empty() ||
                   (t != nullptr && t->pd.owner.tenant == q.pd.owner.tenant && ah->virtual_ip == t->pd.owner.virtual_ip);
    wr.wr.ud.ah = ah->ah;
    wr.wr.ud.remote_qpn = allowed ? w.remote_qpn : device_.sink_qp->qp_num;
    // The high bit asks for the sending QP's own Q_Key (not every device
    // implements that rule; the router does).
    wr.wr.ud.remote_qkey = (w.remote_qkey & 0x80000000u) != 0 ? q.attr.qkey : w.remote_qkey;
  }
}

// Fails the send queue's head WQE with `status` (the QP goes to ERR), once
// the device has finished everything before it.
bool Engine::fail_head(Qp& q, ibv_wc_status status) {
  if (q.sends.used() > 0) return false;
  SendWqe w;
  uint64_t index = q.sq.consumed();
  if (!q.sq.sc_try_pop(w)) return false;
  Cqe c = send_completion(w.wr_id, status, w.opcode, q.qpn);
  set_error(q);
  complete_send(q, c, index);
  return true;
}

bool Engine::post_sends(Qp& q, uint64_t now) {
  if (q.peer_gone) return fail_toward_gone_peer(q);
  ibv_send_wr wrs[kBatch];
  ibv_sge sges[kBatch][shm::kMaxSge];
  SendWqe copies[kBatch];  // inline data is read from here at post time
  uint32_t slots[kBatch];
  uint64_t bytes[kBatch];
  bool held_back = false;  // by its tenant's fair share: more next pass
  int n = 0;
  int limit = static_cast<int>(std::min<uint32_t>(kBatch, q.sends_visible));
  while (n < limit && q.sends.has_free() && q.sq.sc_peek(static_cast<size_t>(n), copies[n])) {
    q.sq.sc_prefetch(static_cast<size_t>(n) + 1);  // crosses from the app's core while this one is built
    const SendWqe& w = copies[n];
    const Ah* ah = nullptr;
    if (ibv_wc_status st = check_send(q, w, ah); st != IBV_WC_SUCCESS) {
      if (n == 0) return fail_head(q, st);
      break;
    }
    if (ah != nullptr && !ah->far_router.empty()) {
      FarVerdict v = far_verdict(q, w, *ah);
      if (v != FarVerdict::kGo) {
        if (n == 0 && v == FarVerdict::kDrop) return complete_head_unsent(q);
        break;  // kWait: the answer wakes the poller
      }
    }
    bytes[n] = 0;
    build_send(q, w, ah, wrs[n], sges[n], bytes[n]);
    // The device moves it whole: its tenant's caps and share are charged
    // for all of it here (a capped QP waits, capped_until_ns).
    if (auto a = admit(q, bytes[n], true, now); a != core::TenantShare::Admission::kGo) {
      held_back = a == core::TenantShare::Admission::kHeldBack;
      break;
    }
    slots[n] = q.sends.acquire();
    q.sends[slots[n]] = SendSlot{w.wr_id, q.sq.consumed() + static_cast<uint64_t>(n), w.opcode,
                                 (w.send_flags & IBV_SEND_SIGNALED) != 0};
    wrs[n].wr_id = slots[n];
    if (n > 0) wrs[n - 1].next = &wrs[n];
    ++n;
  }
  if (n == 0) return held_back;
  ibv_send_wr* bad = nullptr;
  int posted = n;
  if (ibv_post_send(q.qp, &wrs[0], &bad) != 0) {
    posted = bad == nullptr ? 0 : static_cast<int>(bad - wrs);
    for (int i = posted; i < n; ++i) {
      q.sends.release(slots[i]);
      refund(q, bytes[i], true, /*tried=*/false);
    }
    // The device refused the head although the router found it valid: the
    // QP cannot go on.
    if (posted == 0) return fail_head(q, IBV_WC_LOC_QP_OP_ERR);
  }
  q.sq.sc_release(static_cast<size_t>(posted));
  if (q.init.type == IBV_QPT_RC) {
    for (int i = 0; i < posted; ++i) {
      uint32_t op = copies[i].opcode;
      if (op == IBV_WR_SEND || op == IBV_WR_SEND_WITH_IMM || op == IBV_WR_RDMA_WRITE_WITH_IMM)
        q.solicited.push_back((copies[i].send_flags & IBV_SEND_SOLICITED) != 0);
    }
  }
  SentTally tally(*this, q);  // (their completions come from the device later)
  for (int i = 0; i < posted; ++i) tally.add(copies[i].opcode, bytes[i]);
  return posted > 0;
}

// The connected QP was destroyed: nothing more goes to its number. RC work
// fails as toward a peer that stopped answering; UC work is lost on the
// wire, so it completes.
bool Engine::fail_toward_gone_peer(Qp& q) {
  if (q.init.type == IBV_QPT_RC) return fail_head(q, IBV_WC_RETRY_EXC_ERR);
  return complete_head_unsent(q);
}

// The head WQE completes as sent, though nothing went: a UC message or a
// datagram toward no QP is lost on the wire, which is no error. Once the
// device has finished everything before it.
bool Engine::complete_head_unsent(Qp& q) {
  if (q.sends.used() > 0) return false;
  SendWqe w;
  uint64_t index = q.sq.consumed();
  if (!q.sq.sc_try_pop(w)) return false;
  if (q.signals(w)) complete_send(q, send_completion(w.wr_id, IBV_WC_SUCCESS, w.opcode, q.qpn), index);
  return true;
}

// Whether a datagram to a QP on another host may go. The first one to a
// (virtual IP, QP number) asks that host's router (the head send waits);
// its answer is remembered: allowed until that router says the QP is gone
// or is lost, refused for a second (the QP may be created meanwhile).
Engine::FarVerdict Engine::far_verdict(Qp& q, const SendWqe& w, const Ah& ah) {
  auto key = std::make_pair(ah.virtual_ip, w.remote_qpn);
  auto it = q.far_destinations.find(key);
  if (it != q.far_destinations.end()) {
    FarDestination& d = it->second;
    if (d.state == FarDestination::State::kAsked) return FarVerdict::kWait;
    if (d.state == FarDestination::State::kAllowed && ah.ah != nullptr) return FarVerdict::kGo;
    if (d.state == FarDestination::State::kRefused && Poller::now_ns() < d.until_ns) return FarVerdict::kDrop;
    // Allowed, but this AH has no device AH yet (another AH learned it):
    // asking again makes it one.
  } else if (q.far_destinations.size() >= kMaxFarPeers) {
    q.far_destinations.clear();  // forget all: at worst each is asked again
  }
  if (!ask_far_) return FarVerdict::kDrop;  // not in a cluster
  FarDestination& d = q.far_destinations[key];
  d.state = FarDestination::State::kAsked;
  d.router = ah.far_router;
  q.waiting_for_far = true;
  ask_far_(q, ah, w.remote_qpn);
  return FarVerdict::kWait;
}

void Engine::settle_far(Qp& q, uint32_t vip, uint32_t qpn, const std::string& router, bool allowed) {
  constexpr uint64_t kRefusalNs = 1'000'000'000;
  q.waiting_for_far = false;
  auto it = q.far_destinations.find({vip, qpn});
  if (it == q.far_destinations.end() || it->second.router != router) return;  // forgotten meanwhile
  it->second.state = allowed ? FarDestination::State::kAllowed : FarDestination::State::kRefused;
  it->second.until_ns = Poller::now_ns() + kRefusalNs;
}

namespace {

// Moves receive WQEs from a ring to the device; `post` is ibv_post_recv or
// ibv_post_srq_recv. Returns how many moved, or -1 when the device refused
// the first one.
template <typename Post>
int move_receives(shm::RingConsumer<RecvWqe>& ring, SlotTable<RecvWqe>& table, uint32_t max_sge, Post post) {
  ibv_recv_wr wrs[kBatch];
  ibv_sge sges[kBatch][shm::kMaxSge];
  uint32_t slots[kBatch];
  int n = 0;
  while (n < kBatch && table.has_free()) {
    uint32_t slot = table.acquire();
    if (!ring.sc_peek(static_cast<size_t>(n), table[slot])) {
      table.release(slot);
      break;
    }
    ring.sc_prefetch(static_cast<size_t>(n) + 1);
    const RecvWqe& r = table[slot];
    slots[n] = slot;
    ibv_recv_wr& wr = wrs[n];
    wr = ibv_recv_wr{};
    wr.wr_id = slot;
    wr.sg_list = sges[n];
    uint64_t ignored = 0;
    // More SGEs than the queue holds: the device would refuse the post. The
    // surplus is dropped; a message that needed it fails (LOC_LEN_ERR).
    uint32_t k = std::min(r.num_sge, max_sge);
    fill_sges(sges[n], r.sge, k, ignored);
    wr.num_sge = static_cast<int>(k);
    if (n > 0) wrs[n - 1].next = &wr;
    ++n;
  }
  if (n == 0) return 0;
  ibv_recv_wr* bad = nullptr;
  int posted = n;
  if (post(&wrs[0], &bad) != 0) posted = bad == nullptr ? 0 : static_cast<int>(bad - wrs);
  for (int i = posted; i < n; ++i) table.release(slots[i]);
  ring.sc_release(static_cast<size_t>(posted));
  return posted == 0 ? -1 : posted;
}

}  // namespace

bool Engine::post_receives(Qp& q) {
  int moved = move_receives(q.rq, q.receives, q.init.cap.max_recv_sge,
                            [&](ibv_recv_wr* wr, ibv_recv_wr** bad) { return ibv_post_recv(q.qp, wr, bad); });
  if (moved < 0) set_error(q, /*fatal=*/true);  // descriptors the device cannot take: a broken client
  return moved != 0;
}

bool Engine::post_srq_receives(Srq& s) {
  int moved = move_receives(s.ring, s.posted, s.sge,
                            [&](ibv_recv_wr* wr, ibv_recv_wr** bad) { return ibv_post_srq_recv(s.srq, wr, bad); });
  if (moved < 0) {
    // Drop the head the device refuses, or the SRQ would stall everyone on it.
    RecvWqe r;
    (void)s.ring.sc_try_pop(r);
    s.ctx.async.raise(IBV_EVENT_SRQ_ERR, s.tag);
  }
  return moved != 0;
}

bool Engine::poll_sends(Qp& q) {
  if (q.sends.used() == 0) return false;
  ibv_wc wc[kBatch];
  int n = ibv_poll_cq(q.device_send_cq, kBatch, wc);
  for (int i = 0; i < n; ++i) {
    if (!q.sends.valid(wc[i].wr_id)) continue;
    auto slot = static_cast<uint32_t>(wc[i].wr_id);
    SendSlot s = q.sends[slot];
    q.sends.release(slot);
    if (wc[i].status != IBV_WC_SUCCESS) enter_error(q);  // the device's QP is in ERR
    if (wc[i].status == IBV_WC_SUCCESS && !s.signaled && !q.init.sq_sig_all) continue;
    Cqe c{};
    c.wr_id = s.wr_id;
    c.status = wc[i].status;
    c.opcode = wc[i].status == IBV_WC_SUCCESS ? wc[i].opcode : completion_opcode(s.opcode);
    c.vendor_err = wc[i].vendor_err;
    c.byte_len = wc[i].byte_len;
    c.qp_num = q.qpn;
    complete_send(q, c, s.index);
  }
  return n > 0;
}

bool Engine::poll_receives(Qp& q) {
  SlotTable<RecvWqe>& table = q.srq != nullptr ? q.device_srq()->posted : q.receives;
  if (table.used() == 0) return false;
  ibv_wc wc[kBatch];
  int n = ibv_poll_cq(q.device_recv_cq, kBatch, wc);
  for (int i = 0; i < n; ++i) {
    const ibv_wc& d = wc[i];
    if (!table.valid(d.wr_id)) continue;
    auto slot = static_cast<uint32_t>(d.wr_id);
    const RecvWqe& r = table[slot];
    Cqe c{};
    c.wr_id = r.wr_id;
    c.status = d.status;
    c.opcode = d.status == IBV_WC_SUCCESS ? d.opcode : IBV_WC_RECV;
    c.vendor_err = d.vendor_err;
    c.byte_len = d.byte_len;
    c.imm_data = d.imm_data;
    c.qp_num = q.qpn;
    c.src_qp = d.src_qp;
    c.wc_flags = d.wc_flags & (IBV_WC_GRH | IBV_WC_WITH_IMM);
    c.pkey_index = 0;
    c.slid = d.slid;
    c.sl = d.sl;
    c.dlid_path_bits = d.dlid_path_bits;
    c.solicited = was_solicited(q, d);
    if (d.status == IBV_WC_SUCCESS && q.init.type == IBV_QPT_UD && (d.wc_flags & IBV_WC_GRH) != 0) {
      if (!translate_grh(q, r, d.src_qp)) {
        // From a QP on another host no router let send here: the app never
        // sees it, and its receive goes back to the device.
        if (!repost_receive(q, table, slot)) {
          table.release(slot);
          set_error(q, /*fatal=*/true);
        }
        continue;
      }
      c.sl = kRoceIpv4PacketType;
    }
    table.release(slot);
    if (d.status != IBV_WC_SUCCESS) enter_error(q);
    complete_for(q, q.recv_cq, c);
  }
  if (n > 0 && q.srq != nullptr) check_srq_limit(*q.srq);
  return n > 0;
}

// ibv_wc does not say whether the sender set IBV_SEND_SOLICITED. On RC the
// router knows: the connected QP's messages that consume a receive arrive in
// the order it posted them. Elsewhere every receive counts as solicited (a
// spurious wakeup at worst, which verbs allows; never a missed one).
uint8_t Engine::was_solicited(const Qp& q, const ibv_wc& d) {
  if (q.init.type != IBV_QPT_RC || d.status != IBV_WC_SUCCESS) return 1;
  Qp* sender = q.far_router.empty() ? find_qp(q.attr.dest_qp_num) : nullptr;  // a far sender's bits are not here
  if (sender == nullptr || sender->solicited.empty()) return 1;
  bool bit = sender->solicited.front();
  sender->solicited.pop_front();
  return bit ? 1 : 0;
}

// A receive the device completed with a datagram the app must not see goes
// back to the device as it was.
bool Engine::repost_receive(Qp& q, SlotTable<RecvWqe>& table, uint32_t slot) {
  const RecvWqe& r = table[slot];
  ibv_sge sges[shm::kMaxSge];
  uint64_t ignored = 0;
  uint32_t max_sge = q.srq != nullptr ? q.device_srq()->sge : q.init.cap.max_recv_sge;
  uint32_t k = std::min(r.num_sge, max_sge);
  fill_sges(sges, r.sge, k, ignored);
  ibv_recv_wr wr{};
  wr.wr_id = slot;
  wr.sg_list = sges;
  wr.num_sge = static_cast<int>(k);
  ibv_recv_wr* bad = nullptr;
  int rc = q.srq != nullptr ? ibv_post_srq_recv(q.device_srq()->srq, &wr, &bad) : ibv_post_recv(q.qp, &wr, &bad);
  return rc == 0;
}

// Once the device gave back everything it held, what is left in the rings
// completes with IBV_WC_WR_FLUSH_ERR, in order behind it.

// --- sleeping and events ---------------------------------------------------------

bool Engine::prepare_to_sleep(uint64_t now, uint64_t& deadline) {
  bool may_sleep = true;
  for (core::Srq* s : srqs())
    if (!s->ring.prepare_to_sleep()) may_sleep = false;
  for (core::Qp* c : qps()) {
    auto& q = static_cast<Qp&>(*c);
    // A QP the control thread is modifying waits for end_modify (run_sync wakes us).
    // One whose head send waits for another router's answer too (settle_far wakes us).
    // One its tenant's caps hold wakes us when they allow it.
    bool capped = q.state == IBV_QPS_RTS && q.capped_until_ns > now;
    if (capped) deadline = std::min(deadline, q.capped_until_ns);
    bool sends_move = (q.state == IBV_QPS_ERR || (q.state == IBV_QPS_RTS && !q.waiting_for_far && !capped)) &&
                      !q.device_changing;
    bool receives_move = q.srq == nullptr && q.state != IBV_QPS_RESET && !q.device_changing;
    if (sends_move && !q.sq.prepare_to_sleep()) may_sleep = false;
    if (receives_move && !q.rq.prepare_to_sleep()) may_sleep = false;
    // Arm, then poll once more: a completion that came in between is seen
    // now, any later one raises the channel.
    if (q.sends.used() > 0) ibv_req_notify_cq(q.device_send_cq, 0);
    if ((q.srq != nullptr ? q.device_srq()->posted.used() : q.receives.used()) > 0)
      ibv_req_notify_cq(q.device_recv_cq, 0);
  }
  if (may_sleep) {
    for (core::Qp* c : qps()) {
      bool got = poll_sends(static_cast<Qp&>(*c));
      got |= poll_receives(static_cast<Qp&>(*c));
      if (got) may_sleep = false;
    }
  }
  return may_sleep;
}

void Engine::cancel_sleep() {
  for (core::Srq* s : srqs()) s->ring.cancel_sleep();
  for (core::Qp* q : qps()) {
    q->sq.cancel_sleep();
    if (q->srq == nullptr) q->rq.cancel_sleep();
  }
}

void Engine::readable(int fd) {
  if (fd == device_.ctx->async_fd) {
    handle_async_events();
    return;
  }
  if (fd != device_.channel->fd) return;
  ibv_cq* cq;
  void* cq_context;
  while (ibv_get_cq_event(device_.channel, &cq, &cq_context) == 0) ibv_ack_cq_events(cq, 1);
}


}  // namespace ff::router::verbs
