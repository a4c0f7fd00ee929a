// A malicious tenant. It speaks the control protocol by hand (no
// libffverbs), writes whatever it likes into the rings the router shares
// with it, and checks that the router answers each abuse as documented in
// docs/SECURITY.md: an error reply, the offending QP in the error state, or
// the session closed. tests/e2e/test_hostile_tenant.sh runs it while an
// honest tenant moves checked data through the same router.
//
// Environment: FF_HOSTILE_SOCKET (its tenant socket), FF_OTHER_SOCKET
// (another tenant's socket), FF_ADMIN_SOCKET (the router's admin socket).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "proto/client.h"
#include "proto/verbs_codec.h"
#include "shm/descriptors.h"
#include "shm/segment.h"

namespace {

using namespace ff;
using proto::RequestBody;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// A client that builds its objects by hand.
struct Raw {
  proto::ControlClient c;
  uint32_t ctx = 0, pd = 0;
  shm::Mapping async_ring;
  UniqueFd async_fd, doorbell;

  explicit Raw(const std::string& path = env("FF_HOSTILE_SOCKET")) {
    EXPECT_EQ(c.connect(path), 0) << path;
    flatbuffers::FlatBufferBuilder fbb;
    auto r = c.call(fbb, RequestBody::Hello, proto::CreateHello(fbb, proto::kProtocolVersion, fbb.CreateString("hostile")).Union());
    EXPECT_EQ(r.error, 0) << r.message;
  }
  proto::ControlClient::Result call(flatbuffers::FlatBufferBuilder& fbb, RequestBody t,
                                    flatbuffers::Offset<void> body, std::span<const int> fds = {}) {
    return c.call(fbb, t, body, fds);
  }
  void open() {
    flatbuffers::FlatBufferBuilder fbb;
    auto r = call(fbb, RequestBody::OpenDevice, proto::CreateOpenDevice(fbb, 0).Union());
    ASSERT_EQ(r.error, 0);
    ASSERT_EQ(r.fds.size(), 3u);
    ctx = r.reply()->body_as_OpenDeviceReply()->context();
    async_fd = std::move(r.fds[0]);
    doorbell = std::move(r.fds[1]);
    async_ring = shm::Mapping::attach(r.fds[2].get(), shm::SegmentKind::kRing);
    flatbuffers::FlatBufferBuilder f2;
    auto p = call(f2, RequestBody::AllocPd, proto::CreateAllocPd(f2, ctx).Union());
    ASSERT_EQ(p.error, 0);
    pd = p.reply()->body_as_AllocPdReply()->pd();
  }
  struct Cq {
    uint32_t handle = 0;
    shm::Mapping seg;
    shm::RingConsumer<shm::Cqe> ring;
  };
  Cq cq(uint32_t channel = 0) {
    Cq out;
    flatbuffers::FlatBufferBuilder fbb;
    auto r = call(fbb, RequestBody::CreateCq, proto::CreateCreateCq(fbb, ctx, 64, channel, 0).Union());
    EXPECT_EQ(r.error, 0);
    if (r.error != 0) return out;
    out.handle = r.reply()->body_as_CreateCqReply()->cq();
    uint32_t cap = r.reply()->body_as_CreateCqReply()->capacity();
    out.seg = shm::Mapping::attach(r.fds[0].get(), shm::SegmentKind::kRing);
    out.ring = shm::RingConsumer<shm::Cqe>(out.seg.base() + shm::kCqRingOffset, cap);
    return out;
  }
  struct Qp {
    uint32_t handle = 0, qpn = 0, send_cap = 0;
    shm::Mapping seg;
    shm::RingControl* sq_ctl = nullptr;
    shm::RingProducer<shm::SendWqe> sq;
  };
  // An RC QP connected to itself, in RTS.
  Qp loop_qp(const Cq& cq) {
    Qp out;
    flatbuffers::FlatBufferBuilder fbb;
    proto::QpCap cap(16, 16, 1, 1, 0);
    auto r = call(fbb, RequestBody::CreateQp,
                  proto::CreateCreateQp(fbb, pd, cq.handle, cq.handle, 0, IBV_QPT_RC, true, &cap).Union());
    EXPECT_EQ(r.error, 0) << r.message;
    if (r.error != 0) return out;
    const auto* q = r.reply()->body_as_CreateQpReply();
    out.handle = q->qp();
    out.qpn = q->qp_num();
    out.send_cap = q->send_capacity();
    out.seg = shm::Mapping::attach(r.fds[0].get(), shm::SegmentKind::kRing);
    out.sq_ctl = reinterpret_cast<shm::RingControl*>(out.seg.base() + shm::kQpSendRingOffset);
    out.sq = shm::RingProducer<shm::SendWqe>(out.seg.base() + shm::kQpSendRingOffset, out.send_cap);
    ibv_qp_attr a{};
    a.qp_state = IBV_QPS_INIT;
    a.port_num = 1;
    a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE;
    EXPECT_EQ(modify(out.handle, a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS), 0);
    a = {};
    a.qp_state = IBV_QPS_RTR;
    a.path_mtu = IBV_MTU_1024;
    a.dest_qp_num = out.qpn;
    a.max_dest_rd_atomic = 1;
    a.min_rnr_timer = 1;
    a.ah_attr.port_num = 1;
    a.ah_attr.is_global = 1;  // the port is RoCE: the address is this client's own GID
    a.ah_attr.grh.dgid = own_gid();
    EXPECT_EQ(modify(out.handle, a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                        IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER),
              0);
    a = {};
    a.qp_state = IBV_QPS_RTS;
    a.timeout = 8;
    a.retry_cnt = 1;
    a.rnr_retry = 1;
    a.max_rd_atomic = 1;
    EXPECT_EQ(modify(out.handle, a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT |
                                        IBV_QP_RNR_RETRY | IBV_QP_MAX_QP_RD_ATOMIC),
              0);
    return out;
  }
  ibv_gid own_gid() {
    flatbuffers::FlatBufferBuilder fbb;
    auto r = call(fbb, RequestBody::QueryGid, proto::CreateQueryGid(fbb, ctx, 1, 0).Union());
    ibv_gid gid{};
    EXPECT_EQ(r.error, 0) << r.message;
    if (r.error == 0) std::memcpy(gid.raw, r.reply()->body_as_QueryGidReply()->gid()->raw()->data(), sizeof gid.raw);
    return gid;
  }
  int modify(uint32_t qp, const ibv_qp_attr& a, int mask) {
    flatbuffers::FlatBufferBuilder fbb;
    auto wire = proto::to_wire(a);
    return call(fbb, RequestBody::ModifyQp, proto::CreateModifyQp(fbb, qp, static_cast<uint32_t>(mask), &wire).Union())
        .error;
  }
  int state(uint32_t qp) {
    flatbuffers::FlatBufferBuilder fbb;
    auto r = call(fbb, RequestBody::QueryQp, proto::CreateQueryQp(fbb, qp).Union());
    return r.error == 0 ? r.reply()->body_as_QueryQpReply()->attr()->qp_state() : -1;
  }
  void ring() {
    uint64_t one = 1;
    ssize_t n = ::write(doorbell.get(), &one, sizeof one);
    (void)n;
  }
  // Waits until the QP is in ERR; true when it got there.
  bool wait_error(uint32_t qp) {
    for (int i = 0; i < 500; ++i) {
      ring();
      if (state(qp) == IBV_QPS_ERR) return true;
      usleep(10000);
    }
    return false;
  }
  // True when the async ring holds an event of `type` about `handle`.
  bool async_event(uint32_t type, uint32_t handle) {
    shm::RingConsumer<shm::AsyncEvent> events(async_ring.base() + shm::kAsyncRingOffset, shm::kAsyncRingCapacity);
    shm::AsyncEvent ev;
    while (events.sc_try_pop(ev))
      if (ev.type == type && ev.handle == handle) return true;
    return false;
  }
};

// The router still serves: a fresh client of this tenant completes Hello.
void expect_router_serves() {
  Raw fresh;
  flatbuffers::FlatBufferBuilder fbb;
  EXPECT_EQ(fresh.call(fbb, RequestBody::ListDevices, proto::CreateListDevices(fbb).Union()).error, 0);
}

int raw_connect(const std::string& path) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

TEST(Hostile, TruncatedOversizedAndLyingFramesCloseOnlyThatConnection) {
  for (proto::FrameHeader h : {proto::FrameHeader{200, 0, 0}, proto::FrameHeader{1u << 31, 0, 0},
                               proto::FrameHeader{16, 5, 0}}) {
    int s = raw_connect(env("FF_HOSTILE_SOCKET"));
    ASSERT_GE(s, 0);
    char junk[10] = {};
    ASSERT_EQ(::send(s, &h, sizeof h, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof h));
    ::send(s, junk, sizeof junk, MSG_NOSIGNAL);  // a truncated body, then we vanish
    ::close(s);
  }
  expect_router_serves();
}

TEST(Hostile, RequestsOutOfOrderOrOfTheWrongKindAreRefused) {
  Raw r;
  flatbuffers::FlatBufferBuilder fbb;
  proto::QpCap cap(1, 1, 1, 1, 0);
  EXPECT_EQ(r.call(fbb, RequestBody::CreateQp, proto::CreateCreateQp(fbb, 7, 8, 9, 0, IBV_QPT_RC, false, &cap).Union())
                .error,
            EINVAL);  // no such PD or CQs
  flatbuffers::FlatBufferBuilder f2;
  EXPECT_EQ(r.call(f2, RequestBody::AdminStatus, proto::CreateAdminStatus(f2).Union()).error, EOPNOTSUPP);
  flatbuffers::FlatBufferBuilder f3;
  EXPECT_EQ(r.call(f3, RequestBody::Hello, proto::CreateHello(f3, proto::kProtocolVersion, 0).Union()).error, EPROTO);  // twice
}

TEST(Hostile, HandlesOfOtherSessionsAndTenantsNameNothing) {
  Raw a;
  a.open();
  Raw::Cq cq = a.cq();
  for (std::string path : {env("FF_HOSTILE_SOCKET"), env("FF_OTHER_SOCKET")}) {
    Raw b(path);
    flatbuffers::FlatBufferBuilder fbb;
    EXPECT_EQ(b.call(fbb, RequestBody::AllocPd, proto::CreateAllocPd(fbb, a.ctx).Union()).error, EINVAL);
    flatbuffers::FlatBufferBuilder f2;
    EXPECT_EQ(b.call(f2, RequestBody::DestroyCq, proto::CreateDestroyCq(f2, cq.handle).Union()).error, EINVAL);
    flatbuffers::FlatBufferBuilder f3;
    EXPECT_EQ(b.call(f3, RequestBody::DeallocPd, proto::CreateDeallocPd(f3, a.pd).Union()).error, EINVAL);
  }
  EXPECT_EQ(a.loop_qp(cq).handle != 0, true);  // a's objects are untouched
}

TEST(Hostile, MemoryItCouldShrinkIsRefusedAndSealedMemoryCannotShrink) {
  Raw r;
  UniqueFd loose(::memfd_create("loose", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(loose.get(), 1 << 20), 0);
  int fd = loose.get();
  flatbuffers::FlatBufferBuilder fbb;
  auto res = r.call(fbb, RequestBody::RegisterSegment, proto::CreateRegisterSegment(fbb, 0x40000000, 1 << 20).Union(),
                    {&fd, 1});
  EXPECT_EQ(res.error, EINVAL);  // not sealed against shrinking
  EXPECT_NE(res.message.find("sealed"), std::string::npos);
  shm::Mapping sealed = shm::Mapping::create("sealed", shm::SegmentKind::kRing, 1 << 20);
  fd = sealed.fd();
  flatbuffers::FlatBufferBuilder f2;
  res = r.call(f2, RequestBody::RegisterSegment, proto::CreateRegisterSegment(f2, 0x40000000, 2 << 20).Union(), {&fd, 1});
  EXPECT_EQ(res.error, EINVAL);  // claims more than the memfd holds
  flatbuffers::FlatBufferBuilder f3;
  res = r.call(f3, RequestBody::RegisterSegment, proto::CreateRegisterSegment(f3, 0x40000000, 1 << 20).Union(), {&fd, 1});
  EXPECT_EQ(res.error, 0);
  EXPECT_NE(::ftruncate(sealed.fd(), 4096), 0);  // and now it cannot shrink under the router
  EXPECT_EQ(errno, EPERM);
}

TEST(Hostile, UnmappingAndClosingRegisteredMemoryLeavesTheRouterItsOwnMapping) {
  Raw r;
  r.open();
  {
    shm::Mapping mem = shm::Mapping::create("gone", shm::SegmentKind::kRing, 1 << 16);
    int fd = mem.fd();
    flatbuffers::FlatBufferBuilder fbb;
    ASSERT_EQ(r.call(fbb, RequestBody::RegisterSegment, proto::CreateRegisterSegment(fbb, 0x50000000, mem.size()).Union(),
                     {&fd, 1})
                  .error,
              0);
  }  // our mapping and fd are gone
  flatbuffers::FlatBufferBuilder fbb;
  auto mr = r.call(fbb, RequestBody::RegMr,
                   proto::CreateRegMr(fbb, r.pd, 0x50000000, 1 << 16, 0x50000000, IBV_ACCESS_LOCAL_WRITE).Union());
  ASSERT_EQ(mr.error, 0) << mr.message;
  // A write into it through the router still lands in the router's own mapping.
  Raw::Cq cq = r.cq();
  Raw::Qp qp = r.loop_qp(cq);
  shm::SendWqe w{};
  w.opcode = IBV_WR_SEND;
  w.send_flags = IBV_SEND_SIGNALED;
  w.num_sge = 1;
  w.payload.sge[0] = {0x50000000, 64, mr.reply()->body_as_RegMrReply()->lkey()};
  ASSERT_TRUE(qp.sq.sp_try_push(w));
  r.ring();
  shm::Cqe c{};
  for (int i = 0; i < 500 && !cq.ring.sc_try_pop(c); ++i) usleep(10000);
  // No receive was posted: RNR, then an error completion (rnr_retry 1); the
  // point is that reading the vanished memory did not hurt the router.
  EXPECT_EQ(c.status, static_cast<uint32_t>(IBV_WC_RNR_RETRY_EXC_ERR));
  expect_router_serves();
}

// Arms the CQ (its channel gets an event), posts a zero-byte signaled RDMA
// WRITE on `qp` and waits for its completion: false when none came.
bool armed_completion(Raw& r, Raw::Cq& cq, Raw::Qp& qp, shm::Cqe& out) {
  auto* control = reinterpret_cast<shm::CqControl*>(cq.seg.base() + shm::kCqControlOffset);
  control->arm.store(shm::kArmNext, std::memory_order_relaxed);
  shm::SendWqe w{};
  w.opcode = IBV_WR_RDMA_WRITE;  // zero bytes: no memory needed
  w.send_flags = IBV_SEND_SIGNALED;
  if (!qp.sq.sp_try_push(w)) return false;
  r.ring();
  for (int spin = 0; spin < 200000; ++spin) {
    if (cq.ring.sc_try_pop(out)) return true;
    if (spin > 1000) usleep(10);
  }
  return false;
}

// The fds the router shares with a client are pipe ends of the client's own
// (docs/SECURITY.md): the client cannot write into the ends it waits on, nor
// read the doorbell it rings, and a client that never reads its completion
// channel only fills a pipe: the router's writes stop at EAGAIN, and it goes
// on serving (an eventfd here once let a client block the router's poller).
TEST(Hostile, SharedFdsCannotBlockTheRouter) {
  Raw r;
  r.open();
  const uint64_t almost_full = 0xfffffffffffffffe;
  errno = 0;
  EXPECT_LT(::write(r.async_fd.get(), &almost_full, 8), 0);
  EXPECT_EQ(errno, EBADF) << "async_fd is the read end";
  char sink[8];
  errno = 0;
  EXPECT_LT(::read(r.doorbell.get(), sink, 8), 0);
  EXPECT_EQ(errno, EBADF) << "the doorbell is the write end";
  flatbuffers::FlatBufferBuilder fbb;
  auto ch = r.call(fbb, RequestBody::CreateCompChannel, proto::CreateCreateCompChannel(fbb, r.ctx).Union());
  ASSERT_EQ(ch.error, 0) << ch.message;
  UniqueFd channel_fd = std::move(ch.fds[0]);
  errno = 0;
  EXPECT_LT(::write(channel_fd.get(), &almost_full, 8), 0);
  EXPECT_EQ(errno, EBADF) << "channel->fd is the read end";
  Raw::Cq cq = r.cq(ch.reply()->body_as_CreateCompChannelReply()->channel());
  Raw::Qp qp = r.loop_qp(cq);
  // More armed completions than the channel's pipe holds bytes, never read.
  for (int i = 0; i < 9000; ++i) {
    shm::Cqe c{};
    ASSERT_TRUE(armed_completion(r, cq, qp, c)) << "completion " << i << " never came: the router is stuck";
    ASSERT_EQ(c.status, 0u);
  }
  int pending = 0;
  ASSERT_EQ(::ioctl(channel_fd.get(), FIONREAD, &pending), 0);
  EXPECT_EQ(pending, 8192) << "the pipe (two rings' worth of events) filled, and the router stopped at EAGAIN";
  EXPECT_EQ(r.state(qp.handle), IBV_QPS_RTS);
  expect_router_serves();
}

// A client that closes the read ends it was given (a completion channel's,
// an rdma_cm channel's) makes the router's next write there hit a pipe with
// no reader: EPIPE for the router, never SIGPIPE (which would kill it).
TEST(Hostile, ClosingTheEndsItWaitsOnDoesNotKillTheRouter) {
  Raw r;
  r.open();
  flatbuffers::FlatBufferBuilder fbb;
  auto ch = r.call(fbb, RequestBody::CreateCompChannel, proto::CreateCreateCompChannel(fbb, r.ctx).Union());
  ASSERT_EQ(ch.error, 0) << ch.message;
  ch.fds.clear();  // closes the read end
  Raw::Cq cq = r.cq(ch.reply()->body_as_CreateCompChannelReply()->channel());
  Raw::Qp qp = r.loop_qp(cq);
  shm::Cqe c{};
  ASSERT_TRUE(armed_completion(r, cq, qp, c)) << "the armed completion never came";
  fbb.Clear();
  auto cm = r.call(fbb, RequestBody::CmCreateChannel, proto::CreateCmCreateChannel(fbb).Union());
  ASSERT_EQ(cm.error, 0) << cm.message;
  uint32_t cm_channel = cm.reply()->body_as_CmCreateChannelReply()->channel();
  cm.fds.clear();
  fbb.Clear();
  auto id = r.call(fbb, RequestBody::CmCreateId, proto::CreateCmCreateId(fbb, cm_channel, RDMA_PS_TCP, IBV_QPT_RC).Union());
  ASSERT_EQ(id.error, 0) << id.message;
  fbb.Clear();
  proto::CmAddr nowhere(0xc0000201, 9);
  auto resolve = r.call(fbb, RequestBody::CmResolveAddr,
                        proto::CreateCmResolveAddr(fbb, id.reply()->body_as_CmCreateIdReply()->id(), false, nullptr,
                                                   &nowhere).Union());
  EXPECT_EQ(resolve.error, 0) << resolve.message;  // its ADDR_ERROR goes to the closed channel
  expect_router_serves();
}

TEST(Hostile, ProducerIndexPastTheRingFailsOnlyThatQp) {
  Raw r;
  r.open();
  Raw::Cq cq = r.cq();
  Raw::Qp qp = r.loop_qp(cq);
  qp.sq_ctl->producer_index.store(qp.send_cap + 5, std::memory_order_release);
  EXPECT_TRUE(r.wait_error(qp.handle));
  EXPECT_TRUE(r.async_event(IBV_EVENT_QP_FATAL, qp.handle));
  Raw::Qp other = r.loop_qp(cq);  // the session goes on
  EXPECT_EQ(r.state(other.handle), IBV_QPS_RTS);
  expect_router_serves();
}

TEST(Hostile, GarbageDescriptorsCompleteWithErrors) {
  Raw r;
  r.open();
  Raw::Cq cq = r.cq();
  Raw::Qp qp = r.loop_qp(cq);
  std::mt19937_64 rng(3);
  uint64_t garbage[sizeof(shm::SendWqe) / 8];
  for (uint64_t& g : garbage) g = rng();
  shm::SendWqe w;
  std::memcpy(&w, garbage, sizeof w);
  w.opcode = 0xee;
  ASSERT_TRUE(qp.sq.sp_try_push(w));
  r.ring();
  shm::Cqe c{};
  for (int i = 0; i < 500 && !cq.ring.sc_try_pop(c); ++i) usleep(10000);
  EXPECT_NE(c.status, 0u);  // an error completion, not a crash
  EXPECT_TRUE(r.wait_error(qp.handle));
  // A WQE naming keys it does not own: a protection error, never another tenant's memory.
  Raw::Qp q2 = r.loop_qp(cq);
  shm::SendWqe write{};
  write.opcode = IBV_WR_RDMA_WRITE;
  write.send_flags = IBV_SEND_SIGNALED;
  write.num_sge = 1;
  write.payload.sge[0] = {0x1000, 64, 0x12345600};
  write.rkey = 0x65432100;
  ASSERT_TRUE(q2.sq.sp_try_push(write));
  r.ring();
  c = {};
  for (int i = 0; i < 500 && !cq.ring.sc_try_pop(c); ++i) usleep(10000);
  EXPECT_EQ(c.status, static_cast<uint32_t>(IBV_WC_LOC_PROT_ERR));
}

TEST(Hostile, IndicesRacingWithGarbageWhileTheRouterReads) {
  Raw r;
  r.open();
  Raw::Cq cq = r.cq();
  Raw::Qp qp = r.loop_qp(cq);
  std::atomic<bool> stop{false};
  std::thread scribbler([&] {
    std::mt19937_64 rng(7);
    auto* slots = reinterpret_cast<uint64_t*>(qp.seg.base() + shm::kQpSendRingOffset + sizeof(shm::RingControl));
    while (!stop) {
      qp.sq_ctl->producer_index.store(rng() % (2 * qp.send_cap), std::memory_order_release);
      slots[rng() % (qp.send_cap * sizeof(shm::SendWqe) / 8)] = rng();  // rewrite posted descriptors
    }
  });
  for (int i = 0; i < 200; ++i) {
    r.ring();
    usleep(1000);
  }
  stop = true;
  scribbler.join();
  EXPECT_TRUE(r.wait_error(qp.handle));  // sooner or later an index was impossible
  expect_router_serves();
}

TEST(Hostile, FloodingRequestsWithoutReadingRepliesOnlyStallsItself) {
  int s = raw_connect(env("FF_HOSTILE_SOCKET"));
  ASSERT_GE(s, 0);
  ::fcntl(s, F_SETFL, O_NONBLOCK);
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(proto::CreateRequest(fbb, 1, RequestBody::ListDevices, proto::CreateListDevices(fbb).Union()));
  proto::FrameHeader h{fbb.GetSize(), 0, 0};
  std::vector<uint8_t> frame(sizeof h + fbb.GetSize());
  std::memcpy(frame.data(), &h, sizeof h);
  std::memcpy(frame.data() + sizeof h, fbb.GetBufferPointer(), fbb.GetSize());
  size_t sent = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::send(s, frame.data(), frame.size(), MSG_NOSIGNAL);
    if (n <= 0) break;  // the router stopped reading us: backpressure, not unbounded memory
    sent += static_cast<size_t>(n);
  }
  EXPECT_GT(sent, 0u);
  expect_router_serves();  // everyone else is served meanwhile
  ::close(s);
}

// The router's handles as its /proc shows them (fds but sockets, which
// sessions hold and --max-sessions-per-tenant caps; memfd mappings), and
// what the admin status charges: tenant `name`, and all tenants together
// (the honest tenant may be making objects meanwhile).
struct Handles {
  long router = 0;
  uint64_t charged = 0, limit = 0, charged_all = 0;
  std::map<std::string, int> kinds;
};
Handles handles(const std::string& name) {
  Handles h;
  std::string pid = env("FF_ROUTER_PID");
  for (const auto& e : std::filesystem::directory_iterator("/proc/" + pid + "/fd")) {
    std::error_code ec;
    auto target = std::filesystem::read_symlink(e.path(), ec).string();
    if (!ec && target.rfind("socket:", 0) != 0) {
      ++h.router;
      h.kinds[target.substr(0, std::min<size_t>(target.find(':') == std::string::npos ? 8 : target.find(':'), 12))]++;
    }
  }
  std::ifstream maps("/proc/" + pid + "/maps");
  for (std::string line; std::getline(maps, line);)  // shared memory; not the allocator's own mappings
    if (line.find("/memfd:") != std::string::npos) ++h.router, h.kinds["map"]++;
  proto::ControlClient admin;
  EXPECT_EQ(admin.connect(env("FF_ADMIN_SOCKET")), 0);
  flatbuffers::FlatBufferBuilder fbb;
  auto r = admin.call(fbb, RequestBody::AdminStatus, proto::CreateAdminStatus(fbb).Union());
  EXPECT_EQ(r.error, 0);
  for (const auto* t : *r.reply()->body_as_StatusReply()->tenants()) {
    h.charged_all += t->handles();
    if (t->name()->str() == name) h.charged = t->handles(), h.limit = t->handles_limit();
  }
  return h;
}

// Every fd and mapping a tenant's objects make the router hold is charged
// to it (the table is an upper bound of what /proc shows), a tenant that
// wants more than its share gets ENOMEM naming the knob, the other tenant
// is still served, and closing the session gives everything back.
TEST(Hostile, FdsAndMappingsAreCountedPerTenantAndCapped) {
  Handles before = handles("blue");
  ASSERT_GT(before.limit, 0u) << "run the router with --max-handles-per-tenant";
  {
    Raw r;
    // Each kind of object, measured on its own: what the router's /proc grew
    // by against what the tenants were charged.
    Handles last = before;
    auto step = [&](const char* what, const std::function<void()>& make) {
      make();
      flatbuffers::FlatBufferBuilder fbb;  // one more round trip: the last reply's fds are gone
      EXPECT_EQ(r.call(fbb, RequestBody::ListDevices, proto::CreateListDevices(fbb).Union()).error, 0);
      Handles now = handles("blue");
      long grew = now.router - last.router;
      long charged = static_cast<long>(now.charged_all - last.charged_all);
      std::printf("%s: the router grew %ld fds+mappings, %ld charged\n", what, grew, charged);
      for (auto& [k, n] : now.kinds)
        if (n != last.kinds[k]) std::printf("  %s %d -> %d\n", k.c_str(), last.kinds[k], n);
      EXPECT_LE(grew, charged) << what << ": objects hold handles router_handles() does not count";
      EXPECT_GE(grew, charged * 9 / 10) << what << ": router_handles() overcharges";
      last = now;
    };
    step("a context and a PD", [&] { r.open(); });
    std::vector<Raw::Cq> cqs;
    step("20 CQs", [&] {
      for (int i = 0; i < 20; ++i) cqs.push_back(r.cq());
    });
    std::vector<Raw::Qp> qps;
    step("20 QPs", [&] {
      for (int i = 0; i < 20; ++i) qps.push_back(r.loop_qp(cqs[0]));
    });
    step("10 completion channels", [&] {
      for (int i = 0; i < 10; ++i) {
        flatbuffers::FlatBufferBuilder fbb;
        EXPECT_EQ(r.call(fbb, RequestBody::CreateCompChannel, proto::CreateCreateCompChannel(fbb, r.ctx).Union()).error,
                  0);
      }
    });
    Handles made = last;
    // Now more than the share: CQs until refused.
    int refused = 0;
    std::string why;
    for (uint64_t i = 0; i < made.limit && refused == 0; ++i) {
      flatbuffers::FlatBufferBuilder fbb;
      auto res = r.call(fbb, RequestBody::CreateCq, proto::CreateCreateCq(fbb, r.ctx, 4, 0, 0).Union());
      if (res.error != 0) refused = res.error, why = res.message;
    }
    EXPECT_EQ(refused, ENOMEM);
    EXPECT_NE(why.find("--max-handles-per-tenant"), std::string::npos) << why;
    EXPECT_LE(handles("blue").charged, made.limit);
    Raw other(env("FF_OTHER_SOCKET"));  // the other tenant still gets its objects
    other.open();
    EXPECT_NE(other.cq().handle, 0u);
  }
  // The sessions closed: everything given back (the router closes them as it reads the EOF).
  Handles after;
  for (int i = 0; i < 100 && (after = handles("blue")).charged > before.charged; ++i) usleep(20000);
  EXPECT_EQ(after.charged, before.charged);
  expect_router_serves();
}

// rdma_cm ids and channels are session objects: another session, of this
// tenant or another, names none of them. A flood of connects to a listener
// whose app never reads holds at most its backlog of new ids and 1024
// waiting requests; the rest are dropped (UNREACHABLE), and the listener
// still works afterwards.
TEST(Hostile, RdmaCmIdsOfOthersNameNothingAndConnectFloodsAreBounded) {
  std::vector<UniqueFd> keep;  // channels' read ends
  auto channel = [&](Raw& r) {
    flatbuffers::FlatBufferBuilder fbb;
    auto ch = r.call(fbb, RequestBody::CmCreateChannel, proto::CreateCmCreateChannel(fbb).Union());
    EXPECT_EQ(ch.error, 0) << ch.message;
    for (auto& fd : ch.fds) keep.push_back(std::move(fd));
    return ch.error == 0 ? ch.reply()->body_as_CmCreateChannelReply()->channel() : 0u;
  };
  auto new_id = [](Raw& r, uint32_t ch) {
    flatbuffers::FlatBufferBuilder fbb;
    auto id = r.call(fbb, RequestBody::CmCreateId, proto::CreateCmCreateId(fbb, ch, RDMA_PS_TCP, IBV_QPT_RC).Union());
    EXPECT_EQ(id.error, 0) << id.message;
    return id.error == 0 ? id.reply()->body_as_CmCreateIdReply()->id() : 0u;
  };
  auto events = [](Raw& r, uint32_t ch) {
    std::map<int, int> seen;
    for (;;) {
      flatbuffers::FlatBufferBuilder fbb;
      auto e = r.call(fbb, RequestBody::CmGetEvent, proto::CreateCmGetEvent(fbb, ch).Union());
      if (e.error != 0) break;
      ++seen[e.reply()->body_as_CmEventReply()->event()];
    }
    return seen;
  };
  Raw a;
  uint32_t ch_a = channel(a), listener = new_id(a, ch_a);
  flatbuffers::FlatBufferBuilder fbb;
  proto::CmAddr any(0, 7100);
  auto bound = a.call(fbb, RequestBody::CmBindAddr, proto::CreateCmBindAddr(fbb, listener, &any).Union());
  ASSERT_EQ(bound.error, 0) << bound.message;
  proto::CmAddr at = *bound.reply()->body_as_CmAddrReply()->src();
  fbb.Clear();
  ASSERT_EQ(a.call(fbb, RequestBody::CmListen, proto::CreateCmListen(fbb, listener, 2).Union()).error, 0);

  for (std::string path : {env("FF_HOSTILE_SOCKET"), env("FF_OTHER_SOCKET")}) {
    Raw b(path);
    flatbuffers::FlatBufferBuilder f;
    EXPECT_EQ(b.call(f, RequestBody::CmListen, proto::CreateCmListen(f, listener, 8).Union()).error, EINVAL);
    f.Clear();
    EXPECT_EQ(b.call(f, RequestBody::CmDestroyId, proto::CreateCmDestroyId(f, listener).Union()).error, EINVAL);
    f.Clear();
    EXPECT_EQ(b.call(f, RequestBody::CmGetEvent, proto::CreateCmGetEvent(f, ch_a).Union()).error, EINVAL);
    f.Clear();
    EXPECT_EQ(b.call(f, RequestBody::CmDestroyChannel, proto::CreateCmDestroyChannel(f, ch_a).Union()).error, EINVAL);
  }

  constexpr int kFlood = 2 + 1024 + 100;
  Raw c;
  uint32_t ch_c = channel(c);
  proto::CmConnParam param(1, 1, 0, 7, 7, 0, 0x42);
  for (int i = 0; i < kFlood; ++i) {
    uint32_t id = new_id(c, ch_c);
    flatbuffers::FlatBufferBuilder f;
    ASSERT_EQ(c.call(f, RequestBody::CmResolveAddr, proto::CreateCmResolveAddr(f, id, false, nullptr, &at, 1000).Union())
                  .error, 0);
    f.Clear();
    ASSERT_EQ(c.call(f, RequestBody::CmResolveRoute, proto::CreateCmResolveRoute(f, id).Union()).error, 0);
    f.Clear();
    ASSERT_EQ(c.call(f, RequestBody::CmConnect, proto::CreateCmConnect(f, id, &param).Union()).error, 0);
  }
  auto seen = events(c, ch_c);
  EXPECT_EQ(seen[RDMA_CM_EVENT_UNREACHABLE], 100) << "past the backlog and 1024 waiting, requests are dropped";
  EXPECT_EQ(seen[RDMA_CM_EVENT_REJECTED], 0);
  auto requests = events(a, ch_a);
  EXPECT_EQ(requests[RDMA_CM_EVENT_CONNECT_REQUEST], 2 + 1024) << "the waiting ones arrive as the app reads";
  expect_router_serves();
}

TEST(Hostile, ThousandsOfConnectionsAreCappedPerTenant) {
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 4096);
  ::setrlimit(RLIMIT_NOFILE, &lim);
  std::vector<UniqueFd> conns;
  int accepted = 0;
  for (int i = 0; i < 1500; ++i) {
    int s = raw_connect(env("FF_HOSTILE_SOCKET"));
    if (s < 0) break;
    conns.emplace_back(s);
  }
  // Those the router kept stay open; the rest it closes as it accepts them
  // (a slow router, e.g. under a sanitizer, may take a while to get there).
  for (int round = 0; round < 100; ++round) {
    usleep(100 * 1000);
    accepted = 0;
    for (auto& c : conns) {
      pollfd p{c.get(), POLLIN | POLLRDHUP, 0};
      if (::poll(&p, 1, 0) == 0) ++accepted;
    }
    if (accepted <= 256) break;
  }
  EXPECT_GT(conns.size(), 1000u);
  EXPECT_LE(accepted, 256) << "more sessions than --max-sessions-per-tenant";
  // The other tenant is unaffected.
  Raw other(env("FF_OTHER_SOCKET"));
  flatbuffers::FlatBufferBuilder fbb;
  EXPECT_EQ(other.call(fbb, RequestBody::ListDevices, proto::CreateListDevices(fbb).Union()).error, 0);
}

}  // namespace
