#include "router/control/xrc_domains.h"

#include <fcntl.h>

#include <cassert>

namespace ff::router {

XrcDomain::~XrcDomain() {
  for ([[maybe_unused]] const auto& [qpn, qp] : receive_qps_) assert(qp.expired() && "a receive QP holds its domain");
}

namespace {

// A receive QP's deleter: the QP goes first, then its PD, then its hold on
// the domain (released at once: the domain's weak references keep the
// deleter itself alive).
struct ReleaseReceiveQp {
  std::shared_ptr<FabricPd> pd;
  std::shared_ptr<XrcDomain> domain;
  void operator()(FabricQp* q) {
    delete q;
    pd.reset();
    domain.reset();
  }
};

}  // namespace

Result<std::shared_ptr<FabricQp>> XrcDomain::create_qp(Fabric& fabric, const Owner& owner, uint32_t tag) {
  // Its own PD names its maker's tenant and address (the domain may be
  // shared by processes at other addresses); no memory is checked against
  // it (the SRQ's PD is).
  auto pd = fabric.alloc_pd(owner);
  if (!pd) return pd.error();
  std::shared_ptr<FabricPd> own_pd(std::move(*pd));
  QpInit init;
  init.type = IBV_QPT_XRC_RECV;
  init.xrcd = number_;
  auto made = fabric.create_qp(*context_, *own_pd, nullptr, nullptr, nullptr, init, tag);
  if (!made) return made.error();
  uint32_t qpn = (*made)->qp_num();
  std::shared_ptr<FabricQp> qp(made->release(), ReleaseReceiveQp{std::move(own_pd), shared_from_this()});
  std::erase_if(receive_qps_, [](const auto& entry) { return entry.second.expired(); });
  receive_qps_[qpn] = qp;
  return qp;
}

Result<std::shared_ptr<FabricQp>> XrcDomain::open_qp(uint32_t qp_num) {
  auto it = receive_qps_.find(qp_num);
  std::shared_ptr<FabricQp> qp = it != receive_qps_.end() ? it->second.lock() : nullptr;
  if (qp == nullptr) return Error{EINVAL, "the XRC domain has no receive QP " + std::to_string(qp_num)};
  return qp;
}

Result<std::shared_ptr<XrcDomain>> XrcDomains::open(Fabric& fabric, const Owner& owner, std::optional<File> file,
                                                    int oflags) {
  std::erase_if(shared_, [](const auto& entry) { return entry.second.expired(); });
  std::optional<Key> key;
  if (file) {
    key = Key{owner.tenant, file->dev, file->ino};
    if (auto it = shared_.find(*key); it != shared_.end()) {
      if ((oflags & O_EXCL) != 0) return Error{EINVAL, "the file names an XRC domain already (O_EXCL)"};
      return it->second.lock();
    }
    if ((oflags & O_CREAT) == 0) return Error{EAGAIN, "no XRC domain of that file yet: open it with O_CREAT"};
  }
  auto context = fabric.open_context(owner.tenant);
  if (!context) return context.error();
  // A number no live domain has (the counter may go round).
  std::erase_if(numbers_, [](const auto& entry) { return entry.second.expired(); });
  while (next_number_ == 0 || numbers_.contains(next_number_)) ++next_number_;
  auto domain = std::make_shared<XrcDomain>(next_number_++, std::move(*context));
  numbers_[domain->number()] = domain;
  if (key) shared_[*key] = domain;
  return domain;
}

}  // namespace ff::router
