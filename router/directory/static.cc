// The static YAML directory: every router of a cluster reads the same file.
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "router/directory/directory.h"
#include "router/directory/endpoint.h"

namespace ff::router {
namespace {

std::string where(const std::string& origin, const YAML::Node& n) {
  return origin + ":" + std::to_string(n.Mark().line + 1);
}

class StaticDirectory final : public Directory {
 public:
  StaticDirectory(std::string path, const std::string& self, DirectoryView view)
      : Directory(self), path_(std::move(path)) {
    replace_view(std::move(view.routers), std::move(view.entries));
  }
  std::string describe() const override { return "file " + path_; }

 private:
  std::string path_;
};

}  // namespace

DirectoryView parse_static_directory(const std::string& text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw DirectoryError(origin + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
  if (!root.IsMap() || !root["routers"] || !root["routers"].IsSequence())
    throw DirectoryError(origin + ": expected a mapping with a 'routers' list");
  DirectoryView view;
  try {
    for (const auto& r : root["routers"]) {
      if (!r.IsMap()) throw DirectoryError(where(origin, r) + ": each router must be a mapping (name, address, tenants)");
      for (const auto& kv : r) {
        auto key = kv.first.as<std::string>();
        if (key != "name" && key != "address" && key != "tenants")
          throw DirectoryError(where(origin, kv.first) + ": unknown router key '" + key +
                               "' (known: name, address, tenants)");
      }
      if (!r["name"] || !r["address"]) throw DirectoryError(where(origin, r) + ": a router needs a name and an address");
      auto name = r["name"].as<std::string>();
      if (name.empty() || name.size() > kMaxRouterNameLength)
        throw DirectoryError(where(origin, r["name"]) + ": router name must be 1-63 characters");
      auto address = r["address"].as<std::string>();
      if (!parse_endpoint(address))
        throw DirectoryError(where(origin, r["address"]) + ": address '" + address +
                             "' is not HOST:PORT (an IPv4 address and a port 1-65535)");
      if (!view.routers.emplace(name, address).second)
        throw DirectoryError(where(origin, r["name"]) + ": router '" + name + "' appears twice");
      if (!r["tenants"]) continue;
      if (!r["tenants"].IsMap())
        throw DirectoryError(where(origin, r["tenants"]) + ": tenants must map a tenant name to a list of addresses");
      for (const auto& t : r["tenants"]) {
        auto tenant = t.first.as<std::string>();
        if (!policy::is_valid_tenant_name(tenant))
          throw DirectoryError(where(origin, t.first) + ": '" + tenant + "' is not a valid tenant name");
        if (!t.second.IsSequence())
          throw DirectoryError(where(origin, t.second) + ": tenant " + tenant + ": expected a list like [10.50.1.0/24]");
        for (const auto& a : t.second) {
          auto entry = a.as<std::string>();
          auto cidr = policy::parse_cidr(entry.find('/') == std::string::npos ? entry + "/32" : entry);
          if (!cidr)
            throw DirectoryError(where(origin, a) + ": '" + entry +
                                 "' is not an IPv4 address or CIDR (host bits zero)");
          view.entries.push_back({tenant, *cidr, name});
        }
      }
    }
  } catch (const YAML::Exception& e) {
    throw DirectoryError(origin + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  // One address, one router: two routers claiming the same prefix of a
  // tenant would make the answer depend on the file's order.
  std::set<std::tuple<std::string, uint32_t, uint8_t>> seen;
  for (const auto& e : view.entries)
    if (!seen.emplace(e.tenant, e.addresses.network, e.addresses.prefix).second)
      throw DirectoryError(origin + ": tenant " + e.tenant + ": " + e.addresses.to_string() +
                           " is listed for two routers");
  return view;
}

std::unique_ptr<Directory> load_static_directory(const std::string& path, const std::string& self) {
  std::ifstream in(path);
  if (!in) throw DirectoryError("cannot read the directory file " + path + " (--directory file:PATH)");
  std::stringstream text;
  text << in.rdbuf();
  return std::make_unique<StaticDirectory>(path, self, parse_static_directory(text.str(), path));
}

}  // namespace ff::router
