// The router talks to "the network" only through Fabric. Implementations:
// SoftFabric (router/fabric/soft: the router executes the transport itself;
// no RDMA hardware) and VerbsFabric (router/fabric/verbs: a real HCA, or
// SoftRoCE, through rdma-core). Both build on the queue core
// (router/fabric/core), so each writes only what differs.
//
// Thread contract: the control plane calls everything here from the Asio
// thread. Objects returned are owned by the session that asked for them and
// release their fabric resources in their destructors. Errors come back as
// Result (router/common/result.h): an errno plus a sentence for the operator.
#pragma once

#include <infiniband/verbs.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

#include <vector>

#include "policy/qos.h"
#include "policy/quota.h"
#include "proto/fd.h"
#include "router/common/result.h"

namespace boost::asio {
class io_context;
}

namespace ff::router {

class Directory;

// A fabric cannot start (the device named is missing or unusable, the
// cluster cannot be joined); the message says what to do.
class FabricStartError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What a fabric is configured with (the daemon fills it from its knobs).
// The most poller threads a router runs (--pollers).
inline constexpr uint32_t kMaxPollers = 64;

// The poller (of `pollers`) that serves `tenant`: FNV-1a of its name, so
// that every router of a cluster places a tenant alike.
inline size_t poller_of(std::string_view tenant, size_t pollers) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : tenant) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return pollers <= 1 ? 0 : static_cast<size_t>(h % pollers);
}

struct FabricConfig {
  uint32_t poll_spin_us = 100;       // the poller spins this long without work before it sleeps
  uint32_t pollers = 1;              // poller threads, each serving its share of the tenants
  std::vector<int> poller_cpus;      // poller i runs on poller_cpus[i % size] (empty: not pinned)
  std::string poller_name = "ffr-poller";  // poller i's thread: poller_name-i
  uint32_t vendor_id = 0x1af4;       // what the virtual device reports
  uint32_t vendor_part_id = 0xff01;
  std::string device;                // verbs: the RDMA device (empty: the first with an active port)
  int gid_index = -1;                // verbs: its GID index (-1: the RoCE v2 IPv4 GID)
};

// Who owns an object: QPs may only connect, and rkeys only resolve, within
// one tenant; the virtual IP is what a remote GID names.
struct Owner {
  std::string tenant;
  uint64_t session = 0;
  uint32_t virtual_ip = 0;
};

// A context: the doorbell the client rings to wake the fabric's poller, and
// the asynchronous events (a ring in shared memory plus the fd the app sees as
// context->async_fd). The client's ends of the doorbell and of the async fd
// are pipe ends of its own: nothing it does to them can block the router.
class FabricContext {
 public:
  virtual ~FabricContext() = default;
  // The client's end of each (once; an invalid fd after).
  virtual UniqueFd take_client_doorbell() = 0;
  virtual UniqueFd take_client_async_fd() = 0;
  virtual int async_segment_fd() const = 0;
  // From now on, the ring segments of this context's destroyed QPs are kept
  // for its next ones, charged to the tenant's quotas while kept
  // (core/spare_segments.h). Control thread.
  virtual void keep_spare_segments(policy::TenantQuota* /*memory*/, policy::TenantQuota* /*handles*/) {}
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
  // Memory windows bound to it now (ibv_dereg_mr refuses while any are).
  virtual uint32_t windows_bound() const { return 0; }
};

// A memory window (ibv_alloc_mw): an rkey a bind work request attaches to
// a range of an MR (core::Mw).
class FabricMw {
 public:
  virtual ~FabricMw() = default;
  virtual uint32_t rkey() const = 0;  // at allocation
};

// A completion channel: an fd the app waits on plus a ring of "CQ x fired"
// events.
class FabricChannel {
 public:
  virtual ~FabricChannel() = default;
  // The client's end of the channel's fd (once; an invalid fd after).
  virtual UniqueFd take_client_event_fd() = 0;
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
  // An XRC SRQ's number (ibv_get_srq_num: what XRC senders name); 0 for a
  // basic SRQ.
  virtual uint32_t srq_num() const { return 0; }
};

