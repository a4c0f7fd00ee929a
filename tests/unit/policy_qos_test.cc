// QoS building blocks against a fake clock: rates, bursts, overdraft, live
// changes; fair shares by weight, idle flows giving theirs away, large work
// not starved.
#include <gtest/gtest.h>

#include <array>
#include <cmath>

#include "policy/qos.h"

namespace ff::policy {
namespace {

constexpr uint64_t kSecond = 1'000'000'000;

// Takes `piece` units whenever the bucket allows, stepping a fake clock by
// `step` ns for `duration` ns; returns the units taken.
double drive(TokenBucket& b, uint64_t& now, uint64_t duration, double piece, uint64_t step = 1000) {
  double taken = 0;
  for (uint64_t end = now + duration; now < end; now += step)
    while (b.try_take(piece, now)) taken += piece;
  return taken;
}

TEST(TokenBucket, NoCapTakesEverything) {
  TokenBucket b;
  EXPECT_FALSE(b.capped());
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(b.try_take(1e12, 0));
  EXPECT_EQ(b.ready_at(5), 5u);
}

TEST(TokenBucket, HoldsItsRateOverTime) {
  uint64_t now = 0;
  TokenBucket b(125'000'000, 256 * 1024, now);  // 1 Gb/s in bytes, 256 KiB burst
  double taken = drive(b, now, 10 * kSecond, 4096);
  // The burst plus ten seconds at the rate, within one piece.
  EXPECT_NEAR(taken, 256 * 1024 + 10 * 125'000'000.0, 4096 + 1);
}

TEST(TokenBucket, BurstIsWhatIdleTimeSaves) {
  uint64_t now = 0;
  TokenBucket b(1000, 100, now);
  EXPECT_NEAR(drive(b, now, 1, 1), 100, 1);  // the burst at once
  now += 10 * kSecond;                       // idle: saves the burst, not ten seconds' worth
  EXPECT_NEAR(drive(b, now, 1, 1), 100, 1);
}

TEST(TokenBucket, ALargeTakeOverdrawsAndWhatFollowsWaitsForTheDebt) {
  uint64_t now = 0;
  TokenBucket b(1000, 100, now);  // 1000 units/s
  EXPECT_TRUE(b.try_take(1100, now));   // larger than the burst: goes, 1000 in debt
  EXPECT_FALSE(b.try_take(1, now));
  uint64_t ready = b.ready_at(now);
  EXPECT_NEAR(static_cast<double>(ready), 1.0 * kSecond, 1e3);  // one second pays 1000
  EXPECT_FALSE(b.try_take(1, ready - 1000));
  EXPECT_TRUE(b.try_take(1, ready));
}

TEST(TokenBucket, ALiveChangeKeepsWhatWasEarnedUpToTheNewBurst) {
  uint64_t now = 0;
  TokenBucket b(1000, 1000, now);
  now += kSecond / 2;  // 1000 saved (the burst)
  b.reconfigure(4000, 200, now);
  EXPECT_NEAR(drive(b, now, 1, 1), 200, 1);  // capped to the new burst
  double taken = drive(b, now, kSecond, 10, 10'000);
  EXPECT_NEAR(taken, 4000, 20);  // the new rate
  b.reconfigure(0, 0, now);
  EXPECT_TRUE(b.try_take(1e9, now)) << "rate 0 lifts the cap";
}

// Runs `rounds` scheduler rounds; a busy flow takes work of `cost` while
// its account allows, an idle one is not visited.
template <size_t N>
std::array<uint64_t, N> share(std::array<DrrAccount, N>& flows, std::array<bool, N> busy, uint64_t first_round,
                              int rounds, uint64_t quantum, uint64_t cost) {
  std::array<uint64_t, N> got{};
  for (int r = 0; r < rounds; ++r) {
    for (size_t i = 0; i < N; ++i) {
      if (!busy[i]) continue;
      flows[i].enter_round(first_round + static_cast<uint64_t>(r), quantum);
      while (flows[i].take(cost)) got[i] += cost;
    }
  }
  return got;
}

TEST(DrrAccount, EqualWeightsShareEqually) {
  std::array<DrrAccount, 2> f{DrrAccount(1), DrrAccount(1)};
  auto got = share<2>(f, {true, true}, 1, 1000, 65536, 4096);
  double a = static_cast<double>(got[0]), b = static_cast<double>(got[1]);
  double jain = (a + b) * (a + b) / (2 * (a * a + b * b));
  EXPECT_GE(jain, 0.999);
}

TEST(DrrAccount, WeightsOneToThreeSplitOneToThree) {
  std::array<DrrAccount, 2> f{DrrAccount(1), DrrAccount(3)};
  auto got = share<2>(f, {true, true}, 1, 1000, 65536, 4096);
  EXPECT_NEAR(static_cast<double>(got[1]) / static_cast<double>(got[0]), 3.0, 0.05);
}

TEST(DrrAccount, AnIdleFlowSavesNothingAndGivesItsShareAway) {
  std::array<DrrAccount, 2> f{DrrAccount(1), DrrAccount(1)};
  auto got = share<2>(f, {true, false}, 1, 100, 65536, 4096);
  EXPECT_EQ(got[1], 0u);
  EXPECT_EQ(got[0], 100u * 65536) << "the busy flow takes every round's quantum it can use";
  f[1].enter_round(101, 65536);
  EXPECT_EQ(f[1].credit(), 65536u) << "back after 100 idle rounds: one round's credit, nothing saved";
}

TEST(DrrAccount, WorkUpToTwoQuantaWaitsARoundButIsServed) {
  DrrAccount big, small;
  uint64_t got_big = 0, got_small = 0;
  for (uint64_t r = 1; r <= 100; ++r) {
    big.enter_round(r, 4096);
    small.enter_round(r, 4096);
    if (big.take(8000)) got_big += 8000;     // nearly two quanta
    while (small.take(64)) got_small += 64;  // small ones
  }
  EXPECT_EQ(got_big, 50u * 8000) << "every other round";
  EXPECT_EQ(got_small, 100u * 4096);
}

TEST(DrrAccount, CreditCarriesOneRoundAtMost) {
  DrrAccount a;
  a.enter_round(1, 1000);
  EXPECT_FALSE(a.take(5000));  // held back by its credit: keeps it
  a.enter_round(2, 1000);
  EXPECT_EQ(a.credit(), 2000u);
  EXPECT_FALSE(a.take(5000));
  a.enter_round(3, 1000);
  EXPECT_EQ(a.credit(), 2000u) << "one round's worth carried, one earned";
  a.still_waiting();  // its turn ended with work left, credit unused
  a.enter_round(4, 1000);
  EXPECT_EQ(a.credit(), 2000u);
  // Rounds 5..99 it waits for its cap, not for credit: not visited.
  a.enter_round(100, 1000);
  EXPECT_EQ(a.credit(), 1000u) << "nothing carried across rounds it sat out";
  a.enter_round(100, 1000);
  EXPECT_EQ(a.credit(), 1000u) << "a round is entered once";
}

TEST(DrrAccount, AWeightChangesLive) {
  std::array<DrrAccount, 2> f{DrrAccount(1), DrrAccount(1)};
  f[1].set_weight(4);
  auto got = share<2>(f, {true, true}, 1, 100, 1000, 10);
  EXPECT_EQ(got[1], 4 * got[0]);
  f[1].set_weight(0);
  EXPECT_EQ(f[1].weight(), 1u) << "a weight is at least 1";
}

TEST(QosKeys, OneTableSetsAndChecksEveryKey) {
  QosSpec q;
  EXPECT_EQ(set_qos_key(q, *find_qos_key("burst_kib"), 512), "");
  EXPECT_EQ(q.burst_bytes, 512u * 1024);
  EXPECT_EQ(set_qos_key(q, *find_qos_key("max_control_per_s"), 50), "");
  EXPECT_EQ(q.max_control_per_s, 50);
  EXPECT_NE(set_qos_key(q, *find_qos_key("weight"), 2.5).find("whole number"), std::string::npos);
  EXPECT_NE(set_qos_key(q, *find_qos_key("max_gbps"), -1).find("0: no cap"), std::string::npos);
  EXPECT_NE(set_qos_key(q, *find_qos_key("burst_kib"), 1).find("burst_kib must be a number from 4"), std::string::npos);
  EXPECT_EQ(q.weight, 1u) << "a refused value changes nothing";
  EXPECT_EQ(find_qos_key("speed"), nullptr);
  EXPECT_EQ(qos_problem(q), "");
  q.max_control_per_s = 2e6;
  EXPECT_NE(qos_problem(q).find("max_control_per_s"), std::string::npos);
  EXPECT_NE(set_qos_key(q, *find_qos_key("max_control_per_s"), 0.5).find("0 (no cap) or a number from 1 to 1000000"),
            std::string::npos)
      << "under one a second is refused";
  EXPECT_EQ(set_qos_key(q, *find_qos_key("max_control_per_s"), 0), "") << "0: no cap";
  EXPECT_NE(set_qos_key(q, *find_qos_key("burst_kib"), 2e6).find("to 1048576"), std::string::npos);
  EXPECT_NE(qos_key_names().find("max_gbps, max_mops"), std::string::npos);
}

TEST(ControlRate, StartUpGoesAtOnceAndAStormTakesItsTurnsAtTheRate) {
  TokenBucket b(50, control_burst(50), 0);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(b.reserve(1, 0), 0u) << "a burst of 16 requests goes at once";
  // Then each request has its own turn, a fiftieth of a second apart, in
  // the order they asked (several sessions of one tenant).
  EXPECT_EQ(b.reserve(1, 0), 20'000'000u);
  EXPECT_EQ(b.reserve(1, 0), 40'000'000u);
  EXPECT_EQ(b.reserve(1, 10'000'000), 60'000'000u);
  EXPECT_EQ(control_burst(1000), 100) << "a tenth of a second's worth when that is more";
  TokenBucket none;
  EXPECT_EQ(none.reserve(1, 7), 7u) << "no cap: every request goes";
}

}  // namespace
}  // namespace ff::policy
