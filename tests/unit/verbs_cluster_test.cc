// The verbs fabric's cluster (router/fabric/verbs/cluster.h) between two
// routers joined by fake links: which router a connection is asked of, what
// the answering router tells (only the asking tenant's QP at that address),
// and that answers nobody asked for, or from another router, change
// nothing. No device needed.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <deque>

#include "router/directory/directory.h"
#include "router/fabric/verbs/cluster.h"

namespace ff::router::verbs {
namespace {

const char* kDirectory = R"(routers:
  - name: alpha
    address: 10.99.0.1:7470
    tenants:
      blue: [10.50.1.0/24]
      red: [10.60.1.0/24]
  - name: beta
    address: 10.99.0.2:7470
    tenants:
      blue: [10.50.2.0/24]
      red: [10.60.2.0/24]
)";

class FileDirectory : public Directory {
 public:
  explicit FileDirectory(const std::string& self) : Directory(self) {
    DirectoryView v = parse_static_directory(kDirectory, "dir.yaml");
    replace_view(std::move(v.routers), std::move(v.entries));
  }
  std::string describe() const override { return "test"; }
};

// Links that hold what is sent until the test delivers it.
class FakeLinks final : public FabricCluster {
 public:
  explicit FakeLinks(std::string self) : self_(std::move(self)) {}
  void shutdown() override {}
  std::vector<PeerStatus> peers() const override { return {}; }
  void on_messages(MessageHandler m, LostHandler l) override {
    message_ = std::move(m);
    lost_ = std::move(l);
  }
  void send_message(const std::string& router, std::vector<std::byte> m) override {
    sent.push_back({router, std::move(m)});
  }
  // What arrives from `router`.
  void deliver(const std::string& router, std::span<const std::byte> m) { message_(router, m); }
  void lose(const std::string& router) { lost_(router); }

  struct Sent {
    std::string to;
    std::vector<std::byte> bytes;
  };
  std::deque<Sent> sent;

 private:
  std::string self_;
  MessageHandler message_;
  LostHandler lost_;
};

// A router's QPs: blue's QP 0x42 at 10.50.2.1.
class FakeFabric final : public ClusterMember {
 public:
  FarQp describe_qp(const std::string& router, const std::string& tenant, uint32_t vip, uint32_t qpn,
                    ibv_qp_type type, const Asker& asker) override {
    ++questions;
    asked_by = router;
    last_asker = asker;
    if (tenant == "blue" && vip == 0x0a320201 && qpn == 0x42 && type == IBV_QPT_RC) return RemoteQp{gid, qpn};
    return std::nullopt;
  }
  void far_qp_gone(const std::string& router, uint32_t qpn) override { gone.emplace_back(router, qpn); }
  void left_cluster() override { left = true; }
  void router_lost(const std::string& router) override { lost.push_back(router); }
  std::vector<std::string> lost;
  std::vector<std::pair<std::string, uint32_t>> gone;
  std::string asked_by;
  Asker last_asker;
  ibv_gid gid{.raw = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 77, 0, 2}};
  int questions = 0;
  bool left = false;
};

struct Router {
  explicit Router(boost::asio::io_context& io, const std::string& name) : directory(name) {
    auto owned = std::make_unique<FakeLinks>(name);
    links = owned.get();
    cluster = std::make_unique<VerbsCluster>(std::move(owned), io, directory, fabric);
  }
  FileDirectory directory;
  FakeFabric fabric;
  FakeLinks* links;
  std::unique_ptr<VerbsCluster> cluster;
};

