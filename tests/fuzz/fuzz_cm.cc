// A hostile (or broken) peer router's rdma_cm messages. The input is a
// sequence of messages (a 2-byte little-endian length, then that many
// bytes) from router "beta" to a connection manager whose tenant has a
// listener and an id connecting to beta; the app side answers what arrives
// (accepts or rejects requests, establishes responses, disconnects) as the
// input's bytes say, and at the end beta may be lost. Whatever arrives, the
// manager must neither crash nor hold more than its bounds, and every id
// must leave cleanly (ASan, UBSan; leaks checked by the ids' count).
#include <rdma/rdma_cma.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>

#include "router/cm/connection_manager.h"
#include "../unit/cm_owner.h"

namespace {

using namespace ff::router::cm;

constexpr uint32_t kVip = 0x0a000001, kFarVip = 0x0a000102;
constexpr size_t kMaxIds = 64;

struct Swallow final : Routes {
  std::optional<std::string> router_for(const std::string&, uint32_t ip) override {
    return ip == kVip ? std::string() : std::string("beta");
  }
  void send(const std::string&, std::vector<std::byte> message) override {
    std::string why;
    if (!decode(message, why)) __builtin_trap();  // what it sends, it can read back
  }
};

using Session = ff::router::cm::test_support::CmOwner;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Swallow routes;
  ConnectionManager manager;
  manager.set_routes(&routes);
  {
    Session app(manager, kMaxIds);
    auto listener = manager.create_id("blue", kVip, app, app.channel, RDMA_PS_TCP, IBV_QPT_RC);
    app.adopt(listener);
    (void)manager.bind(*listener, {0, 7000});
    (void)manager.listen(*listener, 4);
    auto active = manager.create_id("blue", kVip, app, app.channel, RDMA_PS_TCP, IBV_QPT_RC);
    app.adopt(active);
    (void)manager.resolve_addr(*active, std::nullopt, {kFarVip, 7000}, true);
    (void)manager.resolve_route(*active);
    (void)manager.connect(*active, ConnParam{}, {});
    size_t at = 0;
    while (at + 2 <= size) {
      size_t n = data[at] | (size_t{data[at + 1]} << 8);
      at += 2;
      if (n > size - at) n = size - at;
      uint8_t choice = n > 0 ? data[at + n - 1] : 0;
      manager.receive("beta", std::span(reinterpret_cast<const std::byte*>(data + at), n));
      at += n;
      // The app answers what arrived.
      while (auto e = manager.take_event(*app.channel)) {
        auto it = app.ids.find(e->id);
        if (it == app.ids.end()) continue;
        Id& id = *it->second;
        switch (e->type) {
          case RDMA_CM_EVENT_CONNECT_REQUEST:
            if (choice & 1)
              (void)manager.accept(id, ConnParam{}, {});
            else if (choice & 2)
              (void)manager.reject(id, {});
            else if (choice & 4)
              app.drop(e->id);
            break;
          case RDMA_CM_EVENT_CONNECT_RESPONSE:
            (void)manager.establish(id);
            break;
          case RDMA_CM_EVENT_ESTABLISHED:
            if (choice & 8) (void)manager.disconnect(id);
            break;
          case RDMA_CM_EVENT_DISCONNECTED:
            if (choice & 16) (void)manager.disconnect(id);
            else app.drop(e->id);
            break;
          default:
            break;
        }
      }
      if (app.ids.size() > kMaxIds) __builtin_trap();
    }
    if (size > 0 && (data[size - 1] & 0x80)) manager.router_lost("beta");
  }
  if (manager.ports_in_use() != 0) __builtin_trap();  // every id released its port
  return 0;
}
