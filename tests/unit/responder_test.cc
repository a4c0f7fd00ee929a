// The soft fabric's verbs rules as pure functions over objects: the
// Responder (what a receiving QP does with WRITE, READ, atomics, SEND and
// datagrams) and the requester rules (local SGEs, retries), each error
// status the conformance suite checks, with no socket, no client process
// and no router process: a SoftFabric in this process, memory from a memfd,
// and the rules called on the fabric's poller thread (Engine::run_sync).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <set>
#include <string>

#include "router/fabric/soft/requester.h"
#include "router/fabric/soft/responder.h"
#include "router/fabric/soft/soft_fabric.h"
#include "shm/descriptors.h"
#include "shm/ring.h"
#include "soft_fabric_fixture.h"

namespace ff::router::soft {
namespace {

using namespace fixture;
using ResponderTest = SoftFabricTest;

TEST_F(ResponderTest, OnlyTheConnectedReadyQpOfTheSameTenantAnswers) {
  Qp& a = blue.make_qp(IBV_QPT_RC);
  Qp& b = blue.make_qp(IBV_QPT_RC);
  Qp& intruder = red.make_qp(IBV_QPT_RC);
  rules([&](Responder& r) { EXPECT_EQ(r.connected(from(a, b)), nullptr) << "b is in RESET"; });
  connect(a, b.qpn, kBlueIp, kAllRemote);
  connect(b, a.qpn, kBlueIp, kAllRemote);
  // No connection crosses tenants: RTR toward another tenant's QP is refused.
  ibv_qp_attr init{};
  init.qp_state = IBV_QPS_INIT;
  init.port_num = 1;
  ASSERT_TRUE(fabric.modify_qp(intruder, init, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS));
  ibv_qp_attr rtr{};
  rtr.qp_state = IBV_QPS_RTR;
  rtr.path_mtu = IBV_MTU_1024;
  rtr.dest_qp_num = b.qpn;
  rtr.ah_attr.port_num = 1;
  rtr.ah_attr.is_global = 1;
  rtr.ah_attr.grh.dgid = gid_of(kRedIp);  // at its own address: refused because b is blue's
  Status refused = fabric.modify_qp(intruder, rtr,
                                    IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                        IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
  EXPECT_EQ(refused.error().code, EINVAL);
  rules([&](Responder& r) {
    EXPECT_EQ(r.connected(from(a, b)), &b);
    EXPECT_EQ(r.connected(from(b, a)), &a);
    EXPECT_EQ(r.connected(from(intruder, b)), nullptr) << "another tenant, another source QP, not ready";
    Origin forged = from(a, b);
    forged.type = IBV_QPT_UC;
    EXPECT_EQ(r.connected(forged), nullptr) << "another QP type";
    forged = from(a, b);
    forged.tenant = &intruder.pd.owner.tenant;
    EXPECT_EQ(r.connected(forged), nullptr) << "the right QP numbers from another tenant";
    Peer elsewhere("elsewhere");
    forged = from(a, b);
    forged.via = &elsewhere;
    EXPECT_EQ(r.connected(forged), nullptr) << "b is connected on this router, not through a peer";
  });
}

TEST_F(ResponderTest, WriteAndReadNeedTheQpsAccessThenAValidKeyRangeAndRight) {
  Qp& a = blue.make_qp(IBV_QPT_RC);
  Qp& b = blue.make_qp(IBV_QPT_RC);
  Qp& closed = blue.make_qp(IBV_QPT_RC);
  connect(a, b.qpn, kBlueIp, 0);
  connect(b, a.qpn, kBlueIp, kAllRemote);
  connect(closed, a.qpn, kBlueIp, IBV_ACCESS_LOCAL_WRITE);
  Qp& foreign = red.make_qp(IBV_QPT_RC);
  (void)foreign;
  const uint32_t key = blue.mr->rkey(), ro = blue.read_only->rkey(), other = red.mr->rkey();
  rules([&](Responder& r) {
    const Mr* mr = nullptr;
    EXPECT_TRUE(r.check_write(b, key, kBase, 100, mr));
    EXPECT_NE(mr, nullptr);
    EXPECT_EQ(r.check_write(closed, key, kBase, 100, mr).status, IBV_WC_REM_INV_REQ_ERR);
    EXPECT_EQ(r.check_read(closed, key, kBase, 100, mr).status, IBV_WC_REM_INV_REQ_ERR);
    for (auto [k, addr, len] : {std::tuple{key ^ 0x100u, kBase, 100ul}, {key, kBase + kSize / 2 - 8, 100ul},
                                {key, kBase - 8, 16ul}, {ro, kBase + kSize / 2, 100ul}, {other, kBase, 100ul}}) {
      Verdict w = r.check_write(b, k, addr, len, mr);
      EXPECT_EQ(w.refusal, Refusal::kFailed);
      EXPECT_EQ(w.status, IBV_WC_REM_ACCESS_ERR) << "write key " << k << " at " << addr;
      EXPECT_EQ(r.check_read(b, k, addr, len, mr).status, IBV_WC_REM_ACCESS_ERR) << "read key " << k;
    }
    EXPECT_TRUE(r.check_write(b, key ^ 0x100u, kBase, 0, mr)) << "zero bytes touch no memory: no key checked";
    EXPECT_EQ(mr, nullptr);
  });
}

TEST_F(ResponderTest, AtomicsAreAlignedEnabledKeyedAndExecuted) {
  Qp& a = blue.make_qp(IBV_QPT_RC);
  Qp& b = blue.make_qp(IBV_QPT_RC);
  Qp& no_atomics = blue.make_qp(IBV_QPT_RC);
  connect(a, b.qpn, kBlueIp, 0);
  connect(b, a.qpn, kBlueIp, kAllRemote);
  connect(no_atomics, a.qpn, kBlueIp, IBV_ACCESS_REMOTE_READ);
  const uint32_t key = blue.mr->rkey();
  uint64_t word = 40;
  std::memcpy(blue.at(kBase + 64), &word, 8);
  rules([&](Responder& r) {
    uint64_t old = 0;
    EXPECT_EQ(r.atomic(b, IBV_WR_ATOMIC_FETCH_AND_ADD, key, kBase + 60, 2, 0, old).status, IBV_WC_REM_INV_REQ_ERR);
    EXPECT_EQ(r.atomic(no_atomics, IBV_WR_ATOMIC_FETCH_AND_ADD, key, kBase + 64, 2, 0, old).status,
              IBV_WC_REM_INV_REQ_ERR);
    EXPECT_EQ(r.atomic(b, IBV_WR_ATOMIC_FETCH_AND_ADD, key ^ 0x100u, kBase + 64, 2, 0, old).status,
              IBV_WC_REM_ACCESS_ERR);
    EXPECT_EQ(r.atomic(b, IBV_WR_ATOMIC_FETCH_AND_ADD, blue.read_only->rkey(), kBase + kSize / 2, 2, 0, old).status,
              IBV_WC_REM_ACCESS_ERR);
    ASSERT_TRUE(r.atomic(b, IBV_WR_ATOMIC_FETCH_AND_ADD, key, kBase + 64, 2, 0, old));
    EXPECT_EQ(old, 40u);
    ASSERT_TRUE(r.atomic(b, IBV_WR_ATOMIC_CMP_AND_SWP, key, kBase + 64, 42, 7, old));
    EXPECT_EQ(old, 42u);
    ASSERT_TRUE(r.atomic(b, IBV_WR_ATOMIC_CMP_AND_SWP, key, kBase + 64, 42, 9, old));
    EXPECT_EQ(old, 7u) << "compare failed: nothing swapped";
  });
  std::memcpy(&word, blue.at(kBase + 64), 8);
  EXPECT_EQ(word, 7u);
}

TEST_F(ResponderTest, ReceivesRnrWhenNoneAndFailBothSidesWhenTooShortOrBad) {
  Qp& a = blue.make_qp(IBV_QPT_RC);
  Qp& b = blue.make_qp(IBV_QPT_RC);
  Qp& c = blue.make_qp(IBV_QPT_RC);
  connect(a, b.qpn, kBlueIp, 0);
  connect(b, a.qpn, kBlueIp, kAllRemote);
  connect(c, a.qpn, kBlueIp, kAllRemote);
  Arrival arrival{a.qpn, IBV_WR_SEND, 0, false};
  rules([&](Responder& r) {
    Sges dst;
    Verdict v = r.take_receive(b, 100, arrival, dst);
    EXPECT_EQ(v.refusal, Refusal::kRnr);
    EXPECT_EQ(v.rnr_timer, 12) << "the responder's min_rnr_timer";
  });
  blue.post_receive(1, 11, kBase, 64, blue.mr->lkey());   // b: too short for 100 bytes
  blue.post_receive(2, 12, kBase, 64, 0xbad00);           // c: no such lkey
  rules([&](Responder& r) {
    Sges dst;
    Verdict v = r.take_receive(b, 100, arrival, dst);
    EXPECT_EQ(v.status, IBV_WC_REM_INV_REQ_ERR) << "what the requester sees";
    EXPECT_EQ(b.state, IBV_QPS_ERR);
    v = r.take_receive(c, 10, arrival, dst);
    EXPECT_EQ(v.status, IBV_WC_REM_OP_ERR);
    EXPECT_EQ(c.state, IBV_QPS_ERR);
  });
  shm::Cqe first{}, second{};
  ASSERT_TRUE(blue.completions.sc_try_pop(first));
  ASSERT_TRUE(blue.completions.sc_try_pop(second));
  EXPECT_EQ(first.wr_id, 11u);
  EXPECT_EQ(first.status, IBV_WC_LOC_LEN_ERR) << "the responder's own completion";
  EXPECT_EQ(second.wr_id, 12u);
  EXPECT_EQ(second.status, IBV_WC_LOC_PROT_ERR);
}

// A receive a message took stays the QP's until the message completes: a
// message that never finished leaves it for the next one, and if the QP
// fails first, it completes flushed, ahead of the receives still queued.
TEST_F(ResponderTest, AReceiveAMessageTookIsNeverLost) {
  Qp& a = blue.make_qp(IBV_QPT_RC);
  Qp& b = blue.make_qp(IBV_QPT_RC);
  connect(a, b.qpn, kBlueIp, 0);
  connect(b, a.qpn, kBlueIp, kAllRemote);
  blue.post_receive(1, 31, kBase, 64, blue.mr->lkey());
  blue.post_receive(1, 32, kBase, 64, blue.mr->lkey());
  Arrival arrival{a.qpn, IBV_WR_SEND, 0, false};
  rules([&](Responder& r) {
    Sges dst;
    ASSERT_TRUE(r.take_receive(b, 50, arrival, dst));
    ASSERT_TRUE(r.take_receive(b, 40, arrival, dst)) << "the message before never finished";
    EXPECT_EQ(b.held_recv->wr_id, 31u) << "its receive is taken again, not the next one";
  });
  ibv_qp_attr err{};
  err.qp_state = IBV_QPS_ERR;
  ASSERT_TRUE(fabric.modify_qp(b, err, IBV_QP_STATE));
  shm::Cqe c{};
  ASSERT_TRUE(blue.await_completion(c));
  EXPECT_EQ(c.wr_id, 31u);
  EXPECT_EQ(c.status, IBV_WC_WR_FLUSH_ERR);
  ASSERT_TRUE(blue.await_completion(c));
  EXPECT_EQ(c.wr_id, 32u);
  EXPECT_EQ(c.status, IBV_WC_WR_FLUSH_ERR);
}

TEST_F(ResponderTest, ARequesterRetriesWhatItMayThenFails) {
  Qp& a = blue.make_qp(IBV_QPT_RC);
  Qp& forever = blue.make_qp(IBV_QPT_RC);
  connect(a, 0x999, kBlueIp, 0, /*retries=*/1);
  connect(forever, 0x999, kBlueIp, 0, /*retries=*/7);
  rules([&](Responder&) {
    Verdict rnr{IBV_WC_SUCCESS, Refusal::kRnr, 1};
    EXPECT_EQ(retry_or_fail(a, rnr, 0), IBV_WC_SUCCESS) << "one RNR retry";
    EXPECT_GT(a.wait_until_ns, 0u);
    EXPECT_EQ(retry_or_fail(a, rnr, 0), IBV_WC_RNR_RETRY_EXC_ERR);
    for (int i = 0; i < 100; ++i) EXPECT_EQ(retry_or_fail(forever, rnr, 0), IBV_WC_SUCCESS) << "rnr_retry 7: forever";
    EXPECT_EQ(retry_or_fail(a, Verdict::not_ready(), 0), IBV_WC_SUCCESS) << "one transport retry";
    EXPECT_EQ(retry_or_fail(a, Verdict::not_ready(), 0), IBV_WC_RETRY_EXC_ERR);
    forever.peer_gone = true;
    EXPECT_EQ(retry_or_fail(forever, Verdict::not_ready(), 0), IBV_WC_RETRY_EXC_ERR) << "the peer was destroyed";
    EXPECT_EQ(retry_or_fail(a, Verdict::failed(IBV_WC_REM_ACCESS_ERR), 0), IBV_WC_REM_ACCESS_ERR);
  });
}

TEST_F(ResponderTest, TheLocalSideOfARequestIsCheckedFirst) {
  Qp& rc = blue.make_qp(IBV_QPT_RC);
  Qp& uc = blue.make_qp(IBV_QPT_UC);
  Qp& ud = blue.make_qp(IBV_QPT_UD);
  const uint32_t lkey = blue.mr->lkey(), ro = blue.read_only->lkey();
  auto wqe = [](uint32_t op, std::initializer_list<shm::WireSge> sges) {
    shm::SendWqe w{};
    w.opcode = static_cast<uint8_t>(op);
    for (const auto& s : sges) w.payload.sge[w.num_sge++] = s;
    return w;
  };
  rules([&](Responder&) {
    const Engine& e = fabric.engine();
    Sges s;
    EXPECT_EQ(resolve_request(e, rc, wqe(IBV_WR_SEND, {{kBase, 64, lkey}}), s), IBV_WC_SUCCESS);
    EXPECT_EQ(s.total, 64u);
    EXPECT_EQ(resolve_request(e, rc, wqe(IBV_WR_SEND, {{kBase, 64, lkey ^ 0x100u}}), s), IBV_WC_LOC_PROT_ERR);
    EXPECT_EQ(resolve_request(e, rc, wqe(IBV_WR_SEND, {{kBase + kSize / 2 - 8, 64, lkey}}), s), IBV_WC_LOC_PROT_ERR)
        << "SGE outside its MR";
    EXPECT_EQ(resolve_request(e, rc, wqe(IBV_WR_SEND, {{kBase, 64, red.mr->lkey()}}), s), IBV_WC_LOC_PROT_ERR)
        << "another PD's MR";
    EXPECT_EQ(resolve_request(e, rc, wqe(IBV_WR_RDMA_READ, {{kBase + kSize / 2, 64, ro}}), s), IBV_WC_LOC_PROT_ERR)
        << "a READ lands in memory without LOCAL_WRITE";
    EXPECT_EQ(resolve_request(e, rc, wqe(IBV_WR_ATOMIC_FETCH_AND_ADD, {{kBase, 16, lkey}}), s), IBV_WC_LOC_LEN_ERR);
    EXPECT_EQ(resolve_request(e, rc, wqe(IBV_WR_ATOMIC_FETCH_AND_ADD, {{kBase, 4, lkey}, {kBase + 8, 4, lkey}}), s),
              IBV_WC_LOC_LEN_ERR);
    EXPECT_EQ(resolve_request(e, uc, wqe(IBV_WR_RDMA_READ, {{kBase, 64, lkey}}), s), IBV_WC_LOC_QP_OP_ERR);
    EXPECT_EQ(resolve_request(e, ud, wqe(IBV_WR_SEND, {{kBase, 4096, lkey}}), s), IBV_WC_SUCCESS);
    EXPECT_EQ(resolve_request(e, ud, wqe(IBV_WR_SEND, {{kBase, 4097, lkey}}), s), IBV_WC_LOC_LEN_ERR)
        << "a datagram is one packet of the port MTU";
    shm::SendWqe inline_read = wqe(IBV_WR_RDMA_READ, {});
    inline_read.send_flags = IBV_SEND_INLINE;
    EXPECT_EQ(resolve_request(e, rc, inline_read, s), IBV_WC_LOC_QP_OP_ERR);
  });
}

TEST_F(ResponderTest, DatagramsReachOnlyAMatchingQpAndLandBehindAGrh) {
  Qp& sender = blue.make_qp(IBV_QPT_UD);
  Qp& receiver = blue.make_qp(IBV_QPT_UD);
  Qp& other_tenant = red.make_qp(IBV_QPT_UD);
  connect(sender, 0, 0, 0);
  connect(receiver, 0, 0, 0);
  connect(other_tenant, 0, 0, 0);
  blue.post_receive(1, 21, kBase + 1024, 40 + 16, blue.mr->lkey());
  red.post_receive(0, 22, kBase, 40 + 16, red.mr->lkey());
  std::byte payload[16];
  std::memset(payload, 0x5a, sizeof payload);
  Arrival arrival{sender.qpn, IBV_WR_SEND, 0, false};
  DatagramHeader g{kBlueIp, 0, 0, 64};
  rules([&](Responder& r) {
    auto deliver = [&](uint32_t qpn, uint32_t qkey, uint32_t ip) {
      Origin o{sender.qpn, qpn, IBV_QPT_UD, nullptr, &sender.pd.owner.tenant};
      Pieces from(payload, sizeof payload);
      return r.deliver_datagram(o, qkey, ip, g, from, sizeof payload, arrival);
    };
    EXPECT_FALSE(deliver(receiver.qpn, 0x4321, kBlueIp)) << "wrong Q_Key";
    EXPECT_FALSE(deliver(other_tenant.qpn, 0x1234, kRedIp)) << "another tenant";
    EXPECT_FALSE(deliver(receiver.qpn, 0x1234, kRedIp)) << "not at the address named";
    EXPECT_FALSE(deliver(0xabcdef, 0x1234, kBlueIp)) << "no such QP";
    EXPECT_TRUE(deliver(receiver.qpn, 0x1234, kBlueIp));
    EXPECT_FALSE(deliver(receiver.qpn, 0x1234, kBlueIp)) << "no receive left: dropped";
  });
  shm::Cqe c{};
  ASSERT_TRUE(blue.completions.sc_try_pop(c));
  EXPECT_EQ(c.wr_id, 21u);
  EXPECT_EQ(c.status, IBV_WC_SUCCESS);
  EXPECT_EQ(c.byte_len, 40u + 16u);
  EXPECT_NE(c.wc_flags & IBV_WC_GRH, 0u);
  EXPECT_EQ(c.src_qp, sender.qpn);
  EXPECT_EQ(std::memcmp(blue.at(kBase + 1024 + 40), payload, sizeof payload), 0);
  uint8_t src[4];
  std::memcpy(src, blue.at(kBase + 1024 + 32), 4);  // the IPv4 header's source address
  EXPECT_EQ(src[0], 10);
  EXPECT_EQ(src[3], 1);
  EXPECT_FALSE(red.completions.sc_try_pop(c)) << "nothing reached the other tenant";
}

// An app that posts its last datagrams and tears down at once has them
// sent, whether its QP goes first or its address handle (mckey: the AH,
// then the QP): the teardown finds them still in the ring here, since the
// poller is held while both happen.
class DatagramsBeforeTeardown : public SoftFabricTest, public ::testing::WithParamInterface<bool> {};

TEST_P(DatagramsBeforeTeardown, StillGo) {
  const bool ah_first = GetParam();
  Qp& sender = blue.make_qp(IBV_QPT_UD);
  Qp& receiver = blue.make_qp(IBV_QPT_UD);
  connect(sender, 0, 0, 0);
  connect(receiver, 0, 0, 0);
  ibv_ah_attr a{};
  a.port_num = 1;
  a.is_global = 1;
  a.grh.dgid = gid_of(kBlueIp);
  auto ah = take(fabric.create_ah(*blue.pd, a));
  constexpr uint64_t kDatagrams = 4;
  for (uint64_t i = 0; i < kDatagrams; ++i) blue.post_receive(1, 30 + i, kBase + 1024 + 128 * i, 40 + 64, blue.mr->lkey());
  std::memset(blue.at(kBase), 0x6b, 64);
  auto& engine = fabric.engine();
  engine.run_sync([&] {
    for (uint64_t i = 0; i < kDatagrams; ++i) {
      shm::SendWqe w{};
      w.wr_id = i;
      w.opcode = IBV_WR_SEND;
      w.num_sge = 1;
      w.payload.sge[0] = {kBase, 64, blue.mr->lkey()};
      w.ah = ah->id();
      w.remote_qpn = receiver.qpn;
      w.remote_qkey = 0x1234;
      ASSERT_TRUE(blue.sends[0].sp_try_push(w));
    }
    if (ah_first) engine.unlink_ah(static_cast<core::Ah&>(*ah));
    engine.unlink_qp(sender);
  });
  ah.reset();
  blue.qps[0].reset();
  for (uint64_t i = 0; i < kDatagrams; ++i) {
    shm::Cqe c{};
    ASSERT_TRUE(blue.await_completion(c)) << "datagram " << i << " was lost";
    EXPECT_EQ(c.wr_id, 30u + i);
    EXPECT_EQ(c.status, IBV_WC_SUCCESS);
  }
}
INSTANTIATE_TEST_SUITE_P(QpOrAhFirst, DatagramsBeforeTeardown, ::testing::Bool());

// A device translates whole pages: an iova with another offset in its page
// than the address is EINVAL (as on rxe), never a misaligned router address.
TEST_F(ResponderTest, ARegistrationKeepsTheAddressesOffsetInItsPage) {
  std::shared_ptr<FabricSegment> segs[] = {blue.segment};
  auto shifted = fabric.reg_mr(*blue.pd, segs, kBase + 8, 4096, 0x7000000 + 4, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_FALSE(shifted);
  EXPECT_EQ(shifted.error().code, EINVAL);
  auto kept = fabric.reg_mr(*blue.pd, segs, kBase + 8, 4096, 0x7000000 + 8, IBV_ACCESS_LOCAL_WRITE);
  EXPECT_TRUE(kept) << kept.error().message;
}

double cpu_seconds() {
  timespec t{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

// A requester with rnr_retry 7 retries for ever toward a responder that
// posts no receive: the router's poller must not spin for it (it once kept
// a core busy for as long as the QP waited). The receive, once posted, ends
// the wait at once.
TEST_F(ResponderTest, AnEndlessRnrWaitCostsNoCoreAndEndsWithTheReceive) {
  min_rnr_timer = 1;  // 10 us
  Qp& a = blue.make_qp(IBV_QPT_RC);
  Qp& b = blue.make_qp(IBV_QPT_RC);
  connect(a, b.qpn, kBlueIp, 0, /*retries=*/7);
  connect(b, a.qpn, kBlueIp, 0, 7);
  blue.post_send(0, 41, kBase, 64);
  ::usleep(100000);  // into the RNR loop
  double before = cpu_seconds();
  ::usleep(1000000);
  double used = cpu_seconds() - before;
  std::printf("router CPU during 1 s of an endless RNR wait: %.3f s\n", used);
  EXPECT_LT(used, 0.25) << "the poller spun for an RNR wait";
  shm::Cqe c{};
  EXPECT_FALSE(blue.completions.sc_try_pop(c)) << "the SEND must still wait";
  blue.post_receive(1, 42, kBase + 4096, 64, blue.mr->lkey());
  std::set<uint64_t> done;
  for (int i = 0; i < 2 && blue.await_completion(c); ++i) {
    EXPECT_EQ(c.status, IBV_WC_SUCCESS);
    done.insert(c.wr_id);
  }
  EXPECT_EQ(done, (std::set<uint64_t>{41, 42}));
}

// A long message moves in pieces, one per poller pass: a small WRITE posted
// right behind a 64 MiB one on another QP completes first (a 1 GiB WRITE
// once held the poller, and every other tenant, for one whole memcpy).
TEST_F(ResponderTest, ALongMessageDoesNotHoldTheOthersBack) {
  constexpr uint64_t kBig = 64u << 20, kBigBase = 0x40000000;
  shm::Mapping big = shm::Mapping::create("responder-big", shm::SegmentKind::kArena, 2 * kBig);
  std::shared_ptr<FabricSegment> seg = take(fabric.map_segment(UniqueFd(::dup(big.fd())), kBigBase, 2 * kBig, 0));
  std::shared_ptr<FabricSegment> segs[] = {seg};
  auto big_mr = take(fabric.reg_mr(*blue.pd, segs, kBigBase, 2 * kBig, kBigBase, IBV_ACCESS_LOCAL_WRITE | kAllRemote));
  Qp& a = blue.make_qp(IBV_QPT_RC);
  Qp& b = blue.make_qp(IBV_QPT_RC);
  Qp& c = blue.make_qp(IBV_QPT_RC);
  Qp& d = blue.make_qp(IBV_QPT_RC);
  connect(a, b.qpn, kBlueIp, kAllRemote);
  connect(b, a.qpn, kBlueIp, kAllRemote);
  connect(c, d.qpn, kBlueIp, kAllRemote);
  connect(d, c.qpn, kBlueIp, kAllRemote);
  std::memset(big.base(), 0x6b, kBig);
  auto write = [&](size_t i, uint64_t wr_id, uint64_t from, uint32_t len, uint32_t lkey, uint64_t to, uint32_t rkey) {
    shm::SendWqe w{};
    w.wr_id = wr_id;
    w.opcode = IBV_WR_RDMA_WRITE;
    w.send_flags = IBV_SEND_SIGNALED;
    w.num_sge = 1;
    w.payload.sge[0] = {from, len, lkey};
    w.remote_addr = to;
    w.rkey = rkey;
    ASSERT_TRUE(blue.sends[i].sp_try_push(w));
    blue.wake();
  };
  write(0, 1, kBigBase, static_cast<uint32_t>(kBig), big_mr->lkey(), kBigBase + kBig, big_mr->rkey());
  write(2, 2, kBase, 64, blue.mr->lkey(), kBase + 4096, blue.mr->rkey());
  shm::Cqe first{}, second{};
  ASSERT_TRUE(blue.await_completion(first));
  ASSERT_TRUE(blue.await_completion(second));
  EXPECT_EQ(first.wr_id, 2u) << "the small WRITE waited for the whole large one";
  EXPECT_EQ(second.wr_id, 1u);
  EXPECT_EQ(second.status, IBV_WC_SUCCESS);
  EXPECT_EQ(std::memcmp(big.base(), big.base() + kBig, kBig), 0) << "the large WRITE's bytes";
}

TEST_F(ResponderTest, AQpInErrorFlushesWhatItHolds) {
  Qp& a = blue.make_qp(IBV_QPT_RC);
  connect(a, 0x999, kBlueIp, 0);
  blue.post_receive(0, 31, kBase, 64, blue.mr->lkey());
  blue.post_receive(0, 32, kBase, 64, blue.mr->lkey());
  fabric.engine().run_sync([&] { fabric.engine().set_error(a); });
  shm::Cqe c{};
  for (uint64_t want : {31u, 32u}) {
    ASSERT_TRUE(blue.await_completion(c));
    EXPECT_EQ(c.wr_id, want);
    EXPECT_EQ(c.status, IBV_WC_WR_FLUSH_ERR);
    EXPECT_EQ(c.opcode, IBV_WC_RECV);
  }
}

}  // namespace
}  // namespace ff::router::soft
