// The soft fabric's links to other routers, driven from the far end of a
// socketpair as a peer router would (or a hostile one): what the poller
// keeps of a peer's requests and of its own answers stays bounded whatever
// the peer does, and nothing is lost when the peer comes back to reading.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "router/fabric/soft/engine.h"
#include "router/fabric/soft/link.h"
#include "soft_fabric_fixture.h"

namespace ff::router::soft {
namespace {

using namespace fixture;

constexpr uint32_t kPeerIp = 0x0a0000fe, kPeerQpn = 0x100;

// Every address that is not blue's is on the one peer.
struct OnePeer : SoftRoutes {
  Peer peer{"peer"};
  Result<Peer*> locate(std::string_view, uint32_t vip) override { return vip == kBlueIp ? nullptr : &peer; }
  std::vector<Peer*> peers_of(std::string_view) override { return {&peer}; }
};

// Waits (bounded) until `at` holds the n bytes of `expect`.
bool await_bytes(const std::byte* at, const std::byte* expect, size_t n) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::memcmp(at, expect, n) != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return std::memcmp(at, expect, n) == 0;
}

// Reads one answer header (bounded wait); type 0 when none came.
wire::Header await_answer(int fd) {
  wire::Header answer{};
  size_t got = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (got < sizeof answer && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::recv(fd, reinterpret_cast<char*>(&answer) + got, sizeof answer - got, MSG_DONTWAIT);
    if (n > 0) got += static_cast<size_t>(n);
  }
  return got == sizeof answer ? answer : wire::Header{};
}

class LinkTest : public SoftFabricTest {
 protected:
  LinkTest() { fabric.set_routes(&routes); }

  // A QP of blue's connected to the peer's QP, and the peer's inbound link
  // (its requests, our answers); returns the peer's end of the socket.
  UniqueFd connect_peer(Qp*& q) {
    q = &blue.make_qp(IBV_QPT_RC);
    connect(*q, kPeerQpn, kPeerIp, kAllRemote);
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    Engine& e = fabric.engine();
    e.run_sync([&] { e.attach_link(std::make_unique<Link>(routes.peer, UniqueFd(sv[0]), false), 1); });
    return UniqueFd(sv[1]);
  }

  wire::Header read_request(const Qp& q, uint32_t seq, uint64_t len) { return request(q, IBV_WR_RDMA_READ, seq, len); }
  wire::Header request(const Qp& q, uint8_t opcode, uint32_t seq, uint64_t len) {
    wire::Header h{};
    h.type = static_cast<uint8_t>(wire::Type::kRequest);
    h.opcode = opcode;
    h.qp_type = IBV_QPT_RC;
    h.tenant = wire::tenant_id("blue");
    h.src_qpn = kPeerQpn;
    h.dst_qpn = q.qpn;
    h.seq = seq;
    h.src_ip = kPeerIp;
    h.dst_ip = kBlueIp;
    h.rkey = blue.mr->rkey();
    h.total = len;
    h.remote_addr = kBase;
    return h;
  }

  // Sends a WRITE of `data` to kBase, its header and `first` bytes of it:
  // true once those are in the MR (the rest of the chunk not sent).
  bool start_write(const Qp& q, int fd, const std::vector<std::byte>& data, size_t first) {
    wire::Header h = request(q, IBV_WR_RDMA_WRITE, 0, data.size());
    h.payload = static_cast<uint32_t>(data.size());
    return ::send(fd, &h, sizeof h, MSG_NOSIGNAL) == static_cast<ssize_t>(sizeof h) &&
           ::send(fd, data.data(), first, MSG_NOSIGNAL) == static_cast<ssize_t>(first) &&
           await_bytes(blue.at(kBase), data.data(), first);
  }

  // A WRITE chunk large enough to be placed, and how much of it the tests
  // send before they take its MR or QP away.
  static constexpr uint32_t kPlacedLen = 24 * 1024, kPlacedFirst = 4 * 1024;

  // Sends the rest of a WRITE start_write began, after its MR or QP went:
  // none of it may land (the memory still holds zeros), and the answer.
  wire::Header finish_write_unlanded(int fd, const std::vector<std::byte>& data, size_t first) {
    EXPECT_EQ(::send(fd, data.data() + first, data.size() - first, MSG_NOSIGNAL),
              static_cast<ssize_t>(data.size() - first));
    wire::Header a = await_answer(fd);
    const std::vector<std::byte> zeros(data.size() - first);
    EXPECT_EQ(std::memcmp(blue.at(kBase + first), zeros.data(), zeros.size()), 0)
        << "bytes landed after the MR or QP went";
    return a;
  }

