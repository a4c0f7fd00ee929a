#include "router/fabric/verbs/engine.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

#include "policy/tenant.h"
#include "router/fabric/qp_transitions.h"

namespace ff::router::verbs {
namespace {

using shm::Cqe;
using shm::RecvWqe;
using shm::SendWqe;

constexpr int kBatch = 32;
constexpr uint8_t kRoceIpv4PacketType = 2;  // what mlx5 reports in wc.sl for UD over IPv4
constexpr uint64_t kAsyncCheckNs = 1'000'000;

void fill_sges(ibv_sge* out, const shm::WireSge* in, uint32_t n, uint64_t& bytes) {
  for (uint32_t i = 0; i < n; ++i) {
    out[i] = ibv_sge{in[i].addr, in[i].length, in[i].lkey};
    bytes += in[i].length;
  }
}

uint16_t ipv4_checksum(const uint8_t* h) {
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2)
    if (i != 10) sum += (uint32_t{h[i]} << 8) | h[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

void put_be32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

}  // namespace

Engine::Engine(Device& device, std::chrono::microseconds spin) : device_(device), poller_(spin, *this) {
  qps_.reserve(1024);
  poller_.watch_other(device_.channel->fd);
  poller_.watch_other(device_.ctx->async_fd);
  poller_.start();
}

Engine::~Engine() { poller_.stop(); }

void Engine::link_qp(Qp* qp) {
  qps_.push_back(qp);
  qps_by_num_[qp->qp_num()] = qp;
}

void Engine::unlink_qp(Qp* qp) {
  qps_.erase(std::remove(qps_.begin(), qps_.end(), qp), qps_.end());
  qps_by_num_.erase(qp->qp_num());
  drain_device_cqs(*qp);
  // Its QP number may be reused by any tenant's next QP: a QP still
  // connected to it must not reach that one. Its work fails as toward a
  // peer that does not answer.
  for (Qp* other : qps_)
    if (other->init.type != IBV_QPT_UD && other->attr.dest_qp_num == qp->qp_num()) other->peer_gone = true;
}

void Engine::unlink_srq(Srq* srq) { srqs_.erase(std::remove(srqs_.begin(), srqs_.end(), srq), srqs_.end()); }

// Discards what the shadow CQs hold (a reset or a destroy): the app never
// sees those completions, but an SRQ's slots come back.
void Engine::drain_device_cqs(Qp& q) {
  ibv_wc wc[kBatch];
  int n;
  while ((n = ibv_poll_cq(q.device_send_cq, kBatch, wc)) > 0) {
  }
  while ((n = ibv_poll_cq(q.device_recv_cq, kBatch, wc)) > 0) {
    if (q.srq == nullptr) continue;
    for (int i = 0; i < n; ++i)
      if (q.srq->posted.valid(wc[i].wr_id)) q.srq->posted.release(static_cast<uint32_t>(wc[i].wr_id));
  }
  q.sends.release_all();
  q.receives.release_all();
}

void Engine::set_error(Qp& q, bool fatal) {
  if (q.state == IBV_QPS_ERR) return;
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_ERR;
  ibv_modify_qp(q.qp, &a, IBV_QP_STATE);  // the device flushes what it holds
  enter_error(q);
  if (fatal) q.ctx.async.raise(IBV_EVENT_QP_FATAL, q.tag);
}

void Engine::check_srq_limit(Srq& srq) {
  if (srq.limit != 0 && srq.ring.size_guess() + srq.posted.used() < srq.limit) {
    srq.limit = 0;
    srq.ctx.async.raise(IBV_EVENT_SRQ_LIMIT_REACHED, srq.tag);
  }
}

void Engine::enter_error(Qp& q) {
  if (q.state == IBV_QPS_ERR) return;
  q.state = IBV_QPS_ERR;
  // Verbs raises this for every SRQ QP that enters ERR; not every device
  // does (rxe does not on modify), so the router raises it and ignores the
  // device's.
  if (q.srq != nullptr) q.ctx.async.raise(IBV_EVENT_QP_LAST_WQE_REACHED, q.tag);
}

// ibv_wc does not say whether the sender set IBV_SEND_SOLICITED. On RC the
// router knows: the connected QP's messages that consume a receive arrive in
// the order it posted them. Elsewhere every receive counts as solicited (a
// spurious wakeup at worst, which verbs allows; never a missed one).
uint8_t Engine::was_solicited(const Qp& q, const ibv_wc& d) {
  if (q.init.type != IBV_QPT_RC || d.status != IBV_WC_SUCCESS) return 1;
  auto it = qps_by_num_.find(q.attr.dest_qp_num);
  if (it == qps_by_num_.end() || it->second->solicited.empty()) return 1;
  bool bit = it->second->solicited.front();
  it->second->solicited.pop_front();
  return bit ? 1 : 0;
}

void Engine::complete(VirtualCq& cq, const Cqe& c, Qp& owner) {
  if (c.status != IBV_WC_SUCCESS) stats_.error_completions.fetch_add(1, std::memory_order_relaxed);
  if (!cq.add(c)) set_error(owner, /*fatal=*/true);
}

// --- the device's address of a virtual one ----------------------------------

int Engine::modify_qp(Qp& q, const ibv_qp_attr& attr, int mask, std::string& why) {
  if (int rc = check_modify_qp(q.init.type, q.state, attr, mask, why); rc != 0) return rc;
  ibv_qp_attr dev = attr;
  if ((mask & IBV_QP_PORT) != 0) dev.port_num = device_.port;
  std::optional<uint32_t> ip;
  if ((mask & IBV_QP_AV) != 0) {
    if (attr.ah_attr.is_global != 0) {
      ip = policy::ipv4_of_gid(attr.ah_attr.grh.dgid.raw);
      if (!ip) {
        why = "ah_attr.grh.dgid must be an IPv4-mapped GID (::ffff:a.b.c.d) of a virtual IP";
        return EINVAL;
      }
    }
    dev.ah_attr = device_address(device_, attr.ah_attr);
  }
  if ((mask & IBV_QP_DEST_QPN) != 0) {
    // A destination the router knows must be a QP of the same tenant at the
    // address named; the device never sees a connection across tenants.
    if (const Qp* dest = find_qp(attr.dest_qp_num)) {
      if (dest->pd.owner.tenant != q.pd.owner.tenant) {
        why = "dest_qp_num belongs to another tenant";
        return EINVAL;
      }
      if (ip && *ip != dest->pd.owner.virtual_ip) {
        why = "dest_qp_num is not at the GID given in ah_attr";
        return EINVAL;
      }
    }
  }
  if (ibv_modify_qp(q.qp, &dev, mask) != 0) {
    int e = errno != 0 ? errno : EINVAL;
    why = "the device (" + device_.name + ") refused the change: " + std::strerror(e);
    return e;
  }
  ibv_qp_state next = next_state(q.state, attr, mask);
  apply_qp_attr(q.attr, attr, mask);
  if (next == IBV_QPS_ERR) {
    enter_error(q);
    return 0;
  }
  if (next == IBV_QPS_RESET) {
    // The device dropped whatever it held, without completions; so do we.
    drain_device_cqs(q);
    q.peer_gone = false;
    q.solicited.clear();
    q.sq.sc_reset_to_producer();
    if (q.srq == nullptr) q.rq.sc_reset_to_producer();
    q.attr = ibv_qp_attr{};
  }
  q.state = next;
  return 0;
}

ibv_ah_attr device_address(const Device& d, const ibv_ah_attr& virt) {
  // One router per device: every virtual address this router serves is the
  // device itself; which QP is meant is the QP number's business.
  ibv_ah_attr a{};
  a.port_num = d.port;
  a.sl = virt.sl;
  a.static_rate = virt.static_rate;
  if (d.port_attr.link_layer == IBV_LINK_LAYER_INFINIBAND && virt.is_global == 0) {
    a.dlid = d.port_attr.lid;
    return a;
  }
  a.is_global = 1;
  a.grh.dgid = d.gid;
  a.grh.sgid_index = static_cast<uint8_t>(d.gid_index);
  a.grh.hop_limit = virt.is_global != 0 && virt.grh.hop_limit != 0 ? virt.grh.hop_limit : 64;
  a.grh.traffic_class = virt.is_global != 0 ? virt.grh.traffic_class : 0;
  a.grh.flow_label = virt.is_global != 0 ? virt.grh.flow_label : 0;
  return a;
}

// --- the data path ------------------------------------------------------------

bool Engine::work(uint64_t now) {
  if (now >= next_async_check_ns_) {
    handle_async_events();
    next_async_check_ns_ = now + kAsyncCheckNs;
  }
  bool busy = false;
  // Completions first: they free device slots.
  for (Qp* q : qps_) {
    busy |= poll_sends(*q);
    busy |= poll_receives(*q);
    if (q->state == IBV_QPS_ERR) busy |= flush(*q);
    // A producer index past the ring is the client's doing: its QP fails,
    // nobody else notices.
    if (q->sq.corrupt() || q->rq.corrupt()) set_error(*q, /*fatal=*/true);
    // Which sends were published before the receives are looked at below:
    // only those go out in this pass. A receive an app posted before a send
    // (in any process, the send's QP or another) is then on the device
    // before the send is, as if both had gone to hardware directly.
    q->sends_visible = q->state == IBV_QPS_RTS ? static_cast<uint32_t>(q->sq.size_guess()) : 0;
  }
  for (Srq* s : srqs_) busy |= post_srq_receives(*s);
  for (Qp* q : qps_)
    if (q->srq == nullptr && q->state != IBV_QPS_RESET && q->state != IBV_QPS_ERR) busy |= post_receives(*q);
  for (Qp* q : qps_)
    if (q->sends_visible > 0 && q->state == IBV_QPS_RTS) busy |= post_sends(*q);
  return busy;
}

// The status of a send the router refuses before the device sees it (what
// the device would refuse at post time, or reports differently from one
// device to the next); IBV_WC_SUCCESS when it may go.
ibv_wc_status Engine::check_send(const Qp& q, const SendWqe& w, const Ah*& ah) const {
  if (!shm::opcode_allowed(q.init.type, w.opcode)) return IBV_WC_LOC_QP_OP_ERR;
  bool inl = (w.send_flags & IBV_SEND_INLINE) != 0;
  bool writes_locally = w.opcode == IBV_WR_RDMA_READ || w.opcode == IBV_WR_ATOMIC_CMP_AND_SWP ||
                        w.opcode == IBV_WR_ATOMIC_FETCH_AND_ADD;
  uint64_t total = 0;
  if (inl) {
    if (writes_locally) return IBV_WC_LOC_QP_OP_ERR;
    if (w.inline_len > q.init.cap.max_inline_data) return IBV_WC_LOC_LEN_ERR;
    total = w.inline_len;
  } else {
    if (w.num_sge > q.init.cap.max_send_sge) return IBV_WC_LOC_LEN_ERR;
    // Local keys: the device checks them too, but says so differently from
    // one device to the next (rxe: LOC_QP_OP_ERR); verbs says LOC_PROT_ERR.
    unsigned need = writes_locally ? IBV_ACCESS_LOCAL_WRITE : 0;
    for (uint32_t i = 0; i < w.num_sge; ++i) {
      const shm::WireSge& g = w.payload.sge[i];
      total += g.length;
      if (g.length == 0) continue;
      auto it = mrs_.find(g.lkey);
      if (it == mrs_.end() || it->second->pd != &q.pd || (it->second->access & need) != need ||
          !it->second->contains(g.addr, g.length))
        return IBV_WC_LOC_PROT_ERR;
    }
  }
  if (q.init.type == IBV_QPT_UD) {
    auto it = ahs_.find(w.ah);
    if (it == ahs_.end() || &it->second->pd != &q.pd) return IBV_WC_LOC_QP_OP_ERR;
    ah = it->second;
    if (total > (128u << device_.port_attr.active_mtu)) return IBV_WC_LOC_LEN_ERR;  // one packet
  }
  return IBV_WC_SUCCESS;
}

bool Engine::post_sends(Qp& q) {
  if (q.peer_gone) return fail_toward_gone_peer(q);
  ibv_send_wr wrs[kBatch];
  ibv_sge sges[kBatch][shm::kMaxSge];
  SendWqe copies[kBatch];  // inline data is read from here at post time
  uint32_t slots[kBatch];
  uint64_t bytes = 0;
  int n = 0;
  ibv_wc_status refused = IBV_WC_SUCCESS;
  int limit = static_cast<int>(std::min<uint32_t>(kBatch, q.sends_visible));
  while (n < limit && q.sends.has_free() && q.sq.sc_peek(static_cast<size_t>(n), copies[n])) {
    const SendWqe& w = copies[n];
    bool inl = (w.send_flags & IBV_SEND_INLINE) != 0;
    const Ah* ah = nullptr;
    if (ibv_wc_status st = check_send(q, w, ah); st != IBV_WC_SUCCESS) {
      if (n == 0) refused = st;
      break;
    }
    ibv_send_wr& wr = wrs[n];
    wr = ibv_send_wr{};
    uint32_t slot = q.sends.acquire();
    slots[n] = slot;
    q.sends[slot] = SendSlot{w.wr_id, w.opcode, (w.send_flags & IBV_SEND_SIGNALED) != 0};
    wr.wr_id = slot;
    wr.opcode = static_cast<ibv_wr_opcode>(w.opcode);
    wr.send_flags = IBV_SEND_SIGNALED | (w.send_flags & (IBV_SEND_FENCE | IBV_SEND_SOLICITED | IBV_SEND_INLINE));
    wr.imm_data = w.imm_data;
    wr.sg_list = sges[n];
    if (inl) {
      sges[n][0] = ibv_sge{reinterpret_cast<uint64_t>(copies[n].payload.inline_data), w.inline_len, 0};
      wr.num_sge = w.inline_len > 0 ? 1 : 0;
      bytes += w.inline_len;
    } else {
      fill_sges(sges[n], w.payload.sge, w.num_sge, bytes);
      wr.num_sge = static_cast<int>(w.num_sge);
    }
    switch (w.opcode) {
      case IBV_WR_RDMA_WRITE:
      case IBV_WR_RDMA_WRITE_WITH_IMM:
      case IBV_WR_RDMA_READ:
        wr.wr.rdma.remote_addr = w.remote_addr;
        wr.wr.rdma.rkey = w.rkey;
        break;
      case IBV_WR_ATOMIC_CMP_AND_SWP:
      case IBV_WR_ATOMIC_FETCH_AND_ADD:
        wr.wr.atomic.remote_addr = w.remote_addr;
        wr.wr.atomic.rkey = w.rkey;
        wr.wr.atomic.compare_add = w.compare_add;
        wr.wr.atomic.swap = w.swap;
        break;
      default:
        break;
    }
    if (q.init.type == IBV_QPT_UD) {
      // Datagrams reach QPs of the same tenant at the address named, or
      // nobody: anything else goes to the sink, where the device drops it.
      const Qp* t = find_qp(w.remote_qpn);
      bool allowed = t != nullptr && t->pd.owner.tenant == q.pd.owner.tenant &&
                     (!ah->virtual_ip || *ah->virtual_ip == t->pd.owner.virtual_ip);
      wr.wr.ud.ah = ah->ah;
      wr.wr.ud.remote_qpn = allowed ? w.remote_qpn : device_.sink_qp->qp_num;
      // The high bit asks for the sending QP's own Q_Key (not every device
      // implements that rule; the router does).
      wr.wr.ud.remote_qkey = (w.remote_qkey & 0x80000000u) != 0 ? q.attr.qkey : w.remote_qkey;
    }
    if (n > 0) wrs[n - 1].next = &wr;
    ++n;
  }
  if (n == 0) {
    // A refused head fails once the device finished everything before it.
    if (refused == IBV_WC_SUCCESS || q.sends.used() > 0) return false;
    SendWqe w;
    if (!q.sq.sc_try_pop(w)) return false;
    Cqe c = send_completion(w.wr_id, refused, w.opcode, q.qp_num());
    set_error(q, false);
    complete(q.send_cq, c, q);
    return true;
  }
  ibv_send_wr* bad = nullptr;
  int posted = n;
  if (ibv_post_send(q.qp, &wrs[0], &bad) != 0) {
    posted = bad == nullptr ? 0 : static_cast<int>(bad - wrs);
    for (int i = posted; i < n; ++i) q.sends.release(slots[i]);
    if (posted == 0 && q.sends.used() == 0) {
      // The device refused the head although the router found it valid:
      // the QP cannot go on.
      SendWqe w;
      if (q.sq.sc_try_pop(w)) {
        Cqe c = send_completion(w.wr_id, IBV_WC_LOC_QP_OP_ERR, w.opcode, q.qp_num());
        set_error(q, false);
        complete(q.send_cq, c, q);
      }
      return true;
    }
  }
  q.sq.sc_release(static_cast<size_t>(posted));
  if (q.init.type == IBV_QPT_RC) {
    for (int i = 0; i < posted; ++i) {
      uint32_t op = copies[i].opcode;
      if (op == IBV_WR_SEND || op == IBV_WR_SEND_WITH_IMM || op == IBV_WR_RDMA_WRITE_WITH_IMM)
        q.solicited.push_back((copies[i].send_flags & IBV_SEND_SOLICITED) != 0);
    }
  }
  stats_.wqes.fetch_add(static_cast<uint64_t>(posted), std::memory_order_relaxed);
  stats_.bytes.fetch_add(bytes, std::memory_order_relaxed);
  return posted > 0;
}

// The connected QP was destroyed: nothing more goes to its number. RC work
// fails as toward a peer that stopped answering; UC work is lost on the
// wire, so it completes.
bool Engine::fail_toward_gone_peer(Qp& q) {
  if (q.sends.used() > 0) return false;  // what the device holds completes first
  SendWqe w;
  if (!q.sq.sc_try_pop(w)) return false;
  bool reliable = q.init.type == IBV_QPT_RC;
  if (!reliable && (w.send_flags & IBV_SEND_SIGNALED) == 0 && !q.init.sq_sig_all) return true;
  Cqe c = send_completion(w.wr_id, reliable ? IBV_WC_RETRY_EXC_ERR : IBV_WC_SUCCESS, w.opcode, q.qp_num());
  if (reliable) set_error(q, false);
  complete(q.send_cq, c, q);
  return true;
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
    c.qp_num = q.qp_num();
    complete(q.send_cq, c, q);
  }
  return n > 0;
}

bool Engine::poll_receives(Qp& q) {
  SlotTable<RecvWqe>& table = q.srq != nullptr ? q.srq->posted : q.receives;
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
    c.qp_num = q.qp_num();
    c.src_qp = d.src_qp;
    c.wc_flags = d.wc_flags & (IBV_WC_GRH | IBV_WC_WITH_IMM);
    c.pkey_index = 0;
    c.slid = d.slid;
    c.sl = d.sl;
    c.dlid_path_bits = d.dlid_path_bits;
    c.solicited = was_solicited(q, d);
    if (d.status == IBV_WC_SUCCESS && q.init.type == IBV_QPT_UD && (d.wc_flags & IBV_WC_GRH) != 0) {
      rewrite_grh(q, r, d.src_qp);
      c.sl = kRoceIpv4PacketType;
    }
    table.release(slot);
    if (d.status != IBV_WC_SUCCESS) enter_error(q);
    complete(q.recv_cq, c, q);
  }
  if (n > 0 && q.srq != nullptr) check_srq_limit(*q.srq);
  return n > 0;
}

