#include "policy/tenant.h"

#include <charconv>
#include <cstring>

namespace ff::policy {

std::optional<uint32_t> parse_ipv4(std::string_view text) {
  uint32_t ip = 0;
  const char* p = text.data();
  const char* end = text.data() + text.size();
  for (int i = 0; i < 4; ++i) {
    if (i > 0) {
      if (p == end || *p != '.') return std::nullopt;
      ++p;
    }
    if (p == end || *p < '0' || *p > '9') return std::nullopt;
    unsigned v = 0;
    auto [next, ec] = std::from_chars(p, end, v);
    if (ec != std::errc() || v > 255 || next - p > 3) return std::nullopt;
    p = next;
    ip = (ip << 8) | v;
  }
  if (p != end) return std::nullopt;
  return ip;
}

std::string format_ipv4(uint32_t ip) {
  return std::to_string(ip >> 24) + "." + std::to_string((ip >> 16) & 255) + "." +
         std::to_string((ip >> 8) & 255) + "." + std::to_string(ip & 255);
}

namespace {
uint32_t prefix_mask(uint8_t prefix) {
  return prefix == 0 ? 0 : ~uint32_t{0} << (32 - prefix);
}
}  // namespace

bool Ipv4Cidr::contains(uint32_t ip) const { return (ip & prefix_mask(prefix)) == network; }

std::string Ipv4Cidr::to_string() const { return format_ipv4(network) + "/" + std::to_string(prefix); }

std::optional<Ipv4Cidr> parse_cidr(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  auto ip = parse_ipv4(text.substr(0, slash));
  auto len = text.substr(slash + 1);
  unsigned prefix = 0;
  auto [next, ec] = std::from_chars(len.data(), len.data() + len.size(), prefix);
  if (!ip || len.empty() || ec != std::errc() || next != len.data() + len.size() || prefix > 32)
    return std::nullopt;
  auto p = static_cast<uint8_t>(prefix);
  if ((*ip & ~prefix_mask(p)) != 0) return std::nullopt;
  return Ipv4Cidr{*ip, p};
}

bool is_valid_tenant_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name.front() == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

VirtualIpChoice choose_virtual_ip(const TenantSpec& tenant, std::span<const uint32_t> addrs) {
  for (uint32_t ip : addrs) {
    if (!tenant.network || tenant.network->contains(ip)) return {ip, {}};
  }
  if (tenant.virtual_ip) return {tenant.virtual_ip, {}};
  if (addrs.empty()) {
    return {std::nullopt, "the client's network namespace has no IPv4 address; give it one, or set "
                          "virtual_ip for tenant '" + tenant.name + "' in the router config"};
  }
  return {std::nullopt, "none of the client's addresses (first: " + format_ipv4(addrs.front()) +
                            ") is inside tenant '" + tenant.name + "' network " +
                            tenant.network->to_string()};
}

std::optional<uint32_t> ipv4_of_gid(const uint8_t (&gid)[16]) {
  static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(gid, prefix, sizeof prefix) != 0) return std::nullopt;
  return (uint32_t{gid[12]} << 24) | (uint32_t{gid[13]} << 16) | (uint32_t{gid[14]} << 8) | gid[15];
}

void ipv4_mapped_gid(uint32_t ip, uint8_t (&gid)[16]) {
  std::memset(gid, 0, sizeof gid);
  gid[10] = 0xff;
  gid[11] = 0xff;
  gid[12] = static_cast<uint8_t>(ip >> 24);
  gid[13] = static_cast<uint8_t>(ip >> 16);
  gid[14] = static_cast<uint8_t>(ip >> 8);
  gid[15] = static_cast<uint8_t>(ip);
}

uint64_t node_guid_for(uint32_t ip) { return (uint64_t{0x02ff} << 48) | ip; }

}  // namespace ff::policy