// What makes an SRQ an XRC SRQ: the XRC domain it serves (the router's
// number of it) and the CQ its receives complete on.
struct XrcSrqInit {
  uint32_t xrcd = 0;
  FabricCq* cq = nullptr;
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
  bool atomic_write = false;  // IBV_QP_EX_WITH_ATOMIC_WRITE asked
  // IBV_QPT_XRC_RECV: the XRC domain whose SRQs it delivers to (the
  // router's number of it).
  uint32_t xrcd = 0;
};

class FabricQp {
 public:
  virtual ~FabricQp() = default;
  virtual uint32_t qp_num() const = 0;
  virtual int segment_fd() const = 0;
  virtual ibv_qp_cap cap() const = 0;
  virtual uint32_t send_capacity() const = 0;
  virtual uint32_t recv_capacity() const = 0;
  virtual ibv_qp_type qp_type() const = 0;
};

// What one QP, or all the QPs a tenant ever had on this router, did:
// monotonic, for ffctl and /metrics.
struct TrafficCounters {
  // Work requests the QPs posted that the router carried out as requester
  // (the soft fabric: moved; the verbs fabric: handed to the device, whose
  // completion may still be an error), and their bytes, by ibv_wr_opcode
  // (RDMA_WRITE .. ATOMIC_FETCH_AND_ADD at their own index, ATOMIC_WRITE
  // after them: opcode_index; atomics move 8 bytes). Refused or flushed work
  // is not counted here; its completions are.
  static constexpr size_t kOpcodes = IBV_WR_ATOMIC_FETCH_AND_ADD + 2;
  // Where `opcode` (an ibv_wr_opcode) is counted; kOpcodes: nowhere.
  static constexpr size_t opcode_index(uint32_t opcode) {
    if (opcode <= IBV_WR_ATOMIC_FETCH_AND_ADD) return opcode;
    return opcode == IBV_WR_ATOMIC_WRITE ? kOpcodes - 1 : kOpcodes;
  }
  std::array<uint64_t, kOpcodes> ops{};
  std::array<uint64_t, kOpcodes> bytes{};
  // Receive WRs completed with data (SEND, WRITE_WITH_IMM; UD counts its
  // 40-byte GRH, as byte_len does).
  uint64_t received = 0;
  uint64_t received_bytes = 0;
  // Every completion written to the app's CQs, by ibv_wc_status
  // (IBV_WC_SUCCESS .. IBV_WC_GENERAL_ERR).
  static constexpr size_t kStatuses = IBV_WC_GENERAL_ERR + 1;
  std::array<uint64_t, kStatuses> completions{};
  // RNR NAKs: times a work request found no receive at the responder and
  // waited (each retry counts; soft fabric: the verbs fabric's device
  // retries RNR itself).
  uint64_t rnr_waits = 0;
  // Time the tenant's work waited on its QoS caps (per tenant only).
  uint64_t throttled_ns = 0;
  // Work requests in its rings not yet taken by the router (per QP only,
  // at the time asked; its SRQ's receives are the SRQ's).
  uint32_t send_queued = 0;
  uint32_t recv_queued = 0;
};

// Monotonic counters of the data path, for ffctl.
struct FabricCounters {
  uint64_t work_requests = 0;  // executed
  uint64_t bytes = 0;          // moved by them
  uint64_t error_completions = 0;
  uint64_t poller_sleeps = 0;
  uint64_t poller_busy_ns = 0;  // in passes that found work (Poller::busy_ns)
};

struct FabricDeviceLimits {
  ibv_device_attr_ex attr{};  // node_guid/sys_image_guid are filled per client
  uint32_t max_inline_data = 0;
};

// One peer router as ffctl shows it.
struct PeerStatus {
  std::string name;
  std::string address;
  bool out_up = false;
  bool in_up = false;
  uint64_t frames_sent = 0, frames_received = 0, bytes_sent = 0, bytes_received = 0;
  uint64_t connects = 0, failures = 0, qps_failed = 0;
  std::string last_error;
};

// How the links to the other routers are secured (the --link-* knobs; the
// files are read and checked when the router joins). All empty: in the clear.
struct LinkSecurity {
  std::string psk_file;   // a pre-shared key every router of the cluster holds
  std::string cert_file;  // this router's certificate, chain and private key (PEM)
  std::string ca_file;    // the CA that signs every router's certificate (PEM)
};

// This router's membership in a cluster of routers (links to its peers),
// owned by the daemon. Destroying it leaves the cluster.
class FabricCluster {
 public:
  virtual ~FabricCluster() = default;
  // Stops listening, connecting and reconnecting (the router is stopping).
  virtual void shutdown() = 0;
  virtual std::vector<PeerStatus> peers() const = 0;

