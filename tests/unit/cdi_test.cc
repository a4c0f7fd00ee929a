// ffctl cdi: the spec a container runtime reads for a tenant's device.
#include "router/ffctl/cdi.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace ff::ffctl {
namespace {

CdiOptions options(const std::string& out = "/var/run/cdi") {
  CdiOptions o;
  o.host_run_dir = "/run/ffrouter";
  o.shim = "/usr/lib/x86_64-linux-gnu/libffverbs.so";
  o.output_dir = out;
  return o;
}

TEST(Cdi, TheSpecMountsTheTenantsSocketDirectoryReadOnlyAndPreloadsTheShim) {
  nlohmann::json spec = cdi_spec(options(), "blue");
  EXPECT_EQ(spec["cdiVersion"], "0.5.0");
  EXPECT_EQ(spec["kind"], "ffrouter.io/tenant");
  ASSERT_EQ(spec["devices"].size(), 1u);
  const auto& device = spec["devices"][0];
  EXPECT_EQ(device["name"], "blue");
  const auto& edits = device["containerEdits"];
  const auto& socket_dir = edits["mounts"][0];
  EXPECT_EQ(socket_dir["hostPath"], "/run/ffrouter/tenants/blue");
  EXPECT_EQ(socket_dir["containerPath"], "/run/ffrouter");
  EXPECT_EQ(socket_dir["options"][0], "ro");
  EXPECT_EQ(edits["mounts"][1]["hostPath"], "/usr/lib/x86_64-linux-gnu/libffverbs.so");
  EXPECT_EQ(edits["mounts"][1]["containerPath"], kContainerShim);
  EXPECT_EQ(edits["env"][0], std::string("LD_PRELOAD=") + kContainerShim);
  EXPECT_EQ(edits["env"][1], "FFV_SOCKET=/run/ffrouter/ffrouter.sock");
  EXPECT_EQ(edits["deviceNodes"][0]["path"], "/dev/infiniband/uverbs0");
  EXPECT_EQ(edits["deviceNodes"][0]["type"], "c");
}

TEST(Cdi, KindsAndPathsAreChecked) {
  EXPECT_EQ(cdi_problem(options()), "");
  for (const char* bad : {"tenant", "ffrouter.io/", "/tenant", "-x.io/tenant", "ffrouter.io/ten ant", "a.io/b/c",
                          "ffrouter.io/tenant_"}) {
    CdiOptions o = options();
    o.kind = bad;
    EXPECT_NE(cdi_problem(o), "") << bad;
  }
  CdiOptions relative = options();
  relative.shim = "build/lib/libffverbs.so";
  EXPECT_NE(cdi_problem(relative).find("--shim"), std::string::npos);
  EXPECT_TRUE(is_cdi_device_name("blue-2.a_b"));
  EXPECT_FALSE(is_cdi_device_name("_blue"));
  EXPECT_FALSE(is_cdi_device_name(""));
}

TEST(Cdi, WritesOneFilePerTenantAndRemovesThoseOfTenantsGone) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("cdi_test." + std::to_string(::getpid()));
  fs::remove_all(dir);
  CdiOptions o = options(dir.string());
  std::vector<std::string> written;
  std::string error;
  ASSERT_TRUE(write_cdi_specs(o, {"blue", "red"}, written, error)) << error;
  ASSERT_EQ(written.size(), 2u);
  EXPECT_EQ(written[0], (dir / "ffrouter.io-tenant_blue.json").string());
  std::ofstream(dir / "other-vendor.json") << "{}";  // not ours: stays
  written.clear();
  ASSERT_TRUE(write_cdi_specs(o, {"blue"}, written, error)) << error;
  EXPECT_TRUE(fs::exists(dir / "ffrouter.io-tenant_blue.json"));
  EXPECT_FALSE(fs::exists(dir / "ffrouter.io-tenant_red.json"));
  EXPECT_TRUE(fs::exists(dir / "other-vendor.json"));
  std::ifstream in(dir / "ffrouter.io-tenant_blue.json");
  EXPECT_EQ(nlohmann::json::parse(in)["devices"][0]["name"], "blue");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ff::ffctl
