#include "router/fabric/verbs/cluster.h"

#include <endian.h>
#include <spdlog/spdlog.h>

#include <boost/asio/post.hpp>

#include <cstring>

#include "policy/tenant.h"

namespace ff::router::verbs {
namespace {

// The first byte of every message on the links.
enum class Channel : uint8_t { kControlPlane = 0, kFabric = 1 };
enum class Kind : uint8_t { kWhereIsQp = 1, kQpIsHere = 2, kQpGone = 3 };

// Little-endian, packed by hand.
#pragma pack(push, 1)
struct WhereIsQp {
  uint8_t channel, kind, qp_type, tenant_length;
  uint32_t vip, qpn;
  uint64_t tag;
  uint32_t asker_qpn, asker_vip;
  uint8_t asker_gid[16];
  // then the tenant's name (tenant_length bytes)
};
struct QpIsHere {
  uint8_t channel, kind, found, reserved;
  uint32_t qpn;
  uint64_t tag;
  uint8_t gid[16];
};
struct QpGone {
  uint8_t channel, kind, reserved[2];
  uint32_t qpn;
};
#pragma pack(pop)
static_assert(sizeof(WhereIsQp) == 44 && sizeof(QpIsHere) == 32 && sizeof(QpGone) == 8);

std::vector<std::byte> with_channel(Channel c, std::span<const std::byte> body) {
  std::vector<std::byte> m(body.size() + 1);
  m[0] = static_cast<std::byte>(c);
  if (!body.empty()) std::memcpy(m.data() + 1, body.data(), body.size());
  return m;
}

template <typename T>
std::vector<std::byte> bytes_of(const T& v, std::string_view tail = {}) {
  std::vector<std::byte> m(sizeof v + tail.size());
  std::memcpy(m.data(), &v, sizeof v);
  if (!tail.empty()) std::memcpy(m.data() + sizeof v, tail.data(), tail.size());
  return m;
}

}  // namespace

VerbsCluster::VerbsCluster(std::unique_ptr<FabricCluster> links, boost::asio::io_context& io, Directory& directory,
                           ClusterMember& fabric)
    : links_(std::move(links)), io_(io), directory_(directory), fabric_(fabric) {
  links_->on_messages(
      [this](const std::string& router, std::span<const std::byte> message) {
        if (message.empty()) {
          ++refused_;
          return;
        }
        auto channel = static_cast<Channel>(message[0]);
        if (channel == Channel::kFabric) {
          on_fabric_message(router, message);
        } else if (channel == Channel::kControlPlane && control_plane_) {
          control_plane_(router, message.subspan(1));
        } else if (channel != Channel::kControlPlane) {
          ++refused_;
        }
      },
      [this](const std::string& router) {
        // The QPs connected to its QPs fail; whatever it was asked stays
        // unanswered: its QPs are gone or unreachable, so those modifies
        // connect to no QP.
        fabric_.router_lost(router);
        std::vector<uint64_t> lost;
        for (const auto& [tag, q] : questions_)
          if (q.router == router) lost.push_back(tag);
        for (uint64_t tag : lost) settle_later(tag);  // this may run inside ask(), which must return first
        if (control_plane_lost_) control_plane_lost_(router);
      });
}

VerbsCluster::~VerbsCluster() {
  fabric_.left_cluster();
  shutdown();
  links_->on_messages(nullptr, nullptr);
}

void VerbsCluster::shutdown() {
  stopping_ = true;
  questions_.clear();  // their timers are cancelled; the sessions waiting on them close with the router
  links_->shutdown();
}

void VerbsCluster::on_messages(MessageHandler message, LostHandler lost) {
  control_plane_ = std::move(message);
  control_plane_lost_ = std::move(lost);
}

void VerbsCluster::send_message(const std::string& router, std::vector<std::byte> message) {
  links_->send_message(router, with_channel(Channel::kControlPlane, message));
}

Result<std::string> VerbsCluster::route(const Owner& owner, const ibv_qp_attr& attr, int mask) const {
  if ((mask & IBV_QP_AV) == 0 || attr.ah_attr.is_global == 0) return std::string{};
  auto vip = policy::ipv4_of_gid(attr.ah_attr.grh.dgid.raw);
  if (!vip) return std::string{};  // refused by the modify itself
  return route(owner, *vip);
}

Result<std::string> VerbsCluster::route(const Owner& owner, uint32_t vip) const {
  auto router = directory_.router_for(owner.tenant, vip);
  if (!router) {
    directory_.refresh();  // the entry may be newer than our view
    router = directory_.router_for(owner.tenant, vip);
  }
  if (!router)
    return Error{EINVAL, "no router serves virtual IP " + policy::format_ipv4(vip) + " in tenant " + owner.tenant +
                             " (directory: " + directory_.describe() + "): not an address of this tenant's network"};
  return *router == directory_.self() ? std::string{} : *router;
}

void VerbsCluster::ask(const std::string& router, const Owner& owner, uint32_t vip, uint32_t qpn, ibv_qp_type type,
                       const Asker& asker, std::function<void(FarQp)> then) {
  uint64_t tag = next_tag_++;
  Question& q = questions_[tag];
  q.router = router;
  q.then = std::move(then);
  q.timer = std::make_unique<boost::asio::steady_timer>(io_);
  if (stopping_ || questions_.size() > kMaxQuestions || owner.tenant.size() > 255) {
    settle_later(tag);
    return;
  }
  WhereIsQp w{};
  w.channel = static_cast<uint8_t>(Channel::kFabric);
  w.kind = static_cast<uint8_t>(Kind::kWhereIsQp);
  w.qp_type = static_cast<uint8_t>(type);
  w.tenant_length = static_cast<uint8_t>(owner.tenant.size());
  w.vip = htole32(vip);
  w.qpn = htole32(qpn);
  w.tag = htole64(tag);
  w.asker_qpn = htole32(asker.qpn);
  w.asker_vip = htole32(asker.vip);
  std::memcpy(w.asker_gid, asker.gid.raw, sizeof w.asker_gid);
  q.timer->expires_after(kAnswerTimeout);
  q.timer->async_wait([this, tag](const boost::system::error_code& ec) {
    if (!ec) settle(tag, std::nullopt);
  });
  links_->send_message(router, bytes_of(w, owner.tenant));
}

void VerbsCluster::on_fabric_message(const std::string& router, std::span<const std::byte> message) {
  if (message.size() < 2) {
    ++refused_;
    return;
  }
  auto kind = static_cast<Kind>(message[1]);
  if (kind == Kind::kWhereIsQp) {
    answer(router, message);
    return;
  }
  if (kind == Kind::kQpGone) {
    QpGone g{};
    if (message.size() != sizeof g) {
      ++refused_;
      return;
    }
    std::memcpy(&g, message.data(), sizeof g);
    fabric_.far_qp_gone(router, le32toh(g.qpn));
    return;
  }
  QpIsHere a{};
  if (kind != Kind::kQpIsHere || message.size() != sizeof a) {
    ++refused_;
    return;
  }
  std::memcpy(&a, message.data(), sizeof a);
  auto it = questions_.find(le64toh(a.tag));
  // Only the router asked may answer (another could point a QP anywhere).
  if (it == questions_.end() || it->second.router != router) {
    ++refused_;
    return;
  }
  FarQp far;
  if (a.found != 0) {
    RemoteQp r{};
    std::memcpy(r.gid.raw, a.gid, sizeof a.gid);
    r.qpn = le32toh(a.qpn);
    far = r;
  }
  settle(it->first, far);
}

void VerbsCluster::answer(const std::string& router, std::span<const std::byte> message) {
  WhereIsQp w{};
  if (message.size() < sizeof w) {
    ++refused_;
    return;
  }
  std::memcpy(&w, message.data(), sizeof w);
  if (message.size() != sizeof w + w.tenant_length) {
    ++refused_;
    return;
  }
  std::string tenant(reinterpret_cast<const char*>(message.data() + sizeof w), w.tenant_length);
  auto type = static_cast<ibv_qp_type>(w.qp_type);
  Asker asker;
  asker.qpn = le32toh(w.asker_qpn);
  asker.vip = le32toh(w.asker_vip);
  std::memcpy(asker.gid.raw, w.asker_gid, sizeof w.asker_gid);
  FarQp far = fabric_.describe_qp(router, tenant, le32toh(w.vip), le32toh(w.qpn), type, asker);
  QpIsHere a{};
  a.channel = static_cast<uint8_t>(Channel::kFabric);
  a.kind = static_cast<uint8_t>(Kind::kQpIsHere);
  a.tag = w.tag;
  if (far) {
    a.found = 1;
    a.qpn = htole32(far->qpn);
    std::memcpy(a.gid, far->gid.raw, sizeof a.gid);
  }
  links_->send_message(router, bytes_of(a));
}

void VerbsCluster::tell_qp_gone(const std::set<std::string>& routers, uint32_t qpn) {
  if (stopping_) return;
  QpGone g{};
  g.channel = static_cast<uint8_t>(Channel::kFabric);
  g.kind = static_cast<uint8_t>(Kind::kQpGone);
  g.qpn = htole32(qpn);
  for (const std::string& router : routers) links_->send_message(router, bytes_of(g));
}

void VerbsCluster::settle_later(uint64_t tag) {
  boost::asio::post(io_, [alive = std::weak_ptr<VerbsCluster*>(alive_), tag] {
    if (auto self = alive.lock()) (*self)->settle(tag, std::nullopt);
  });
}

void VerbsCluster::settle(uint64_t tag, FarQp far) {
  auto it = questions_.find(tag);
  if (it == questions_.end()) return;
  auto then = std::move(it->second.then);
  questions_.erase(it);  // cancels its timer
  then(far);
}

}  // namespace ff::router::verbs
