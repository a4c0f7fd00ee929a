#include <gtest/gtest.h>

#include "router/daemon/config.h"

namespace ff::router {
namespace {

std::string error_of(const std::string& yaml) {
  try {
    parse_tenants(yaml, "cfg.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, ParsesTenants) {
  auto t = parse_tenants("tenants:\n  - name: blue\n    network: 10.99.0.0/16\n    virtual_ip: 10.99.0.9\n"
                         "  - name: red\n", "cfg.yaml");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].name, "blue");
  EXPECT_EQ(t[0].network->to_string(), "10.99.0.0/16");
  EXPECT_EQ(t[0].virtual_ip, policy::parse_ipv4("10.99.0.9"));
  EXPECT_FALSE(t[1].network);
}

TEST(Config, ParsesQos) {
  auto t = parse_tenants("tenants:\n  - name: blue\n    qos: {max_gbps: 4, max_mops: 2.5, burst_kib: 512, weight: 3, max_control_per_s: 50}\n"
                         "  - name: red\n", "cfg.yaml");
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].qos.max_gbps, 4);
  EXPECT_EQ(t[0].qos.max_mops, 2.5);
  EXPECT_EQ(t[0].qos.burst_bytes, 512u * 1024);
  EXPECT_EQ(t[0].qos.weight, 3u);
  EXPECT_EQ(t[0].qos.max_control_per_s, 50);
  EXPECT_EQ(t[1].qos, policy::QosSpec{}) << "no qos: no caps, weight 1";
  EXPECT_NE(error_of("tenants:\n  - name: a\n    qos: {max_gbps: -1}\n").find("qos.max_gbps must be a number from 0"),
            std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    qos: {max_gbps: fast}\n").find("cfg.yaml:3"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    qos: {weight: 1.5}\n").find("whole number"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    qos: {weight: 0}\n").find("qos.weight"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    qos: {max_gbs: 1}\n").find("unknown qos key 'max_gbs'"),
            std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    qos: {max_control_per_s: -5}\n").find("qos.max_control_per_s"),
            std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    qos: {weight: [1]}\n").find("qos.weight must be a number"),
            std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    qos: 4\n").find("qos must be a mapping"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    qos: {max_gbps: .nan}\n").find("qos.max_gbps"), std::string::npos);
}

TEST(Config, ErrorsNameTheFileLineAndFix) {
  EXPECT_NE(error_of("tenants: [").find("cfg.yaml:"), std::string::npos);
  EXPECT_NE(error_of("tenant:\n  - name: a\n").find("unknown top-level key 'tenant'"), std::string::npos);
  EXPECT_NE(error_of("tenants: []\n").find("non-empty list"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: ../etc\n").find("must be 1-64"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n  - name: a\n").find("declared twice"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    netwrk: 1.2.3.0/24\n").find("unknown tenant key 'netwrk'"),
            std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    network: 1.2.3.4/24\n").find("cfg.yaml:3"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: a\n    network: 10.0.0.0/8\n    virtual_ip: 11.0.0.1\n")
                .find("outside the tenant's network"),
            std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - {}\n").find("without a name"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - name: [1, 2]\n"), "");
  EXPECT_NE(error_of("- 1\n- 2\n").find("expected a mapping"), std::string::npos);
  // A key that is not a string (SIGHUP with such a file used to end the router).
  EXPECT_NE(error_of("? [a, b]\n: 1\ntenants:\n  - name: a\n").find("cfg.yaml:"), std::string::npos);
  EXPECT_NE(error_of("tenants:\n  - ? [x]\n    : 1\n"), "");
}

}  // namespace
}  // namespace ff::router
