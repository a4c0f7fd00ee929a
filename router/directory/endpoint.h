// HOST:PORT endpoints of routers (IPv4 host, as the test namespaces and
// most clusters use).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ff::router {

inline constexpr size_t kMaxRouterNameLength = 63;

struct Endpoint {
  uint32_t ip = 0;  // host order
  uint16_t port = 0;
};
std::optional<Endpoint> parse_endpoint(std::string_view text);

}  // namespace ff::router
