// router/cm/connection_manager: the rdma_cm rules that need no client to
// show (backlog, listeners that go with requests unread, owners out of
// room, tenants, the disconnect exchange). Through a client:
// tests/integration/rdma_cm_test.cc.
#include "router/cm/connection_manager.h"
#include "cm_owner.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>

namespace ff::router::cm {
namespace {

constexpr uint32_t kVip = 0x0a000001;

// A session with a tenant, making ids and reading events.
struct Owner : test_support::CmOwner {
  explicit Owner(ConnectionManager& m, std::string t, size_t max_ids = 1000)
      : CmOwner(m, max_ids), tenant(std::move(t)) {}
  Id& make() {
    auto id = manager.create_id(tenant, kVip, *this, channel, RDMA_PS_TCP, 2);
    adopt(id);
    return *id;
  }
  // The next event's type (and status), or -1 when none is queued.
  int next_event(int* status = nullptr, uint32_t* id = nullptr) {
    auto e = manager.take_event(*channel);
    if (!e) return -1;
    if (status != nullptr) *status = e->status;
    if (id != nullptr) *id = e->id;
    return e->type;
  }
  std::string tenant;
};

struct ConnectionManagerTest : ::testing::Test {
  ConnectionManager manager;
  Owner server{manager, "blue"};
  Owner client{manager, "blue"};
  Id* listener = nullptr;

  void SetUp() override {
    listener = &server.make();
    ASSERT_TRUE(manager.bind(*listener, {0, 7000}));
  }
  // A client id resolved to port 7000 and sending its REQ.
  Id& requester() {
    Id& id = client.make();
    EXPECT_TRUE(manager.resolve_addr(id, std::nullopt, {kVip, 7000}, true));
    EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_ADDR_RESOLVED);
    EXPECT_TRUE(manager.resolve_route(id));
    EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_ROUTE_RESOLVED);
    EXPECT_TRUE(manager.connect(id, ConnParam{}, {}));
    return id;
  }
};

TEST_F(ConnectionManagerTest, RequestsPastTheBacklogWaitForRoom) {
  ASSERT_TRUE(manager.listen(*listener, 2));
  for (int i = 0; i < 3; ++i) requester();
  // Two requests queued; the third waits until one is read.
  EXPECT_EQ(server.ids.size(), 3u);  // the listener and two new ids
  EXPECT_EQ(server.next_event(), RDMA_CM_EVENT_CONNECT_REQUEST);
  EXPECT_EQ(server.ids.size(), 4u) << "reading a request made room for the waiting one";
  EXPECT_EQ(server.next_event(), RDMA_CM_EVENT_CONNECT_REQUEST);
  EXPECT_EQ(server.next_event(), RDMA_CM_EVENT_CONNECT_REQUEST);
  EXPECT_EQ(server.next_event(), -1);
}

TEST_F(ConnectionManagerTest, AListenerTakesItsUnreadRequestsAlong) {
  ASSERT_TRUE(manager.listen(*listener, 1));
  requester();  // queued, unread
  requester();  // waiting for room
  uint32_t listen_handle = listener->handle();
  server.drop(listen_handle);
  EXPECT_EQ(server.ids.size(), 0u) << "the unread request's id went with its listener";
  int status[2] = {};
  int types[2] = {client.next_event(&status[0]), client.next_event(&status[1])};
  std::sort(std::begin(status), std::end(status));
  EXPECT_EQ(types[0], RDMA_CM_EVENT_REJECTED);
  EXPECT_EQ(types[1], RDMA_CM_EVENT_REJECTED);
  EXPECT_EQ(status[0], kConnectedHandshake.no_listener) << "the waiting one retries and finds no listener";
  EXPECT_EQ(status[1], kConnectedHandshake.rejected) << "the unread one's id was destroyed";
  EXPECT_EQ(server.next_event(), -1) << "its queued request went too";
}

TEST_F(ConnectionManagerTest, AListenerWhoseSessionIsFullRejects) {
  Owner full(manager, "blue", 1);
  Id& l = full.make();
  ASSERT_TRUE(manager.bind(l, {0, 7001}));
  ASSERT_TRUE(manager.listen(l, 8));
  Id& id = client.make();
  ASSERT_TRUE(manager.resolve_addr(id, std::nullopt, {kVip, 7001}, true));
  ASSERT_TRUE(manager.resolve_route(id));
  ASSERT_TRUE(manager.connect(id, ConnParam{}, {}));
  client.next_event();
  client.next_event();
  int status = 0;
  EXPECT_EQ(client.next_event(&status), RDMA_CM_EVENT_REJECTED);
  EXPECT_EQ(status, kConnectedHandshake.rejected);
  EXPECT_EQ(full.ids.size(), 1u);
}

