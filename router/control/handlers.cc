#include "router/control/handlers.h"


#include <fcntl.h>
#include <sys/stat.h>

#include <array>

namespace ff::router {
namespace {

constexpr size_t kBodyTypes = static_cast<size_t>(proto::RequestBody::MAX) + 1;

struct DispatchTables {
  std::array<HandlerEntry, kBodyTypes> tenant{};
  std::array<HandlerEntry, kBodyTypes> admin{};
  DispatchTables() {
    using B = proto::RequestBody;
    auto on = [this](B b, Handler h, size_t fds = 0) { tenant[static_cast<size_t>(b)] = {h, fds, false}; };
    auto creating = [this](B b, Handler h, ObjectKind kind, size_t fds = 0) {
      tenant[static_cast<size_t>(b)] = {h, fds, true, kind};
    };
    on(B::Hello, handle_hello);
    on(B::ListDevices, handle_list_devices);
    creating(B::OpenDevice, handle_open_device, ObjectKind::kContext);
    on(B::CloseDevice, handle_close_device);
    on(B::QueryDevice, handle_query_device);
    on(B::QueryPort, handle_query_port);
    on(B::QueryGid, handle_query_gid);
    on(B::QueryPkey, handle_query_pkey);
    creating(B::AllocPd, handle_alloc_pd, ObjectKind::kPd);
    on(B::DeallocPd, handle_dealloc_pd);
    creating(B::RegisterSegment, handle_register_segment, ObjectKind::kSegment, 1);
    on(B::ReleaseSegment, handle_release_segment);
    creating(B::RegMr, handle_reg_mr, ObjectKind::kMr);
    on(B::DeregMr, handle_dereg_mr);
    creating(B::AllocMw, handle_alloc_mw, ObjectKind::kMw);
    on(B::DeallocMw, handle_dealloc_mw);
    on(B::AttachMcast, handle_attach_mcast);
    on(B::DetachMcast, handle_detach_mcast);
    creating(B::CreateCompChannel, handle_create_comp_channel, ObjectKind::kChannel);
    on(B::DestroyCompChannel, handle_destroy_comp_channel);
    creating(B::CreateCq, handle_create_cq, ObjectKind::kCq);
    on(B::DestroyCq, handle_destroy_cq);
    on(B::ResizeCq, handle_resize_cq);
    creating(B::CreateQp, handle_create_qp, ObjectKind::kQp);
    on(B::ModifyQp, handle_modify_qp);
    on(B::QueryQp, handle_query_qp);
    on(B::DestroyQp, handle_destroy_qp);
    creating(B::CreateSrq, handle_create_srq, ObjectKind::kSrq);
    creating(B::OpenXrcd, handle_open_xrcd, ObjectKind::kXrcd);
    on(B::CloseXrcd, handle_close_xrcd);
    creating(B::OpenQp, handle_open_qp, ObjectKind::kQp);
    on(B::ModifySrq, handle_modify_srq);
    on(B::QuerySrq, handle_query_srq);
    on(B::DestroySrq, handle_destroy_srq);
    creating(B::CreateAh, handle_create_ah, ObjectKind::kAh);
    on(B::DestroyAh, handle_destroy_ah);
    on(B::SenderAddress, handle_sender_address);
    creating(B::CmCreateChannel, handle_cm_create_channel, ObjectKind::kCmChannel);
    on(B::CmDestroyChannel, handle_cm_destroy_channel);
    on(B::CmGetEvent, handle_cm_get_event);
    creating(B::CmCreateId, handle_cm_create_id, ObjectKind::kCmId);
    on(B::CmDestroyId, handle_cm_destroy_id);
    on(B::CmMigrateId, handle_cm_migrate_id);
    on(B::CmBindAddr, handle_cm_bind_addr);
    on(B::CmListen, handle_cm_listen);
    on(B::CmSetReuseAddr, handle_cm_set_reuse_addr);
    on(B::CmResolveAddr, handle_cm_resolve_addr);
    on(B::CmResolveRoute, handle_cm_resolve_route);
    on(B::CmJoinMulticast, handle_cm_join_multicast);
    on(B::CmConnect, handle_cm_connect);
    on(B::CmAccept, handle_cm_accept);
    on(B::CmReject, handle_cm_reject);
    on(B::CmEstablish, handle_cm_establish);
    on(B::CmDisconnect, handle_cm_disconnect);
    admin[static_cast<size_t>(B::AdminStatus)] = {handle_admin_status, 0};
    admin[static_cast<size_t>(B::SetQos)] = {handle_set_qos, 0};
  }
};

}  // namespace

HandlerEntry find_handler(SessionRole role, proto::RequestBody type) {
  static const DispatchTables tables;
  auto i = static_cast<size_t>(type);
  if (i >= kBodyTypes) return {};
  return role == SessionRole::kAdmin ? tables.admin[i] : tables.tenant[i];
}

Status destroy_status(int removed, const char* what) {
  if (removed == ENOENT) return Error{EINVAL, std::string("no such ") + what};
  if (removed == EBUSY) return Error{EBUSY, std::string(what) + " still in use"};
  return Status{};
}

UniqueFd dup_for_reply(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

bool charge_segment(Session& s, int segment_fd, policy::Charge& out) {
  struct stat st {};
  uint64_t bytes = ::fstat(segment_fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  policy::TenantQuota& q = s.services().quota(*s.tenant());
  if (!q.try_take(bytes)) return false;
  out = policy::Charge(&q, bytes);
  return true;
}

Status quota_exceeded(Session& s) {
  policy::TenantQuota& q = s.services().quota(*s.tenant());
  return Error{ENOMEM, "tenant '" + s.tenant()->name + "' holds " +
                                         std::to_string(q.used() >> 20) + " MiB of shared memory; the limit is " +
                                         std::to_string(q.limit() >> 20) + " MiB (--max-shm-mb-per-tenant)"};
}

ContextObject* find_context(Session& s, uint32_t handle) {
  return s.objects().find<ContextObject>(handle, ObjectKind::kContext);
}

}  // namespace ff::router