  // Messages between the routers' control planes (rdma_cm's handshakes),
  // on the Asio thread: each message sent reaches `router`'s handler, in
  // order, or `router` is reported lost (its links went down, it restarted,
  // or it could not be reached), so that nothing waits for an answer that
  // cannot come.
  using MessageHandler = std::function<void(const std::string& router, std::span<const std::byte> message)>;
  using LostHandler = std::function<void(const std::string& router)>;
  // Set both before sending; null handlers detach (before the daemon's
  // receivers go).
  virtual void on_messages(MessageHandler message, LostHandler lost) = 0;
  // At most kMaxClusterMessage bytes.
  virtual void send_message(const std::string& router, std::vector<std::byte> message) = 0;
};
inline constexpr size_t kMaxClusterMessage = 16 * 1024;

class Fabric {
 public:
  virtual ~Fabric() = default;
  virtual std::string_view name() const = 0;
  // Poller threads (--pollers); tenant t is served by poller_of(t, pollers()).
  virtual size_t pollers() const = 0;
  // What the virtual device reports (limits, capabilities, ids).
  virtual const FabricDeviceLimits& device_limits() const = 0;
  // The link under the single virtual port (port 1): state, MTU, speed;
  // its tables, capability flags and link layer are the control plane's
  // (handlers/query_port.cc).
  virtual ibv_port_attr port_attr() const = 0;
  virtual FabricCounters counters() const = 0;
  // By tenant: every QP the tenant made on this router, live or destroyed.
  virtual std::map<std::string, TrafficCounters> tenant_traffic() const = 0;
  // A tenant's caps and its weight on the poller, applied to running
  // traffic at once (the config at start and on SIGHUP). A tenant never
  // configured has no caps and weight 1.
  virtual void configure_tenant(const std::string& tenant, const policy::QosSpec& spec) = 0;
  virtual TrafficCounters qp_traffic(const FabricQp& qp) const = 0;

