#include <gtest/gtest.h>

#include "policy/quota.h"

namespace ff::policy {
namespace {

TEST(TenantQuota, TakesUpToTheLimitAndCountsRefusals) {
  TenantQuota q(100);
  EXPECT_TRUE(q.try_take(60));
  EXPECT_FALSE(q.try_take(41));
  EXPECT_TRUE(q.try_take(40));
  EXPECT_FALSE(q.try_take(1));
  EXPECT_FALSE(q.try_take(UINT64_MAX));  // no overflow
  EXPECT_EQ(q.used(), 100u);
  EXPECT_EQ(q.refusals(), 3u);
  q.give_back(100);
  EXPECT_EQ(q.used(), 0u);
}

TEST(TenantQuota, ZeroMeansUnlimited) {
  TenantQuota q(0);
  EXPECT_TRUE(q.try_take(uint64_t{1} << 60));
}

TEST(Charge, GivesBackOnceWhenDestroyedOrMovedOver) {
  TenantQuota q(100);
  {
    ASSERT_TRUE(q.try_take(30));
    Charge a(&q, 30);
    Charge b = std::move(a);
    EXPECT_EQ(q.used(), 30u);
  }
  EXPECT_EQ(q.used(), 0u);
  ASSERT_TRUE(q.try_take(10));
  Charge c(&q, 10);
  ASSERT_TRUE(q.try_take(20));
  c = Charge(&q, 20);
  EXPECT_EQ(q.used(), 20u);
}

}  // namespace
}  // namespace ff::policy
