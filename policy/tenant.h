// Tenants and their virtual network. Pure logic: no I/O, no threads.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "policy/qos.h"

namespace ff::policy {

// IPv4 addresses are host-order uint32_t throughout the router.
std::optional<uint32_t> parse_ipv4(std::string_view text);
std::string format_ipv4(uint32_t ip);

struct Ipv4Cidr {
  uint32_t network = 0;  // host order, host bits zero
  uint8_t prefix = 0;
  bool contains(uint32_t ip) const;
  std::string to_string() const;
};
// "a.b.c.d/n"; host bits must be zero.
std::optional<Ipv4Cidr> parse_cidr(std::string_view text);

struct TenantSpec {
  std::string name;
  // Addresses a client of this tenant may have. When set, the client's
  // namespace address must fall inside it.
  std::optional<Ipv4Cidr> network;
  // Used when the client's network namespace has no usable IPv4 address.
  std::optional<uint32_t> virtual_ip;
  // Its caps and its weight on the poller (changed live on SIGHUP).
  QosSpec qos;
};

// Tenant names become directory names: 1-64 of [A-Za-z0-9_.-], not starting with '.'.
bool is_valid_tenant_name(std::string_view name);

// Picks a client's virtual IP from the addresses of its network namespace
// (in interface order), the tenant's network and fallback. On failure the
// string says what the operator should change.
struct VirtualIpChoice {
  std::optional<uint32_t> ip;
  std::string error;
};
VirtualIpChoice choose_virtual_ip(const TenantSpec& tenant, std::span<const uint32_t> netns_addresses);

// The IPv4-mapped IPv6 GID (::ffff:a.b.c.d) of a virtual IP, network order bytes.
void ipv4_mapped_gid(uint32_t ip, uint8_t (&gid)[16]);
// The IPv4 address inside an IPv4-mapped GID; nullopt for any other GID.
std::optional<uint32_t> ipv4_of_gid(const uint8_t (&gid)[16]);

// A node GUID that is stable for a virtual IP: 02:ff:00:00:a:b:c:d.
uint64_t node_guid_for(uint32_t ip);

}  // namespace ff::policy
