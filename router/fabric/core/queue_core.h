// The queue core: what every fabric's engine does the same way, whatever
// executes the work. It owns the poller thread, the registries of live
// objects (QP numbers, memory keys, address handles, SRQs), and the verbs
// rules on queues: completions (and what an overrun CQ does), moving a QP
// to ERR (and the events that raises), flushing, the SRQ limit event, the
// QP state table and the cross-tenant checks of ibv_modify_qp, and the
// counters ffctl shows.
//
// A fabric's engine derives from it and implements the PollerHooks (its
// data path) plus the few hooks below where its device differs.
//
// Thread contract (see router/fabric/poller.h): everything marked "poller"
// belongs to the poller thread; the control thread changes it only through
// run_sync(). The per-WQE path never allocates, locks or makes a system call
// while busy.
#pragma once

#include <array>
#include <atomic>
#include <cassert>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "router/common/result.h"
#include "router/fabric/core/objects.h"
#include "router/fabric/poller.h"

namespace ff::router::core {

inline constexpr int kBatch = 32;  // work per queue per poller pass

class QueueCore : public PollerHooks {
 public:
  QueueCore(std::chrono::microseconds spin, PollerPlacement placement);
  ~QueueCore() override;
  QueueCore(const QueueCore&) = delete;
  QueueCore& operator=(const QueueCore&) = delete;

  // Runs `fn` on the poller thread and waits for it. Control thread only.
  void run_sync(const std::function<void()>& fn) { poller_.run_sync(fn); }
  void watch_doorbell(int fd) { poller_.watch_bell(fd); }
  void unwatch_doorbell(int fd) { poller_.unwatch(fd); }

  // --- registries (poller, or inside run_sync) ---
  void link_qp(Qp& qp);
  void unlink_qp(Qp& qp);  // and marks the QPs connected to it peer_gone
  void link_mr(Mr& mr);
  void unlink_mr(Mr& mr);
  void link_ah(Ah& ah);
  void unlink_ah(Ah& ah);
  void link_srq(Srq& srq);
  void unlink_srq(Srq& srq);
  // The XRC SRQ numbered `srq_num` (any tenant's, any domain's: the caller
  // checks the domain).
  Srq* find_xrc_srq(uint32_t srq_num) const { return find(xrc_srqs_, srq_num); }
  // Every work request looks up its QPs and keys: through a small cache
  // in front of the maps (a hash map's find costs a division and a chase).
  Qp* find_qp(uint32_t qpn) const { return qp_cache_.find(qps_by_num_, qpn, qpn); }
  Mr* find_mr(uint32_t lkey) const { return mr_cache_.find(mrs_, lkey, lkey ^ (lkey >> 8)); }
  Ah* find_ah(uint32_t id) const { return find(ahs_, id); }
  // Moves whenever what a remote request may reach can have changed (a QP
  // modified, in error or gone; an MR gone; a window unbound): work checked
  // before it, and still going on (a WRITE received in place), is checked
  // again.
  const uint64_t& access_epoch() const { return access_epoch_; }
  void link_mw(Mw& mw);
  void unlink_mw(Mw& mw);  // unbinds it first
  // The window `rkey` names now (its index and its current key byte).
  Mw* find_window(uint32_t rkey) const;
  // Whether an MR or window holds keys of index `index` (key >> 8).
  bool key_index_used(uint32_t index) const;
  const std::vector<Qp*>& qps() const { return qps_; }
  const std::vector<Srq*>& srqs() const { return srqs_; }

