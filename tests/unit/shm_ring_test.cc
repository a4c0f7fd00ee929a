#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "shm/descriptors.h"
#include "shm/doorbell.h"
#include "shm/ring.h"
#include "shm/segment.h"

namespace ff::shm {
namespace {

struct Desc {
  uint64_t seq;
  uint64_t payload[7];
};

// A fresh ring of `capacity` descriptors T in a segment of its own.
template <typename T>
struct TestRing {
  explicit TestRing(uint32_t capacity)
      : cap(capacity), seg(Mapping::create("test-ring", SegmentKind::kRing, sizeof(SegmentHeader) + ring_bytes<T>(capacity))) {
    init_ring<T>(at, cap);
  }
  uint32_t cap;
  Mapping seg;
  std::byte* at = seg.base() + sizeof(SegmentHeader);
  RingControl* ctl() { return reinterpret_cast<RingControl*>(at); }
  T* slot(uint64_t index) { return reinterpret_cast<T*>(at + sizeof(RingControl)) + (index % cap); }
  RingProducer<T> producer() { return RingProducer<T>(at, cap); }
  RingConsumer<T> consumer() { return RingConsumer<T>(at, cap); }
};

struct RingFixture : ::testing::Test {
  static constexpr uint32_t kCap = 8;
  TestRing<Desc> ring{kCap};
  std::byte* at = ring.at;
  RingControl* ctl() { return ring.ctl(); }
};

// Work requests built in place are the consumer's only once published, all
// at once; the consumer copies the bytes a descriptor declares (a slot's
// stale rest never reaches the copy) and a hostile size is bounded by the slot.
TEST(SizedRing, InPlacePostsPublishTogetherAndCopiesOnlyTheUsedBytes) {
  TestRing<SendWqe> ring(4);
  RingProducer<SendWqe> p = ring.producer();
  RingConsumer<SendWqe> c = ring.consumer();
  for (uint64_t i = 0; i < 2; ++i) {
    SendWqe* slot = p.sp_claim();
    ASSERT_NE(slot, nullptr);
    std::memset(static_cast<void*>(slot), 0xee, sizeof(SendWqe));  // a former descriptor's bytes
    std::memset(static_cast<void*>(slot), 0, SendWqe::kHeaderBytes);
    slot->wr_id = i;
    slot->num_sge = 1;
    slot->payload.sge[0] = {0x1000 * i, 64, 7};
    p.sp_commit();
  }
  EXPECT_EQ(c.size_guess(), 0u) << "nothing is the consumer's before the publish";
  p.sp_publish();
  ASSERT_EQ(c.size_guess(), 2u);
  SendWqe out;
  std::memset(static_cast<void*>(&out), 0x11, sizeof out);
  ASSERT_TRUE(c.sc_peek(1, out));
  EXPECT_EQ(out.wr_id, 1u);
  EXPECT_EQ(out.payload.sge[0].addr, 0x1000u);
  EXPECT_EQ(out.wire_bytes(), SendWqe::kHeaderBytes + sizeof(WireSge));
  // The common size is copied whole; past it the copy keeps its own bytes.
  const auto* raw = reinterpret_cast<const uint8_t*>(&out);
  EXPECT_EQ(raw[SendWqe::kCommonBytes], 0x11);
  EXPECT_EQ(raw[sizeof out - 1], 0x11);
  // A size the header cannot have is bounded by the slot.
  SendWqe hostile{};
  hostile.num_sge = 0xff;
  EXPECT_EQ(hostile.wire_bytes(), sizeof(SendWqe));
  hostile.send_flags = IBV_SEND_INLINE;
  hostile.inline_len = 0xffffffff;
  EXPECT_EQ(hostile.wire_bytes(), sizeof(SendWqe));
}

// A lone post of a small work request also travels in the producer
// index's line (SendWqe::Lone): the consumer takes it from there and need
// not load the slot; a list, or a descriptor the short form cannot hold,
// is read from its slots.
struct LoneRing : TestRing<SendWqe> {
  LoneRing() : TestRing<SendWqe>(4) {}
  static SendWqe write(uint64_t id) {
    SendWqe w{};
    w.wr_id = id;
    w.opcode = IBV_WR_RDMA_WRITE;
    w.send_flags = IBV_SEND_INLINE | IBV_SEND_SIGNALED;
    w.inline_len = 2;
    w.payload.inline_data[0] = static_cast<uint8_t>(id);
    w.payload.inline_data[1] = 0x5a;
    w.remote_addr = 0x1000 + id;
    w.rkey = 77;
    return w;
  }
};

TEST(LoneCopiedRing, ALonePostIsReadFromTheProducerIndexLineAndAListFromItsSlots) {
  LoneRing r;
  RingProducer<SendWqe> p = r.producer();
  RingConsumer<SendWqe> c = r.consumer();
  ASSERT_TRUE(p.sp_try_push(LoneRing::write(1)));
  EXPECT_EQ(r.ctl()->lone_index.load(), 1u);
  std::memset(static_cast<void*>(r.slot(0)), 0xee, sizeof(SendWqe));  // the slot is not what is read
  SendWqe out;
  ASSERT_TRUE(c.sc_peek(0, out));
  EXPECT_EQ(out.wr_id, 1u);
  EXPECT_EQ(out.opcode, IBV_WR_RDMA_WRITE);
  EXPECT_EQ(out.send_flags, static_cast<uint32_t>(IBV_SEND_INLINE | IBV_SEND_SIGNALED));
  EXPECT_EQ(out.inline_len, 2u);
  EXPECT_EQ(out.payload.inline_data[0], 1);
  EXPECT_EQ(out.payload.inline_data[1], 0x5a);
  EXPECT_EQ(out.remote_addr, 0x1001u);
  EXPECT_EQ(out.rkey, 77u);
  EXPECT_EQ(out.remote_qpn, 0u);
  ASSERT_TRUE(c.sc_try_pop(out));
  EXPECT_EQ(out.wr_id, 1u);
  // A list of two: its slots (the line keeps the copy of index 0).
  std::array<SendWqe, 2> list{LoneRing::write(2), LoneRing::write(3)};
  ASSERT_TRUE(p.sp_push_bulk(list));
  EXPECT_EQ(r.ctl()->lone_index.load(), 1u);
  for (uint64_t id : {2u, 3u}) {
    ASSERT_TRUE(c.sc_try_pop(out));
    EXPECT_EQ(out.wr_id, id);
    EXPECT_EQ(out.payload.inline_data[0], id);
  }
  // A datagram (its address handle has no room in the short form): its slot.
  SendWqe ud = LoneRing::write(4);
  ud.opcode = IBV_WR_SEND;
  ud.ah = 9;
  ud.remote_qpn = 0x99;
  ASSERT_TRUE(p.sp_try_push(ud));
  EXPECT_EQ(r.ctl()->lone_index.load(), 1u);
  ASSERT_TRUE(c.sc_try_pop(out));
  EXPECT_EQ(out.ah, 9u);
  EXPECT_EQ(out.remote_qpn, 0x99u);
  // Built in place, published alone: the copy again.
  SendWqe* at = p.sp_claim();
  ASSERT_NE(at, nullptr);
  *at = LoneRing::write(5);
  p.sp_commit();
  p.sp_publish();
  EXPECT_EQ(r.ctl()->lone_index.load(), 5u);
  ASSERT_TRUE(c.sc_try_pop(out));
  EXPECT_EQ(out.wr_id, 5u);
  EXPECT_FALSE(c.corrupt());
}

// The copy is taken only while its index is the one it was written for;
// a copy the producer is rewriting (its index 0 meanwhile) leaves the slot
// to be read. Whatever bytes the app put there, the descriptor made from
// them says no more than the short form holds.
TEST(LoneCopiedRing, ACopyBeingRewrittenIsNotTakenAndAHostileOneIsBounded) {
  LoneRing r;
  RingProducer<SendWqe> p = r.producer();
  RingConsumer<SendWqe> c = r.consumer();
  ASSERT_TRUE(p.sp_try_push(LoneRing::write(1)));
  r.ctl()->lone_index.store(0);  // as if the next post had begun rewriting it
  r.slot(0)->wr_id = 41;         // (told apart from the copy)
  SendWqe out;
  ASSERT_TRUE(c.sc_try_pop(out));
  EXPECT_EQ(out.wr_id, 41u);
  ASSERT_TRUE(p.sp_try_push(LoneRing::write(2)));
  SendWqe::Lone hostile{};
  hostile.wr_id = 2;
  hostile.opcode = IBV_WR_SEND;
  hostile.send_flags = IBV_SEND_INLINE;
  hostile.inline_len = 200;
  hostile.num_sge = 9;
  std::memcpy(r.ctl()->lone, &hostile, sizeof hostile);
  std::memset(static_cast<void*>(&out), 0x11, sizeof out);
  ASSERT_TRUE(c.sc_try_pop(out));
  EXPECT_EQ(out.wr_id, 2u);
  EXPECT_LE(out.inline_len, sizeof(SendWqe::Lone::body));
  EXPECT_LE(out.num_sge, 1u);
  EXPECT_LE(out.wire_bytes(), SendWqe::kHeaderBytes + sizeof(SendWqe::Lone::body));
}

// Two threads: lone posts and lists in a random mix, each descriptor's
// bytes derived from its sequence number and checked on the other side
// (the seqlock under a producer that rewrites the copy while it is read).
TEST(LoneCopiedRing, LonePostsAndListsArriveWholeAndInOrderAcrossThreads) {
  LoneRing r;
  constexpr uint64_t kTotal = 200000;
  std::thread producer([&] {
    RingProducer<SendWqe> p = r.producer();
    uint64_t next = 0, rng = 12345;
    while (next < kTotal) {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      size_t n = std::min<uint64_t>((rng >> 60) % 3 + 1, kTotal - next);  // 1 to 3
      std::array<SendWqe, 3> list;
      for (size_t i = 0; i < n; ++i) list[i] = LoneRing::write(next + i);
      while (!p.sp_push_bulk(std::span<const SendWqe>(list.data(), n))) std::this_thread::yield();
      next += n;
    }
  });
  RingConsumer<SendWqe> c = r.consumer();
  SendWqe out;
  for (uint64_t want = 0; want < kTotal;) {
    if (!c.sc_try_pop(out)) {
      ASSERT_FALSE(c.corrupt());
      continue;
    }
    ASSERT_EQ(out.wr_id, want);
    ASSERT_EQ(out.remote_addr, 0x1000 + want);
    ASSERT_EQ(out.payload.inline_data[0], static_cast<uint8_t>(want));
    ASSERT_EQ(out.payload.inline_data[1], 0x5a);
    ASSERT_EQ(out.inline_len, 2u);
    ++want;
  }
  producer.join();
}

TEST_F(RingFixture, FifoOrderAcrossWrap) {
  RingProducer<Desc> p(at, kCap);
  RingConsumer<Desc> c(at, kCap);
  uint64_t next_push = 0, next_pop = 0;
  for (int round = 0; round < 100; ++round) {
    for (int i = 0; i < 5; ++i) ASSERT_TRUE(p.sp_try_push(Desc{next_push++, {}}));
    Desc d{};
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(c.sc_try_pop(d));
      EXPECT_EQ(d.seq, next_pop++);
    }
    EXPECT_FALSE(c.sc_try_pop(d));
  }
}

TEST_F(RingFixture, FullRingRejectsPushAndBulkIsAllOrNothing) {
  RingProducer<Desc> p(at, kCap);
  RingConsumer<Desc> c(at, kCap);
  std::array<Desc, 6> six{};
  ASSERT_TRUE(p.sp_push_bulk(six));
  EXPECT_FALSE(p.sp_push_bulk(std::span<const Desc>(six.data(), 3)));  // only 2 free
  EXPECT_EQ(p.sp_push_burst(std::span<const Desc>(six.data(), 3)), 2u);
  EXPECT_FALSE(p.sp_try_push(Desc{}));
  std::array<Desc, 16> out{};
  EXPECT_FALSE(c.sc_pop_bulk(out));
  EXPECT_EQ(c.sc_pop_burst(out), 8u);
  EXPECT_TRUE(p.sp_try_push(Desc{}));
}

TEST_F(RingFixture, ProducerIndexPastCapacityMarksCorrupt) {
  RingConsumer<Desc> c(at, kCap);
  ctl()->producer_index.store(kCap + 1);  // a hostile producer
  Desc d{};
  EXPECT_FALSE(c.sc_try_pop(d));
  EXPECT_TRUE(c.corrupt());
  ctl()->producer_index.store(1);  // healing the index does not un-corrupt the ring
  EXPECT_FALSE(c.sc_try_pop(d));
}

TEST_F(RingFixture, ResetToProducerRecoversACorruptRing) {
  RingProducer<Desc> p(at, kCap);
  RingConsumer<Desc> c(at, kCap);
  ctl()->producer_index.store(kCap * 3);
  Desc d{};
  EXPECT_FALSE(c.sc_try_pop(d));
  ASSERT_TRUE(c.corrupt());
  c.sc_reset_to_producer();
  EXPECT_FALSE(c.corrupt());
  EXPECT_FALSE(c.sc_try_pop(d));  // nothing queued after the new start
  ctl()->producer_index.store(kCap * 3 + 1);
  EXPECT_TRUE(c.sc_try_pop(d));
}

TEST_F(RingFixture, ProducerIndexRunningBackwardsMarksCorrupt) {
  RingProducer<Desc> p(at, kCap);
  RingConsumer<Desc> c(at, kCap);
  ASSERT_TRUE(p.sp_try_push(Desc{}));
  Desc d{};
  ASSERT_TRUE(c.sc_try_pop(d));
  ctl()->producer_index.store(0);
  EXPECT_FALSE(c.sc_try_pop(d));
  EXPECT_TRUE(c.corrupt());
}

TEST_F(RingFixture, HostileConsumerIndexMarksProducerCorrupt) {
  RingProducer<Desc> p(at, kCap);
  for (uint32_t i = 0; i < kCap; ++i) ASSERT_TRUE(p.sp_try_push(Desc{}));
  ctl()->consumer_index.store(1000);  // ahead of anything produced
  EXPECT_FALSE(p.sp_try_push(Desc{}));
  EXPECT_TRUE(p.corrupt());
}

// ibv_resize_cq's move: what the consumer has not taken goes to the new
// ring in order, across the old ring's wrap; nothing moves when it does not
// fit or the consumer's index lies.
TEST_F(RingFixture, UnconsumedEntriesMoveToAnotherRingInOrder) {
  RingProducer<Desc> p(at, kCap);
  RingConsumer<Desc> c(at, kCap);
  Desc d{};
  for (uint64_t i = 0; i < 6; ++i) ASSERT_TRUE(p.sp_try_push(Desc{i, {}}));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c.sc_try_pop(d));
  for (uint64_t i = 6; i < 12; ++i) ASSERT_TRUE(p.sp_try_push(Desc{i, {}}));  // 5..11 wait, wrapped
  TestRing<Desc> small_ring(4), big_ring(16);
  RingProducer<Desc> small = small_ring.producer();
  EXPECT_FALSE(p.move_unconsumed_to(small)) << "seven entries do not fit in four";
  RingProducer<Desc> big = big_ring.producer();
  ASSERT_TRUE(p.move_unconsumed_to(big));
  RingConsumer<Desc> from_big = big_ring.consumer();
  for (uint64_t i = 5; i < 12; ++i) {
    ASSERT_TRUE(from_big.sc_try_pop(d));
    EXPECT_EQ(d.seq, i);
  }
  EXPECT_FALSE(from_big.sc_try_pop(d));
  ctl()->consumer_index.store(1000, std::memory_order_relaxed);  // a hostile app's index
  EXPECT_FALSE(p.move_unconsumed_to(big));
  EXPECT_TRUE(p.corrupt());
}

