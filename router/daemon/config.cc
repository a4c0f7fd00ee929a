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

std::string format_number(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

// A number within [low, high] (a YAML scalar; "4" and "4.5" both read).
double number_in(const YAML::Node& n, const std::string& origin, const char* key, double low, double high) {
  double v = 0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) || !std::isfinite(v) || v < low || v > high)
    throw ConfigError(where(origin, n) + ": qos." + key + " must be a number from " + format_number(low) + " to " +
                      format_number(high));
  return v;
}

// qos: {max_gbps: 4, max_mops: 2, burst_kib: 256, weight: 3}; every key optional.
policy::QosSpec parse_qos(const YAML::Node& n, const std::string& origin) {
  if (!n.IsMap())
    throw ConfigError(where(origin, n) + ": qos must be a mapping like {max_gbps: 4, max_mops: 2, burst_kib: 256, weight: 3}");
  policy::QosSpec q;
  for (const auto& kv : n) {
    auto key = kv.first.as<std::string>();
    const YAML::Node& v = kv.second;
    if (key == "max_gbps") {
      q.max_gbps = number_in(v, origin, "max_gbps", 0, policy::kMaxQosGbps);
    } else if (key == "max_mops") {
      q.max_mops = number_in(v, origin, "max_mops", 0, policy::kMaxQosMops);
    } else if (key == "burst_kib") {
      q.burst_bytes = static_cast<uint64_t>(number_in(v, origin, "burst_kib", policy::kMinQosBurstBytes / 1024,
                                                      policy::kMaxQosBurstBytes / 1024) * 1024);
    } else if (key == "weight") {
      double w = number_in(v, origin, "weight", 1, policy::kMaxQosWeight);
      if (w != std::floor(w)) throw ConfigError(where(origin, v) + ": qos.weight must be a whole number");
      q.weight = static_cast<uint32_t>(w);
    } else {
      throw ConfigError(where(origin, kv.first) + ": unknown qos key '" + key +
                        "' (known: max_gbps, max_mops, burst_kib, weight)");
    }
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