TEST_F(ConnectionManagerTest, TenantsHaveTheirOwnPortsAndListeners) {
  ASSERT_TRUE(manager.listen(*listener, 8));
  Owner red(manager, "red");
  Id& red_listener = red.make();
  EXPECT_TRUE(manager.bind(red_listener, {kVip, 7000})) << "same address and port, another tenant";
  Id& id = red.make();
  ASSERT_TRUE(manager.resolve_addr(id, std::nullopt, {kVip, 7000}, true));
  ASSERT_TRUE(manager.resolve_route(id));
  ASSERT_TRUE(manager.connect(id, ConnParam{}, {}));
  red.next_event();
  red.next_event();
  int status = 0;
  EXPECT_EQ(red.next_event(&status), RDMA_CM_EVENT_REJECTED);
  EXPECT_EQ(status, kConnectedHandshake.no_listener) << "red's port 7000 is bound, not listening; blue's is not red's";
  EXPECT_EQ(server.next_event(), -1);
  Id& again = server.make();
  EXPECT_EQ(manager.bind(again, {kVip, 7000}).error().code, EADDRNOTAVAIL) << "a wildcard holds it";
}

TEST_F(ConnectionManagerTest, DisconnectIsAnsweredBeforeTheInitiatorHearsIt) {
  ASSERT_TRUE(manager.listen(*listener, 8));
  Id& active = requester();
  uint32_t passive_handle = 0;
  ASSERT_EQ(server.next_event(nullptr, &passive_handle), RDMA_CM_EVENT_CONNECT_REQUEST);
  Id& passive = *server.ids.at(passive_handle);
  ASSERT_TRUE(manager.accept(passive, ConnParam{}, {}));
  ASSERT_EQ(client.next_event(), RDMA_CM_EVENT_CONNECT_RESPONSE);
  ASSERT_TRUE(manager.establish(active));
  ASSERT_EQ(server.next_event(), RDMA_CM_EVENT_ESTABLISHED);
  ASSERT_TRUE(manager.disconnect(active));
  EXPECT_EQ(server.next_event(), RDMA_CM_EVENT_DISCONNECTED);
  EXPECT_EQ(client.next_event(), -1) << "the DREQ is not answered yet";
  ASSERT_TRUE(manager.disconnect(passive));
  EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_DISCONNECTED);
  EXPECT_EQ(server.next_event(), -1);
  EXPECT_TRUE(manager.disconnect(active)) << "again: 0, as the kernel says";
  EXPECT_EQ(client.next_event(), -1);
}

TEST_F(ConnectionManagerTest, PrivateDataLongerThanTheFieldIsRefused) {
  ASSERT_TRUE(manager.listen(*listener, 8));
  Id& id = client.make();
  ASSERT_TRUE(manager.resolve_addr(id, std::nullopt, {kVip, 7000}, true));
  ASSERT_TRUE(manager.resolve_route(id));
  EXPECT_EQ(manager.connect(id, ConnParam{}, std::vector<uint8_t>(57)).error().code, EINVAL);
  EXPECT_TRUE(manager.connect(id, ConnParam{}, std::vector<uint8_t>(56)));
}