// Resizing an SRQ: the consumer moves what it has not taken to a fresh
// ring and the producer resumes there after it.
TEST_F(RingFixture, QueuedEntriesMoveToAFreshRingWhoseProducerResumesAfterThem) {
  RingProducer<Desc> p(at, kCap);
  RingConsumer<Desc> c(at, kCap);
  Desc d{};
  for (uint64_t i = 0; i < 7; ++i) ASSERT_TRUE(p.sp_try_push(Desc{i, {}}));
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(c.sc_try_pop(d));
  for (uint64_t i = 7; i < 12; ++i) ASSERT_TRUE(p.sp_try_push(Desc{i, {}}));  // 6..11 queued, wrapped
  TestRing<Desc> fresh(16);
  std::byte* fresh_at = fresh.at;
  RingProducer<Desc> filler = fresh.producer();
  ASSERT_TRUE(c.move_queued_to(filler));
  RingProducer<Desc> resumed = RingProducer<Desc>::resume(fresh_at, 16);
  ASSERT_TRUE(resumed.sp_try_push(Desc{12, {}}));
  RingConsumer<Desc> from_fresh(fresh_at, 16);
  for (uint64_t i = 6; i <= 12; ++i) {
    ASSERT_TRUE(from_fresh.sc_try_pop(d));
    EXPECT_EQ(d.seq, i);
  }
  EXPECT_FALSE(from_fresh.sc_try_pop(d));
  ctl()->producer_index.store(1000, std::memory_order_relaxed);  // a hostile app's index
  RingProducer<Desc> other(fresh_at, 16);
  EXPECT_FALSE(c.move_queued_to(other));
  EXPECT_TRUE(c.corrupt());
}

