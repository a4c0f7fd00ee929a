#include "router/directory/endpoint.h"

#include <charconv>

#include "policy/tenant.h"

namespace ff::router {

std::optional<Endpoint> parse_endpoint(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  auto ip = policy::parse_ipv4(text.substr(0, colon));
  auto port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (!ip || ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 || port > 65535)
    return std::nullopt;
  return Endpoint{*ip, static_cast<uint16_t>(port)};
}

}  // namespace ff::router