  // --- the verbs rules on queues (poller) ---
  // Adds a completion and fires the CQ's channel if armed; false when the
  // CQ overflowed (the CQ then raises IBV_EVENT_CQ_ERR).
  bool complete(VirtualCq& cq, const shm::Cqe& c);
  // The same for a completion of `owner`'s: an overrun CQ puts it in ERR
  // (fatal: the app learns it from IBV_EVENT_QP_FATAL, not a completion).
  void complete_for(Qp& owner, VirtualCq* cq, const shm::Cqe& c);
  // The completion of the send WR at ring index `wr_index` (and of the
  // unsignaled ones before it, which it retires for the app's send queue).
  void complete_send(Qp& qp, shm::Cqe c, uint64_t wr_index);
  // Moves a QP to ERR (its queues then flush) after the fabric's
  // on_error() hook. `fatal`: the error cannot be reported in a completion
  // (a corrupt ring, an overrun CQ), so the context gets IBV_EVENT_QP_FATAL.
  // A QP on an SRQ also gets IBV_EVENT_QP_LAST_WQE_REACHED.
  void set_error(Qp& qp, bool fatal = false);
  // set_error without the hook: the device is in ERR already.
  void enter_error(Qp& qp, bool fatal = false);
  // Completes up to kBatch queued WQEs with IBV_WC_WR_FLUSH_ERR: sends when
  // `sends`, receives (of a QP's own queue) when `receives`. True when any.
  bool flush(Qp& qp, bool sends, bool receives);
  // Fires the SRQ limit event once the SRQ holds fewer WQEs than its armed
  // limit (and disarms it).
  void check_srq_limit(Srq& srq);
  // Receive WQEs the SRQ holds: in its ring, and where the fabric put them.
  uint32_t srq_receives_held(Srq& srq) {
    return static_cast<uint32_t>(srq.ring.size_guess()) + srq_held_elsewhere(srq);
  }
  // A producer index that runs past a ring is the client's doing: its QP
  // fails (QP_FATAL), nobody else notices. True when it did.
  bool fail_if_corrupt(Qp& qp);

  // --- memory windows (poller; memory_windows.cc) ---
  // A work request that touches no remote QP (BIND_MW, LOCAL_INV: see
  // shm::is_local_op), executed in order at the head of qp's send queue:
  // IBV_WC_SUCCESS, IBV_WC_MW_BIND_ERR for a bind the rules refuse,
  // IBV_WC_LOC_QP_OP_ERR for an invalidation that names no window of its PD.
  ibv_wc_status execute_local(Qp& qp, const shm::SendWqe& w);
  // Remote invalidation (SEND_WITH_INV) reaching responder `t`: the type 2
  // window `rkey` it bound goes free. False when there is no such window.
  bool invalidate_window(Qp& t, uint32_t rkey);
  // The MR behind window `rkey` if the window grants `need` on
  // [addr, addr + len) through responder `t` (its PD; type 2: its QP).
  const Mr* window_grants(const Qp& t, uint32_t rkey, unsigned need, uint64_t addr, uint64_t len) const;

  // --- UD multicast (attach, detach: inside run_sync; members: poller; multicast.cc) ---
  // What one tenant may attach (the device's max_mcast_grp,
  // max_mcast_qp_attach, max_total_mcast_qp_attach): a tenant's
  // attachments are router memory it holds.
  struct McastLimits {
    uint32_t groups = 0;
    uint32_t qps_per_group = 0;
    uint32_t attachments = 0;
  };
  void set_mcast_limits(const McastLimits& l) { mcast_limits_ = l; }
  // A UD QP joins group `mgid`: EINVAL for another QP type or a GID that is
  // no multicast group of the RoCE v2 IPv4 port (::ffff:224.0.0.0/4), ENOMEM
  // past the tenant's limits; attaching again is no error (as rxe).
  Status attach_mcast(Qp& qp, const ibv_gid& mgid);
  // EINVAL when it is not attached.
  Status detach_mcast(Qp& qp, const ibv_gid& mgid);
  // The QPs attached to group `group` (its IPv4 address), every tenant's:
  // the caller keeps to the sender's tenant. Null when none.
  const std::vector<Qp*>* mcast_members(uint32_t group) const;