TEST_F(RingFixture, DescriptorIsCopiedOutBeforeTheCallerSeesIt) {
  RingProducer<Desc> p(at, kCap);
  RingConsumer<Desc> c(at, kCap);
  ASSERT_TRUE(p.sp_try_push(Desc{42, {1, 2, 3}}));
  Desc d{};
  ASSERT_TRUE(c.sc_try_pop(d));
  auto* slots = reinterpret_cast<Desc*>(at + sizeof(RingControl));
  slots[0].seq = 666;  // a rewrite after posting cannot change what was taken
  EXPECT_EQ(d.seq, 42u);
}

TEST_F(RingFixture, AttachChecksCapacityAndSlotSize) {
  EXPECT_TRUE(ring_matches<Desc>(at, kCap));
  EXPECT_FALSE(ring_matches<Desc>(at, kCap * 2));
  EXPECT_FALSE(ring_matches<Desc>(at, 7));
  struct Other {
    uint64_t x;
  };
  EXPECT_FALSE(ring_matches<Other>(at, kCap));
}

TEST_F(RingFixture, SleepingConsumerIsWokenByProducer) {
  Doorbell bell;
  RingProducer<Desc> p(at, kCap);
  RingConsumer<Desc> c(at, kCap);
  constexpr uint64_t kCount = 20000;
  std::thread producer([&] {
    for (uint64_t i = 0; i < kCount; ++i) {
      while (!p.sp_try_push(Desc{i, {}})) std::this_thread::yield();
      if (p.consumer_needs_wakeup()) bell.ring();
    }
  });
  uint64_t expect = 0;
  uint64_t sleeps = 0;
  while (expect < kCount) {
    Desc d{};
    if (c.sc_try_pop(d)) {
      ASSERT_EQ(d.seq, expect++);
      continue;
    }
    if (c.prepare_to_sleep()) {
      ++sleeps;
      // A lost wakeup would hang here; a generous timeout turns it into a failure.
      ASSERT_TRUE(bell.wait(std::chrono::seconds(10)) || !c.empty_guess());
      c.cancel_sleep();
    }
  }
  producer.join();
  EXPECT_EQ(c.consumed(), kCount);
  RecordProperty("sleeps", static_cast<int>(sleeps));
}

