// The router talks to "the network" only through Fabric. Implementations:
// SoftFabric (the router executes the transport itself; no RDMA hardware) and,
// later, VerbsFabric (a real HCA through rdma-core).
//
// Thread contract: the control plane calls everything here from the Asio
// thread. Objects returned are owned by the session that asked for them and
// release their fabric resources in their destructors. Errors come back as
// an errno plus a sentence for the operator (FabricError).
#pragma once

#include <infiniband/verbs.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "proto/fd.h"

namespace ff::router {

struct FabricError {
  int code = 0;
  std::string message;
  std::nullptr_t set(int c, std::string m) {
    code = c;
    message = std::move(m);
    return nullptr;
  }
};

// Who owns an object: QPs may only connect, and rkeys only resolve, within
// one tenant; the virtual IP is what a remote GID names.
struct Owner {
  std::string tenant;
  uint64_t session = 0;
  uint32_t virtual_ip = 0;
};

// A context: the doorbell the client rings to wake the fabric's poller, and
// the asynchronous events (a ring in shared memory plus the eventfd the app
// sees as context->async_fd).
class FabricContext {
 public:
  virtual ~FabricContext() = default;
  virtual int doorbell_fd() const = 0;
  virtual int async_event_fd() const = 0;
  virtual int async_segment_fd() const = 0;
};

class FabricPd {
 public:
  virtual ~FabricPd() = default;
};

// A range of the client's address space shared with the router (a memfd).
class FabricSegment {
 public:
  virtual ~FabricSegment() = default;
  virtual uint64_t app_base() const = 0;
  virtual uint64_t length() const = 0;
};

class FabricMr {
 public:
  virtual ~FabricMr() = default;
  virtual uint32_t lkey() const = 0;
  virtual uint32_t rkey() const = 0;
};

// A completion channel: an eventfd plus a ring of "CQ x fired" events.
class FabricChannel {
 public:
  virtual ~FabricChannel() = default;
  virtual int event_fd() const = 0;
  virtual int segment_fd() const = 0;
  virtual uint32_t capacity() const = 0;
};

class FabricCq {
 public:
  virtual ~FabricCq() = default;
  virtual int segment_fd() const = 0;
  virtual uint32_t capacity() const = 0;
};

// A shared receive queue.
class FabricSrq {
 public:
  virtual ~FabricSrq() = default;
  virtual int segment_fd() const = 0;
  virtual uint32_t capacity() const = 0;
  virtual uint32_t max_sge() const = 0;
};

// An address handle: where UD datagrams go.
class FabricAh {
 public:
  virtual ~FabricAh() = default;
  // What work requests name it by (fabric-wide, checked against the PD).
  virtual uint32_t id() const = 0;
};

struct QpInit {
  ibv_qp_type type = IBV_QPT_RC;
  ibv_qp_cap cap{};
  bool sq_sig_all = false;
};

class FabricQp {
 public:
  virtual ~FabricQp() = default;
  virtual uint32_t qp_num() const = 0;
  virtual int segment_fd() const = 0;
  virtual ibv_qp_cap cap() const = 0;
  virtual uint32_t send_capacity() const = 0;
  virtual uint32_t recv_capacity() const = 0;
};

// Monotonic counters of the data path, for ffctl.
struct FabricCounters {
  uint64_t work_requests = 0;  // executed
  uint64_t bytes = 0;          // moved by them
  uint64_t error_completions = 0;
  uint64_t poller_sleeps = 0;
};

struct FabricDeviceLimits {
  ibv_device_attr_ex attr{};  // node_guid/sys_image_guid are filled per client
  uint32_t max_inline_data = 0;
};

class Fabric {
 public:
  virtual ~Fabric() = default;
  virtual std::string_view name() const = 0;
  // What the virtual device reports (limits, capabilities, ids).
  virtual const FabricDeviceLimits& device_limits() const = 0;
  // The single virtual port's attributes (port 1).
  virtual ibv_port_attr port_attr() const = 0;
  virtual FabricCounters counters() const = 0;

  virtual std::unique_ptr<FabricContext> open_context(FabricError& err) = 0;
  virtual std::unique_ptr<FabricPd> alloc_pd(const Owner& owner, FabricError& err) = 0;
  // Maps a sealed memfd standing for [app_base, app_base + length).
  virtual std::shared_ptr<FabricSegment> map_segment(UniqueFd fd, uint64_t app_base,
                                                     uint64_t length, FabricError& err) = 0;
  // `segments` cover [addr, addr + length) in address order.
  virtual std::unique_ptr<FabricMr> reg_mr(FabricPd& pd,
                                           std::span<const std::shared_ptr<FabricSegment>> segments,
                                           uint64_t addr, uint64_t length, uint64_t iova,
                                           unsigned access, FabricError& err) = 0;
  virtual std::unique_ptr<FabricChannel> create_channel(FabricError& err) = 0;
  // `tag` (the client's handle) names the object in completion-channel and
  // asynchronous events.
  virtual std::unique_ptr<FabricCq> create_cq(FabricContext& ctx, int cqe, FabricChannel* channel,
                                              uint32_t tag, FabricError& err) = 0;
  // `srq` may be null (the QP has its own receive queue).
  virtual std::unique_ptr<FabricQp> create_qp(FabricContext& ctx, FabricPd& pd, FabricCq& send_cq,
                                              FabricCq& recv_cq, FabricSrq* srq, const QpInit& init,
                                              uint32_t tag, FabricError& err) = 0;
  virtual std::unique_ptr<FabricSrq> create_srq(FabricContext& ctx, FabricPd& pd, uint32_t max_wr,
                                                uint32_t max_sge, uint32_t srq_limit, uint32_t tag,
                                                FabricError& err) = 0;
  // IBV_SRQ_LIMIT arms the limit event; resizing (IBV_SRQ_MAX_WR) is EOPNOTSUPP.
  virtual int modify_srq(FabricSrq& srq, uint32_t mask, uint32_t srq_limit, std::string& why) = 0;
  virtual uint32_t query_srq_limit(FabricSrq& srq) = 0;
  virtual std::unique_ptr<FabricAh> create_ah(FabricPd& pd, const ibv_ah_attr& attr, FabricError& err) = 0;
  virtual int modify_qp(FabricQp& qp, const ibv_qp_attr& attr, int mask, std::string& why) = 0;
  virtual void query_qp(FabricQp& qp, ibv_qp_attr& attr) = 0;
};

}  // namespace ff::router