  // --- ibv_modify_qp (inside run_sync) ---
  // The state table, and the destination rule: a connected QP's
  // destination, where it is a QP the fabric knows (`dest_local`), belongs
  // to the same tenant and is at the address named.
  Status check_modify(const Qp& qp, const ibv_qp_attr& attr, int mask, bool dest_local) const;
  // Applies a checked modify: the attributes, the new state, a reset
  // (rings emptied without completions, on_reset()) or ERR.
  void apply_modify(Qp& qp, const ibv_qp_attr& attr, int mask);
  // What ibv_query_qp reports.
  static ibv_qp_attr query(const Qp& qp);

  // --- counters ---
  // Work this router executed: for its requester (count_sent: `wqes` work
  // requests of `qp`'s with one ibv_wr_opcode, `bytes` in all) or for a
  // requester on another router (count). Poller.
  void count(uint64_t wqes, uint64_t bytes) {
    wqes_.add(wqes);
    bytes_.add(bytes);
  }
  void count_sent(Qp& qp, uint32_t opcode, uint64_t bytes, uint64_t wqes = 1) {
    count(wqes, bytes);
    qp.traffic.sent(opcode, bytes, wqes);
    qp.tenant.traffic.sent(opcode, bytes, wqes);
  }
  FabricCounters counters() const;
  // What a burst of a QP's work executed, counted once per run of one
  // opcode rather than per work request (each count is a store to lines
  // the control thread reads). Flush it before writing a completion of
  // the burst, so that what the app polled is counted when it asks.
  class SentTally {
   public:
    SentTally(QueueCore& core, Qp& qp) : core_(core), qp_(qp) {}
    SentTally(const SentTally&) = delete;
    SentTally& operator=(const SentTally&) = delete;
    ~SentTally() { flush(); }
    void add(uint32_t opcode, uint64_t bytes) {
      if (opcode != opcode_) flush();
      opcode_ = opcode;
      ++wqes_;
      bytes_ += bytes;
    }
    void flush() {
      if (wqes_ > 0) core_.count_sent(qp_, opcode_, bytes_, wqes_);
      wqes_ = bytes_ = 0;
    }

   private:
    QueueCore& core_;
    Qp& qp_;
    uint32_t opcode_ = 0;
    uint64_t wqes_ = 0;
    uint64_t bytes_ = 0;
  };
  // A tenant's block (control thread: made on its first QP or QoS spec,
  // kept for good, so that its counters never go back). Read at any time.
  TenantBlock& tenant_block(const std::string& tenant);
  std::map<std::string, TrafficCounters> tenant_traffic() const;  // control thread

  // --- QoS (tenant_share.h) ---
  // A tenant's caps and weight, live (control thread).
  void configure_tenant(const std::string& tenant, const policy::QosSpec& spec);
  // Whether `qp` may move `bytes` of work now (`starts`: the first piece of
  // a work request); kCapped parks the QP until its caps allow
  // (qp.capped_until_ns, which the engine's sleep honours), kHeldBack
  // leaves it for the next pass (the engine stays busy). Poller.
  TenantShare::Admission admit(Qp& qp, uint64_t bytes, bool starts, uint64_t now) {
    uint64_t ready_at = now;
    if (qp.asked_in_round != round_) {
      qp.asked_in_round = round_;
      qp.tenant.share.qp_busy(round_);
    }
    auto a = qp.tenant.share.admit(bytes, starts, round_, now, ready_at);
    if (a == TenantShare::Admission::kCapped) qp.capped_until_ns = ready_at;
    return a;
  }
  // Admitted work that did not go (TenantShare::refund).
  void refund(Qp& qp, uint64_t bytes, bool starts, bool tried) { qp.tenant.share.refund(bytes, starts, tried); }
  // A poller pass begins: every tenant earns its share again. Poller.
  void next_round() { ++round_; }
  // Where this pass starts in qps(): a QP its tenant's share held back in
  // one pass is among the first in a later one.
  size_t first_of_pass() const { return qps_.empty() ? 0 : static_cast<size_t>(round_ % qps_.size()); }