// UD ids (RDMA_PS_UDP) go through SIDR: the requester gets ESTABLISHED with
// the passive QP's number, or UNREACHABLE (1: nobody listens, 2: rejected);
// the passive side gets no ESTABLISHED and neither can disconnect.
TEST_F(ConnectionManagerTest, DatagramIdsResolveTheirPeerWithSidr) {
  Owner ud_server(manager, "blue"), ud_client(manager, "blue");
  auto make = [&](Owner& o) -> Id& {
    auto id = manager.create_id("blue", kVip, o, o.channel, RDMA_PS_UDP, 4);
    o.adopt(id);
    return *id;
  };
  Id& l = make(ud_server);
  ASSERT_TRUE(manager.bind(l, {0, 7000}));
  ASSERT_TRUE(manager.listen(l, 8));
  auto requester_to = [&](uint16_t port) -> Id& {
    Id& id = make(ud_client);
    EXPECT_TRUE(manager.resolve_addr(id, std::nullopt, {kVip, port}, true));
    EXPECT_TRUE(manager.resolve_route(id));
    ud_client.next_event();
    ud_client.next_event();
    EXPECT_EQ(manager.connect(id, ConnParam{}, std::vector<uint8_t>(181)).error().code, EINVAL);
    EXPECT_TRUE(manager.connect(id, ConnParam{0, 0, 0, 0, 0, 0, 77}, std::vector<uint8_t>(180)));
    return id;
  };
  Id& nobody = requester_to(7009);
  int status = 0;
  EXPECT_EQ(ud_client.next_event(&status), RDMA_CM_EVENT_UNREACHABLE);
  EXPECT_EQ(status, 1);
  Id& active = requester_to(7000);
  uint32_t passive_handle = 0;
  ASSERT_EQ(ud_server.next_event(nullptr, &passive_handle), RDMA_CM_EVENT_CONNECT_REQUEST);
  Id& passive = *ud_server.ids.at(passive_handle);
  ASSERT_TRUE(manager.accept(passive, ConnParam{0, 0, 0, 0, 0, 0, 99}, {}));
  EXPECT_EQ(ud_client.next_event(&status), RDMA_CM_EVENT_ESTABLISHED);
  EXPECT_EQ(ud_server.next_event(), -1) << "no ESTABLISHED on the passive side";
  EXPECT_EQ(manager.disconnect(active).error().code, EINVAL);
  requester_to(7000);
  ASSERT_EQ(ud_server.next_event(nullptr, &passive_handle), RDMA_CM_EVENT_CONNECT_REQUEST);
  ASSERT_TRUE(manager.reject(*ud_server.ids.at(passive_handle), {}));
  EXPECT_EQ(ud_client.next_event(&status), RDMA_CM_EVENT_UNREACHABLE);
  EXPECT_EQ(status, 2);
  (void)nobody;
}

// --- timeouts -------------------------------------------------------------------

// A clock the test moves by hand.
struct ManualClock : Clock {
  void after(std::chrono::milliseconds delay, std::function<void()> fire) override {
    timers.emplace(now + delay, std::move(fire));
  }
  void advance(std::chrono::milliseconds by) {
    now += by;
    while (!timers.empty() && timers.begin()->first <= now) {
      auto fire = std::move(timers.begin()->second);
      timers.erase(timers.begin());
      fire();
    }
  }
  std::chrono::milliseconds now{0};
  std::multimap<std::chrono::milliseconds, std::function<void()>> timers;
};

struct TimeoutTest : ConnectionManagerTest {
  ManualClock clock;
  void SetUp() override {
    manager.set_clock(&clock);
    ConnectionManagerTest::SetUp();
    ASSERT_TRUE(manager.listen(*listener, 1));
  }
  // A connected pair: the client's active id and the server's passive id.
  std::pair<Id*, Id*> connected() {
    Id& active = requester();
    uint32_t handle = 0;
    EXPECT_EQ(server.next_event(nullptr, &handle), RDMA_CM_EVENT_CONNECT_REQUEST);
    Id& passive = *server.ids.at(handle);
    EXPECT_TRUE(manager.accept(passive, ConnParam{}, {}));
    EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_CONNECT_RESPONSE);
    EXPECT_TRUE(manager.establish(active));
    EXPECT_EQ(server.next_event(), RDMA_CM_EVENT_ESTABLISHED);
    return {&active, &passive};
  }
};

TEST_F(TimeoutTest, BothSidesLeaveTimewaitAfterTheirExchange) {
  auto [active, passive] = connected();
  ASSERT_TRUE(manager.disconnect(*active));
  ASSERT_EQ(server.next_event(), RDMA_CM_EVENT_DISCONNECTED);
  clock.advance(kTimewait * 2);
  EXPECT_EQ(server.next_event(), -1) << "no timewait before its DREP";
  EXPECT_EQ(client.next_event(), -1);
  ASSERT_TRUE(manager.disconnect(*passive));  // the DREP
  EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_DISCONNECTED);
  clock.advance(kTimewait - std::chrono::milliseconds(1));
  EXPECT_EQ(client.next_event(), -1);
  EXPECT_EQ(server.next_event(), -1);
  clock.advance(std::chrono::milliseconds(1));
  EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_TIMEWAIT_EXIT);
  EXPECT_EQ(server.next_event(), RDMA_CM_EVENT_TIMEWAIT_EXIT);
}

