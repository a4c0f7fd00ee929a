#include "router/control/objects.h"

#include <algorithm>
#include <cerrno>
#include <vector>

namespace ff::router {

const char* kind_name(ObjectKind kind) {
  switch (kind) {
    case ObjectKind::kContext:
      return "contexts";
    case ObjectKind::kPd:
      return "pds";
    case ObjectKind::kSegment:
      return "segments";
    case ObjectKind::kMr:
      return "mrs";
    case ObjectKind::kChannel:
      return "channels";
    case ObjectKind::kCq:
      return "cqs";
    case ObjectKind::kQp:
      return "qps";
    case ObjectKind::kSrq:
      return "srqs";
    case ObjectKind::kAh:
      return "ahs";
    case ObjectKind::kCmChannel:
      return "cm_channels";
    case ObjectKind::kCmId:
      return "cm_ids";
    case ObjectKind::kMw:
      return "mws";
    case ObjectKind::kXrcd:
      return "xrcds";
    case ObjectKind::kCount:
      break;
  }
  return "?";
}

uint32_t router_handles(ObjectKind kind) {
  switch (kind) {
    case ObjectKind::kContext:
    case ObjectKind::kXrcd:  // its domain's own context (charged to every handle: shared, it may outlive any)
      return 4;  // the doorbell pipe's read end, the async pipe's write end, the async ring's memfd and mapping
    case ObjectKind::kChannel:
      return 3;  // the pipe's write end, its ring's memfd and mapping
    case ObjectKind::kCmChannel:
      return 1;  // the pipe's write end
    case ObjectKind::kSegment:  // the client's memfd, kept, and its mapping
    case ObjectKind::kCq:       // the ring's memfd and mapping
    case ObjectKind::kQp:
    case ObjectKind::kSrq:
      return 2;
    default:  // PDs, MRs, AHs, rdma_cm ids: memory only
      return 0;
  }
}

uint32_t ObjectTable::add(std::unique_ptr<Object> object, std::initializer_list<uint32_t> parents) {
  uint32_t handle = next_handle_++;
  object->handle = handle;
  if (uint32_t n = router_handles(object->kind); handles_ != nullptr && n != 0 && object->kind != ObjectKind::kSegment) {
    handles_->take(n);
    object->handles = policy::Charge(handles_, n);
  }
  for (uint32_t p : parents) {
    if (p == 0) continue;
    ++objects_.at(p)->children;
    object->parents.push_back(p);
  }
  ++counts_[static_cast<size_t>(object->kind)];
  objects_.emplace(handle, std::move(object));
  return handle;
}

void ObjectTable::erase(std::map<uint32_t, std::unique_ptr<Object>>::iterator it) {
  Object& o = *it->second;
  for (uint32_t parent : o.parents) {
    auto p = objects_.find(parent);
    if (p != objects_.end()) --p->second->children;
  }
  --counts_[static_cast<size_t>(o.kind)];
  // Out of the table before it goes: destroying one object may remove
  // others (an rdma_cm listener takes its unread requests' ids with it).
  std::unique_ptr<Object> doomed = std::move(it->second);
  objects_.erase(it);
}

int ObjectTable::remove(uint32_t handle, ObjectKind kind) {
  auto it = objects_.find(handle);
  if (it == objects_.end() || it->second->kind != kind) return ENOENT;
  if (it->second->children != 0) return EBUSY;
  erase(it);
  return 0;
}

int ObjectTable::remove_tree(uint32_t handle, ObjectKind kind) {
  auto root = objects_.find(handle);
  if (root == objects_.end() || root->second->kind != kind) return ENOENT;
  // Children are always newer than their parent: walk newest first and drop
  // every object whose ancestry reaches `handle`.
  std::vector<uint32_t> doomed{handle};
  for (auto it = objects_.upper_bound(handle); it != objects_.end(); ++it) {
    for (uint32_t parent : it->second->parents) {
      if (std::find(doomed.begin(), doomed.end(), parent) != doomed.end()) {
        doomed.push_back(it->first);
        break;
      }
    }
  }
  for (auto d = doomed.rbegin(); d != doomed.rend(); ++d) erase(objects_.find(*d));
  return 0;
}

void ObjectTable::clear() {
  // rdma_cm ids go first, so their peers hear the DREQ (DISCONNECTED, a
  // clean end) before this side's QPs vanish and fail the peers' transfers:
  // the kernel closes a dying process's rdma_cm file, opened before its
  // verbs file, first. A listener's going may take other ids with it.
  std::vector<uint32_t> cm_ids;
  for (const auto& [handle, object] : objects_) {
    if (object->kind == ObjectKind::kCmId) cm_ids.push_back(handle);
  }
  for (uint32_t handle : cm_ids) {
    if (auto it = objects_.find(handle); it != objects_.end()) erase(it);
  }
  while (!objects_.empty()) erase(std::prev(objects_.end()));
}

}  // namespace ff::router
