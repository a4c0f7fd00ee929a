#include "router/daemon/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

namespace ff::router {
namespace {

std::string where(const std::string& origin, const YAML::Node& n) {
  return origin + ":" + std::to_string(n.Mark().line + 1);
}

// qos: {max_gbps: 4, max_mops: 2, burst_kib: 256, weight: 3}; every key
// optional (policy::kQosKeys).
policy::QosSpec parse_qos(const YAML::Node& n, const std::string& origin) {
  if (!n.IsMap())
    throw ConfigError(where(origin, n) + ": qos must be a mapping like {max_gbps: 4, max_mops: 2, burst_kib: 256, weight: 3}");
  policy::QosSpec q;
  for (const auto& kv : n) {
    auto key = kv.first.as<std::string>();
    const policy::QosKey* k = policy::find_qos_key(key);
    if (k == nullptr)
      throw ConfigError(where(origin, kv.first) + ": unknown qos key '" + key + "' (known: " + policy::qos_key_names() +
                        ")");
    double v = 0;
    std::string problem = std::string(k->name) + " must be a number";
    if (kv.second.IsScalar() && YAML::convert<double>::decode(kv.second, v)) problem = policy::set_qos_key(q, *k, v);
    if (!problem.empty()) throw ConfigError(where(origin, kv.second) + ": qos." + problem);
  }
  return q;
}

policy::TenantSpec parse_tenant(const YAML::Node& n, const std::string& origin) {
  if (!n.IsMap()) throw ConfigError(where(origin, n) + ": each tenant must be a mapping with a name");
  policy::TenantSpec t;
  for (const auto& kv : n) {
    auto key = kv.first.as<std::string>();
    if (key != "name" && key != "network" && key != "virtual_ip" && key != "qos")
      throw ConfigError(where(origin, kv.first) + ": unknown tenant key '" + key +
                        "' (known: name, network, virtual_ip, qos)");
  }
  if (!n["name"]) throw ConfigError(where(origin, n) + ": tenant without a name");
  t.name = n["name"].as<std::string>();
  if (!policy::is_valid_tenant_name(t.name))
    throw ConfigError(where(origin, n["name"]) + ": tenant name '" + t.name +
                      "' must be 1-64 of [A-Za-z0-9_.-] and not start with '.'");
  if (n["network"]) {
    auto text = n["network"].as<std::string>();
    t.network = policy::parse_cidr(text);
    if (!t.network)
      throw ConfigError(where(origin, n["network"]) + ": network '" + text +
                        "' is not a CIDR like 10.99.0.0/16 (host bits zero)");
  }
  if (n["virtual_ip"]) {
    auto text = n["virtual_ip"].as<std::string>();
    t.virtual_ip = policy::parse_ipv4(text);
    if (!t.virtual_ip)
      throw ConfigError(where(origin, n["virtual_ip"]) + ": virtual_ip '" + text +
                        "' is not an IPv4 address");
    if (t.network && !t.network->contains(*t.virtual_ip))
      throw ConfigError(where(origin, n["virtual_ip"]) + ": virtual_ip " + text +
                        " is outside the tenant's network " + t.network->to_string());
  }
  if (n["qos"]) t.qos = parse_qos(n["qos"], origin);
  return t;
}

}  // namespace

std::vector<policy::TenantSpec> parse_tenants(const std::string& text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ":" + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg);
  }
  if (!root.IsMap()) throw ConfigError(origin + ": expected a mapping with a 'tenants' list");
  std::vector<policy::TenantSpec> tenants;
  std::set<std::string> names;
  try {
    // (Keys that are not strings, `? [a]: b`, throw YAML exceptions too.)
    for (const auto& kv : root) {
      auto key = kv.first.as<std::string>();
      if (key != "tenants")
        throw ConfigError(where(origin, kv.first) + ": unknown top-level key '" + key + "' (known: tenants)");
    }
    const YAML::Node list = root["tenants"];
    if (!list || !list.IsSequence() || list.size() == 0)
      throw ConfigError(origin + ": 'tenants' must be a non-empty list");
    for (const auto& n : list) {
      tenants.push_back(parse_tenant(n, origin));
      if (!names.insert(tenants.back().name).second)
        throw ConfigError(where(origin, n) + ": tenant '" + tenants.back().name +
                          "' is declared twice");
    }
  } catch (const YAML::Exception& e) {
    throw ConfigError(origin + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  return tenants;
}

std::vector<policy::TenantSpec> load_tenants(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot read the config file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_tenants(ss.str(), path);
}

std::vector<policy::TenantSpec> default_tenants() {
  policy::TenantSpec t;
  t.name = "default";
  return {t};
}

}  // namespace ff::router
