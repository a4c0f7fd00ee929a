// When the router asks the device to pace a shadow QP (pacing.h). No device
// here reports packet pacing (rxe does not), so the decision is tested alone.
#include "router/fabric/verbs/pacing.h"

#include <gtest/gtest.h>

namespace ff::router::verbs {
namespace {

ibv_packet_pacing_caps caps_for(uint32_t min_kbps, uint32_t max_kbps, uint32_t qpts) {
  ibv_packet_pacing_caps c{};
  c.qp_rate_limit_min = min_kbps;
  c.qp_rate_limit_max = max_kbps;
  c.supported_qpts = qpts;
  return c;
}

constexpr uint32_t kRcAndRaw = (1u << IBV_QPT_RC) | (1u << IBV_QPT_RAW_PACKET);

TEST(DevicePacing, NothingWithoutPacingCaps) {
  EXPECT_FALSE(device_pacing_kbps(ibv_packet_pacing_caps{}, IBV_QPT_RC, 4).has_value());
  EXPECT_FALSE(device_pacing_kbps(caps_for(0, 0, kRcAndRaw), IBV_QPT_RC, 4).has_value());
}

TEST(DevicePacing, NothingForQpTypesTheDeviceDoesNotPace) {
  auto caps = caps_for(1000, 100'000'000, kRcAndRaw);
  EXPECT_FALSE(device_pacing_kbps(caps, IBV_QPT_UD, 4).has_value());
  EXPECT_FALSE(device_pacing_kbps(caps, IBV_QPT_UC, 4).has_value());
  EXPECT_FALSE(device_pacing_kbps(caps, static_cast<ibv_qp_type>(200), 4).has_value());
}

TEST(DevicePacing, TheTenantsCapInKilobitsPerSecond) {
  auto caps = caps_for(1000, 100'000'000, kRcAndRaw);
  EXPECT_EQ(device_pacing_kbps(caps, IBV_QPT_RC, 4), 4'000'000u);
  EXPECT_EQ(device_pacing_kbps(caps, IBV_QPT_RC, 0.025), 25'000u);
  EXPECT_EQ(device_pacing_kbps(caps, IBV_QPT_RAW_PACKET, 100), 100'000'000u);  // at the top, inclusive
}

TEST(DevicePacing, UnpacedWithoutACapOrOutsideTheDevicesRange) {
  auto caps = caps_for(1000, 100'000'000, kRcAndRaw);
  EXPECT_EQ(device_pacing_kbps(caps, IBV_QPT_RC, 0), 0u);        // no cap: a former limit is lifted
  EXPECT_EQ(device_pacing_kbps(caps, IBV_QPT_RC, 0.0005), 0u);   // 500 kb/s: below the device's floor
  EXPECT_EQ(device_pacing_kbps(caps, IBV_QPT_RC, 200), 0u);      // above what it paces: software alone
}

}  // namespace
}  // namespace ff::router::verbs