TEST_F(TimeoutTest, ADisconnectNobodyAnswersTimesOut) {
  auto [active, passive] = connected();
  ASSERT_TRUE(manager.disconnect(*active));
  ASSERT_EQ(server.next_event(), RDMA_CM_EVENT_DISCONNECTED);  // and its app never answers
  clock.advance(kDisconnectTimeout - std::chrono::milliseconds(1));
  EXPECT_EQ(client.next_event(), -1);
  clock.advance(std::chrono::milliseconds(1));
  int status = 0;
  EXPECT_EQ(client.next_event(&status), RDMA_CM_EVENT_DISCONNECTED);
  EXPECT_EQ(status, -ETIMEDOUT);
  clock.advance(kTimewait);
  EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_TIMEWAIT_EXIT);
  ASSERT_TRUE(manager.disconnect(*passive)) << "its late DREP goes nowhere";
  EXPECT_EQ(client.next_event(), -1);
}

TEST_F(TimeoutTest, ARequestWaitingForRoomGivesUpAndADestroyedIdHearsNothing) {
  requester();           // queued
  Id& waits = requester();  // waits: backlog 1
  clock.advance(kRequestTimeout);
  uint32_t id = 0;
  int status = 0, type = 0;
  while ((type = client.next_event(&status, &id)) != -1 && id != waits.handle()) {}
  EXPECT_EQ(type, RDMA_CM_EVENT_UNREACHABLE);
  EXPECT_EQ(status, -ETIMEDOUT);
  EXPECT_EQ(server.next_event(), RDMA_CM_EVENT_CONNECT_REQUEST);
  EXPECT_EQ(server.ids.size(), 2u) << "the one that gave up is not delivered";
  // Timers of ids that are gone fire into nothing.
  auto [active, passive] = connected();
  ASSERT_TRUE(manager.disconnect(*active));
  client.drop(active->handle());
  clock.advance(kDisconnectTimeout + kTimewait);
  EXPECT_EQ(client.next_event(), -1);
  (void)passive;
}

// --- two routers ---------------------------------------------------------------

constexpr uint32_t kFarVip = 0x0a000102;

// Two routers' connection managers joined as by a link: each message is
// encoded, queued and delivered when the test pumps, in order per
// direction; every address but the router's own is the other's.
struct Cluster {
  struct Router : Routes {
    Router(Cluster& c, std::string n, uint32_t v) : cluster(c), name(std::move(n)), vip(v) { manager.set_routes(this); }
    std::optional<std::string> router_for(const std::string&, uint32_t ip) override {
      if (ip == vip) return std::string();
      return name == "alpha" ? std::string("beta") : std::string("alpha");
    }
    void send(const std::string& to, std::vector<std::byte> message) override {
      cluster.wire.push_back({name, to, std::move(message)});
    }
    Cluster& cluster;
    std::string name;
    uint32_t vip;
    ConnectionManager manager;
  };
  struct InFlight {
    std::string from, to;
    std::vector<std::byte> bytes;
  };
  Router& router(const std::string& name) { return name == "alpha" ? alpha : beta; }
  // Delivers everything in flight (and what that sends): false if nothing was.
  bool pump() {
    bool any = false;
    while (!wire.empty()) {
      InFlight m = std::move(wire.front());
      wire.pop_front();
      router(m.to).manager.receive(m.from, m.bytes);
      any = true;
    }
    return any;
  }
  std::deque<InFlight> wire;
  Router alpha{*this, "alpha", kVip}, beta{*this, "beta", kFarVip};
};

struct TwoRoutersTest : ::testing::Test {
  Cluster cluster;
  ConnectionManager& a = cluster.alpha.manager;
  ConnectionManager& b = cluster.beta.manager;
  Owner server{a, "blue"};
  Owner client{b, "blue"};
  Id* listener = nullptr;

  void SetUp() override {
    listener = &server.make();
    ASSERT_TRUE(a.bind(*listener, {0, 7000}));
    ASSERT_TRUE(a.listen(*listener, 8));
  }
  Id& requester(std::vector<uint8_t> private_data = {}) {
    auto made = b.create_id("blue", kFarVip, client, client.channel, RDMA_PS_TCP, 2);
    client.adopt(made);
    Id& id = *made;
    EXPECT_TRUE(b.resolve_addr(id, std::nullopt, {kVip, 7000}, true));
    EXPECT_TRUE(b.resolve_route(id));
    EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_ADDR_RESOLVED);
    EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_ROUTE_RESOLVED);
    EXPECT_TRUE(b.connect(id, ConnParam{1, 2, 0, 7, 7, 0, 0x123}, private_data));
    return id;
  }
  // The passive id of the next CONNECT_REQUEST (after the wire delivered it).
  Id& passive() {
    cluster.pump();
    uint32_t handle = 0;
    EXPECT_EQ(server.next_event(nullptr, &handle), RDMA_CM_EVENT_CONNECT_REQUEST);
    return *server.ids.at(handle);
  }
};

