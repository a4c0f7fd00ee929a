// The soft fabric's engine: the poller's work for the soft fabric (it
// executes every QP's work requests and writes completions), plus the
// registries it needs (QP numbers, memory keys).
//
// Thread contract (see router/fabric/poller.h): all "engine thread" state
// belongs to the poller; the control thread changes it only through
// run_sync(). The per-WQE path never allocates, locks or makes a system
// call while busy; when idle it arms every send ring's doorbell request and
// the poller sleeps.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <unordered_map>
#include <vector>

#include "router/fabric/poller.h"
#include "router/fabric/soft/objects.h"

namespace ff::router::soft {

struct EngineStats {
  std::atomic<uint64_t> wqes{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> error_completions{0};
};

class Engine final : PollerHooks {
 public:
  explicit Engine(std::chrono::microseconds spin);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs `fn` on the poller thread and waits for it. Control thread only.
  void run_sync(const std::function<void()>& fn) { poller_.run_sync(fn); }

  // Registries (engine thread, or inside run_sync).
  void link_qp(Qp* qp);
  void unlink_qp(Qp* qp);
  void link_mr(Mr* mr) { mrs_[mr->key] = mr; }
  void unlink_mr(Mr* mr) { mrs_.erase(mr->key); }
  void link_ah(Ah* ah) { ahs_[ah->ident] = ah; }
  void unlink_ah(Ah* ah) { ahs_.erase(ah->ident); }
  Ah* find_ah(uint32_t id) const {
    auto it = ahs_.find(id);
    return it == ahs_.end() ? nullptr : it->second;
  }
  void watch_doorbell(int fd) { poller_.watch_eventfd(fd); }
  void unwatch_doorbell(int fd) { poller_.unwatch(fd); }
  Qp* find_qp(uint32_t qpn) const {
    auto it = qps_by_num_.find(qpn);
    return it == qps_by_num_.end() ? nullptr : it->second;
  }
  Mr* find_mr(uint32_t key) const {
    auto it = mrs_.find(key);
    return it == mrs_.end() ? nullptr : it->second;
  }

  // Moves a QP to ERR (its queues then flush). `fatal`: the error cannot be
  // reported in a completion (a corrupt ring, an overrun CQ), so the QP's
  // context gets IBV_EVENT_QP_FATAL. A QP on an SRQ also gets
  // IBV_EVENT_QP_LAST_WQE_REACHED. Engine thread.
  void set_error(Qp& qp, bool fatal = false);
  // Adds a completion and fires the CQ's channel if armed; false when the
  // CQ overflowed. Engine thread.
  bool complete(Cq& cq, const shm::Cqe& c);
  // Fires the SRQ limit event once the SRQ holds fewer WQEs than its armed
  // limit (and disarms it). Engine thread.
  void check_srq_limit(Srq& srq);
  void count_wqe(uint64_t bytes) {
    stats_.wqes.fetch_add(1, std::memory_order_relaxed);
    stats_.bytes.fetch_add(bytes, std::memory_order_relaxed);
  }

  const EngineStats& stats() const { return stats_; }
  uint64_t sleeps() const { return poller_.sleeps(); }

 private:
  bool work(uint64_t now) override;
  bool prepare_to_sleep(uint64_t now, uint64_t& deadline) override;
  void cancel_sleep() override;
  // transport.cc: returns true when it did any work.
  bool service(Qp& qp, uint64_t now);

  std::vector<Qp*> qps_;
  std::unordered_map<uint32_t, Qp*> qps_by_num_;
  std::unordered_map<uint32_t, Mr*> mrs_;
  std::unordered_map<uint32_t, Ah*> ahs_;
  EngineStats stats_;
  Poller poller_;  // last: its thread starts (in the constructor) after everything above exists
};

}  // namespace ff::router::soft
