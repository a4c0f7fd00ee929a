// The router's YAML configuration: the tenants it serves.
//
//   tenants:
//     - name: blue              # [A-Za-z0-9_.-], becomes tenants/blue/ffrouter.sock
//       network: 10.99.0.0/16   # optional: client addresses must be inside
//       virtual_ip: 10.99.0.9   # optional: for clients whose netns has no IPv4
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "policy/tenant.h"

namespace ff::router {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws ConfigError naming the file, the entry and what to fix.
std::vector<policy::TenantSpec> load_tenants(const std::string& path);
std::vector<policy::TenantSpec> parse_tenants(const std::string& yaml_text, const std::string& origin);
std::vector<policy::TenantSpec> default_tenants();

}  // namespace ff::router