TEST_F(TwoRoutersTest, TheHandshakeGoesBetweenRoutersWithItsPrivateData) {
  Id& active = requester({'h', 'i'});
  EXPECT_EQ(server.next_event(), -1) << "nothing arrives before the wire carries it";
  cluster.pump();
  auto e = a.take_event(*server.channel);
  ASSERT_TRUE(e);
  ASSERT_EQ(e->type, RDMA_CM_EVENT_CONNECT_REQUEST);
  EXPECT_EQ(e->private_data.size(), kConnectedHandshake.request);
  EXPECT_EQ(e->private_data[0], 'h');
  EXPECT_EQ(e->remote_qp_num, 0x123u);
  EXPECT_EQ(e->param.initiator_depth, 1) << "the requester's responder resources, as the passive side sees them";
  EXPECT_EQ(e->dst, (Endpoint{kFarVip, active.src().port}));
  Id& pass = *server.ids.at(e->id);
  ASSERT_TRUE(a.accept(pass, ConnParam{0, 0, 0, 0, 0, 0, 0x456}, {'o', 'k'}));
  cluster.pump();
  auto r = b.take_event(*client.channel);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->type, RDMA_CM_EVENT_CONNECT_RESPONSE);
  EXPECT_EQ(r->remote_qp_num, 0x456u);
  EXPECT_EQ(r->private_data.size(), kConnectedHandshake.reply);
  EXPECT_EQ(r->private_data[1], 'k');
  ASSERT_TRUE(b.establish(active));
  cluster.pump();
  EXPECT_EQ(server.next_event(), RDMA_CM_EVENT_ESTABLISHED);
  // DREQ one way, DREP the other.
  ASSERT_TRUE(b.disconnect(active));
  cluster.pump();
  EXPECT_EQ(server.next_event(), RDMA_CM_EVENT_DISCONNECTED);
  EXPECT_EQ(client.next_event(), -1);
  ASSERT_TRUE(a.disconnect(pass));
  cluster.pump();
  EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_DISCONNECTED);
}

TEST_F(TwoRoutersTest, RejectsAndNobodyListeningComeBackAcrossTheLink) {
  requester();
  Id& pass = passive();
  ASSERT_TRUE(a.reject(pass, {'n', 'o'}));
  cluster.pump();
  auto e = b.take_event(*client.channel);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->type, RDMA_CM_EVENT_REJECTED);
  EXPECT_EQ(e->status, kConnectedHandshake.rejected);
  EXPECT_EQ(e->private_data[0], 'n');
  auto made = b.create_id("blue", kFarVip, client, client.channel, RDMA_PS_TCP, 2);
  client.adopt(made);
  Id& id = *made;
  ASSERT_TRUE(b.resolve_addr(id, std::nullopt, {kVip, 7999}, true));
  ASSERT_TRUE(b.resolve_route(id));
  client.next_event();
  client.next_event();
  ASSERT_TRUE(b.connect(id, ConnParam{}, {}));
  cluster.pump();
  int status = 0;
  EXPECT_EQ(client.next_event(&status), RDMA_CM_EVENT_REJECTED);
  EXPECT_EQ(status, kConnectedHandshake.no_listener);
}

