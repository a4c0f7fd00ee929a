// A tenant's share of the poller (router/fabric/core/tenant_share.h), with
// a fake clock and numbered passes: caps park, the fair share holds back,
// refunds give back what did not go.
#include "router/fabric/core/tenant_share.h"

#include <gtest/gtest.h>

namespace ff::router::core {
namespace {

using Admission = TenantShare::Admission;

TEST(TenantShare, ACapParksUntilTheBucketRefillsAndCountsTheWait) {
  TenantShare s;
  s.configure({.max_gbps = 8, .burst_bytes = 256 * 1024}, 0);  // 1e9 B/s, a 256 KiB burst
  uint64_t ready = 0;
  ASSERT_EQ(s.admit(300 * 1024, true, 1, 0, ready), Admission::kGo) << "a take may overdraw the burst";
  ASSERT_EQ(s.admit(4096, true, 1, 0, ready), Admission::kCapped) << "in debt";
  EXPECT_NEAR(static_cast<double>(ready), 44.0 * 1024, 2) << "the debt, 44 KiB at 1 byte a ns";
  EXPECT_EQ(s.throttled_ns(), ready);
  EXPECT_EQ(s.admit(4096, true, 2, ready, ready), Admission::kGo) << "it goes once the bucket refilled";
}

TEST(TenantShare, OnePassHoldsAQuantumAndTheNextGivesAnother) {
  TenantShare s;
  s.configure({}, 0);
  uint64_t ready = 0, moved = 0;
  while (s.admit(256 * 1024, false, 1, 0, ready) == Admission::kGo) moved += 256 * 1024;
  EXPECT_EQ(moved, TenantShare::kQuantum);
  EXPECT_EQ(s.admit(256 * 1024, false, 2, 0, ready), Admission::kGo);
}

TEST(TenantShare, ARetryPaysOneWorkRequestAndTheCapsGetEverythingBack) {
  TenantShare s;
  s.configure({.max_mops = 1e-6, .burst_bytes = 4096}, 0);  // one work request a second, a burst of 32
  uint64_t ready = 0;
  for (int i = 0; i < 32; ++i) ASSERT_EQ(s.admit(0, true, 1, 0, ready), Admission::kGo) << i;
  ASSERT_EQ(s.admit(0, true, 1, 0, ready), Admission::kCapped) << "the burst is spent";
  s.refund(0, true, /*tried=*/true);  // the last one met an RNR answer: it goes again later
  EXPECT_EQ(s.admit(0, true, 1, 0, ready), Admission::kGo) << "the ops cap got its token back";
  // The fair share keeps the attempt's cost: what is left of a pass's
  // quantum after a refund, untried and tried.
  TenantShare fresh;
  fresh.configure({}, 0);
  uint64_t untried = 0;
  fresh.admit(TenantShare::kWorkRequestCost, false, 1, 0, ready);
  fresh.refund(TenantShare::kWorkRequestCost, false, /*tried=*/false);
  while (fresh.admit(TenantShare::kWorkRequestCost, false, 1, 0, ready) == Admission::kGo) ++untried;
  EXPECT_EQ(untried, TenantShare::kQuantum / TenantShare::kWorkRequestCost) << "an untried refund gives all back";
  TenantShare retried;
  retried.configure({}, 0);
  uint64_t after_retry = 0;
  retried.admit(0, true, 1, 0, ready);
  retried.refund(0, true, /*tried=*/true);
  while (retried.admit(TenantShare::kWorkRequestCost, false, 1, 0, ready) == Admission::kGo) ++after_retry;
  EXPECT_EQ(after_retry, TenantShare::kQuantum / TenantShare::kWorkRequestCost - 1) << "a retry cost one request";
}

}  // namespace
}  // namespace ff::router::core
