// Client memory as every fabric receives it: sealed memfds standing for
// page ranges of the client's address space, and the checks on a memory
// registration request that verbs defines independently of the device.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "proto/fd.h"
#include "router/fabric/fabric.h"
#include "shm/segment.h"

namespace ff::router {

// A client segment mapped into the router.
class MappedSegment final : public FabricSegment {
 public:
  MappedSegment(shm::Mapping m, uint64_t base, uint64_t file_offset)
      : mapping_(std::move(m)), app_base_(base), file_offset_(file_offset) {}
  uint64_t app_base() const override { return app_base_; }
  uint64_t length() const override { return mapping_.size(); }
  std::byte* router_base() const { return mapping_.base(); }
  int fd() const { return mapping_.fd(); }
  // Where the client's page `app_page` lies in fd(): the shim keeps many
  // segments in one memfd, so a segment rarely starts at offset 0.
  uint64_t file_offset_of(uint64_t app_page) const { return file_offset_ + (app_page - app_base_); }

 private:
  shm::Mapping mapping_;
  uint64_t app_base_;
  uint64_t file_offset_;  // of app_base_ in fd()
};

// Validates and maps a client's memfd: whole pages, the announced length,
// sealed against shrinking (a shrunk file would SIGBUS the router).
Result<std::shared_ptr<FabricSegment>> map_client_segment(UniqueFd fd, uint64_t app_base, uint64_t length,
                                                          uint64_t offset = 0);

// A piece of a registration inside one segment.
struct SegmentPiece {
  const MappedSegment* segment;
  uint64_t app_addr;  // where the piece starts in the client
  uint64_t length;
  std::byte* router_addr() const { return segment->router_base() + (app_addr - segment->app_base()); }
};

// Access flags, length and iova of a registration of [addr, addr + length):
// what verbs refuses.
Status check_mr_request(unsigned access, uint64_t addr, uint64_t length, uint64_t iova, uint64_t max_mr_size);

// Splits [addr, addr + length) over `segments` (in address order); EFAULT
// when some byte is in none of them.
Result<std::vector<SegmentPiece>> split_over_segments(std::span<const std::shared_ptr<FabricSegment>> segments,
                                                      uint64_t addr, uint64_t length);

}  // namespace ff::router