  // A context of `tenant`'s: served by the poller that serves the tenant.
  virtual Result<std::unique_ptr<FabricContext>> open_context(std::string_view tenant) = 0;
  virtual Result<std::unique_ptr<FabricPd>> alloc_pd(const Owner& owner) = 0;
  // Maps [offset, offset + length) of a memfd sealed against shrinking, the
  // client's pages [app_base, app_base + length).
  virtual Result<std::shared_ptr<FabricSegment>> map_segment(UniqueFd fd, uint64_t app_base, uint64_t length,
                                                             uint64_t offset) = 0;
  // `segments` cover [addr, addr + length) in address order.
  virtual Result<std::unique_ptr<FabricMr>> reg_mr(FabricPd& pd,
                                                   std::span<const std::shared_ptr<FabricSegment>> segments,
                                                   uint64_t addr, uint64_t length, uint64_t iova,
                                                   unsigned access) = 0;
  // Type 1 or 2 (IBV_MW_TYPE_*); a fabric without windows says so
  // (EOPNOTSUPP), as it leaves IBV_DEVICE_MEM_WINDOW unreported.
  virtual Result<std::unique_ptr<FabricMw>> alloc_mw(FabricPd&, uint32_t /*type*/) {
    return Error{EOPNOTSUPP, "the " + std::string(name()) + " fabric has no memory windows"};
  }
  virtual Result<std::unique_ptr<FabricChannel>> create_channel() = 0;
  // `tag` (the client's handle) names the object in completion-channel and
  // asynchronous events.
  virtual Result<std::unique_ptr<FabricCq>> create_cq(FabricContext& ctx, int cqe, FabricChannel* channel,
                                                      bool timestamps, uint32_t tag) = 0;
  // ibv_resize_cq: a CQ of at least `cqe` entries, the completions not yet
  // polled carried over (EINVAL when more than that are waiting). `admit`
  // is asked with the new segment's fd before anything moves; false leaves
  // the CQ as it was (ENOMEM). The CQ's segment_fd() is the new one after.
  virtual Status resize_cq(FabricCq& cq, int cqe, const std::function<bool(int segment_fd)>& admit) = 0;
  // `srq` may be null (the QP has its own receive queue). The CQs are
  // required but where XRC has none: an XRC send QP has no receive CQ, an
  // XRC receive QP neither CQ (its receives complete on the SRQ's), and its
  // PD is its domain's.
  virtual Result<std::unique_ptr<FabricQp>> create_qp(FabricContext& ctx, FabricPd& pd, FabricCq* send_cq,
                                                      FabricCq* recv_cq, FabricSrq* srq, const QpInit& init,
                                                      uint32_t tag) = 0;
  // `xrc` set: an XRC SRQ (a fabric without XRC says EOPNOTSUPP and leaves
  // IBV_DEVICE_XRC unreported).
  virtual Result<std::unique_ptr<FabricSrq>> create_srq(FabricContext& ctx, FabricPd& pd, uint32_t max_wr,
                                                        uint32_t max_sge, uint32_t srq_limit, uint32_t tag,
                                                        const XrcSrqInit* xrc = nullptr) = 0;
  // IBV_SRQ_LIMIT arms the limit event; IBV_SRQ_MAX_WR resizes (EINVAL when
  // more receives wait than `max_wr`), the new segment offered to `admit`
  // first as resize_cq does, the receives waiting in it carried over. The
  // SRQ's segment_fd() is the new one after.
  virtual Status modify_srq(FabricSrq& srq, uint32_t mask, uint32_t max_wr, uint32_t srq_limit,
                            const std::function<bool(int segment_fd)>& admit) = 0;
  virtual uint32_t query_srq_limit(FabricSrq& srq) = 0;
  virtual Result<std::unique_ptr<FabricAh>> create_ah(FabricPd& pd, const ibv_ah_attr& attr) = 0;
  // The virtual address of the sender of a datagram `receiver` got from QP
  // `src_qp`, given the GRH source `seen` (ibv_init_ah_from_wc). A fabric
  // whose device writes its own addresses into GRHs maps them; the soft
  // fabric writes virtual ones itself.
  virtual ibv_gid sender_address(FabricQp& /*receiver*/, uint32_t /*src_qp*/, const ibv_gid& seen) { return seen; }
  // The router a change must ask first: the one serving its destination,
  // when the change needs to know which device, which QP there, and whether
  // that QP is the tenant's (the verbs fabric across hosts); "" when none
  // (modify_qp makes it at once); an error when no router serves the
  // destination for the tenant.
  virtual Result<std::string> modify_route(const FabricQp&, const ibv_qp_attr&, int) const { return std::string{}; }
  virtual Status modify_qp(FabricQp& qp, const ibv_qp_attr& attr, int mask) = 0;
  // ibv_attach_mcast (`attach`) or ibv_detach_mcast of a UD QP; a fabric
  // without multicast says so (EOPNOTSUPP) and reports max_mcast_grp 0.
  virtual Status attach_mcast(FabricQp&, const ibv_gid&, bool /*attach*/) {
    return Error{EOPNOTSUPP, "the " + std::string(name()) + " fabric has no multicast"};
  }
  // Makes the change once `router` (modify_route's) answered, or failed
  // to: `done` runs on the control thread, once, never before this returns;
  // not at all when the QP is destroyed first.
  using ModifyDone = std::function<void(Status)>;
  virtual void modify_qp_via_peer(FabricQp&, const ibv_qp_attr&, int, const std::string& /*router*/, ModifyDone) {}
  virtual ibv_qp_attr query_qp(FabricQp& qp) = 0;

  // Joins the routers `directory` lists, listening for them on `listen`
  // (HOST:PORT), its links secured as `security` says. Before clients
  // connect. A fabric that serves one host says so (EOPNOTSUPP).
  virtual Result<std::unique_ptr<FabricCluster>> join_cluster(boost::asio::io_context& io, Directory& directory,
                                                              const std::string& listen,
                                                              const LinkSecurity& security) = 0;
  // A fabric whose data between hosts does not travel on router links (a
  // device carries it) joins over `links`: a cluster that only carries the
  // routers' control messages (the daemon makes it of the soft fabric's
  // links). EOPNOTSUPP where the fabric serves one host or has links of
  // its own.
  virtual Result<std::unique_ptr<FabricCluster>> join_cluster_over(std::unique_ptr<FabricCluster>,
                                                                   boost::asio::io_context&,
                                                                   Directory&) {
    return Error{EOPNOTSUPP, "the " + std::string(name()) + " fabric serves one host"};
  }
};

}  // namespace ff::router
