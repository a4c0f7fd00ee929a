// The router's control plane against honest and hostile clients, in process:
// a Router on its own thread, clients on raw Unix sockets.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <thread>

#include "proto/client.h"
#include "shm/segment.h"
#include "router/fabric/soft/soft_fabric.h"
#include "router/daemon/router.h"

namespace ff::router {
namespace {

namespace fs = std::filesystem;
using proto::RequestBody;

class ControlPlane : public ::testing::Test {
 protected:
  // Two pollers: blue and red are served by different ones (as under
  // --pollers 2), so that TSan sees the control plane beside both.
  void SetUp() override {
    RouterOptions o;
    o.pollers = 2;
    start(o);
  }
  void start(RouterOptions o) {
    char tmpl[] = "/tmp/ffctl-test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    o.run_dir = dir_ + "/run";
    std::vector<policy::TenantSpec> tenants{
        {"blue", std::nullopt, policy::parse_ipv4("10.0.0.1"), {}},
        {"red", std::nullopt, policy::parse_ipv4("10.0.0.2"), {}}};
    router_ = std::make_unique<Router>(o, tenants, std::make_unique<SoftFabric>(fabric_config(o)));
    thread_ = std::thread([this] { router_->run(); });
  }
  void TearDown() override {
    router_->stop();
    thread_.join();
    router_.reset();
    fs::remove_all(dir_);
  }
  std::string tenant_path(const char* t) { return dir_ + "/run/tenants/" + t + "/ffrouter.sock"; }
  std::string admin_path() { return dir_ + "/run/admin.sock"; }

