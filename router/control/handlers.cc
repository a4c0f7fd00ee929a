#include "router/control/handlers.h"

#include <fcntl.h>

#include <array>

namespace ff::router {
namespace {

constexpr size_t kBodyTypes = static_cast<size_t>(proto::RequestBody::MAX) + 1;

struct DispatchTables {
  std::array<HandlerEntry, kBodyTypes> tenant{};
  std::array<HandlerEntry, kBodyTypes> admin{};
  DispatchTables() {
    using B = proto::RequestBody;
    auto on = [this](B b, Handler h, size_t fds = 0) { tenant[static_cast<size_t>(b)] = {h, fds}; };
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
    on(B::RegisterSegment, handle_register_segment, 1);
    on(B::ReleaseSegment, handle_release_segment);
    on(B::RegMr, handle_reg_mr);
    on(B::DeregMr, handle_dereg_mr);
    on(B::CreateCompChannel, handle_create_comp_channel);
    on(B::DestroyCompChannel, handle_destroy_comp_channel);
    on(B::CreateCq, handle_create_cq);
    on(B::DestroyCq, handle_destroy_cq);
    on(B::CreateQp, handle_create_qp);
    on(B::ModifyQp, handle_modify_qp);
    on(B::QueryQp, handle_query_qp);
    on(B::DestroyQp, handle_destroy_qp);
    on(B::CreateSrq, handle_create_srq);
    on(B::ModifySrq, handle_modify_srq);
    on(B::QuerySrq, handle_query_srq);
    on(B::DestroySrq, handle_destroy_srq);
    on(B::CreateAh, handle_create_ah);
    on(B::DestroyAh, handle_destroy_ah);
    admin[static_cast<size_t>(B::AdminStatus)] = {handle_admin_status, 0};
  }
};

}  // namespace

HandlerEntry find_handler(SessionRole role, proto::RequestBody type) {
  static const DispatchTables tables;
  auto i = static_cast<size_t>(type);
  if (i >= kBodyTypes) return {};
  return role == SessionRole::kAdmin ? tables.admin[i] : tables.tenant[i];
}

HandlerStatus destroy_status(int removed, const char* what) {
  if (removed == ENOENT) return HandlerStatus::fail(EINVAL, std::string("no such ") + what);
  if (removed == EBUSY) return HandlerStatus::fail(EBUSY, std::string(what) + " still in use");
  return HandlerStatus::ok();
}

UniqueFd dup_for_reply(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

ContextObject* find_context(Session& s, uint32_t handle) {
  return s.objects().find<ContextObject>(handle, ObjectKind::kContext);
}

}  // namespace ff::router
