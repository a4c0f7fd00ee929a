// XRC domains (ibv_open_xrcd). A domain groups XRC SRQs and XRC receive
// QPs: a receive QP delivers only to SRQs of its domain. A domain opened
// on a file is shared by every process of the tenant that opens the same
// file (the kernel keys it by inode; the router by tenant and inode, so
// that tenants never share one); one opened without a file is private.
//
// A receive QP belongs to its domain, not to the process that made it: any
// process of the tenant with the domain open may open it (ibv_open_qp), and
// it lives while any handle to it does. So the domain holds what such a QP
// needs beyond a process: a context of its own; and the QP a PD of its own
// (its maker's tenant and address; its memory checks use the SRQ's PD).
//
// Thread contract: the Asio thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>

#include "router/common/result.h"
#include "router/fabric/fabric.h"

namespace ff::router {

class XrcDomain : public std::enable_shared_from_this<XrcDomain> {
 public:
  XrcDomain(uint32_t number, std::unique_ptr<FabricContext> context)
      : number_(number), context_(std::move(context)) {}
  ~XrcDomain();  // its receive QPs are gone: each holds the domain

  // What the fabric matches SRQs and receive QPs by (router-wide, never 0).
  uint32_t number() const { return number_; }

  // An XRC receive QP of this domain, made by `owner`; `tag` names it in
  // events.
  Result<std::shared_ptr<FabricQp>> create_qp(Fabric& fabric, const Owner& owner, uint32_t tag);
  // The receive QP numbered `qp_num` of this domain (ibv_open_qp); EINVAL
  // when it has none (never made, or every handle to it is gone).
  Result<std::shared_ptr<FabricQp>> open_qp(uint32_t qp_num);

 private:
  const uint32_t number_;
  std::unique_ptr<FabricContext> context_;
  std::map<uint32_t, std::weak_ptr<FabricQp>> receive_qps_;  // by QP number
};

class XrcDomains {
 public:
  // Which file a shared domain is named by.
  struct File {
    uint64_t dev = 0;
    uint64_t ino = 0;
  };
  // Opens a domain for `owner`'s tenant as ibv_open_xrcd does: no file: a
  // new private one; a file: the tenant's domain of it, made when absent
  // if `oflags` has O_CREAT (else EAGAIN), refused when present and
  // O_EXCL is set (EINVAL). Other oflags bits mean nothing (as to the kernel).
  Result<std::shared_ptr<XrcDomain>> open(Fabric& fabric, const Owner& owner, std::optional<File> file, int oflags);

 private:
  using Key = std::tuple<std::string, uint64_t, uint64_t>;  // tenant, dev, ino
  std::map<Key, std::weak_ptr<XrcDomain>> shared_;  // the gone ones purged at each open
  std::map<uint32_t, std::weak_ptr<XrcDomain>> numbers_;  // every live domain
  uint32_t next_number_ = 1;
};

}  // namespace ff::router