TEST_F(TwoRoutersTest, AnIdThatGoesAwayIsLearntOnTheOtherRouter) {
  // A requester destroyed before its request is answered: REJECTED (4).
  Id& gone = requester();
  Id& pass = passive();
  client.drop(gone.handle());
  cluster.pump();
  int status = 0;
  EXPECT_EQ(server.next_event(&status), RDMA_CM_EVENT_REJECTED);
  EXPECT_EQ(status, kRejectTimeout);
  EXPECT_EQ(a.accept(pass, ConnParam{}, {}).error().code, EINVAL);
  // A connected peer destroyed: DISCONNECTED.
  Id& active = requester();
  Id& pass2 = passive();
  ASSERT_TRUE(a.accept(pass2, ConnParam{}, {}));
  cluster.pump();
  ASSERT_EQ(client.next_event(), RDMA_CM_EVENT_CONNECT_RESPONSE);
  ASSERT_TRUE(b.establish(active));
  cluster.pump();
  ASSERT_EQ(server.next_event(), RDMA_CM_EVENT_ESTABLISHED);
  server.drop(pass2.handle());
  cluster.pump();
  EXPECT_EQ(client.next_event(), RDMA_CM_EVENT_DISCONNECTED);
  ASSERT_TRUE(b.disconnect(active)) << "its DREP goes to an id that is gone: dropped";
  cluster.pump();
  EXPECT_EQ(client.next_event(), -1);
}

TEST_F(TwoRoutersTest, ALostRouterEndsEveryConnectionWithIt) {
  Id& connecting = requester();  // never delivered
  cluster.wire.clear();
  Id& active = requester();
  Id& pass = passive();
  ASSERT_TRUE(a.accept(pass, ConnParam{}, {}));
  cluster.pump();
  ASSERT_EQ(client.next_event(), RDMA_CM_EVENT_CONNECT_RESPONSE);
  ASSERT_TRUE(b.establish(active));
  cluster.pump();
  ASSERT_EQ(server.next_event(), RDMA_CM_EVENT_ESTABLISHED);
  requester();
  Id& unanswered = passive();
  b.router_lost("alpha");
  a.router_lost("beta");
  uint32_t id = 0;
  int status = 0;
  std::map<uint32_t, std::pair<int, int>> seen;
  while (true) {
    int type = client.next_event(&status, &id);
    if (type < 0) break;
    seen[id] = {type, status};
  }
  EXPECT_EQ(seen[connecting.handle()], (std::pair<int, int>{RDMA_CM_EVENT_UNREACHABLE, -ETIMEDOUT}));
  EXPECT_EQ(seen[active.handle()].first, RDMA_CM_EVENT_DISCONNECTED);
  EXPECT_EQ(server.next_event(&status, &id), RDMA_CM_EVENT_DISCONNECTED);
  EXPECT_EQ(id, pass.handle());
  EXPECT_EQ(server.next_event(&status, &id), RDMA_CM_EVENT_REJECTED);
  EXPECT_EQ(id, unanswered.handle());
  EXPECT_EQ(status, kRejectTimeout);
  EXPECT_FALSE(cluster.pump()) << "nothing is sent to a lost router";
}

TEST_F(TwoRoutersTest, ARouterSpeaksOnlyForItsOwnIdsAndGarbageIsDropped) {
  requester();
  Id& pass = passive();
  ASSERT_TRUE(a.accept(pass, ConnParam{}, {}));
  cluster.pump();
  ASSERT_EQ(client.next_event(), RDMA_CM_EVENT_CONNECT_RESPONSE);
  // A third router forges beta's DREQ to the passive id.
  Message forged;
  forged.type = MessageType::kDisconnectRequest;
  forged.tenant = "blue";
  forged.port_space = RDMA_PS_TCP;
  for (uint64_t from = 1; from < 64; ++from) {
    for (uint64_t to = 1; to < 64; ++to) {
      forged.from = from;
      forged.to = to;
      a.receive("gamma", encode(forged));
    }
  }
  EXPECT_EQ(a.messages_refused(), 0u) << "well-formed";
  EXPECT_EQ(server.next_event(), -1) << "gamma is not the passive id's far end";
  // Bytes that are not a message, or lie about their length.
  std::vector<std::byte> bytes = encode(forged);
  uint64_t refused = a.messages_refused();
  a.receive("beta", std::span(bytes).first(10));
  bytes.push_back(std::byte{0});
  a.receive("beta", bytes);
  bytes = encode(forged);
  bytes[0] = std::byte{9};  // version
  a.receive("beta", bytes);
  EXPECT_EQ(a.messages_refused(), refused + 3);
  EXPECT_EQ(server.next_event(), -1);
  Message long_data = forged;
  long_data.private_data.assign(kMaxPrivateData, 1);
  std::string why;
  auto back = decode(encode(long_data), why);
  ASSERT_TRUE(back) << why;
  EXPECT_EQ(back->private_data.size(), kMaxPrivateData);
  EXPECT_EQ(back->tenant, "blue");
}

}  // namespace
}  // namespace ff::router::cm