ibv_qp_attr rtr_to(uint32_t vip, uint32_t qpn) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTR;
  a.dest_qp_num = qpn;
  a.ah_attr.is_global = 1;
  a.ah_attr.grh.dgid.raw[10] = a.ah_attr.grh.dgid.raw[11] = 0xff;
  a.ah_attr.grh.dgid.raw[12] = static_cast<uint8_t>(vip >> 24);
  a.ah_attr.grh.dgid.raw[13] = static_cast<uint8_t>(vip >> 16);
  a.ah_attr.grh.dgid.raw[14] = static_cast<uint8_t>(vip >> 8);
  a.ah_attr.grh.dgid.raw[15] = static_cast<uint8_t>(vip);
  return a;
}
constexpr int kRtr = IBV_QP_STATE | IBV_QP_AV | IBV_QP_DEST_QPN;

class VerbsClusterTest : public ::testing::Test {
 protected:
  // Carries every message sent so far to its addressee.
  void pump() {
    for (bool moved = true; moved;) {
      moved = false;
      for (auto [from, to] : {std::pair{&alpha, &beta}, std::pair{&beta, &alpha}}) {
        while (!from->links->sent.empty()) {
          FakeLinks::Sent s = std::move(from->links->sent.front());
          from->links->sent.pop_front();
          if (s.to == to->directory.self()) to->links->deliver(from->directory.self(), s.bytes);
          moved = true;
        }
      }
    }
    io.poll();
  }

  boost::asio::io_context io;
  Router alpha{io, "alpha"}, beta{io, "beta"};
  Owner blue{"blue", 1, 0x0a320101}, red{"red", 2, 0x0a3c0101};
};

TEST_F(VerbsClusterTest, AConnectionIsAskedOfTheRouterThatServesItsAddress) {
  auto r = alpha.cluster->route(blue, rtr_to(0x0a320201, 0x42), kRtr);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "beta");
  r = alpha.cluster->route(blue, rtr_to(0x0a320105, 0x42), kRtr);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "") << "an address of this router's";
  r = alpha.cluster->route(blue, rtr_to(0x0a3c0201, 0x42), kRtr);
  EXPECT_FALSE(r) << "red's address is not in blue's network";
  r = alpha.cluster->route(blue, rtr_to(0x0a320201, 0x42), IBV_QP_STATE);
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "") << "a change that names no address";

  std::optional<FarQp> got;
  Asker asker;
  asker.qpn = 0x77;
  asker.vip = 0x0a320101;
  asker.gid = alpha.fabric.gid;
  alpha.cluster->ask("beta", blue, 0x0a320201, 0x42, IBV_QPT_RC, asker, [&](FarQp far) { got = far; });
  EXPECT_FALSE(got) << "never before ask returns";
  pump();
  ASSERT_TRUE(got);
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->qpn, 0x42u);
  EXPECT_EQ(0, std::memcmp((*got)->gid.raw, beta.fabric.gid.raw, 16));
  EXPECT_EQ(beta.fabric.questions, 1);
  EXPECT_EQ(beta.fabric.asked_by, "alpha");
  EXPECT_EQ(beta.fabric.last_asker.qpn, 0x77u) << "the asking QP, for datagrams from it";
  EXPECT_EQ(beta.fabric.last_asker.vip, 0x0a320101u);
}

TEST_F(VerbsClusterTest, AQpGoneReachesTheRoutersThatKnowIt) {
  beta.cluster->tell_qp_gone({"alpha"}, 0x42);
  pump();
  ASSERT_EQ(alpha.fabric.gone.size(), 1u);
  EXPECT_EQ(alpha.fabric.gone[0], (std::pair<std::string, uint32_t>{"beta", 0x42}));
  // Cut short or padded: refused, and nothing is gone.
  std::vector<std::byte> m = {std::byte{1}, std::byte{3}, std::byte{0}, std::byte{0}, std::byte{0x42}};
  alpha.links->deliver("beta", m);
  m.resize(9);
  alpha.links->deliver("beta", m);
  EXPECT_EQ(alpha.fabric.gone.size(), 1u);
  EXPECT_EQ(alpha.cluster->answers_refused(), 2u);
}

