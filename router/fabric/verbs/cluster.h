// The verbs fabric across hosts (docs/VERBS-FABRIC.md, "Across hosts").
// Tenants' data goes from device to device; before a shadow QP may be
// connected to a QP on another host, its router asks the router that
// serves the destination's virtual IP which device and device QP that is,
// and that router answers only with a QP of the same tenant at that
// address: so the device never connects a QP to another tenant's, whatever
// QP numbers a program guesses or observes (the device itself cannot tell
// tenants apart: every packet from a host carries that host's device GID).
//
// The questions and answers travel as control messages over `links`, a
// cluster that carries only messages (the soft fabric's links, made by the
// daemon), next to the control plane's own messages (rdma_cm): each message
// starts with the channel it belongs to.
//
// Thread contract: the control (Asio) thread, like every FabricCluster.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "router/directory/directory.h"
#include "router/fabric/fabric.h"
#include "router/fabric/verbs/objects.h"

namespace ff::router::verbs {

// A destination as its router answered: nullopt when it has no such QP of
// the tenant at that address (or did not answer in time).
using FarQp = std::optional<RemoteQp>;

// The QP that asks, as the asked router records it: a datagram from this
// device QP may then be delivered to the QP asked for, with `vip` as its
// virtual source (UD); and the asked router learns which of its QPs a QP
// on the asker's host knows, to tell when one goes away.
struct Asker {
  uint32_t qpn = 0;  // on the asker's device
  uint32_t vip = 0;
  ibv_gid gid{};     // the asker's device's
};

// The fabric, as the cluster sees it.
class ClusterMember {
 public:
  virtual ~ClusterMember() = default;
  // The answer to `router`'s question about one of this router's QPs.
  virtual FarQp describe_qp(const std::string& router, const std::string& tenant, uint32_t vip, uint32_t qpn,
                            ibv_qp_type type, const Asker& asker) = 0;
  // `router` destroyed its QP `qpn`, which this router had asked about or
  // been asked about: nothing here may reach that number any more.
  virtual void far_qp_gone(const std::string& router, uint32_t qpn) = 0;
  // The cluster is going away (the router stops): ask it nothing more.
  virtual void left_cluster() = 0;
  // The links to `router` went down, or it restarted: its QPs may be gone.
  virtual void router_lost(const std::string& router) = 0;
};

class VerbsCluster final : public FabricCluster {
 public:
  static constexpr auto kAnswerTimeout = std::chrono::seconds(5);
  // Questions waiting for answers, at most (each holds one client's
  // modify_qp; more fail as unanswered).
  static constexpr size_t kMaxQuestions = 4096;

  VerbsCluster(std::unique_ptr<FabricCluster> links, boost::asio::io_context& io, Directory& directory,
               ClusterMember& fabric);
  ~VerbsCluster() override;

  void shutdown() override;
  std::vector<PeerStatus> peers() const override { return links_->peers(); }
  void on_messages(MessageHandler message, LostHandler lost) override;
  void send_message(const std::string& router, std::vector<std::byte> message) override;

  // The router that serves the destination of this change: empty for this
  // one (or when the change names no address); an error when no router
  // serves that address in the owner's tenant.
  Result<std::string> route(const Owner& owner, const ibv_qp_attr& attr, int mask) const;
  Result<std::string> route(const Owner& owner, uint32_t vip) const;
  // Asks `router` for QP `qpn` of `owner`'s tenant at `vip`; `then` runs on
  // the control thread once, with the answer (never before this returns).
  void ask(const std::string& router, const Owner& owner, uint32_t vip, uint32_t qpn, ibv_qp_type type,
           const Asker& asker, std::function<void(FarQp)> then);
  // Tells `routers` that this router's QP `qpn` is gone.
  void tell_qp_gone(const std::set<std::string>& routers, uint32_t qpn);

  uint64_t answers_refused() const { return refused_; }

 private:
  struct Question {
    std::string router;
    std::function<void(FarQp)> then;
    std::unique_ptr<boost::asio::steady_timer> timer;
  };
  void on_fabric_message(const std::string& router, std::span<const std::byte> message);
  void answer(const std::string& router, std::span<const std::byte> question);
  void settle(uint64_t tag, FarQp far);
  void settle_later(uint64_t tag);  // as unanswered, from the io_context


  std::unique_ptr<FabricCluster> links_;
  boost::asio::io_context& io_;
  Directory& directory_;
  ClusterMember& fabric_;
  MessageHandler control_plane_;
  LostHandler control_plane_lost_;
  std::map<uint64_t, Question> questions_;
  uint64_t next_tag_ = 1;
  uint64_t refused_ = 0;  // malformed messages and answers nobody asked for
  bool stopping_ = false;
  // What posted work holds to learn whether the cluster still exists.
  std::shared_ptr<VerbsCluster*> alive_ = std::make_shared<VerbsCluster*>(this);
};

}  // namespace ff::router::verbs
