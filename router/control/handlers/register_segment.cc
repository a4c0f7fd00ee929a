#include "router/control/handlers.h"

namespace ff::router {

// Maps a sealed memfd that stands for a page range of the client's address
// space. Segments may not overlap: the shim shares each page once.
Status handle_register_segment(Session& s, const proto::Request& req,
                                      std::vector<UniqueFd>& fds, ReplyWriter& w) {
  const auto* r = req.body_as_RegisterSegment();
  uint64_t base = r->app_base(), len = r->length();
  auto& index = s.segments_by_base();
  auto next = index.lower_bound(base);
  if (next != index.end() && next->first < base + len)
    return Error{EEXIST, "segment overlaps a registered one"};
  if (next != index.begin()) {
    auto prev = std::prev(next);
    auto* seg = s.objects().find<SegmentObject>(prev->second, ObjectKind::kSegment);
    if (seg != nullptr && prev->first + seg->fabric->length() > base)
      return Error{EEXIST, "segment overlaps a registered one"};
  }
  policy::TenantQuota& quota = s.services().quota(*s.tenant());
  if (!quota.try_take(len)) return quota_exceeded(s);
  policy::Charge charge(&quota, len);
  policy::TenantQuota& handles = s.services().handles(*s.tenant());
  handles.take(router_handles(ObjectKind::kSegment));  // Session::dispatch checked they fit
  policy::Charge handle_charge(&handles, router_handles(ObjectKind::kSegment));
  auto made = s.fabric().map_segment(std::move(fds.at(0)), base, len, r->offset());
  if (!made) return made.error();
  // The charges go with the mapping, not with the handle: MRs over the
  // segment keep it mapped (and charged) after a ReleaseSegment.
  std::shared_ptr<FabricSegment> mapped = std::move(*made);
  FabricSegment* raw = mapped.get();
  std::shared_ptr<FabricSegment> charged(
      raw, [mapped = std::move(mapped), c = std::move(charge), h = std::move(handle_charge)](FabricSegment*) {});
  auto object = std::make_unique<SegmentObject>(std::move(charged));
  uint32_t handle = s.objects().add(std::move(object));
  index[base] = handle;
  w.set_body(proto::CreateRegisterSegmentReply(w.fbb(), handle));
  return Status{};
}

// Forgets a segment; MRs still on it keep the memory mapped (and charged to
// the tenant) until they go.
Status handle_release_segment(Session& s, const proto::Request& req, std::vector<UniqueFd>&,
                                     ReplyWriter&) {
  uint32_t handle = req.body_as_ReleaseSegment()->segment();
  auto* seg = s.objects().find<SegmentObject>(handle, ObjectKind::kSegment);
  if (seg == nullptr) return Error{EINVAL, "no such segment"};
  s.segments_by_base().erase(seg->fabric->app_base());
  s.objects().remove(handle, ObjectKind::kSegment);
  return Status{};
}

}  // namespace ff::router