  OnePeer routes;
};

// Reads what is there (nonblocking) and counts the whole READ answers.
struct AnswerReader {
  std::vector<std::byte> buf;
  size_t answers = 0;
  uint32_t next_seq = 0;
  bool in_order = true;
  const std::byte* expect = nullptr;  // what every answer's payload holds, when set
  bool intact = true;
  void read(int fd) {
    std::byte chunk[1 << 16];
    ssize_t n;
    while ((n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT)) > 0) buf.insert(buf.end(), chunk, chunk + n);
    size_t at = 0;
    wire::Header h;
    while (buf.size() - at >= sizeof h) {
      std::memcpy(&h, buf.data() + at, sizeof h);
      if (buf.size() - at < sizeof h + h.payload) break;
      at += sizeof h + h.payload;
      if (h.type != static_cast<uint8_t>(wire::Type::kReadResponse)) continue;
      in_order &= h.seq == next_seq++;
      if (expect != nullptr)
        intact &= std::memcmp(buf.data() + at - h.payload, expect, h.payload) == 0;
      ++answers;
    }
    buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(at));
  }
};

// A peer that asks for far more READ data than it reads back holds at most
// the link's high-water mark of this router's memory (plus a frame and what
// the socket holds); once it reads, every answer comes, in order, with its
// bytes (answers go from the MR's pages into the socket where it takes
// them, the rest through the link's buffer: Link::put_gathered).
TEST_F(LinkTest, ReadAnswersAPeerDoesNotTakeStayBoundedAndAllArriveLater) {
  Qp* q = nullptr;
  UniqueFd peer = connect_peer(q);
  for (uint64_t i = 0; i < kSize / 2; ++i) *blue.at(kBase + i) = static_cast<std::byte>(i * 7 + i / 4096);
  constexpr uint32_t kRequests = 4000;
  constexpr uint64_t kLen = kSize / 2;  // 32 KiB each: 125 MiB of answers in all
  std::vector<wire::Header> requests;
  for (uint32_t i = 0; i < kRequests; ++i) requests.push_back(read_request(*q, i, kLen));
  const auto* bytes = reinterpret_cast<const char*>(requests.data());
  size_t total = requests.size() * sizeof(wire::Header), sent = 0;
  auto sendable = [&] {
    ssize_t n;
    while (sent < total && (n = ::send(peer.get(), bytes + sent, total - sent, MSG_DONTWAIT | MSG_NOSIGNAL)) > 0)
      sent += static_cast<size_t>(n);
  };
  sendable();
  // Give the poller time to take all it will.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  sendable();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  uint64_t queued = routes.peer.bytes_sent.load();
  int socket_holds = 0;
  socklen_t len = sizeof socket_holds;
  ::getsockopt(peer.get(), SOL_SOCKET, SO_RCVBUF, &socket_holds, &len);
  EXPECT_LT(queued, Link::kTxHighWater + sizeof(wire::Header) + wire::kMaxChunk + 2u * static_cast<unsigned>(socket_holds) + (1u << 20))
      << "answers queued for a peer that reads none";
  EXPECT_TRUE(routes.peer.in_up.load()) << "the link stays up: backpressure, not a failure";

  AnswerReader reader;
  reader.expect = blue.at(kBase);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (reader.answers < kRequests && std::chrono::steady_clock::now() < deadline) {
    sendable();
    reader.read(peer.get());
    std::this_thread::yield();
  }
  EXPECT_EQ(sent, total);
  EXPECT_EQ(reader.answers, kRequests);
  EXPECT_TRUE(reader.in_order);
  EXPECT_TRUE(reader.intact) << "an answer's payload differs from the MR's bytes";
}

// The link drops in the middle of a SEND: the receive the message took
// completes flushed (with the rest of the QP's receives), never lost.
TEST_F(LinkTest, AReceiveHeldByAMessageCutOffByALostLinkFlushes) {
  Qp* q = nullptr;
  UniqueFd peer = connect_peer(q);
  blue.post_receive(0, 41, kBase, 4096, blue.mr->lkey());
  blue.post_receive(0, 42, kBase, 4096, blue.mr->lkey());
  wire::Header first = request(*q, IBV_WR_SEND, 0, 4000);
  first.payload = 1000;  // the first of the message's chunks, and then nothing
  std::vector<std::byte> frame(sizeof first + first.payload);
  std::memcpy(frame.data(), &first, sizeof first);
  ASSERT_EQ(::send(peer.get(), frame.data(), frame.size(), MSG_NOSIGNAL), static_cast<ssize_t>(frame.size()));
  peer.reset();  // the peer router is gone
  shm::Cqe c{};
  ASSERT_TRUE(blue.await_completion(c)) << "the held receive was lost";
  EXPECT_EQ(c.wr_id, 41u);
  EXPECT_EQ(c.status, IBV_WC_WR_FLUSH_ERR);
  ASSERT_TRUE(blue.await_completion(c));
  EXPECT_EQ(c.wr_id, 42u);
  EXPECT_EQ(c.status, IBV_WC_WR_FLUSH_ERR);
}

