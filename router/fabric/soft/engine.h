// The soft fabric's engine: one poller thread that executes every QP's work
// requests and writes completions, plus the registries it needs (QP numbers,
// memory keys).
//
// Thread contract: the poller owns all "engine thread" state. The control
// thread changes it only through run_sync(), which queues a command, wakes
// the poller and waits until the poller ran it (a lock-free queue; the
// poller never takes a lock the control thread holds). The per-WQE path never
// allocates, locks or makes a system call while busy; when idle for
// `spin` it arms every send ring's doorbell request and sleeps in epoll.
#pragma once

#include <atomic>
#include <boost/lockfree/queue.hpp>
#include <chrono>
#include <functional>
#include <thread>
#include <unordered_map>
#include <vector>

#include "router/fabric/soft/objects.h"

namespace ff::router::soft {

struct EngineStats {
  std::atomic<uint64_t> wqes{0};
  std::atomic<uint64_t> bytes{0};
  std::atomic<uint64_t> error_completions{0};
  std::atomic<uint64_t> sleeps{0};
};

class Engine {
 public:
  explicit Engine(std::chrono::microseconds spin);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Runs `fn` on the poller thread and waits for it. Control thread only.
  void run_sync(const std::function<void()>& fn);

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
  void watch_doorbell(int fd);
  void unwatch_doorbell(int fd);
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
  // Queues an asynchronous event for the app and wakes its async_fd.
  void raise(Context& ctx, ibv_event_type type, uint32_t handle);
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

  static uint64_t now_ns() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now().time_since_epoch())
                                     .count());
  }

 private:
  struct Command {
    const std::function<void()>* fn;
    std::atomic<bool> done{false};
  };

  void loop();
  bool drain_commands();
  void sleep_until_work();
  // transport.cc: returns true when it did any work.
  bool service(Qp& qp, uint64_t now);

  std::chrono::nanoseconds spin_;
  int epoll_fd_ = -1;
  shm::Doorbell command_bell_;
  boost::lockfree::queue<Command*, boost::lockfree::capacity<256>> commands_;
  std::atomic<bool> stop_{false};
  std::vector<Qp*> qps_;
  std::unordered_map<uint32_t, Qp*> qps_by_num_;
  std::unordered_map<uint32_t, Mr*> mrs_;
  std::unordered_map<uint32_t, Ah*> ahs_;
  EngineStats stats_;
  std::thread thread_;  // last: starts after everything above exists
};

}  // namespace ff::router::soft