// The device wrote its own addresses into the GRH; the app must see the
// virtual ones: the sender's and its own virtual IP (RoCE v2 over IPv4 puts
// an IPv4 header in the GRH's last 20 bytes; other layouts carry GIDs).
void Engine::rewrite_grh(Qp& q, const RecvWqe& r, uint32_t src_qp) {
  uint8_t grh[40];
  std::byte* where[40];
  uint32_t got = 0;
  for (uint32_t i = 0; i < r.num_sge && i < shm::kMaxSge && got < 40; ++i) {
    auto it = mrs_.find(r.sge[i].lkey);
    uint32_t take = std::min<uint32_t>(r.sge[i].length, 40 - got);
    if (it == mrs_.end() || !it->second->contains(r.sge[i].addr, take)) return;
    std::byte* p = it->second->router_addr(r.sge[i].addr);
    for (uint32_t k = 0; k < take; ++k) {
      where[got] = p + k;
      grh[got++] = static_cast<uint8_t>(p[k]);
    }
  }
  if (got < 40) return;
  const Qp* sender = find_qp(src_qp);
  uint32_t src_ip = sender != nullptr ? sender->pd.owner.virtual_ip : 0;
  uint32_t dst_ip = q.pd.owner.virtual_ip;
  if ((grh[20] >> 4) == 4) {
    uint8_t* ip = grh + 20;
    if (sender != nullptr) put_be32(ip + 12, src_ip);
    put_be32(ip + 16, dst_ip);
    uint16_t sum = ipv4_checksum(ip);
    ip[10] = static_cast<uint8_t>(sum >> 8);
    ip[11] = static_cast<uint8_t>(sum);
  } else {
    uint8_t gid[16];
    if (sender != nullptr) {
      policy::ipv4_mapped_gid(src_ip, gid);
      std::memcpy(grh + 8, gid, 16);
    }
    policy::ipv4_mapped_gid(dst_ip, gid);
    std::memcpy(grh + 24, gid, 16);
  }
  for (uint32_t k = 0; k < 40; ++k) *where[k] = static_cast<std::byte>(grh[k]);
}