// A request with an opcode this router does not serve (a newer router's,
// during a rolling upgrade) is NAKed as an invalid request; the link stays
// up and the next request is served.
TEST_F(LinkTest, AnUnknownOpcodeFailsItsRequestNotTheLink) {
  Qp* q = nullptr;
  UniqueFd peer = connect_peer(q);
  wire::Header unknown = request(*q, IBV_WR_SEND, 0, 16);
  unknown.opcode = 77;
  unknown.payload = 16;
  std::vector<std::byte> frame(sizeof unknown + unknown.payload);
  std::memcpy(frame.data(), &unknown, sizeof unknown);
  ASSERT_EQ(::send(peer.get(), frame.data(), frame.size(), MSG_NOSIGNAL), static_cast<ssize_t>(frame.size()));
  wire::Header answer{};
  size_t got = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (got < sizeof answer && std::chrono::steady_clock::now() < deadline) {
    ssize_t n = ::recv(peer.get(), reinterpret_cast<char*>(&answer) + got, sizeof answer - got, MSG_DONTWAIT);
    if (n > 0) got += static_cast<size_t>(n);
  }
  ASSERT_EQ(got, sizeof answer) << "no answer";
  EXPECT_EQ(answer.type, static_cast<uint8_t>(wire::Type::kNak));
  EXPECT_EQ(answer.opcode, static_cast<uint8_t>(wire::NakReason::kStatus));
  EXPECT_EQ(answer.imm, static_cast<uint32_t>(IBV_WC_REM_INV_REQ_ERR));
  EXPECT_TRUE(routes.peer.in_up.load()) << "the link stays up";
}

void send_all(int fd, const void* p, size_t n) {
  ASSERT_EQ(::send(fd, p, n, MSG_NOSIGNAL), static_cast<ssize_t>(n));
}

// A large WRITE chunk goes from the socket into the MR as it comes, not
// through the link's buffer once all of it is in: its first half is in
// the MR before its second is sent; then the whole of it, answered.
TEST_F(LinkTest, ALargeWriteLandsInTheMrAsItsBytesCome) {
  Qp* q = nullptr;
  UniqueFd peer = connect_peer(q);
  constexpr uint32_t kLen = 24 * 1024, kFirst = 12 * 1024;
  std::vector<std::byte> data(kLen);
  for (uint32_t i = 0; i < kLen; ++i) data[i] = static_cast<std::byte>(i * 7 + 3);
  ASSERT_TRUE(start_write(*q, peer.get(), data, kFirst)) << "the first half waited for the rest";
  send_all(peer.get(), data.data() + kFirst, kLen - kFirst);
  wire::Header a = await_answer(peer.get());
  EXPECT_EQ(a.type, static_cast<uint8_t>(wire::Type::kAck));
  EXPECT_EQ(a.seq, 0u);
  EXPECT_EQ(std::memcmp(blue.at(kBase), data.data(), kLen), 0);
}

