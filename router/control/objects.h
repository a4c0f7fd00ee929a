// The objects a session creates, in one handle table per session. Handles are
// small per-session numbers: a client can only ever name its own objects.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "policy/quota.h"
#include "router/cm/connection_manager.h"
#include "router/control/xrc_domains.h"
#include "router/fabric/fabric.h"
#include "shm/doorbell.h"

namespace ff::router {

enum class ObjectKind : uint8_t { kContext, kPd, kSegment, kMr, kChannel, kCq, kQp, kSrq, kAh, kCmChannel, kCmId, kMw, kXrcd, kCount };
const char* kind_name(ObjectKind kind);

// File descriptors plus memory mappings the router holds for one object of
// `kind`, at most, on either fabric: what it charges to the tenant's handle
// quota (--max-handles-per-tenant). tests/tools/ffv_hostile.cc measures the
// router's /proc against this table.
uint32_t router_handles(ObjectKind kind);

struct Object {
  explicit Object(ObjectKind k) : kind(k) {}
  virtual ~Object() = default;
  Object(const Object&) = delete;
  Object& operator=(const Object&) = delete;

  const ObjectKind kind;
  uint32_t handle = 0;
  policy::Charge charge;   // shared memory it holds against its tenant's quota
  policy::Charge handles;  // fds and mappings, router_handles(kind)
  std::vector<uint32_t> parents;  // objects this one uses (a QP: its PD and CQs)
  uint32_t children = 0;          // live objects naming this one as a parent
};

struct ContextObject final : Object {
  explicit ContextObject(std::unique_ptr<FabricContext> c) : Object(ObjectKind::kContext), fabric(std::move(c)) {}
  std::unique_ptr<FabricContext> fabric;
};

// An object that only holds its fabric counterpart.
template <ObjectKind K, typename F, typename Ptr = std::unique_ptr<F>>
struct FabricObject final : Object {
  explicit FabricObject(Ptr f) : Object(K), fabric(std::move(f)) {}
  Ptr fabric;
};

using PdObject = FabricObject<ObjectKind::kPd, FabricPd>;
using SegmentObject = FabricObject<ObjectKind::kSegment, FabricSegment, std::shared_ptr<FabricSegment>>;
using MrObject = FabricObject<ObjectKind::kMr, FabricMr>;
using ChannelObject = FabricObject<ObjectKind::kChannel, FabricChannel>;
using CqObject = FabricObject<ObjectKind::kCq, FabricCq>;
// Shared: an XRC receive QP is held by every handle that created or
// opened it (XrcDomain::open_qp).
using QpObject = FabricObject<ObjectKind::kQp, FabricQp, std::shared_ptr<FabricQp>>;
using SrqObject = FabricObject<ObjectKind::kSrq, FabricSrq>;
using AhObject = FabricObject<ObjectKind::kAh, FabricAh>;
using MwObject = FabricObject<ObjectKind::kMw, FabricMw>;
using XrcdObject = FabricObject<ObjectKind::kXrcd, XrcDomain, std::shared_ptr<XrcDomain>>;

// rdma_cm: an event channel, and an id (whose destruction the connection
// manager must see: its port, its events and its peer).
struct CmChannelObject final : Object {
  explicit CmChannelObject(std::shared_ptr<cm::Channel> c) : Object(ObjectKind::kCmChannel), channel(std::move(c)) {}
  std::shared_ptr<cm::Channel> channel;
};
struct CmIdObject final : Object {
  CmIdObject(cm::ConnectionManager& m, std::shared_ptr<cm::Id> i) : Object(ObjectKind::kCmId), manager(m), id(std::move(i)) {}
  ~CmIdObject() override { manager.destroy(*id); }
  cm::ConnectionManager& manager;
  std::shared_ptr<cm::Id> id;
};

// Owned by one Session; used only from the Asio thread.
class ObjectTable {
 public:
  explicit ObjectTable(policy::TenantQuota* handles = nullptr) : handles_(handles) {}
  ~ObjectTable() { clear(); }

  // Takes ownership, charges its router_handles() (the caller checked they
  // fit; a segment's travel with its mapping instead, register_segment.cc),
  // links it under `parents` (which must exist) and returns its handle.
  uint32_t add(std::unique_ptr<Object> object, std::initializer_list<uint32_t> parents = {});

  // The object if `handle` names one of `kind` in this table, else nullptr.
  template <typename T>
  T* find(uint32_t handle, ObjectKind kind) {
    auto it = objects_.find(handle);
    if (it == objects_.end() || it->second->kind != kind) return nullptr;
    return static_cast<T*>(it->second.get());
  }

  // Destroys one object with no children. ENOENT if absent or of another
  // kind, EBUSY while children exist.
  int remove(uint32_t handle, ObjectKind kind);
  // Destroys an object and everything created under it, children first.
  int remove_tree(uint32_t handle, ObjectKind kind);
  // Destroys everything: rdma_cm ids first, then newest first (children
  // are always newer).
  void clear();

  size_t size() const { return objects_.size(); }
  // The handle the next add() will assign (objects that must know their own
  // handle while they are built, e.g. a CQ's channel event tag).
  uint32_t next_handle() const { return next_handle_; }
  uint32_t count(ObjectKind kind) const { return counts_[static_cast<size_t>(kind)]; }
  // Calls f(const T&) for each object of `kind`, oldest first.
  template <typename T, typename F>
  void for_each(ObjectKind kind, F&& f) const {
    for (const auto& [handle, object] : objects_)
      if (object->kind == kind) f(static_cast<const T&>(*object));
  }

 private:
  void erase(std::map<uint32_t, std::unique_ptr<Object>>::iterator it);
  std::map<uint32_t, std::unique_ptr<Object>> objects_;
  std::array<uint32_t, static_cast<size_t>(ObjectKind::kCount)> counts_{};
  uint32_t next_handle_ = 1;
  policy::TenantQuota* handles_;
};

}  // namespace ff::router
