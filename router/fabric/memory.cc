#include "router/fabric/memory.h"

#include <fcntl.h>
#include <infiniband/verbs.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

namespace ff::router {

std::shared_ptr<FabricSegment> map_client_segment(UniqueFd fd, uint64_t app_base, uint64_t length,
                                                  FabricError& err) {
  if (app_base % shm::kPageSize != 0 || length == 0 || length % shm::kPageSize != 0 ||
      app_base + length < app_base)
    return err.set(EINVAL, "segment must be whole pages");
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != length)
    return err.set(EINVAL, "segment fd is not a memfd of the announced length");
  int seals = ::fcntl(fd.get(), F_GET_SEALS);
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0)
    return err.set(EINVAL, "segment memfd is not sealed against shrinking");
  try {
    return std::make_shared<MappedSegment>(shm::Mapping::map_raw(fd.get(), length), app_base);
  } catch (const std::system_error& e) {
    return err.set(ENOMEM, e.what());
  }
}

bool check_mr_request(unsigned access, uint64_t length, uint64_t iova, uint64_t max_mr_size,
                      FabricError& err) {
  constexpr unsigned kKnown = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
                              IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC |
                              IBV_ACCESS_MW_BIND | IBV_ACCESS_RELAXED_ORDERING |
                              IBV_ACCESS_OPTIONAL_RANGE;
  if ((access & IBV_ACCESS_ON_DEMAND) != 0) {
    err.set(EOPNOTSUPP, "on-demand paging is not supported");
    return false;
  }
  if ((access & ~kKnown) != 0) {
    err.set(EINVAL, "unknown access flags");
    return false;
  }
  if ((access & (IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_ATOMIC)) != 0 &&
      (access & IBV_ACCESS_LOCAL_WRITE) == 0) {
    err.set(EINVAL, "remote write or atomic access needs IBV_ACCESS_LOCAL_WRITE");
    return false;
  }
  if (length == 0 || length > max_mr_size || iova + length < iova) {
    err.set(EINVAL, "bad MR length");
    return false;
  }
  return true;
}

bool split_over_segments(std::span<const std::shared_ptr<FabricSegment>> segments, uint64_t addr,
                         uint64_t length, std::vector<SegmentPiece>& pieces, FabricError& err) {
  uint64_t covered = addr;
  for (const auto& s : segments) {
    auto& seg = static_cast<const MappedSegment&>(*s);
    uint64_t start = std::max(covered, seg.app_base());
    uint64_t end = std::min(addr + length, seg.app_base() + seg.length());
    if (start != covered || end <= start) break;
    pieces.push_back({&seg, start, end - start});
    covered = end;
  }
  if (covered != addr + length) {
    err.set(EFAULT, "memory is not inside registered segments");
    return false;
  }
  return true;
}

}  // namespace ff::router