  static proto::ControlClient::Result hello(proto::ControlClient& c, uint32_t version = proto::kProtocolVersion) {
    flatbuffers::FlatBufferBuilder fbb;
    return c.call(fbb, RequestBody::Hello, proto::CreateHello(fbb, version, fbb.CreateString("t")).Union());
  }
  static uint32_t open_context(proto::ControlClient& c) {
    flatbuffers::FlatBufferBuilder fbb;
    auto r = c.call(fbb, RequestBody::OpenDevice, proto::CreateOpenDevice(fbb, 0).Union());
    EXPECT_EQ(r.error, 0) << r.message;
    EXPECT_EQ(r.fds.size(), 3u);  // async eventfd, poller doorbell, async event ring
    return r.error == 0 ? r.reply()->body_as_OpenDeviceReply()->context() : 0;
  }
  static proto::ControlClient::Result alloc_pd(proto::ControlClient& c, uint32_t ctx) {
    flatbuffers::FlatBufferBuilder fbb;
    return c.call(fbb, RequestBody::AllocPd, proto::CreateAllocPd(fbb, ctx).Union());
  }
  // Total objects the router holds, from the admin socket.
  uint32_t router_objects() {
    proto::ControlClient admin;
    EXPECT_EQ(admin.connect(admin_path()), 0);
    flatbuffers::FlatBufferBuilder fbb;
    auto r = admin.call(fbb, RequestBody::AdminStatus, proto::CreateAdminStatus(fbb).Union());
    EXPECT_EQ(r.error, 0);
    uint32_t total = 0;
    for (const auto* t : *r.reply()->body_as_StatusReply()->tenants())
      for (const auto* c : *t->clients())
        for (const auto* o : *c->objects()) total += o->count();
    return total;
  }
  // A fresh honest client still gets served.
  void expect_router_serves() {
    proto::ControlClient c;
    ASSERT_EQ(c.connect(tenant_path("blue")), 0);
    EXPECT_EQ(hello(c).error, 0);
  }
  static int raw_connect(const std::string& path) {
    int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    EXPECT_EQ(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return s;
  }
  // True when the router closed the connection (EOF) within a second.
  static bool closed_by_router(int s) {
    timeval tv{1, 0};
    ::setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    for (;;) {
      ssize_t n = ::recv(s, buf, sizeof buf, 0);
      if (n == 0) return true;
      if (n < 0) return false;
    }
  }

  std::string dir_;
  std::unique_ptr<Router> router_;
  std::thread thread_;
};

TEST_F(ControlPlane, HelloGivesTheTenantAndTheConfiguredAddressFallback) {
  proto::ControlClient c;
  ASSERT_EQ(c.connect(tenant_path("red")), 0);
  auto r = hello(c);
  ASSERT_EQ(r.error, 0) << r.message;
  EXPECT_EQ(r.reply()->body_as_HelloReply()->tenant()->str(), "red");
}

TEST_F(ControlPlane, RequestsBeforeHelloAndSecondHelloAreRefused) {
  proto::ControlClient c;
  ASSERT_EQ(c.connect(tenant_path("blue")), 0);
  flatbuffers::FlatBufferBuilder fbb;
  auto r = c.call(fbb, RequestBody::ListDevices, proto::CreateListDevices(fbb).Union());
  EXPECT_EQ(r.error, EPROTO);
  ASSERT_EQ(hello(c).error, 0);
  EXPECT_EQ(hello(c).error, EPROTO);
}

TEST_F(ControlPlane, WrongProtocolVersionIsRefusedAndDisconnected) {
  proto::ControlClient c;
  ASSERT_EQ(c.connect(tenant_path("blue")), 0);
  auto r = hello(c, 99);
  EXPECT_EQ(r.error, EPROTONOSUPPORT);
  EXPECT_NE(r.message.find("same ffrouter release"), std::string::npos);
  flatbuffers::FlatBufferBuilder fbb;
  EXPECT_NE(c.call(fbb, RequestBody::ListDevices, proto::CreateListDevices(fbb).Union()).error, 0);
}

TEST_F(ControlPlane, HandlesOfAnotherSessionAreUnknown) {
  proto::ControlClient a, b;
  ASSERT_EQ(a.connect(tenant_path("blue")), 0);
  ASSERT_EQ(b.connect(tenant_path("red")), 0);
  ASSERT_EQ(hello(a).error, 0);
  ASSERT_EQ(hello(b).error, 0);
  uint32_t ctx_a = open_context(a);
  auto pd = alloc_pd(a, ctx_a);
  ASSERT_EQ(pd.error, 0);
  EXPECT_EQ(alloc_pd(b, ctx_a).error, EINVAL);  // b has no context with a's number
  flatbuffers::FlatBufferBuilder fbb;
  auto r = b.call(fbb, RequestBody::DeallocPd,
                  proto::CreateDeallocPd(fbb, pd.reply()->body_as_AllocPdReply()->pd()).Union());
  EXPECT_EQ(r.error, EINVAL);
  EXPECT_EQ(router_objects(), 2u);  // a's context and PD are untouched
}

TEST_F(ControlPlane, PdInUseIsBusyAndCloseDeviceDestroysTheTree) {
  proto::ControlClient c;
  ASSERT_EQ(c.connect(tenant_path("blue")), 0);
  ASSERT_EQ(hello(c).error, 0);
  uint32_t ctx = open_context(c);
  ASSERT_EQ(alloc_pd(c, ctx).error, 0);
  ASSERT_EQ(alloc_pd(c, ctx).error, 0);
  EXPECT_EQ(router_objects(), 3u);
  flatbuffers::FlatBufferBuilder fbb;
  EXPECT_EQ(c.call(fbb, RequestBody::CloseDevice, proto::CreateCloseDevice(fbb, ctx).Union()).error, 0);
  EXPECT_EQ(router_objects(), 0u);
}

TEST_F(ControlPlane, ClosingTheConnectionDestroysEverything) {
  {
    proto::ControlClient c;
    ASSERT_EQ(c.connect(tenant_path("blue")), 0);
    ASSERT_EQ(hello(c).error, 0);
    uint32_t ctx = open_context(c);
    for (int i = 0; i < 10; ++i) ASSERT_EQ(alloc_pd(c, ctx).error, 0);
    EXPECT_EQ(router_objects(), 11u);
  }
  for (int i = 0; i < 100 && router_objects() != 0; ++i) usleep(10000);
  EXPECT_EQ(router_objects(), 0u);
}

// The rings of a destroyed QP are kept for the context's next QP of the
// same size (router/fabric/core/spare_segments.h): the same memfd comes back,
// and it stays charged to the tenant until the context closes.
TEST_F(ControlPlane, ADestroyedQpsRingsAreKeptChargedAndReusedByTheNextQp) {
  auto shm_bytes = [&] {
    proto::ControlClient admin;
    EXPECT_EQ(admin.connect(admin_path()), 0);
    flatbuffers::FlatBufferBuilder fbb;
    auto r = admin.call(fbb, RequestBody::AdminStatus, proto::CreateAdminStatus(fbb).Union());
    for (const auto* t : *r.reply()->body_as_StatusReply()->tenants())
      if (t->name()->str() == "blue") return std::make_pair(t->shm_bytes(), t->handles());
    return std::make_pair(uint64_t{0}, uint64_t{0});
  };
  const auto before = shm_bytes();
  proto::ControlClient c;
  ASSERT_EQ(c.connect(tenant_path("blue")), 0);
  ASSERT_EQ(hello(c).error, 0);
  uint32_t ctx = open_context(c);
  uint32_t pd = alloc_pd(c, ctx).reply()->body_as_AllocPdReply()->pd();
  flatbuffers::FlatBufferBuilder f1;
  auto cq = c.call(f1, RequestBody::CreateCq, proto::CreateCreateCq(f1, ctx, 16, 0, 0, false).Union());
  ASSERT_EQ(cq.error, 0) << cq.message;
  uint32_t cq_handle = cq.reply()->body_as_CreateCqReply()->cq();
  auto create_qp = [&](ino_t& ino) {
    flatbuffers::FlatBufferBuilder fbb;
    proto::QpCap cap(16, 16, 1, 1, 0);
    auto r = c.call(fbb, RequestBody::CreateQp,
                    proto::CreateCreateQp(fbb, pd, cq_handle, cq_handle, 0, IBV_QPT_RC, false, &cap).Union());
    EXPECT_EQ(r.error, 0) << r.message;
    EXPECT_EQ(r.fds.size(), 1u);
    struct stat st {};
    if (!r.fds.empty()) ::fstat(r.fds[0].get(), &st);
    ino = st.st_ino;
    return r.error == 0 ? r.reply()->body_as_CreateQpReply()->qp() : 0u;
  };
  ino_t first = 0, second = 0;
  uint32_t qp = create_qp(first);
  const auto with_qp = shm_bytes();
  flatbuffers::FlatBufferBuilder f2;
  ASSERT_EQ(c.call(f2, RequestBody::DestroyQp, proto::CreateDestroyQp(f2, qp).Union()).error, 0);
  EXPECT_EQ(shm_bytes(), with_qp) << "kept, and still charged (bytes and handles)";
  create_qp(second);
  EXPECT_EQ(second, first) << "the next QP of the same size got the kept rings";
  EXPECT_EQ(shm_bytes(), with_qp);
  flatbuffers::FlatBufferBuilder f3;
  ASSERT_EQ(c.call(f3, RequestBody::CloseDevice, proto::CreateCloseDevice(f3, ctx).Union()).error, 0);
  EXPECT_EQ(shm_bytes(), before) << "the context's close gives back what it kept";
}

TEST_F(ControlPlane, GarbagePayloadGetsAnErrorReplyAndTheSessionGoesOn) {
  int s = raw_connect(tenant_path("blue"));
  uint8_t frame[8 + 32];
  proto::FrameHeader h{32, 0, 0};
  std::memcpy(frame, &h, sizeof h);
  for (size_t i = 8; i < sizeof frame; ++i) frame[i] = static_cast<uint8_t>(i * 37);
  ASSERT_EQ(::send(s, frame, sizeof frame, 0), static_cast<ssize_t>(sizeof frame));
  proto::FrameReader reader;
  proto::Frame f;
  ASSERT_EQ(proto::read_frame_blocking(s, reader, f), 0);
  flatbuffers::Verifier v(f.payload.data(), f.payload.size());
  ASSERT_TRUE(v.VerifyBuffer<proto::Reply>(nullptr));
  EXPECT_EQ(flatbuffers::GetRoot<proto::Reply>(f.payload.data())->error(), EBADMSG);
  // The same connection still works.
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(proto::CreateRequest(fbb, 5, RequestBody::Hello,
                                  proto::CreateHello(fbb, proto::kProtocolVersion, fbb.CreateString("x")).Union()));
  ASSERT_EQ(proto::send_frame(s, {fbb.GetBufferPointer(), fbb.GetSize()}, {}), 0);
  ASSERT_EQ(proto::read_frame_blocking(s, reader, f), 0);
  EXPECT_EQ(flatbuffers::GetRoot<proto::Reply>(f.payload.data())->error(), 0);
  ::close(s);
  expect_router_serves();
}

TEST_F(ControlPlane, RequestWithATypeButNoBodyIsRefused) {
  proto::ControlClient c;
  ASSERT_EQ(c.connect(tenant_path("blue")), 0);
  ASSERT_EQ(hello(c).error, 0);
  flatbuffers::FlatBufferBuilder fbb;
  // A union type without its value: passes the flatbuffers verifier.
  auto r = c.call(fbb, RequestBody::AllocPd, flatbuffers::Offset<void>());
  EXPECT_EQ(r.error, EBADMSG);
  expect_router_serves();
}

TEST_F(ControlPlane, OversizedAndLyingFrameHeadersClose) {
  for (proto::FrameHeader h : {proto::FrameHeader{1u << 30, 0, 0}, proto::FrameHeader{8, 3, 0},
                               proto::FrameHeader{8, 0, 7}}) {
    int s = raw_connect(tenant_path("blue"));
    ASSERT_EQ(::send(s, &h, sizeof h, 0), static_cast<ssize_t>(sizeof h));
    EXPECT_TRUE(closed_by_router(s));
    ::close(s);
  }
  expect_router_serves();
}

TEST_F(ControlPlane, UnexpectedFileDescriptorsAreRefused) {
  int s = raw_connect(tenant_path("blue"));
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(proto::CreateRequest(fbb, 7, RequestBody::Hello,
                                  proto::CreateHello(fbb, proto::kProtocolVersion, fbb.CreateString("x")).Union()));
  int fds[2] = {::dup(0), ::dup(1)};
  ASSERT_EQ(proto::send_frame(s, {fbb.GetBufferPointer(), fbb.GetSize()}, fds), 0);
  proto::FrameReader reader;
  proto::Frame f;
  ASSERT_EQ(proto::read_frame_blocking(s, reader, f), 0);
  auto* reply = flatbuffers::GetRoot<proto::Reply>(f.payload.data());
  EXPECT_EQ(reply->error(), EINVAL);
  ::close(fds[0]);
  ::close(fds[1]);
  ::close(s);
}

TEST_F(ControlPlane, AdminAndTenantSocketsAcceptOnlyTheirOwnRequests) {
  proto::ControlClient t, a;
  ASSERT_EQ(t.connect(tenant_path("blue")), 0);
  ASSERT_EQ(hello(t).error, 0);
  flatbuffers::FlatBufferBuilder fbb;
  EXPECT_EQ(t.call(fbb, RequestBody::AdminStatus, proto::CreateAdminStatus(fbb).Union()).error, EOPNOTSUPP);
  ASSERT_EQ(a.connect(admin_path()), 0);
  flatbuffers::FlatBufferBuilder fbb2;
  EXPECT_EQ(a.call(fbb2, RequestBody::OpenDevice, proto::CreateOpenDevice(fbb2, 0).Union()).error, EOPNOTSUPP);
}

TEST_F(ControlPlane, ManyConnectionsComeAndGo) {
  for (int round = 0; round < 5; ++round) {
    std::vector<std::unique_ptr<proto::ControlClient>> clients;
    for (int i = 0; i < 100; ++i) {
      clients.push_back(std::make_unique<proto::ControlClient>());
      ASSERT_EQ(clients.back()->connect(tenant_path(i % 2 ? "blue" : "red")), 0);
      ASSERT_EQ(hello(*clients.back()).error, 0);
      open_context(*clients.back());
    }
  }
  for (int i = 0; i < 100 && router_objects() != 0; ++i) usleep(10000);
  EXPECT_EQ(router_objects(), 0u);
}

class Limits : public ControlPlane {
 protected:
  void SetUp() override {
    RouterOptions o;
    o.max_sessions = 4;
    o.max_sessions_per_tenant = 3;
    o.max_objects_per_session = 5;
    o.max_shm_mb_per_tenant = 2;
    start(o);
  }
  static proto::ControlClient::Result register_segment(proto::ControlClient& c, size_t bytes,
                                                       uint64_t base = 0x10000000) {
    shm::Mapping m = shm::Mapping::create("t", shm::SegmentKind::kRing, bytes);
    flatbuffers::FlatBufferBuilder fbb;
    int fd = m.fd();
    return c.call(fbb, RequestBody::RegisterSegment, proto::CreateRegisterSegment(fbb, base, m.size()).Union(),
                  {&fd, 1});
  }
  // Limit refusals counted for tenant `t` (ffctl's limit_refusals).
  uint64_t refusals(const char* t) {
    proto::ControlClient admin;
    EXPECT_EQ(admin.connect(admin_path()), 0);
    flatbuffers::FlatBufferBuilder fbb;
    auto r = admin.call(fbb, RequestBody::AdminStatus, proto::CreateAdminStatus(fbb).Union());
    for (const auto* ts : *r.reply()->body_as_StatusReply()->tenants())
      if (ts->name()->str() == t) return ts->limit_refusals();
    return 0;
  }
};

TEST_F(Limits, ObjectsPerSessionAreCappedAndFreedSlotsReturn) {
  proto::ControlClient c;
  ASSERT_EQ(c.connect(tenant_path("blue")), 0);
  ASSERT_EQ(hello(c).error, 0);
  uint32_t ctx = open_context(c);
  std::vector<uint32_t> pds;
  for (int i = 0; i < 4; ++i) {
    auto r = alloc_pd(c, ctx);
    ASSERT_EQ(r.error, 0);
    pds.push_back(r.reply()->body_as_AllocPdReply()->pd());
  }
  auto over = alloc_pd(c, ctx);
  EXPECT_EQ(over.error, ENOMEM);
  EXPECT_NE(over.message.find("--max-objects-per-session"), std::string::npos);
  EXPECT_EQ(refusals("blue"), 1u);
  flatbuffers::FlatBufferBuilder fbb;
  ASSERT_EQ(c.call(fbb, RequestBody::DeallocPd, proto::CreateDeallocPd(fbb, pds[0]).Union()).error, 0);
  EXPECT_EQ(alloc_pd(c, ctx).error, 0);
}

TEST_F(Limits, SharedMemoryPerTenantIsCapped) {
  proto::ControlClient c;
  ASSERT_EQ(c.connect(tenant_path("blue")), 0);
  ASSERT_EQ(hello(c).error, 0);
  auto big = register_segment(c, 3 << 20);
  EXPECT_EQ(big.error, ENOMEM);
  EXPECT_NE(big.message.find("--max-shm-mb-per-tenant"), std::string::npos);
  EXPECT_EQ(register_segment(c, 1 << 20).error, 0);
  // The other tenant has its own quota.
  proto::ControlClient red;
  ASSERT_EQ(red.connect(tenant_path("red")), 0);
  ASSERT_EQ(hello(red).error, 0);
  EXPECT_EQ(register_segment(red, 1 << 20).error, 0);
  EXPECT_EQ(refusals("red"), 0u);
}

// Memory stays charged while anything maps it: releasing a segment that an
// MR still uses returns nothing to the quota until the MR goes.
TEST_F(Limits, ASegmentStaysChargedWhileAnMrUsesIt) {
  proto::ControlClient c;
  ASSERT_EQ(c.connect(tenant_path("blue")), 0);
  ASSERT_EQ(hello(c).error, 0);
  auto seg = register_segment(c, 1 << 20);
  ASSERT_EQ(seg.error, 0) << seg.message;
  uint32_t segment = seg.reply()->body_as_RegisterSegmentReply()->segment();
  uint32_t ctx = open_context(c);
  auto pd = alloc_pd(c, ctx);
  ASSERT_EQ(pd.error, 0);
  flatbuffers::FlatBufferBuilder fbb;
  auto mr = c.call(fbb, RequestBody::RegMr,
                   proto::CreateRegMr(fbb, pd.reply()->body_as_AllocPdReply()->pd(), 0x10000000, 1 << 20, 0x10000000,
                                      IBV_ACCESS_LOCAL_WRITE)
                       .Union());
  ASSERT_EQ(mr.error, 0) << mr.message;
  flatbuffers::FlatBufferBuilder f2;
  ASSERT_EQ(c.call(f2, RequestBody::ReleaseSegment, proto::CreateReleaseSegment(f2, segment).Union()).error, 0);
  EXPECT_EQ(register_segment(c, 1 << 20, 0x20000000).error, ENOMEM) << "the released segment is still mapped";
  flatbuffers::FlatBufferBuilder f3;
  ASSERT_EQ(c.call(f3, RequestBody::DeregMr, proto::CreateDeregMr(f3, mr.reply()->body_as_RegMrReply()->mr()).Union())
                .error,
            0);
  EXPECT_EQ(register_segment(c, 1 << 20, 0x20000000).error, 0) << "its last user gone, the charge came back";
}

TEST_F(Limits, ConnectionsBeyondTheLimitAreRefused) {
  std::vector<std::unique_ptr<proto::ControlClient>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<proto::ControlClient>());
    ASSERT_EQ(clients.back()->connect(tenant_path("blue")), 0);
    ASSERT_EQ(hello(*clients.back()).error, 0);
  }
  proto::ControlClient extra;
  ASSERT_EQ(extra.connect(tenant_path("blue")), 0);  // the socket accepts, the router closes it
  EXPECT_NE(hello(extra).error, 0);
  proto::ControlClient red;  // another tenant still gets in
  ASSERT_EQ(red.connect(tenant_path("red")), 0);
  EXPECT_EQ(hello(red).error, 0);
  clients.pop_back();  // one leaves: room for another
  for (int i = 0; i < 100; ++i) {
    proto::ControlClient again;
    if (again.connect(tenant_path("blue")) == 0 && hello(again).error == 0) return;
    usleep(10000);
  }
  ADD_FAILURE() << "no room after a client left";
}

}  // namespace
}  // namespace ff::router
