// The verbs fabric's data path, run by the poller: moves work requests from
// the clients' rings to the shadow QPs on the device (keys and addresses
// are already the device's), polls the shadow CQs and writes the
// completions, translated, into the clients' CQ rings; forwards the device's
// asynchronous events.
//
// Ordering: a QP's sends reach the device in ring order and complete there
// in order; every one is signaled on the device so that the router knows
// when a slot frees, and success completions the app did not ask for are
// dropped. Once a QP is in error, what is still in its rings is flushed
// (IBV_WC_WR_FLUSH_ERR) after the device has flushed what it held.
#pragma once

#include <atomic>
#include <chrono>
#include <unordered_map>
#include <vector>

#include "router/fabric/poller.h"
#include "router/fabric/verbs/objects.h"

namespace ff::router::verbs {

struct EngineStats {
  std::atomic<uint64_t> wqes{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> error_completions{0};
};

// The device's address vector for a virtual one (ah_attr with a virtual
// GID, or LID addressing): every virtual IP this router serves is on its
// device.
ibv_ah_attr device_address(const Device& d, const ibv_ah_attr& virt);

class Engine final : PollerHooks {
 public:
  Engine(Device& device, std::chrono::microseconds spin);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  void run_sync(const std::function<void()>& fn) { poller_.run_sync(fn); }
  Device& device() { return device_; }

  // Registries (poller, or inside run_sync).
  void watch_doorbell(int fd) { poller_.watch_eventfd(fd); }
  void unwatch_doorbell(int fd) { poller_.unwatch(fd); }
  void link_qp(Qp* qp);
  void unlink_qp(Qp* qp);  // drains its shadow CQs
  void link_srq(Srq* srq) { srqs_.push_back(srq); }
  void unlink_srq(Srq* srq);
  void link_mr(Mr* mr) { mrs_[mr->mr->lkey] = mr; }
  void unlink_mr(Mr* mr) { mrs_.erase(mr->mr->lkey); }
  void link_ah(Ah* ah) { ahs_[ah->ident] = ah; }
  void unlink_ah(Ah* ah) { ahs_.erase(ah->ident); }
  const Qp* find_qp(uint32_t qpn) const {
    auto it = qps_by_num_.find(qpn);
    return it == qps_by_num_.end() ? nullptr : it->second;
  }

  // The virtual QP's state machine around the device's modify (poller).
  int modify_qp(Qp& qp, const ibv_qp_attr& attr, int mask, std::string& why);
  // Moves a QP to ERR on the device and in the router. `fatal`: the app
  // learns it from IBV_EVENT_QP_FATAL (a corrupt ring), not a completion.
  void set_error(Qp& qp, bool fatal);
  // Fires the SRQ limit event when fewer WQEs than the armed limit are left.
  void check_srq_limit(Srq& srq);

  const EngineStats& stats() const { return stats_; }
  uint64_t sleeps() const { return poller_.sleeps(); }

 private:
  bool work(uint64_t now) override;
  bool prepare_to_sleep(uint64_t now, uint64_t& deadline) override;
  void cancel_sleep() override;
  void readable(int fd) override;

  ibv_wc_status check_send(const Qp& qp, const shm::SendWqe& w, const Ah*& ah) const;
  bool post_sends(Qp& qp);
  bool post_receives(Qp& qp);
  bool post_srq_receives(Srq& srq);
  bool poll_sends(Qp& qp);
  bool poll_receives(Qp& qp);
  bool flush(Qp& qp);
  bool fail_toward_gone_peer(Qp& qp);
  void handle_async_events();
  void enter_error(Qp& qp);
  uint8_t was_solicited(const Qp& qp, const ibv_wc& wc);
  void complete(VirtualCq& cq, const shm::Cqe& c, Qp& owner);
  void rewrite_grh(Qp& qp, const shm::RecvWqe& r, uint32_t src_qp);
  void drain_device_cqs(Qp& qp);

  Device& device_;
  std::vector<Qp*> qps_;
  std::unordered_map<uint32_t, Qp*> qps_by_num_;
  std::vector<Srq*> srqs_;
  std::unordered_map<uint32_t, Mr*> mrs_;
  std::unordered_map<uint32_t, Ah*> ahs_;
  uint64_t next_async_check_ns_ = 0;
  EngineStats stats_;
  Poller poller_;  // last: its thread starts after everything above exists
};

}  // namespace ff::router::verbs
