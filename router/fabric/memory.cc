#include "router/fabric/memory.h"

#include <fcntl.h>
#include <infiniband/verbs.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace ff::router {

Result<std::shared_ptr<FabricSegment>> map_client_segment(UniqueFd fd, uint64_t app_base, uint64_t length,
                                                          uint64_t offset) {
  if (app_base % shm::kPageSize != 0 || length == 0 || length % shm::kPageSize != 0 ||
      app_base + length < app_base || offset % shm::kPageSize != 0 || offset + length < offset)
    return Error{EINVAL, "segment must be whole pages"};
  // The memfd may hold other segments too (the shim keeps one file for
  // many); sealed against shrinking, what it holds now stays mapped.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < offset + length)
    return Error{EINVAL, "segment fd is not a memfd holding the announced range"};
  int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0)
    return Error{EINVAL, "segment memfd is not sealed against shrinking"};
  try {
    return std::make_shared<MappedSegment>(shm::Mapping::map_raw(fd.get(), length, offset), app_base, offset);
  } catch (const std::system_error& e) {
    return Error{ENOMEM, e.what()};
  }
}

Status check_mr_request(unsigned access, uint64_t addr, uint64_t length, uint64_t iova, uint64_t max_mr_size) {
  constexpr unsigned kKnown = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                              IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |
                              IBV_ACCESS_MW_BIND | IBV_ACCESS_RELAXED_ORDERING |
                              IBV_ACCESS_OPTIONAL_RANGE;
  if ((access & IBV_ACCESS_ON_DEMAND) != 0) return Error{EOPNOTSUPP, "on-demand paging is not supported"};
  if ((access & ~kKnown) != 0) return Error{EINVAL, "unknown access flags"};
  if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) != 0 &&
      (access & IBV_ACCESS_LOCAL_WRITE) == 0)
    return Error{EINVAL, "remote write or atomic access needs IBV_ACCESS_LOCAL_WRITE"};
  if (length == 0 || length > max_mr_size || iova + length < iova) return Error{EINVAL, "bad MR length"};
  // A device translates whole pages: the iova keeps the address's offset in
  // its page (rdma-core's drivers and the kernel refuse anything else).
  if ((iova ^ addr) & (shm::kPageSize - 1))
    return Error{EINVAL, "iova must have the same offset within its page as addr"};
  return {};
}

Result<std::vector<SegmentPiece>> split_over_segments(std::span<const std::shared_ptr<FabricSegment>> segments,
                                                      uint64_t addr, uint64_t length) {
  std::vector<SegmentPiece> pieces;
  uint64_t covered = addr;
  for (const auto& s : segments) {
    auto& seg = static_cast<const MappedSegment&>(*s);
    uint64_t start = std::max(covered, seg.app_base());
    uint64_t end = std::min(addr + length, seg.app_base() + seg.length());
    if (start != covered || end <= start) break;
    pieces.push_back({&seg, start, end - start});
    covered = end;
  }
  if (covered != addr + length)
    return Error{EFAULT, "memory is not inside registered segments"};
  return pieces;
}

}  // namespace ff::router
