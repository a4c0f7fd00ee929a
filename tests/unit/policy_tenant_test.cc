#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "policy/tenant.h"

namespace ff::policy {
namespace {

TEST(Ipv4, ParsesAndFormats) {
  EXPECT_EQ(parse_ipv4("10.99.1.2"), 0x0a630102u);
  EXPECT_EQ(format_ipv4(0x0a630102u), "10.99.1.2");
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1.2.3.x", "1..2.3", "1.2.3.4 ",
                          "0001.2.3.4", "-1.2.3.4"})
    EXPECT_FALSE(parse_ipv4(bad)) << bad;
}

TEST(Cidr, ParsesAndContains) {
  auto c = parse_cidr("10.99.0.0/16");
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->contains(*parse_ipv4("10.99.200.1")));
  EXPECT_FALSE(c->contains(*parse_ipv4("10.98.0.1")));
  EXPECT_TRUE(parse_cidr("0.0.0.0/0")->contains(1234));
  for (const char* bad : {"10.99.0.1/16", "10.0.0.0/33", "10.0.0.0", "10.0.0.0/", "10.0.0.0/1x"})
    EXPECT_FALSE(parse_cidr(bad)) << bad;
}

TEST(TenantName, RejectsPathTricks) {
  EXPECT_TRUE(is_valid_tenant_name("blue-team_1.a"));
  for (const char* bad : {"", ".", "..", ".hidden", "a/b", "a b", "x\n"})
    EXPECT_FALSE(is_valid_tenant_name(bad)) << bad;
  EXPECT_FALSE(is_valid_tenant_name(std::string(65, 'a')));
}

TEST(VirtualIp, PicksFirstAddressInsideTheTenantNetwork) {
  TenantSpec t{"blue", parse_cidr("10.99.0.0/16"), std::nullopt, {}};
  std::vector<uint32_t> addrs{*parse_ipv4("192.0.2.2"), *parse_ipv4("10.99.3.4")};
  EXPECT_EQ(choose_virtual_ip(t, addrs).ip, parse_ipv4("10.99.3.4"));
  std::vector<uint32_t> outside{*parse_ipv4("192.0.2.2")};
  auto r = choose_virtual_ip(t, outside);
  EXPECT_FALSE(r.ip);
  EXPECT_NE(r.error.find("10.99.0.0/16"), std::string::npos);
}

TEST(VirtualIp, FallsBackToConfiguredAddressOnlyWhenNeeded) {
  TenantSpec t{"red", std::nullopt, parse_ipv4("10.1.1.1"), {}};
  EXPECT_EQ(choose_virtual_ip(t, {}).ip, parse_ipv4("10.1.1.1"));
  std::vector<uint32_t> addrs{*parse_ipv4("10.2.2.2")};
  EXPECT_EQ(choose_virtual_ip(t, addrs).ip, parse_ipv4("10.2.2.2"));
  TenantSpec none{"green", std::nullopt, std::nullopt, {}};
  auto r = choose_virtual_ip(none, {});
  EXPECT_FALSE(r.ip);
  EXPECT_NE(r.error.find("virtual_ip"), std::string::npos);
}

TEST(Gid, IsIpv4Mapped) {
  uint8_t gid[16];
  ipv4_mapped_gid(*parse_ipv4("10.99.1.2"), gid);
  const uint8_t want[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 99, 1, 2};
  EXPECT_EQ(0, std::memcmp(gid, want, 16));
}

}  // namespace
}  // namespace ff::policy