// Two large WRITEs back to back, the second's header cut in two by the
// socket: the read that ends the first chunk's placement takes the bytes
// after it too (its remainder and the next header, Link::fill_placement),
// and the half header it got there is completed before the second chunk
// is placed. Both land whole, each answered, in order.
TEST_F(LinkTest, BackToBackLargeWritesLandWhenTheReadThatEndsOneTakesPartOfTheNext) {
  Qp* q = nullptr;
  UniqueFd peer = connect_peer(q);
  constexpr uint32_t kLen = Link::kPlaceFrom, kFirst = 4 * 1024;
  std::vector<std::byte> one(kLen), two(kLen);
  for (uint32_t i = 0; i < kLen; ++i) {
    one[i] = static_cast<std::byte>(i * 5 + 1);
    two[i] = static_cast<std::byte>(i * 11 + 9);
  }
  ASSERT_TRUE(start_write(*q, peer.get(), one, kFirst));
  wire::Header second = request(*q, IBV_WR_RDMA_WRITE, 1, kLen);
  second.payload = kLen;
  second.remote_addr = kBase + kLen;
  std::vector<std::byte> rest(one.begin() + kFirst, one.end());
  const auto* header = reinterpret_cast<const std::byte*>(&second);
  rest.insert(rest.end(), header, header + sizeof second / 2);
  send_all(peer.get(), rest.data(), rest.size());
  wire::Header a = await_answer(peer.get());
  EXPECT_EQ(a.type, static_cast<uint8_t>(wire::Type::kAck));
  EXPECT_EQ(a.seq, 0u);
  EXPECT_EQ(std::memcmp(blue.at(kBase), one.data(), kLen), 0);
  send_all(peer.get(), header + sizeof second / 2, sizeof second - sizeof second / 2);
  send_all(peer.get(), two.data(), kLen);
  a = await_answer(peer.get());
  EXPECT_EQ(a.type, static_cast<uint8_t>(wire::Type::kAck));
  EXPECT_EQ(a.seq, 1u);
  EXPECT_EQ(std::memcmp(blue.at(kBase + kLen), two.data(), kLen), 0);
}

// The MR a chunk is being placed into is deregistered before the chunk is
// all in: nothing more lands there once the deregistration returned, the
// request is refused (remote access error) as any request to a gone MR,
// and the link serves the next request.
TEST_F(LinkTest, AnMrDeregisteredWhileAChunkLandsRefusesItAndKeepsTheLink) {
  Qp* q = nullptr;
  UniqueFd peer = connect_peer(q);
  std::vector<std::byte> data(kPlacedLen, std::byte{0x5a});
  ASSERT_TRUE(start_write(*q, peer.get(), data, kPlacedFirst));
  // What the requester sends when it comes back to the refused request (go-back-N): a zero-length WRITE.
  wire::Header again = request(*q, IBV_WR_RDMA_WRITE, 0, 0);
  blue.mr.reset();
  blue.read_only.reset();
  blue.segment.reset();  // the app's last holds on the pages
  wire::Header a = finish_write_unlanded(peer.get(), data, kPlacedFirst);
  EXPECT_EQ(a.type, static_cast<uint8_t>(wire::Type::kNak));
  EXPECT_EQ(a.opcode, static_cast<uint8_t>(wire::NakReason::kStatus));
  EXPECT_EQ(a.imm, static_cast<uint32_t>(IBV_WC_REM_ACCESS_ERR));
  send_all(peer.get(), &again, sizeof again);
  a = await_answer(peer.get());
  EXPECT_EQ(a.type, static_cast<uint8_t>(wire::Type::kAck)) << "a zero-length WRITE touches no memory";
  EXPECT_TRUE(routes.peer.in_up.load()) << "the link stays up";
}

// The responder QP is reset while a chunk lands: nothing more lands, and
// the requester hears that the QP is not there (it would wait for ever
// for an answer otherwise).
TEST_F(LinkTest, AQpResetWhileAChunkLandsAnswersNotReady) {
  Qp* q = nullptr;
  UniqueFd peer = connect_peer(q);
  std::vector<std::byte> data(kPlacedLen, std::byte{0x3c});
  ASSERT_TRUE(start_write(*q, peer.get(), data, kPlacedFirst));
  ibv_qp_attr reset{};
  reset.qp_state = IBV_QPS_RESET;
  ASSERT_TRUE(fabric.modify_qp(*q, reset, IBV_QP_STATE));
  wire::Header a = finish_write_unlanded(peer.get(), data, kPlacedFirst);
  EXPECT_EQ(a.type, static_cast<uint8_t>(wire::Type::kNak));
  EXPECT_EQ(a.opcode, static_cast<uint8_t>(wire::NakReason::kNotReady));
}

// A peer that sends the header of a large chunk and stalls does not keep
// the poller spinning: it sleeps until the rest comes (the chunk could not
// be placed: a SEND with no receive posted). Spinning, it would use the
// better part of a core; asleep, next to nothing.
TEST_F(LinkTest, AStalledLargeChunkLetsThePollerSleep) {
  Qp* q = nullptr;
  UniqueFd peer = connect_peer(q);
  wire::Header h = request(*q, IBV_WR_SEND, 0, 32 * 1024);
  h.payload = 32 * 1024;
  send_all(peer.get(), &h, sizeof h);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto cpu_ms = [] {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000.0 +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1000.0;
  };
  double before = cpu_ms();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_LT(cpu_ms() - before, 100.0) << "the poller spins on a frame it cannot take yet";
}

}  // namespace
}  // namespace ff::router::soft