TEST_F(VerbsClusterTest, ATenantLearnsOnlyOfItsOwnQps) {
  int answers = 0;
  for (auto [owner, type] : {std::pair{red, IBV_QPT_RC}, std::pair{blue, IBV_QPT_UC}}) {
    alpha.cluster->ask("beta", owner, 0x0a320201, 0x42, type, Asker{}, [&](FarQp far) {
      EXPECT_FALSE(far.has_value());
      ++answers;
    });
  }
  pump();
  EXPECT_EQ(answers, 2);
}

TEST_F(VerbsClusterTest, AnswersNobodyAskedForOrFromAnotherRouterChangeNothing) {
  std::optional<FarQp> got;
  alpha.cluster->ask("beta", blue, 0x0a320201, 0x42, IBV_QPT_RC, Asker{}, [&](FarQp far) { got = far; });
  // beta's answer, but delivered as if gamma sent it; then a copy with another tag.
  std::vector<std::byte> question = alpha.links->sent.front().bytes;
  alpha.links->sent.clear();
  beta.links->deliver("alpha", question);
  std::vector<std::byte> answer = beta.links->sent.front().bytes;
  beta.links->sent.clear();
  alpha.links->deliver("gamma", answer);
  std::vector<std::byte> other_tag = answer;
  other_tag[8] ^= std::byte{0x55};
  alpha.links->deliver("beta", other_tag);
  io.poll();
  EXPECT_FALSE(got);
  EXPECT_EQ(alpha.cluster->answers_refused(), 2u);
  // Garbage: empty, unknown channel, unknown kind, a question whose tenant
  // length lies, a short answer.
  std::vector<std::vector<std::byte>> garbage = {
      {}, {std::byte{7}}, {std::byte{1}, std::byte{9}}, {std::byte{1}}, {answer.begin(), answer.end() - 1}};
  std::vector<std::byte> lying = question;
  lying[3] = std::byte{200};
  garbage.push_back(lying);
  for (const auto& g : garbage) alpha.links->deliver("beta", g);
  EXPECT_EQ(alpha.cluster->answers_refused(), 2u + garbage.size());
  EXPECT_TRUE(alpha.links->sent.empty()) << "garbage is not answered";
  // The real answer still settles the question.
  alpha.links->deliver("beta", answer);
  io.poll();
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->has_value());
}

TEST_F(VerbsClusterTest, QuestionsToALostRouterEndWithoutAQp) {
  std::optional<FarQp> got;
  std::string lost;
  alpha.cluster->on_messages(nullptr, [&](const std::string& r) { lost = r; });
  alpha.cluster->ask("beta", blue, 0x0a320201, 0x42, IBV_QPT_RC, Asker{}, [&](FarQp far) { got = far; });
  alpha.links->lose("beta");
  EXPECT_FALSE(got) << "settled from the io_context, not inside the links' call";
  io.poll();
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(lost, "beta") << "the control plane hears of it too";
  EXPECT_EQ(alpha.fabric.lost, std::vector<std::string>{"beta"}) << "and the fabric, whose QPs toward it fail";
}

TEST_F(VerbsClusterTest, ControlPlaneMessagesTravelOnTheirOwnChannel) {
  std::string from;
  std::vector<std::byte> got;
  beta.cluster->on_messages(
      [&](const std::string& r, std::span<const std::byte> m) {
        from = r;
        got.assign(m.begin(), m.end());
      },
      nullptr);
  alpha.cluster->send_message("beta", {std::byte{1}, std::byte{2}, std::byte{3}});
  pump();
  EXPECT_EQ(from, "alpha");
  EXPECT_EQ(got, (std::vector<std::byte>{std::byte{1}, std::byte{2}, std::byte{3}}));
  EXPECT_EQ(beta.fabric.questions, 0) << "a control-plane message is no question";
}

TEST_F(VerbsClusterTest, TheFabricHearsWhenTheClusterGoes) {
  alpha.cluster.reset();
  EXPECT_TRUE(alpha.fabric.left);
}

}  // namespace
}  // namespace ff::router::verbs
