#include "router/ffctl/cdi.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

namespace ff::ffctl {
namespace {

namespace fs = std::filesystem;

bool is_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// CDI's rules: a vendor is a domain-like name (letters, digits, '-', '.'),
// a class letters, digits, '-' and '_'; both start with a letter and end
// with a letter or digit.
bool valid_part(std::string_view s, std::string_view extra) {
  if (s.empty() || !is_letter(s.front()) || !is_alnum(s.back())) return false;
  for (char c : s)
    if (!is_alnum(c) && extra.find(c) == std::string_view::npos) return false;
  return true;
}

// "vendor-class_": the start of every spec file of this kind.
std::string file_prefix(const CdiOptions& o) {
  std::string p = o.kind;
  if (auto slash = p.find('/'); slash != std::string::npos) p[slash] = '-';
  return p + "_";
}

}  // namespace

std::string cdi_problem(const CdiOptions& o) {
  auto slash = o.kind.find('/');
  if (slash == std::string::npos || !valid_part(std::string_view(o.kind).substr(0, slash), "-.") ||
      !valid_part(std::string_view(o.kind).substr(slash + 1), "-_"))
    return "--kind '" + o.kind +
           "' is not a CDI kind: VENDOR/CLASS, the vendor a domain-like name (letters, digits, '-', '.'), the "
           "class letters, digits, '-' and '_', each starting with a letter and ending with a letter or digit";
  for (const auto& [what, path] : {std::pair{"--host-run-dir", &o.host_run_dir}, {"--shim", &o.shim},
                                   {"--output-dir", &o.output_dir}})
    if (path->empty() || path->front() != '/')
      return std::string(what) + " must be an absolute path (the container runtime reads it on the host)";
  return {};
}

bool is_cdi_device_name(std::string_view tenant) {
  if (tenant.empty() || !is_alnum(tenant.front())) return false;
  for (char c : tenant)
    if (!is_alnum(c) && c != '_' && c != '-' && c != '.' && c != ':') return false;
  return true;
}

nlohmann::json cdi_spec(const CdiOptions& o, const std::string& tenant) {
  using nlohmann::json;
  json edits = {
      {"env", {std::string("LD_PRELOAD=") + kContainerShim,
               std::string("FFV_SOCKET=") + kContainerSocketDir + "/ffrouter.sock"}},
      // UCX uses a verbs device only when /dev/infiniband/<dev_name> is a
      // character device: /dev/null stands in (the shim never opens it).
      {"deviceNodes",
       {{{"path", "/dev/infiniband/uverbs0"}, {"hostPath", "/dev/null"}, {"type", "c"}, {"major", 1}, {"minor", 3},
         {"permissions", "rw"}}}},
      {"mounts",
       {{{"hostPath", o.host_run_dir + "/tenants/" + tenant},
         {"containerPath", kContainerSocketDir},
         {"options", {"ro", "bind", "nosuid", "nodev", "noexec"}}},
        {{"hostPath", o.shim}, {"containerPath", kContainerShim}, {"options", {"ro", "bind", "nosuid", "nodev"}}}}},
  };
  // 0.5.0: the first version with deviceNodes' hostPath (podman 4.3 reads it).
  return {{"cdiVersion", "0.5.0"},
          {"kind", o.kind},
          {"devices", {{{"name", tenant}, {"containerEdits", edits}}}}};
}

std::string cdi_file(const CdiOptions& o, const std::string& tenant) {
  return o.output_dir + "/" + file_prefix(o) + tenant + ".json";
}

bool write_cdi_specs(const CdiOptions& o, const std::vector<std::string>& tenants, std::vector<std::string>& written,
                     std::string& error) {
  std::error_code ec;
  fs::create_directories(o.output_dir, ec);
  if (ec) {
    error = "cannot create " + o.output_dir + ": " + ec.message();
    return false;
  }
  std::set<std::string> keep;
  for (const std::string& tenant : tenants) {
    const std::string path = cdi_file(o, tenant);
    const std::string fresh = path + ".new";
    {
      std::ofstream out(fresh, std::ios::trunc);
      out << cdi_spec(o, tenant).dump(2) << "\n";
      if (!out.flush()) {
        error = "cannot write " + fresh + ": " + std::strerror(errno);
        return false;
      }
    }
    fs::rename(fresh, path, ec);
    if (ec) {
      error = "cannot rename " + fresh + " to " + path + ": " + ec.message();
      return false;
    }
    keep.insert(path);
    written.push_back(path);
  }
  // Specs of this kind for tenants the router no longer has.
  const std::string prefix = file_prefix(o);
  for (const auto& entry : fs::directory_iterator(o.output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix) && name.ends_with(".json") && !keep.contains(entry.path().string()))
      fs::remove(entry.path(), ec);
  }
  return true;
}

CLI::App* add_cdi_command(CLI::App& app, CdiOptions& o) {
  auto* cdi = app.add_subcommand("cdi", "write a CDI spec per tenant: podman run --device ffrouter.io/tenant=NAME");
  cdi->add_option("--output-dir", o.output_dir, "where the container runtime reads specs")->capture_default_str();
  cdi->add_option("--kind", o.kind, "VENDOR/CLASS of the devices")->capture_default_str();
  cdi->add_option("--shim", o.shim, "libffverbs.so on the host (default: ../lib/ beside ffctl)");
  cdi->add_option("--host-run-dir", o.host_run_dir, "the router's run directory as the host sees it (default: --run-dir)");
  return cdi;
}

int run_cdi(CdiOptions o, const std::string& run_dir, const std::vector<std::string>& tenants, bool as_json) {
  std::error_code ec;
  if (o.host_run_dir.empty()) o.host_run_dir = fs::absolute(run_dir, ec).lexically_normal().string();
  if (o.shim.empty())
    o.shim = (fs::read_symlink("/proc/self/exe", ec).parent_path() / ".." / "lib" / "libffverbs.so")
                 .lexically_normal()
                 .string();
  if (std::string problem = cdi_problem(o); !problem.empty()) {
    std::fprintf(stderr, "ffctl cdi: %s\n", problem.c_str());
    return 2;
  }
  if (!fs::is_regular_file(o.shim, ec)) {
    std::fprintf(stderr, "ffctl: no libffverbs.so at %s: pass --shim PATH (the host's copy, which containers mount)\n",
                 o.shim.c_str());
    return 1;
  }
  std::vector<std::string> named;
  for (const std::string& t : tenants) {
    if (is_cdi_device_name(t))
      named.push_back(t);
    else
      std::fprintf(stderr, "ffctl cdi: tenant '%s' has no spec: a CDI device name starts with a letter or digit\n",
                   t.c_str());
  }
  std::vector<std::string> written;
  std::string error;
  if (!write_cdi_specs(o, named, written, error)) {
    std::fprintf(stderr, "ffctl: %s\n", error.c_str());
    return 1;
  }
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < named.size(); ++i) {
    if (as_json)
      out.push_back({{"tenant", named[i]}, {"device", o.kind + "=" + named[i]}, {"spec", written[i]}});
    else
      std::printf("%s=%s\t%s\n", o.kind.c_str(), named[i].c_str(), written[i].c_str());
  }
  if (as_json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace ff::ffctl