// Once the device gave back everything it held, what is left in the rings
// completes with IBV_WC_WR_FLUSH_ERR, in order behind it.
bool Engine::flush(Qp& q) {
  int n = 0;
  if (q.sends.used() == 0) {
    SendWqe w;
    while (n < kBatch && q.sq.sc_try_pop(w)) {
      Cqe c = send_completion(w.wr_id, IBV_WC_WR_FLUSH_ERR, w.opcode, q.qp_num());
      complete(q.send_cq, c, q);
      ++n;
    }
  }
  if (q.srq == nullptr && q.receives.used() == 0) {
    RecvWqe r;
    while (n < kBatch && q.rq.sc_try_pop(r)) {
      complete(q.recv_cq, flushed_receive(r.wr_id, q.qp_num()), q);
      ++n;
    }
  }
  return n > 0;
}

// --- sleeping and events ---------------------------------------------------------

bool Engine::prepare_to_sleep(uint64_t, uint64_t&) {
  bool may_sleep = true;
  for (Srq* s : srqs_)
    if (!s->ring.prepare_to_sleep()) may_sleep = false;
  for (Qp* q : qps_) {
    bool sends_move = q->state == IBV_QPS_RTS || q->state == IBV_QPS_ERR;
    bool receives_move = q->srq == nullptr && q->state != IBV_QPS_RESET;
    if (sends_move && !q->sq.prepare_to_sleep()) may_sleep = false;
    if (receives_move && !q->rq.prepare_to_sleep()) may_sleep = false;
    // Arm, then poll once more: a completion that came in between is seen
    // now, any later one raises the channel.
    if (q->sends.used() > 0) ibv_req_notify_cq(q->device_send_cq, 0);
    if ((q->srq != nullptr ? q->srq->posted.used() : q->receives.used()) > 0)
      ibv_req_notify_cq(q->device_recv_cq, 0);
  }
  if (may_sleep) {
    for (Qp* q : qps_) {
      bool got = poll_sends(*q);
      got |= poll_receives(*q);
      if (got) may_sleep = false;
    }
  }
  return may_sleep;
}

