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
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "router/fabric/poller.h"
#include "router/fabric/soft/link.h"
#include "router/fabric/soft/objects.h"
#include "router/fabric/soft/wire.h"

namespace ff::router::soft {

struct Sges;

// What a responder knows of the request that consumes one of its receives.
struct Arrival {
  uint32_t src_qpn = 0;
  uint32_t wr_opcode = 0;
  uint32_t imm = 0;  // network order
  bool solicited = false;
};

// Taking a receive for an incoming message.
enum class Take {
  kOk,      // `r` and `dst` are ready
  kNone,    // nothing posted: RNR
  kBroken,  // the receive queue is corrupt: the responder went to ERR
  kFailed,  // the receive cannot hold the message (or its SGEs are bad): it
            // completed in error and the responder went to ERR
};

// Sending a UD datagram to another router.
enum class Datagram { kSent, kWait, kDropped };

// Called on the poller when a connection to a peer is lost.
using LinkDownHandler = std::function<void(Peer& peer, bool outbound, const std::string& why)>;

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
  // The receive side of a message (engine thread). take_receive peeks the
  // next receive of t and checks it holds `need` bytes; consume_receive
  // then frees its slot; complete_receive writes its completion.
  Take take_receive(Qp& t, uint64_t need, const Arrival& a, shm::RecvWqe& r, Sges& dst, ibv_wc_status& failed);
  void consume_receive(Qp& t);
  void complete_receive(Qp& t, const shm::RecvWqe& r, const Arrival& a, ibv_wc_opcode op, uint64_t bytes,
                        ibv_wc_status status);

  // --- other routers (remote.cc) ---
  // Hands a connection set up by Peers to the poller (inside run_sync). An
  // inbound connection from a restarted peer fails the QPs of its old life.
  void attach_link(std::unique_ptr<Link> link, uint64_t incarnation);
  // Set once, before any link is attached.
  void set_link_down_handler(LinkDownHandler h) { on_link_down_ = std::move(h); }
  // A UD datagram to a QP behind `ah` on another router.
  Datagram send_remote_datagram(Qp& q, const Ah& ah, const shm::SendWqe& w, const Sges& src, uint32_t qkey,
                                uint64_t now);

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
  // remote.cc
  bool service_remote(Qp& q, uint64_t now);
  bool receive_links();
  bool flush_links();  // and drops the dead ones
  void on_frame(Link& link, const wire::Header& h, std::span<const std::byte> payload);
  void on_request(Link& link, const wire::Header& h, std::span<const std::byte> payload);
  void on_datagram(const wire::Header& h, std::span<const std::byte> payload);
  void on_answer(Link& link, const wire::Header& h, std::span<const std::byte> payload);
  // Appends an answer to `request` and returns where its `payload` bytes go.
  std::byte* answer(Link& link, const wire::Header& request, wire::Type type, uint8_t reason = 0,
                    uint32_t value = 0, uint32_t payload = 0);
  void drop_link(Link& link);
  void fail_routes_to(Peer& peer);

  std::vector<std::unique_ptr<Link>> links_;
  LinkDownHandler on_link_down_;
  uint64_t now_ = 0;  // of the current poller pass

  std::vector<Qp*> qps_;
  std::unordered_map<uint32_t, Qp*> qps_by_num_;
  std::unordered_map<uint32_t, Mr*> mrs_;
  std::unordered_map<uint32_t, Ah*> ahs_;
  EngineStats stats_;
  Poller poller_;  // last: its thread starts (in the constructor) after everything above exists
};

}  // namespace ff::router::soft
