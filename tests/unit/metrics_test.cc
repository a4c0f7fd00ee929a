// /metrics text: every family announced once before its samples, labels
// escaped, the rare completion statuses only once they occurred.
#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>

#include "router/control/metrics.h"

namespace ff::router {
namespace {

RouterMetrics sample() {
  RouterMetrics m;
  m.version = "9.9.9";
  m.fabric = "soft";
  TenantMetrics blue;
  blue.name = "blue";
  blue.traffic.ops[IBV_WR_RDMA_WRITE] = 1000;
  blue.traffic.bytes[IBV_WR_RDMA_WRITE] = 4096000;
  blue.traffic.received = 7;
  blue.traffic.received_bytes = 700;
  blue.traffic.completions[IBV_WC_SUCCESS] = 1007;
  blue.traffic.completions[IBV_WC_RETRY_EXC_ERR] = 2;
  blue.clients = 2;
  blue.shm_bytes = 123;
  blue.traffic.throttled_ns = 1'500'000'000;
  blue.qos.max_gbps = 4;
  blue.qos.weight = 3;
  blue.qos.max_control_per_s = 250;
  blue.control_delayed_ns = 250'000'000;
  blue.traffic.rnr_waits = 42;
  m.tenants.push_back(blue);
  TenantMetrics odd;
  odd.name = "we\"ird\\";
  m.tenants.push_back(odd);
  m.counters.work_requests = 1000;
  m.counters.poller_busy_ns = 2'500'000'000;
  m.sessions = 3;
  PeerStatus p;
  p.name = "host-b";
  p.out_up = true;
  m.peers.push_back(p);
  return m;
}

TEST(Metrics, FamiliesAreAnnouncedOnceBeforeTheirSamples) {
  std::istringstream in(render_metrics(sample()));
  std::map<std::string, int> typed;
  std::string line, current;
  while (std::getline(in, line)) {
    ASSERT_FALSE(line.empty());
    if (line.rfind("# TYPE ", 0) == 0) {
      current = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_EQ(++typed[current], 1) << current << " announced twice";
      continue;
    }
    if (line[0] == '#') continue;
    std::string name = line.substr(0, line.find_first_of("{ "));
    EXPECT_EQ(name, current) << "a sample outside its family: " << line;
  }
  EXPECT_GT(typed.size(), 10u);
}

TEST(Metrics, TenantCountersCarryTheirLabels) {
  std::string text = render_metrics(sample());
  EXPECT_NE(text.find("ffrouter_build_info{version=\"9.9.9\",fabric=\"soft\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_tenant_work_requests_total{tenant=\"blue\",opcode=\"write\"} 1000\n"),
            std::string::npos);
  EXPECT_NE(text.find("ffrouter_tenant_bytes_total{tenant=\"blue\",direction=\"sent\",opcode=\"write\"} 4096000\n"),
            std::string::npos);
  EXPECT_NE(text.find("ffrouter_tenant_bytes_total{tenant=\"blue\",direction=\"received\",opcode=\"recv\"} 700\n"),
            std::string::npos);
  EXPECT_NE(text.find("ffrouter_completions_total{tenant=\"blue\",status=\"success\"} 1007\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_completions_total{tenant=\"blue\",status=\"retry_exc_err\"} 2\n"), std::string::npos);
  EXPECT_EQ(text.find("status=\"rem_abort_err\""), std::string::npos) << "a status that never occurred is left out";
  EXPECT_NE(text.find("ffrouter_tenant_clients{tenant=\"blue\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_throttled_seconds_total{tenant=\"blue\"} 1.5\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_tenant_rate_limit_bytes_per_second{tenant=\"blue\"} 500000000\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_tenant_rate_limit_ops_per_second{tenant=\"blue\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_tenant_weight{tenant=\"blue\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_tenant_control_rate_limit_per_second{tenant=\"blue\"} 250\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_control_delayed_seconds_total{tenant=\"blue\"} 0.25\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_rnr_waits_total{tenant=\"blue\"} 42\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_poller_busy_seconds_total 2.5\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_peer_up{peer=\"host-b\",direction=\"outbound\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("ffrouter_tenant_clients{tenant=\"we\\\"ird\\\\\"} 0\n"), std::string::npos)
      << "quotes and backslashes in label values are escaped";
}

TEST(Metrics, NoPeersNoPeerFamilies) {
  RouterMetrics m = sample();
  m.peers.clear();
  EXPECT_EQ(render_metrics(m).find("ffrouter_peer_"), std::string::npos);
}

}  // namespace
}  // namespace ff::router