 protected:
  // Starts the poller thread: the derived engine's constructor calls it
  // last; its destructor calls stop() first.
  void start() { poller_.start(); }
  void stop() { poller_.stop(); }
  Poller& poller() { return poller_; }
  // Data-path invariant (debug builds): the caller is the poller thread.
  void assert_poller() const { assert(poller_.owns_state() && "poller state touched off the poller thread"); }

  // Hooks where a fabric differs (poller thread).
  virtual void on_error(Qp&) {}        // before set_error's state change
  virtual void on_reset(Qp&) {}        // a modify to RESET
  virtual void on_unlink(Qp&) {}       // before it leaves the registry
  // A UD QP in RTS being destroyed: the datagrams already posted go out
  // first, as a device's would (bounded by its ring; what its tenant's caps
  // hold back is dropped, as is what cannot go without waiting).
  virtual void send_posted_datagrams(Qp&) {}
  virtual void on_srq_gone(Qp&) {}     // an XRC receive QP's SRQ goes (drop what it held of it)
  // Receive WQEs of `srq` the fabric holds outside its ring (the device's).
  virtual uint32_t srq_held_elsewhere(const Srq&) const { return 0; }
  // Whether `other`'s destination QP number names a QP of this router.
  virtual bool connects_here(const Qp&) const { return true; }

 private:
  void detach_all(Qp& qp);
  ibv_wc_status bind_window(Qp& qp, const shm::SendWqe& w);
  void unbind(Mw& mw);

  template <typename Map>
  static typename Map::mapped_type find(const Map& m, uint32_t key) {
    auto it = m.find(key);
    return it == m.end() ? nullptr : it->second;
  }

  // Found entries of a map, direct-mapped by a hash of the key (the low bits
  // of QP numbers count up; a key's low byte is random). An entry is
  // cleared whenever its map loses one (unlink: rare, a control verb), so
  // a hit is always in the map. Only the poller's thread touches it.
  template <typename T>
  class LookupCache {
   public:
    T* find(const std::unordered_map<uint32_t, T*>& m, uint32_t key, uint32_t hash) const {
      Entry& e = entries_[hash % entries_.size()];
      if (e.found != nullptr && e.key == key) return e.found;
      T* found = QueueCore::find(m, key);
      if (found != nullptr) e = Entry{key, found};
      return found;
    }
    void clear() { entries_.fill(Entry{}); }

   private:
    struct Entry {
      uint32_t key = 0;
      T* found = nullptr;
    };
    mutable std::array<Entry, 64> entries_{};
  };

  std::vector<Qp*> qps_;
  std::unordered_map<uint32_t, Qp*> qps_by_num_;
  std::unordered_map<uint32_t, Mr*> mrs_;
  LookupCache<Qp> qp_cache_;
  LookupCache<Mr> mr_cache_;
  uint64_t access_epoch_ = 0;
  std::unordered_map<uint32_t, Ah*> ahs_;
  std::unordered_map<uint32_t, Mw*> mws_;  // by index
  std::unordered_map<uint32_t, std::vector<Qp*>> mcast_groups_;  // by group IPv4 address
  struct McastUse {
    uint32_t groups = 0;
    uint32_t attachments = 0;
  };
  std::map<std::string, McastUse> mcast_use_;  // by tenant
  McastLimits mcast_limits_;
  std::vector<Srq*> srqs_;
  std::unordered_map<uint32_t, Srq*> xrc_srqs_;  // by srq_num
  SingleWriterCounter wqes_;  // the poller writes these; ffctl reads (core/traffic.h)
  SingleWriterCounter bytes_;
  SingleWriterCounter error_completions_;
  std::map<std::string, TenantBlock> tenants_;  // the control thread inserts
  uint64_t round_ = 0;                          // poller passes (the fair share's rounds)
  Poller poller_;  // last: stopped before the registries go
};

}  // namespace ff::router::core
