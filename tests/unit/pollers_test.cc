// The soft fabric with two pollers (--pollers 2): each tenant is served by
// one poller, whole (its contexts, CQs, QPs, keys), numbers stay unique on
// the router, and the router's counters add up every poller's.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "router/fabric/core/objects.h"
#include "soft_fabric_fixture.h"

namespace ff::router::soft::fixture {
namespace {

using TwoPollersTest = SoftFabricTestWith<2>;

core::QueueCore& served_by(const Client& c) { return static_cast<const core::Context&>(*c.ctx).core; }

TEST_F(TwoPollersTest, EachTenantIsServedByThePollerItsNameHashesTo) {
  ASSERT_EQ(fabric.pollers(), 2u);
  ASSERT_NE(poller_of("blue", 2), poller_of("red", 2)) << "the fixture's tenants must land on different pollers";
  EXPECT_EQ(&served_by(blue), &fabric.engine(poller_of("blue", 2)));
  EXPECT_EQ(&served_by(red), &fabric.engine(poller_of("red", 2)));
  EXPECT_EQ(poller_of("anything", 1), 0u);
}

TEST_F(TwoPollersTest, NumbersAreUniqueOnTheRouterAndQpNumbersTellTheirPoller) {
  std::set<uint32_t> qpns, keys;
  for (Client* c : {&blue, &red}) {
    const size_t poller = poller_of(static_cast<const core::Pd&>(*c->pd).owner.tenant, 2);
    for (int i = 0; i < 5; ++i) {
      Qp& q = c->make_qp(IBV_QPT_RC);
      EXPECT_EQ(q.qpn % 2, poller) << "QP numbers of poller i of n are i modulo n";
      EXPECT_TRUE(qpns.insert(q.qpn).second) << "QP number " << q.qpn << " given twice";
    }
    for (const FabricMr* mr : {c->mr.get(), c->read_only.get()})
      EXPECT_TRUE(keys.insert(mr->lkey() >> 8).second) << "key indices are the router's, one space for all pollers";
  }
}

// A QP number another poller serves is another tenant's: connecting to it
// is refused as it is on one poller, whichever pollers the names hash to.
TEST_F(TwoPollersTest, ADestinationOnAnotherPollerIsRefusedAsAnotherTenants) {
  Qp& b = blue.make_qp(IBV_QPT_RC);
  Qp& r = red.make_qp(IBV_QPT_RC);
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_INIT;
  a.port_num = 1;
  ASSERT_TRUE(fabric.modify_qp(b, a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS));
  a = {};
  a.qp_state = IBV_QPS_RTR;
  a.path_mtu = IBV_MTU_4096;
  a.dest_qp_num = r.qpn;
  a.ah_attr.port_num = 1;
  a.ah_attr.is_global = 1;
  a.ah_attr.grh.dgid = gid_of(kRedIp);
  Status st = fabric.modify_qp(b, a,
                               IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                   IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code, EINVAL);
  EXPECT_EQ(st.error().message, "dest_qp_num belongs to another tenant");
}

// Both pollers move their tenant's SENDs at once, and what ffctl shows adds
// both up.
TEST_F(TwoPollersTest, BothPollersCarryTheirTenantsTrafficAtOnce) {
  constexpr uint32_t kMessages = 200;
  for (Client* c : {&blue, &red}) {
    const uint32_t ip = c == &blue ? kBlueIp : kRedIp;
    Qp& a = c->make_qp(IBV_QPT_RC);
    Qp& b = c->make_qp(IBV_QPT_RC);
    connect(a, b.qpn, ip, 0);
    connect(b, a.qpn, ip, kAllRemote);
  }
  const FabricCounters before = fabric.counters();
  for (uint32_t m = 0; m < kMessages; ++m) {
    for (Client* c : {&blue, &red}) {
      std::memset(c->at(kBase), static_cast<int>(m & 0xff), 64);
      c->post_receive(1, 1000 + m, kBase + 4096, 64, c->mr->lkey());
      c->post_send(0, m, kBase, 64);
    }
    for (Client* c : {&blue, &red})
      for (int got = 0; got < 2; ++got) {  // the send's and the receive's, in either order
        shm::Cqe cqe{};
        ASSERT_TRUE(c->await_completion(cqe)) << "message " << m;
        ASSERT_EQ(cqe.status, IBV_WC_SUCCESS);
      }
    for (Client* c : {&blue, &red}) ASSERT_EQ(static_cast<uint8_t>(*c->at(kBase + 4096)), m & 0xff);
  }
  const FabricCounters after = fabric.counters();
  EXPECT_EQ(after.work_requests - before.work_requests, 2u * kMessages);
  EXPECT_EQ(after.bytes - before.bytes, 2u * kMessages * 64);
  auto traffic = fabric.tenant_traffic();
  EXPECT_TRUE(traffic.contains("blue") && traffic.contains("red")) << "every poller's tenants are listed";
}

// --poller-cpus: each poller's thread is named for it and pinned where the
// list says (round again past its end).
TEST(PollerPlacement, PollersAreNamedAndPinned) {
  FabricConfig config;
  config.pollers = 3;
  config.poller_cpus = {0};
  SoftFabric fabric(config);
  // Each thread names and pins itself as it starts: looked at until all have.
  const std::vector<std::string> pollers{"ffr-poller-0", "ffr-poller-1", "ffr-poller-2"};
  std::map<std::string, std::string> cpus_of;  // thread name -> Cpus_allowed_list
  auto all_pinned = [&] {
    return std::all_of(pollers.begin(), pollers.end(), [&](const std::string& n) { return cpus_of[n] == "0"; });
  };
  for (int tries = 0; tries < 2000 && !all_pinned(); ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
      std::ifstream comm(task.path() / "comm"), status(task.path() / "status");
      std::string name, line;
      std::getline(comm, name);
      while (std::getline(status, line))
        if (line.rfind("Cpus_allowed_list:", 0) == 0) cpus_of[name] = line.substr(line.find_last_of(" \t") + 1);
    }
  }
  for (const std::string& name : pollers) EXPECT_EQ(cpus_of[name], "0") << name << " is not (named and) pinned";
}

}  // namespace
}  // namespace ff::router::soft::fixture
