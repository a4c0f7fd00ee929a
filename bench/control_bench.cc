// Control-plane round trip: one verbs query (QueryPort) from a client to an
// in-process router over its Unix socket, reply verified. Compare with
// LIMITS.md ipc_stream_cross_rtt (a bare 64-byte AF_UNIX request/response).
//
//   build/bin/control_bench
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "proto/client.h"
#include "router/fabric/soft/soft_fabric.h"
#include "router/daemon/router.h"

namespace {

using namespace ff;

void BM_ControlRoundTrip_QueryPort(benchmark::State& state) {
  char tmpl[] = "/tmp/ffbench.XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) return state.SkipWithError("mkdtemp");
  router::RouterOptions o;
  o.run_dir = std::string(tmpl) + "/run";
  std::vector<policy::TenantSpec> tenants{{"bench", std::nullopt, policy::parse_ipv4("10.0.0.1"), {}}};
  router::Router r(o, tenants, std::make_unique<router::SoftFabric>(router::fabric_config(o)));
  std::thread t([&] { r.run(); });

  proto::ControlClient c;
  if (c.connect(o.run_dir + "/tenants/bench/ffrouter.sock") != 0) state.SkipWithError("connect");
  flatbuffers::FlatBufferBuilder fbb;
  c.call(fbb, proto::RequestBody::Hello, proto::CreateHello(fbb, 1, fbb.CreateString("bench")).Union());
  fbb.Clear();
  auto open = c.call(fbb, proto::RequestBody::OpenDevice, proto::CreateOpenDevice(fbb, 0).Union());
  uint32_t ctx = open.reply()->body_as_OpenDeviceReply()->context();
  for (auto _ : state) {
    fbb.Clear();
    auto res = c.call(fbb, proto::RequestBody::QueryPort, proto::CreateQueryPort(fbb, ctx, 1).Union());
    if (res.error != 0) state.SkipWithError("query failed");
    benchmark::DoNotOptimize(res.reply());
  }
  c.disconnect();
  r.stop();
  t.join();
  std::filesystem::remove_all(tmpl);
}
BENCHMARK(BM_ControlRoundTrip_QueryPort)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
