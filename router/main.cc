// ffrouter: the host-side daemon that serves virtual RDMA verbs to containers.
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <cstdio>
#include <exception>

#include "router/config.h"
#include "router/fabric/soft/soft_fabric.h"
#include "router/options.h"
#include "router/router.h"

int main(int argc, char** argv) {
  using namespace ff::router;
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
    Router router(options, std::move(tenants), std::make_unique<SoftFabric>(options));
    router.run();
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
