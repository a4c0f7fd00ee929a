#include "router/control/handlers.h"

#include <array>

namespace ff::router {
namespace {

constexpr size_t kBodyTypes = static_cast<size_t>(proto::RequestBody::MAX) + 1;

struct DispatchTables {
  std::array<Handler, kBodyTypes> tenant{};
  std::array<Handler, kBodyTypes> admin{};
  DispatchTables() {
    using B = proto::RequestBody;
    auto on = [this](B b, Handler h) { tenant[static_cast<size_t>(b)] = h; };
    on(B::Hello, handle_hello);
    on(B::ListDevices, handle_list_devices);
    on(B::OpenDevice, handle_open_device);
    on(B::CloseDevice, handle_close_device);
    on(B::QueryDevice, handle_query_device);
    on(B::QueryPort, handle_query_port);
    on(B::QueryGid, handle_query_gid);
    on(B::QueryPkey, handle_query_pkey);
    on(B::AllocPd, handle_alloc_pd);
    on(B::DeallocPd, handle_dealloc_pd);
    admin[static_cast<size_t>(B::AdminStatus)] = handle_admin_status;
  }
};

}  // namespace

Handler find_handler(SessionRole role, proto::RequestBody type) {
  static const DispatchTables tables;
  auto i = static_cast<size_t>(type);
  if (i >= kBodyTypes) return nullptr;
  return role == SessionRole::kAdmin ? tables.admin[i] : tables.tenant[i];
}

ContextObject* find_context(Session& s, uint32_t handle) {
  return s.objects().find<ContextObject>(handle, ObjectKind::kContext);
}

}  // namespace ff::router
