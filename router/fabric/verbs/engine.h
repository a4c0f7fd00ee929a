// The verbs fabric's engine: on top of the queue core (registries,
// completions, errors, flushes), the poller moves work requests from the
// clients' rings to the shadow QPs on the device (keys and addresses are
// already the device's), polls the shadow CQs and writes the completions,
// translated, into the clients' CQ rings (data_path.cc; datagrams'
// addresses: datagrams.cc); it carries out
// ibv_modify_qp on the device (qp_state.cc) and forwards the device's
// asynchronous events.
//
// Ordering: a QP's sends reach the device in ring order and complete there
// in order; every one is signaled on the device so that the router knows
// when a slot frees, and success completions the app did not ask for are
// dropped. Once a QP is in error, what is still in its rings is flushed
// (IBV_WC_WR_FLUSH_ERR) after the device has flushed what it held.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <set>

#include "router/fabric/core/queue_core.h"
#include "router/fabric/verbs/objects.h"

namespace ff::router::verbs {

// The device's address vector for a virtual one (ah_attr with a virtual
// GID, or LID addressing): every virtual IP this router serves is on its
// device.
ibv_ah_attr device_address(const Device& d, const ibv_ah_attr& virt);

class Engine final : public core::QueueCore {
 public:
  Engine(Device& device, std::chrono::microseconds spin, PollerPlacement placement);
  ~Engine() override;

  Device& device() { return device_; }
  Qp* find_qp(uint32_t qpn) const { return static_cast<Qp*>(QueueCore::find_qp(qpn)); }
  const Mr* find_mr(uint32_t lkey) const { return static_cast<const Mr*>(QueueCore::find_mr(lkey)); }
  Ah* find_ah(uint32_t id) const { return static_cast<Ah*>(QueueCore::find_ah(id)); }

  // --- UD across hosts (docs/VERBS-FABRIC.md) ---
  // A datagram to a destination on another host goes once that host's
  // router has said the QP number is one of the tenant's at that address;
  // the poller asks through `ask` (it runs on the poller: post the question
  // to the control thread) and the head send waits for settle_far().
  using AskFar = std::function<void(const Qp& qp, const Ah& ah, uint32_t remote_qpn)>;
  void on_far_question(AskFar ask) { ask_far_ = std::move(ask); }  // inside run_sync
  // The answer (inside run_sync): datagrams to (vip, qpn) go, or are dropped.
  void settle_far(Qp& qp, uint32_t vip, uint32_t qpn, const std::string& router, bool allowed);
  // The sender's virtual address for a GRH source `seen` (ibv_init_ah_from_wc;
  // inside run_sync).
  ibv_gid sender_address(const Qp& qp, uint32_t src_qp, const ibv_gid& seen) const;
  // A QP on another host may send datagrams to `qp` (inside run_sync);
  // false when `qp` accepts no more far senders.
  bool accept_far_sender(Qp& qp, const ibv_gid& gid, uint32_t qpn, uint32_t vip, const std::string& router);
  // `router` destroyed its QP `qpn` (inside run_sync): QPs connected to it
  // fail as toward a destroyed QP, no datagram goes to it, and those it
  // sent are delivered for a grace period only (FarSender::gone_ns).
  void far_qp_gone(const std::string& router, uint32_t qpn);
  // A QP that other routers know is destroyed (control thread).
  void on_qp_destroyed(std::function<void(uint32_t qpn, const std::set<std::string>& routers)> f) {
    qp_destroyed_ = std::move(f);
  }
  void qp_destroyed(const Qp& qp) const {
    if (!qp.known_to.empty() && qp_destroyed_) qp_destroyed_(qp.qpn, qp.known_to);
  }

  // ibv_modify_qp in three steps, so that the device's modify (a firmware
  // command on real hardware) never runs on the poller: the core's checks
  // and the device's attributes (poller: run_sync), the device's modify
  // (control thread, modify_device), the core's bookkeeping (poller).
  // `far`: the destination is on another host, as its router answered
  // (cluster.h); null: it is on this router's device.
  Status begin_modify(Qp& qp, const ibv_qp_attr& attr, int mask, DeviceModify& out,
                      const std::optional<RemoteQp>* far = nullptr);
  Status modify_device(Qp& qp, const DeviceModify& change, int mask) const;
  Status end_modify(Qp& qp, const ibv_qp_attr& attr, int mask, const DeviceModify& change, Status device);
  // Another router is gone (or restarted): the QPs connected to its QPs go
  // to ERR, so that their programs see errors (their receives flush)
  // instead of waiting for a peer whose QPs no longer exist.
  void fail_qps_toward(const std::string& router);

 private:
  // PollerHooks (data_path.cc)
  bool work(uint64_t now) override;
  bool prepare_to_sleep(uint64_t now, uint64_t& deadline) override;
  void cancel_sleep() override;
  void readable(int fd) override;
  // QueueCore hooks (qp_state.cc)
  void on_error(core::Qp& qp) override;   // the device's QP to ERR: it flushes what it holds
  void on_reset(core::Qp& qp) override;   // what the device held is gone without completions
  void on_unlink(core::Qp& qp) override;  // drains its shadow CQs
  void send_posted_datagrams(core::Qp& qp) override;  // and waits for the device's completions
  uint32_t srq_held_elsewhere(const core::Srq& srq) const override { return static_cast<const Srq&>(srq).posted.used(); }
  // A QP connected to a QP on another host: a local QP of that number
  // going away is not its peer going away.
  bool connects_here(const core::Qp& qp) const override { return static_cast<const Qp&>(qp).far_router.empty(); }

  // data_path.cc
  ibv_wc_status check_send(const Qp& qp, const shm::SendWqe& w, const Ah*& ah) const;
  void build_send(Qp& qp, const shm::SendWqe& w, const Ah* ah, ibv_send_wr& wr, ibv_sge* sges, uint64_t& bytes);
  bool post_sends(Qp& qp, uint64_t now);
  bool fail_head(Qp& qp, ibv_wc_status status);
  bool post_receives(Qp& qp);
  bool post_srq_receives(Srq& srq);
  bool poll_sends(Qp& qp);
  bool poll_receives(Qp& qp);
  bool fail_toward_gone_peer(Qp& qp);
  bool complete_head_unsent(Qp& qp);
  enum class FarVerdict { kGo, kDrop, kWait };
  FarVerdict far_verdict(Qp& qp, const shm::SendWqe& w, const Ah& ah);
  uint8_t was_solicited(const Qp& qp, const ibv_wc& wc);
  bool repost_receive(Qp& qp, SlotTable<shm::RecvWqe>& table, uint32_t slot);
  // datagrams.cc
  bool translate_grh(Qp& qp, const shm::RecvWqe& r, uint32_t src_qp);
  struct Sender {
    std::optional<uint32_t> virtual_ip;  // known
    bool refused = false;                // the datagram must not be delivered
  };
  Sender identify_sender(const Qp& qp, const FarSenderKey& from) const;
  static void far_senders_gone(Qp& qp, const std::function<bool(const FarSenderKey&, const FarSender&)>& which);
  // qp_state.cc
  void handle_async_events();
  void drain_device_cqs(Qp& qp);

  Device& device_;
  uint64_t next_async_check_ns_ = 0;
  AskFar ask_far_;  // poller
  std::function<void(uint32_t, const std::set<std::string>&)> qp_destroyed_;  // control thread
};

}  // namespace ff::router::verbs