void Engine::cancel_sleep() {
  for (Srq* s : srqs_) s->ring.cancel_sleep();
  for (Qp* q : qps_) {
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

void Engine::handle_async_events() {
  ibv_async_event ev;
  while (ibv_get_async_event(device_.ctx, &ev) == 0) {
    switch (ev.event_type) {
      case IBV_EVENT_QP_FATAL:
      case IBV_EVENT_QP_REQ_ERR:
      case IBV_EVENT_QP_ACCESS_ERR:
      case IBV_EVENT_SQ_DRAINED:
      case IBV_EVENT_COMM_EST:
      case IBV_EVENT_PATH_MIG:
      case IBV_EVENT_PATH_MIG_ERR: {
        auto it = qps_by_num_.find(ev.element.qp->qp_num);
        if (it == qps_by_num_.end()) break;
        Qp& q = *it->second;
        if (ev.event_type == IBV_EVENT_QP_FATAL || ev.event_type == IBV_EVENT_QP_REQ_ERR ||
            ev.event_type == IBV_EVENT_QP_ACCESS_ERR)
          enter_error(q);
        q.ctx.async.raise(ev.event_type, q.tag);
        break;
      }
      case IBV_EVENT_CQ_ERR:
        // A shadow CQ overran (they are sized not to): its QP cannot go on.
        for (Qp* q : qps_)
          if (q->device_send_cq == ev.element.cq || q->device_recv_cq == ev.element.cq) set_error(*q, true);
        break;
      case IBV_EVENT_SRQ_ERR:
        for (Srq* s : srqs_)
          if (s->srq == ev.element.srq) s->ctx.async.raise(ev.event_type, s->tag);
        break;
      case IBV_EVENT_SRQ_LIMIT_REACHED:     // the router keeps SRQ limits itself (ring plus device)
      case IBV_EVENT_QP_LAST_WQE_REACHED:  // and raises this one itself (enter_error)
        break;
      case IBV_EVENT_DEVICE_FATAL:
        for (Qp* q : qps_) {
          enter_error(*q);
          q->ctx.async.raise(IBV_EVENT_QP_FATAL, q->tag);
        }
        break;
      default:
        break;  // port events: the virtual port never changes state
    }
    ibv_ack_async_event(&ev);
  }
}

// --- objects whose lifetime the engine must know about --------------------------

Mr::~Mr() {
  engine.run_sync([this] { engine.unlink_mr(this); });
  ibv_dereg_mr(mr);
  if (composed != nullptr) ::munmap(composed, composed_length);
}

Srq::Srq(Context& c, shm::Mapping m, const Pd& p, ibv_srq* s, uint32_t capacity, uint32_t max_sge,
         uint32_t lim, uint32_t t)
    : ctx(c), mapping(std::move(m)), pd(p), srq(s), cap(capacity), sge(max_sge), tag(t), posted(capacity),
      limit(lim) {
  shm::init_ring<RecvWqe>(mapping.base() + shm::kSrqRingOffset, cap);
  ring = shm::RingConsumer<RecvWqe>(mapping.base() + shm::kSrqRingOffset, cap);
  ctx.engine.run_sync([this] { ctx.engine.link_srq(this); });
}

Srq::~Srq() {
  ctx.engine.run_sync([this] { ctx.engine.unlink_srq(this); });
  ibv_destroy_srq(srq);
}

Ah::Ah(Engine& e, const Pd& p, ibv_ah* a, std::optional<uint32_t> ip, uint32_t id)
    : engine(e), pd(p), ah(a), virtual_ip(ip), ident(id) {
  engine.run_sync([this] { engine.link_ah(this); });
}

Ah::~Ah() {
  engine.run_sync([this] { engine.unlink_ah(this); });
  ibv_destroy_ah(ah);
}

Qp::Qp(Context& c, shm::Mapping m, const Pd& p, VirtualCq& scq, VirtualCq& rcq, Srq* s,
       const QpInit& i, uint32_t send_c, uint32_t recv_c, uint32_t t)
    : ctx(c), mapping(std::move(m)), pd(p), send_cq(scq), recv_cq(rcq), srq(s), init(i),
      send_cap(send_c), recv_cap(recv_c), tag(t), sends(send_c), receives(s != nullptr ? 0 : recv_c) {
  std::byte* base = mapping.base();
  shm::init_ring<SendWqe>(base + shm::kQpSendRingOffset, send_cap);
  shm::init_ring<RecvWqe>(base + shm::qp_recv_ring_offset(send_cap), recv_cap);
  sq = shm::RingConsumer<SendWqe>(base + shm::kQpSendRingOffset, send_cap);
  rq = shm::RingConsumer<RecvWqe>(base + shm::qp_recv_ring_offset(send_cap), recv_cap);
}

Qp::~Qp() {
  Engine& e = ctx.engine;
  e.run_sync([&] {
    if (qp != nullptr) {
      e.unlink_qp(this);
      ibv_destroy_qp(qp);
    }
    // The poller acknowledges every CQ event as it reads it, so nothing
    // blocks these.
    if (device_send_cq != nullptr) ibv_destroy_cq(device_send_cq);
    if (device_recv_cq != nullptr) ibv_destroy_cq(device_recv_cq);
  });
}

Device::~Device() {
  if (sink_qp != nullptr) ibv_destroy_qp(sink_qp);
  if (sink_cq != nullptr) ibv_destroy_cq(sink_cq);
  if (sink_pd != nullptr) ibv_dealloc_pd(sink_pd);
  if (channel != nullptr) ibv_destroy_comp_channel(channel);
  if (ctx != nullptr) ibv_close_device(ctx);
}

}  // namespace ff::router::verbs
