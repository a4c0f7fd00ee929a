// ffrouter's command line (router/daemon/options.cc): numbers are decimal
// or 0x-hex, never octal; every usage error exits 2 with what to fix.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "router/daemon/options.h"

namespace ff::router {
namespace {

RouterOptions parse(std::vector<std::string> args) {
  args.insert(args.begin(), "ffrouter");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return parse_options(static_cast<int>(argv.size()), argv.data());
}

TEST(Options, NumbersAreDecimalOrHexNeverOctal) {
  RouterOptions o = parse({"--max-sessions", "010", "--vendor-id", "0x15b3", "--vendor-part-id", "4123"});
  EXPECT_EQ(o.max_sessions, 10u) << "a leading zero is not octal";
  EXPECT_EQ(o.vendor_id, 0x15b3u);
  EXPECT_EQ(o.vendor_part_id, 4123u);
  EXPECT_EQ(parse({"--max-sessions", "0x10"}).max_sessions, 16u);
}

TEST(Options, VendorIdIsShownInHex) {
  const Knob* vendor = nullptr;
  const Knob* sessions = nullptr;
  for (const Knob& k : knobs()) {
    if (std::string(k.flag) == "--vendor-id") vendor = &k;
    if (std::string(k.flag) == "--max-sessions") sessions = &k;
  }
  ASSERT_NE(vendor, nullptr);
  ASSERT_NE(sessions, nullptr);
  EXPECT_EQ(format_knob_number(*vendor, 0x1af4), "0x1af4");
  EXPECT_EQ(format_knob_number(*sessions, 1024), "1024");
}

TEST(Options, UsageErrorsExitTwoAndSayWhatToFix) {
  EXPECT_EXIT(parse({"--log-level", "bogus"}), ::testing::ExitedWithCode(2), "not a level");
  EXPECT_EXIT(parse({"--max-sessions", "12abc"}), ::testing::ExitedWithCode(2), "decimal or 0x-prefixed hex");
  EXPECT_EXIT(parse({"--max-sessions", "99999999999"}), ::testing::ExitedWithCode(2), "0-4294967295");
  EXPECT_EXIT(parse({"--vendor-id", "0x"}), ::testing::ExitedWithCode(2), "--vendor-id");
  EXPECT_EXIT(parse({"--no-such-option"}), ::testing::ExitedWithCode(2), "no-such-option");
  EXPECT_EXIT(parse({"--fabric", "magic"}), ::testing::ExitedWithCode(2), "not a fabric");
  EXPECT_EXIT(parse({"--pollers", "0"}), ::testing::ExitedWithCode(2), "--pollers: expected 1-64");
  EXPECT_EXIT(parse({"--pollers", "65"}), ::testing::ExitedWithCode(2), "--pollers: expected 1-64");
  EXPECT_EQ(parse({"--pollers", "4"}).pollers, 4u);
  EXPECT_EXIT(parse({"--poller-cpus", "1-0"}), ::testing::ExitedWithCode(2), "--poller-cpus: '1-0': expected CPU");
  EXPECT_EXIT(parse({"--poller-cpus", "0,x"}), ::testing::ExitedWithCode(2), "expected CPU numbers and ranges");
  EXPECT_EXIT(parse({"--poller-cpus", "1023"}), ::testing::ExitedWithCode(2), "CPU 1023 is not one this router");
  EXPECT_EXIT(parse({"--poller-cpus", "4294967296"}), ::testing::ExitedWithCode(2), "expected CPU numbers");
  EXPECT_EXIT(parse({"--poller-cpus", "0,"}), ::testing::ExitedWithCode(2), "expected CPU numbers");
  EXPECT_EXIT(parse({"--poller-cpus", "-1"}), ::testing::ExitedWithCode(2), "expected CPU numbers");
  EXPECT_EQ(parse({"--poller-cpus", "0,0-0"}).poller_cpu_list, (std::vector<int>{0, 0}));
  EXPECT_EXIT(parse({"--version"}), ::testing::ExitedWithCode(0), "");
}

TEST(Options, EveryLogLevelSpdlogKnowsIsAccepted) {
  for (const char* level : {"trace", "debug", "info", "warn", "error", "critical", "off"})
    EXPECT_EQ(parse({"--log-level", level}).log_level, level);
}

}  // namespace
}  // namespace ff::router