TEST(Segment, AttachRejectsWrongKindAndForeignFiles) {
  Mapping ring = Mapping::create("k", SegmentKind::kRing, 4096);
  EXPECT_NO_THROW(Mapping::attach(ring.fd(), SegmentKind::kRing));
  EXPECT_THROW(Mapping::attach(ring.fd(), SegmentKind::kArena), std::system_error);
  ring.at<SegmentHeader>(0)->magic ^= 1;
  EXPECT_THROW(Mapping::attach(ring.fd(), SegmentKind::kRing), std::system_error);
}

TEST(Segment, SizeIsSealedAgainstShrinking) {
  Mapping seg = Mapping::create("sealed", SegmentKind::kRing, 8192);
  EXPECT_NE(::ftruncate(seg.fd(), 4096), 0);
  EXPECT_EQ(errno, EPERM);
}

// Two processes, a ring each way through one memfd: the child echoes every
// descriptor back after checking its canary; the parent checks the echo.
TEST(RingTwoProcess, CanaryCheckedPayloadsSurviveAMillionRoundTrips) {
  constexpr uint32_t kCap = 256;
  constexpr uint64_t kCount = 1'000'000;
  constexpr size_t kRingBytes = ring_bytes<Desc>(kCap);
  Mapping seg = Mapping::create("stress", SegmentKind::kRing,
                                sizeof(SegmentHeader) + 2 * kRingBytes);
  std::byte* to_child = seg.base() + sizeof(SegmentHeader);
  std::byte* to_parent = to_child + kRingBytes;
  init_ring<Desc>(to_child, kCap);
  init_ring<Desc>(to_parent, kCap);
  auto canary = [](uint64_t seq, int i) { return (seq * uint64_t{0x9E3779B97F4A7C15}) ^ static_cast<uint64_t>(i); };

  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    Mapping mine = Mapping::attach(seg.fd(), SegmentKind::kRing);
    RingConsumer<Desc> in(mine.base() + sizeof(SegmentHeader), kCap);
    RingProducer<Desc> out(mine.base() + sizeof(SegmentHeader) + kRingBytes, kCap);
    std::array<Desc, 32> batch{};
    uint64_t seen = 0;
    while (seen < kCount) {
      size_t n = in.sc_pop_burst(batch);
      for (size_t k = 0; k < n; ++k) {
        for (int i = 0; i < 7; ++i)
          if (batch[k].payload[i] != canary(batch[k].seq, i) || batch[k].seq != seen + k) _exit(3);
        batch[k].payload[0] = ~batch[k].payload[0];
      }
      size_t sent = 0;
      while (sent < n) sent += out.sp_push_burst(std::span<const Desc>(batch.data() + sent, n - sent));
      seen += n;
      if (in.corrupt() || out.corrupt()) _exit(4);
    }
    _exit(0);
  }
  RingProducer<Desc> out(to_child, kCap);
  RingConsumer<Desc> in(to_parent, kCap);
  uint64_t sent = 0, received = 0;
  std::array<Desc, 32> batch{};
  while (received < kCount) {
    size_t n = 0;
    while (sent + n < kCount && n < batch.size()) {
      Desc& d = batch[n];
      d.seq = sent + n;
      for (int i = 0; i < 7; ++i) d.payload[i] = canary(d.seq, i);
      ++n;
    }
    sent += out.sp_push_burst(std::span<const Desc>(batch.data(), n));
    size_t got = in.sc_pop_burst(batch);
    for (size_t k = 0; k < got; ++k) {
      ASSERT_EQ(batch[k].seq, received + k);
      ASSERT_EQ(batch[k].payload[0], ~canary(batch[k].seq, 0));
      for (int i = 1; i < 7; ++i) ASSERT_EQ(batch[k].payload[i], canary(batch[k].seq, i));
    }
    received += got;
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// Completions (lap-marked descriptors): the consumer takes a slot once its
// mark is stored, whatever producer_index says yet; a slot still holding
// the previous lap's mark is not taken; the marks stay right across more
// than 255 laps of a two-slot ring.
struct LapRing : TestRing<Cqe> {
  LapRing() : TestRing<Cqe>(2) {}
};

TEST(LapMarkedRing, TheSlotsMarkNotTheProducerIndexPublishesIt) {
  LapRing r;
  RingProducer<Cqe> p = r.producer();
  RingConsumer<Cqe> c = r.consumer();
  Cqe out{};
  for (uint64_t i = 0; i < 1000; ++i) {
    Cqe in{};
    in.wr_id = i;
    ASSERT_TRUE(p.sp_try_push(in));
    r.ctl()->producer_index.store(0, std::memory_order_relaxed);  // as if its store were not seen yet
    ASSERT_TRUE(c.sc_try_pop(out)) << "entry " << i;
    EXPECT_EQ(out.wr_id, i);
    EXPECT_FALSE(c.sc_try_pop(out)) << "a slot with the previous lap's mark was taken, at " << i;
    EXPECT_FALSE(c.corrupt());
  }
}

// A resize moves the unconsumed completions to a ring of another size:
// marked there for their new places, read there in order.
TEST(LapMarkedRing, MovedEntriesAreMarkedForTheirNewRing) {
  LapRing from;
  TestRing<Cqe> bigger(8);
  RingProducer<Cqe> p = from.producer();
  RingConsumer<Cqe> c = from.consumer();
  Cqe e{};
  for (uint64_t i = 0; i < 5; ++i) {  // a few laps in
    e.wr_id = i;
    ASSERT_TRUE(p.sp_try_push(e));
    ASSERT_TRUE(c.sc_try_pop(e));
  }
  for (uint64_t i = 10; i < 12; ++i) {
    e.wr_id = i;
    ASSERT_TRUE(p.sp_try_push(e));
  }
  RingProducer<Cqe> next = bigger.producer();
  ASSERT_TRUE(p.move_unconsumed_to(next));
  RingConsumer<Cqe> reader = bigger.consumer();
  for (uint64_t i = 10; i < 12; ++i) {
    ASSERT_TRUE(reader.sc_try_pop(e));
    EXPECT_EQ(e.wr_id, i);
  }
  EXPECT_FALSE(reader.sc_try_pop(e));
}

// A destroyed QP's completions leave its CQ (RingConsumer::sc_remove_if):
// the others stay, in order and marked for the slots they moved to; the
// freed slots go back to the producer, which goes on past them; across the
// ring's wrap, with the producer writing meanwhile.
TEST(LapMarkedRing, RemovedEntriesLeaveTheOthersInOrderAndTheirSlotsToTheProducer) {
  TestRing<Cqe> ring(8);
  RingProducer<Cqe> p = ring.producer();
  RingConsumer<Cqe> c = ring.consumer();
  Cqe e{};
  for (uint64_t i = 0; i < 5; ++i) {  // the next entries wrap
    ASSERT_TRUE(p.sp_try_push(e));
    ASSERT_TRUE(c.sc_try_pop(e));
  }
  for (uint64_t i = 0; i < 8; ++i) {  // full: QP 7 has every odd one
    e.wr_id = i;
    e.qp_num = i % 2 == 1 ? 7 : 3;
    ASSERT_TRUE(p.sp_try_push(e));
  }
  EXPECT_FALSE(p.sp_try_push(e));
  EXPECT_EQ(c.sc_remove_if([](const Cqe& x) { return x.qp_num == 7; }), 4u);
  for (uint64_t i = 100; i < 104; ++i) {  // the four freed slots are the producer's again
    e.wr_id = i;
    e.qp_num = 3;
    ASSERT_TRUE(p.sp_try_push(e)) << i;
  }
  EXPECT_FALSE(p.sp_try_push(e));
  for (uint64_t want : {0u, 2u, 4u, 6u, 100u, 101u, 102u, 103u}) {
    ASSERT_TRUE(c.sc_try_pop(e));
    EXPECT_EQ(e.wr_id, want);
  }
  EXPECT_FALSE(c.sc_try_pop(e));
  EXPECT_FALSE(c.corrupt());
  EXPECT_EQ(c.sc_remove_if([](const Cqe&) { return true; }), 0u);  // nothing queued: nothing moves
}

}  // namespace
}  // namespace ff::shm
