// `ffctl cdi`: Container Device Interface specs, one per tenant, so that a
// container runtime gives a container a tenant's device by name:
//   podman run --device ffrouter.io/tenant=blue IMAGE cmd
// (podman reads /etc/cdi and /var/run/cdi with no setup; CRI-O by default;
// containerd and Docker once CDI is switched on). A spec mounts the tenant's
// socket directory read-only at /run/ffrouter (so the container cannot
// replace the socket) and libffverbs.so, preloads it, and gives UCX its
// /dev/infiniband/uverbs0 stand-in (the host's /dev/null).
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>
#include <vector>

namespace ff::ffctl {

struct CdiOptions {
  std::string kind = "ffrouter.io/tenant";  // vendor/class: the name before '=' in --device
  std::string host_run_dir;                 // the router's run directory as the host sees it
  std::string shim;                         // libffverbs.so on the host
  std::string output_dir = "/var/run/cdi";
};

// Where the shim and the socket are inside the container.
inline constexpr const char* kContainerShim = "/usr/lib/ffrouter/libffverbs.so";
inline constexpr const char* kContainerSocketDir = "/run/ffrouter";

// What is wrong with the options (empty: nothing): a kind CDI refuses, or
// paths that are not absolute.
std::string cdi_problem(const CdiOptions& o);
// Whether a tenant can be a CDI device name (a letter or digit first).
bool is_cdi_device_name(std::string_view tenant);
// The spec for one tenant, and the file it goes in.
nlohmann::json cdi_spec(const CdiOptions& o, const std::string& tenant);
std::string cdi_file(const CdiOptions& o, const std::string& tenant);

// Writes the specs of `tenants` (each atomically: a new file, renamed) and
// removes this kind's specs of tenants that are gone; `written` lists the
// files. False with `error` (what to do) when a file cannot be written.
bool write_cdi_specs(const CdiOptions& o, const std::vector<std::string>& tenants, std::vector<std::string>& written,
                     std::string& error);

// `ffctl cdi` and its options, filling `o`.
CLI::App* add_cdi_command(CLI::App& app, CdiOptions& o);

// The command: the paths default to this host's view (the run directory as
// given, the shim in ../lib beside ffctl); tenants CDI cannot name are
// skipped with a warning. Exit code: 0, 1 (a file not written, no shim),
// 2 (bad options).
int run_cdi(CdiOptions o, const std::string& run_dir, const std::vector<std::string>& tenants, bool as_json);

}  // namespace ff::ffctl
