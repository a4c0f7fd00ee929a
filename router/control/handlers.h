// One handler per control message, each in its own file under handlers/.
// A handler runs only after the frame passed the flatbuffers verifier and the
// session is allowed to send that message; it checks every handle against the
// session's own table.
#pragma once

#include <optional>

#include "proto/control_generated.h"
#include "router/control/session.h"

namespace ff::router {

// `fds` are the descriptors that came with the request (exactly as many as
// the dispatch table says the request takes).
using Handler = Status (*)(Session&, const proto::Request&, std::vector<UniqueFd>& fds,
                                  ReplyWriter&);
#define FF_HANDLER(name) \
  Status name(Session&, const proto::Request&, std::vector<UniqueFd>&, ReplyWriter&)

FF_HANDLER(handle_hello);
FF_HANDLER(handle_list_devices);
FF_HANDLER(handle_open_device);
FF_HANDLER(handle_close_device);
FF_HANDLER(handle_query_device);
FF_HANDLER(handle_query_port);
FF_HANDLER(handle_query_gid);
FF_HANDLER(handle_query_pkey);
FF_HANDLER(handle_alloc_pd);
FF_HANDLER(handle_dealloc_pd);
FF_HANDLER(handle_admin_status);
FF_HANDLER(handle_set_qos);
FF_HANDLER(handle_register_segment);
FF_HANDLER(handle_release_segment);
FF_HANDLER(handle_reg_mr);
FF_HANDLER(handle_dereg_mr);
FF_HANDLER(handle_alloc_mw);
FF_HANDLER(handle_dealloc_mw);
FF_HANDLER(handle_attach_mcast);
FF_HANDLER(handle_detach_mcast);
FF_HANDLER(handle_cm_join_multicast);
FF_HANDLER(handle_create_comp_channel);
FF_HANDLER(handle_destroy_comp_channel);
FF_HANDLER(handle_create_cq);
FF_HANDLER(handle_destroy_cq);
FF_HANDLER(handle_resize_cq);
FF_HANDLER(handle_create_qp);
FF_HANDLER(handle_modify_qp);
FF_HANDLER(handle_query_qp);
FF_HANDLER(handle_destroy_qp);
FF_HANDLER(handle_create_srq);
FF_HANDLER(handle_open_xrcd);
FF_HANDLER(handle_close_xrcd);
FF_HANDLER(handle_open_qp);
FF_HANDLER(handle_modify_srq);
FF_HANDLER(handle_query_srq);
FF_HANDLER(handle_destroy_srq);
FF_HANDLER(handle_create_ah);
FF_HANDLER(handle_destroy_ah);
FF_HANDLER(handle_sender_address);
FF_HANDLER(handle_cm_create_channel);
FF_HANDLER(handle_cm_destroy_channel);
FF_HANDLER(handle_cm_get_event);
FF_HANDLER(handle_cm_create_id);
FF_HANDLER(handle_cm_destroy_id);
FF_HANDLER(handle_cm_migrate_id);
FF_HANDLER(handle_cm_bind_addr);
FF_HANDLER(handle_cm_listen);
FF_HANDLER(handle_cm_set_reuse_addr);
FF_HANDLER(handle_cm_resolve_addr);
FF_HANDLER(handle_cm_resolve_route);
FF_HANDLER(handle_cm_connect);
FF_HANDLER(handle_cm_accept);
FF_HANDLER(handle_cm_reject);
FF_HANDLER(handle_cm_establish);
FF_HANDLER(handle_cm_disconnect);

struct HandlerEntry {
  Handler handler = nullptr;
  size_t fds = 0;         // descriptors the request carries
  bool creates = false;   // adds an object: subject to --max-objects-per-session
  ObjectKind kind = ObjectKind::kCount;  // ... of this kind, charged router_handles(kind)
};

// The handler for a request body type on a session of `role`; its handler
// is null when that role may not send it.
HandlerEntry find_handler(SessionRole role, proto::RequestBody type);

// errno for a destroy that found the handle missing (EINVAL) or in use (EBUSY).
Status destroy_status(int removed, const char* what);

// Duplicates an fd to pass it in a reply (the object keeps its own).
UniqueFd dup_for_reply(int fd);

// Charges the shared memory behind `segment_fd` (its size) to the session's
// tenant; false (and a refusal counted) when the tenant's quota is full.
bool charge_segment(Session& s, int segment_fd, policy::Charge& out);
Status quota_exceeded(Session& s);

// A segment a fabric makes to replace an object's own (resize_cq,
// modify_srq): admit() is what the fabric asks before it moves anything. It
// duplicates the fd for the reply and charges the segment to the tenant
// then, so that nothing can fail once the object moved (an app left on the
// old segment would wait forever). refusal() says why it said no.
class SegmentCharge {
 public:
  explicit SegmentCharge(Session& s) : s_(s) {}
  std::function<bool(int segment_fd)> admit() {
    return [this](int fd) {
      fd_ = dup_for_reply(fd);
      if (!fd_) {
        why_ = Error{EMFILE, "cannot duplicate the new segment's fd"};
        return false;
      }
      if (!charge_segment(s_, fd, charge_)) {
        why_ = quota_exceeded(s_).error();
        return false;
      }
      return true;
    };
  }
  const std::optional<Error>& refusal() const { return why_; }
  policy::Charge take_charge() { return std::move(charge_); }
  UniqueFd take_fd() { return std::move(fd_); }

 private:
  Session& s_;
  policy::Charge charge_;
  UniqueFd fd_;
  std::optional<Error> why_;
};

// Shared by handlers that take a context handle.
ContextObject* find_context(Session& s, uint32_t handle);

// The virtual port, port 1 of every client's device whatever the fabric
// (handlers/query_port.cc, query_gid.cc): RoCE, one P_Key, and a GID table
// of kVirtualGidTableLength entries of which only index 0 (the client's
// virtual IP as an IPv4-mapped RoCEv2 GID) is populated. Real RoCE devices
// report long tables with empty entries (rxe 1024, ConnectX 255), and
// programs probe them.
inline constexpr int kVirtualGidTableLength = 16;

}  // namespace ff::router
