// ffrouter: the host-side daemon that serves virtual RDMA verbs to containers.
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <cstdio>
#include <exception>

#include "router/daemon/config.h"
#include "router/fabric/soft/soft_fabric.h"
#include "router/fabric/verbs/verbs_fabric.h"
#include "router/daemon/options.h"
#include "router/daemon/router.h"

namespace {

using namespace ff::router;

// --fabric: soft, verbs (a device or a clear error), or auto (verbs when a
// usable device exists).
std::unique_ptr<Fabric> make_fabric(const RouterOptions& options) {
  FabricConfig config = fabric_config(options);
  if (options.fabric == "verbs") return std::make_unique<VerbsFabric>(config);
  if (options.fabric == "auto") {
    std::string why;
    if (usable_verbs_device(config, why)) return std::make_unique<VerbsFabric>(config);
    spdlog::info("--fabric auto: using the soft fabric ({})", why);
  }
  return std::make_unique<SoftFabric>(config);
}

}  // namespace

int main(int argc, char** argv) {
  RouterOptions options = parse_options(argc, argv);
  spdlog::set_level(spdlog::level::from_str(options.log_level));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ ffrouter: %v");
  log_options(options);
  // Every client holds a socket and every QP, CQ and segment an fd in the
  // router: take all the descriptors the hard limit allows.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  try {
    auto tenants = options.config_path.empty() ? default_tenants() : load_tenants(options.config_path);
    Router router(options, std::move(tenants), make_fabric(options));
    router.run();
  } catch (const FabricStartError& e) {
    spdlog::error("{}", e.what());
    return 2;
  } catch (const ConfigError& e) {
    spdlog::error("config: {}", e.what());
    return 2;
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  spdlog::info("stopped");
  return 0;
}
