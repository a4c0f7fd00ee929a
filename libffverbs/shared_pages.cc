// The table of shared pages (shared_memory.h): which page ranges of the app
// are shared with the router, from which file, held by which registrations.
// Moving the pages themselves is page_sharing.cc.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "libffverbs/proc_maps.h"
#include "libffverbs/request.h"
#include "libffverbs/shared_memory.h"
#include "shm/arena.h"

namespace shm = ff::shm;
namespace proto = ff::proto;

namespace ff::verbs {

SharedPages& SharedPages::get() {
  static SharedPages* p = new SharedPages();  // never destroyed (see RouterLink)
  return *p;
}

int SharedPages::acquire(uint64_t start, uint64_t end, uint64_t& lease) {
  std::lock_guard lock(mu_);
  // Regions the app has unmapped (and mapped anew) in the range are split
  // first: what it maps there now is what this registration must share.
  for (auto it = first_live_in(start); it != live_.end() && it->first < end;) {
    uint64_t id = (it++)->second;  // split() replaces this entry of live_
    const Region& reg = regions_.at(id);
    if (!reg.pinned && !intact(reg, std::max(start, reg.start), std::min(end, reg.end))) split(id);
  }
  // Fill the gaps between live regions with new ones.
  uint64_t at = start;
  for (auto it = first_live_in(start); at < end;) {
    if (it != live_.end() && it->first <= at) {
      at = regions_.at(it->second).end;
      ++it;
      continue;
    }
    uint64_t gap_end = it != live_.end() ? std::min(end, it->first) : end;
    uint64_t arena_start = 0, arena_end = 0;
    int arena_fd = -1;
    if (arenas::find_live(at, gap_end, arena_start, arena_end, arena_fd)) {
      if (arena_start <= at) {  // shared already: no copy
        if (int e = adopt_arena(arena_start, arena_end, arena_fd); e != 0) return e;
        it = first_live_in(at);
        continue;
      }
      gap_end = arena_start;  // ordinary pages up to it
    }
    if (int e = create(at, gap_end); e != 0) return e;
    at = gap_end;
    it = live_.lower_bound(at);  // the region that ended the gap, if one did
  }
  // Make sure the router knows every region (again, after a reconnect), then hold them.
  std::vector<uint64_t> held;
  for (auto it = first_live_in(start); it != live_.end() && it->first < end; ++it) {
    if (int e = ensure_registered(regions_.at(it->second)); e != 0) return e;
    held.push_back(it->second);
  }
  for (uint64_t id : held) ++regions_.at(id).refs;
  lease = next_id_++;
  leases_.emplace(lease, std::move(held));
  return 0;
}

void SharedPages::release(uint64_t lease) {
  std::lock_guard lock(mu_);
  auto held = leases_.find(lease);
  if (held == leases_.end()) return;  // a fork child's inherited MR
  for (uint64_t id : held->second) {
    auto r = regions_.find(id);
    if (r == regions_.end() || r->second.pinned) continue;
    if (r->second.refs > 0 && --r->second.refs == 0) drop(id);
  }
  leases_.erase(held);
}

// Files the arena at [start, end) as a pinned region (never released), so
// that registrations in it share its pages as they are. A region left live
// at those addresses is stale (the app unmapped it and the arena was mapped
// there since): it is split, and its runs there detached.
int SharedPages::adopt_arena(uint64_t start, uint64_t end, int fd) {
  for (auto it = first_live_in(start); it != live_.end() && it->first < end;) {
    uint64_t id = (it++)->second;  // split() replaces this entry of live_
    if (!regions_.at(id).pinned) split(id);
  }
  Region reg;
  reg.start = start;
  reg.end = end;
  reg.file = std::make_shared<ff::UniqueFd>(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!*reg.file) return errno;
  if (!still_mapped_from(start, end, reg.fd(), 0)) {  // the app closed the arena's fd, and the number is another file's
    debug("reg_mr: the shared arena at %#lx-%#lx lost its file descriptor", static_cast<unsigned long>(start),
          static_cast<unsigned long>(end));
    return EBADF;
  }
  struct stat st {};
  if (::fstat(reg.fd(), &st) == 0) reg.inode = st.st_ino;
  reg.pinned = true;
  reg.refs = 1;
  add(std::move(reg));
  return 0;
}

// The first live region that ends after `start`.
std::map<uint64_t, uint64_t>::iterator SharedPages::first_live_in(uint64_t start) {
  auto it = live_.upper_bound(start);
  if (it != live_.begin() && regions_.at(std::prev(it)->second).end > start) --it;
  return it;
}

// Files a region under a new id (and in live_ when it is live).
uint64_t SharedPages::add(Region reg) {
  uint64_t id = next_id_++;
  if (reg.live) live_[reg.start] = id;
  regions_.emplace(id, std::move(reg));
  return id;
}

// True when the app still maps [from, to) of the region from its file at its offsets.
bool SharedPages::intact(const Region& reg, uint64_t from, uint64_t to) {
  struct Check {
    const Region& reg;
    uint64_t at;  // checked up to here
  } check{reg, from};
  for_each_mapping_in(
      from, to,
      [](const MapsLine& m, void* arg) {
        auto& c = *static_cast<Check*>(arg);
        bool ours = m.start <= c.at && m.shared() && m.inode == c.reg.inode &&
                    m.offset + (c.at - m.start) == c.reg.offset + (c.at - c.reg.start);
        if (ours) c.at = m.end;
        return ours;
      },
      &check);
  return check.at >= to;
}

// The region's runs the app still maps stay live (new regions over the same
// pages, registered with the router when next acquired); the others are
// detached. Every lease holding the region holds all its runs instead. The
// router forgets the old segment; MRs made over it keep its mapping.
void SharedPages::split(uint64_t id) {
  Region old = std::move(regions_.at(id));
  regions_.erase(id);
  live_.erase(old.start);
  forget_segment(old);
  struct Runs {
    const Region& reg;
    std::vector<std::pair<uint64_t, uint64_t>> mapped;
  } runs{old, {}};
  for_each_mapping_in(
      old.start, old.end,
      [](const MapsLine& m, void* arg) {
        auto& r = *static_cast<Runs*>(arg);
        uint64_t a = std::max(m.start, r.reg.start), b = std::min(m.end, r.reg.end);
        if (a < b && m.shared() && m.inode == r.reg.inode && m.offset + (a - m.start) == r.reg.offset + (a - r.reg.start))
          r.mapped.emplace_back(a, b);
        return true;
      },
      &runs);
  std::vector<uint64_t> parts;
  auto add_run = [&](uint64_t a, uint64_t b, bool live) {
    if (a >= b) return;
    Region part = old;
    part.start = a;
    part.end = b;
    part.offset = old.offset + (a - old.start);
    part.segment = 0;
    part.live = live;
    parts.push_back(add(std::move(part)));
  };
  uint64_t at = old.start;
  for (auto [a, b] : runs.mapped) {
    add_run(at, a, false);
    add_run(a, b, true);
    at = b;
  }
  add_run(at, old.end, false);
  debug("reg_mr: pages %#lx-%#lx were mapped anew while registered: %zu of %zu runs kept",
        static_cast<unsigned long>(old.start), static_cast<unsigned long>(old.end), runs.mapped.size(), parts.size());
  for (auto& [lease, held] : leases_) {
    auto it = std::find(held.begin(), held.end(), id);
    if (it == held.end()) continue;
    held.erase(it);
    held.insert(held.end(), parts.begin(), parts.end());
  }
}

// A region no lease holds any more. Its live pages become ordinary private
// memory again (with their bytes): nothing stays shared past the last
// registration, so a later fork() copies them as usual; the file's pages go
// back to the system. A detached region's addresses hold other memory now:
// only its file's pages go.
void SharedPages::drop(uint64_t id) {
  Region& reg = regions_.at(id);
  forget_segment(reg);
  bool punch = !reg.apps_own;
  if (reg.live) {
    live_.erase(reg.start);
    if (!reg.apps_own && still_mapped_from(reg.start, reg.end, reg.fd(), reg.offset))
      punch = privatize(reg.start, reg.end) == 0;  // if it fails, the app keeps the shared pages
  }
  if (punch)
    ::fallocate(reg.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(reg.offset),
                static_cast<off_t>(reg.end - reg.start));
  regions_.erase(id);
}

// The router forgets the region's segment (if this session has one).
void SharedPages::forget_segment(Region& reg) {
  if (reg.segment != 0 && reg.epoch == RouterLink::get().epoch()) {
    flatbuffers::FlatBufferBuilder fbb;
    request<void>(fbb, proto::CreateReleaseSegment(fbb, reg.segment));
  }
  reg.segment = 0;
}

namespace {

// The fd of a memfd this process holds open that is mapped as `path`
// (inode `inode`), duplicated; invalid when there is none.
ff::UniqueFd find_open_memfd(const char* path, uint64_t inode) {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return {};
  ff::UniqueFd found;
  while (const dirent* e = ::readdir(dir)) {
    int fd = std::atoi(e->d_name);
    if (e->d_name[0] == '.' || fd == ::dirfd(dir)) continue;
    struct stat st {};
    char link[64], target[512];
    std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = ::readlink(link, target, sizeof target - 1);
    if (n <= 0 || ::fstat(fd, &st) != 0 || st.st_ino != inode) continue;
    target[n] = '\0';
    if (std::strcmp(target, path) != 0) continue;
    found = ff::UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    break;
  }
  ::closedir(dir);
  return found;
}

}  // namespace

// What [start, end) is. Private memory (the common case) is copied into
// the shim's memfd pool. The app's own MAP_SHARED mapping of a memfd is
// shared in place, so its other mappings (in this process or another) keep
// seeing what RDMA writes: the router maps the same file, once it cannot
// shrink under it (F_SEAL_SHRINK; a file shrunk under the router would
// fault it). Everything else is refused, with EINVAL and a line saying why:
// other MAP_SHARED memory (a copy would silently leave its other mappings
// behind, and a file the app can shrink cannot be mapped by the router) and
// huge pages (4 KiB pages cannot be mapped over part of a huge page).
int SharedPages::examine(uint64_t start, uint64_t end, AppFile& shared) {
  struct Scan {
    uint64_t start, end;
    MapsLine first;  // the first mapping, when it is MAP_SHARED
    char path[256];
    int mappings = 0;
    char why[512];
  } scan{start, end, {}, {}, 0, {}};
  for_each_mapping_in(
      start, end,
      [](const MapsLine& m, void* arg) {
        auto& s = *static_cast<Scan*>(arg);
        if (++s.mappings == 1 && m.shared() && !m.huge_pages()) {
          s.first = m;
          std::snprintf(s.path, sizeof s.path, "%s", m.path);
          return true;
        }
        const char* what = m.huge_pages()                        ? "huge pages"
                           : m.shared() || s.first.perms != nullptr ? "MAP_SHARED memory next to other mappings"
                                                                    : nullptr;
        if (what != nullptr)
          std::snprintf(s.why, sizeof s.why, "%#lx-%#lx is %s (%s)", static_cast<unsigned long>(m.start),
                        static_cast<unsigned long>(m.end), what, *m.path != '\0' ? m.path : "anonymous");
        return what == nullptr;
      },
      &scan);
  if (scan.why[0] == '\0' && scan.first.perms != nullptr) {
    const MapsLine& m = scan.first;
    if (m.start > start || m.end < end) {
      std::snprintf(scan.why, sizeof scan.why, "%#lx-%#lx spans MAP_SHARED memory (%s) and other mappings",
                    static_cast<unsigned long>(start), static_cast<unsigned long>(end), scan.path);
    } else {
      ff::UniqueFd fd = std::strncmp(scan.path, "/memfd:", 7) == 0 ? find_open_memfd(scan.path, m.inode) : ff::UniqueFd{};
      int seals = fd ? ::fcntl(fd.get(), F_GET_SEALS) : -1;
      if (seals >= 0 && (seals & F_SEAL_SHRINK) == 0 && ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK) == 0)
        seals |= F_SEAL_SHRINK;
      if (seals >= 0 && (seals & F_SEAL_SHRINK) != 0) {
        shared.file = std::make_shared<ff::UniqueFd>(std::move(fd));
        shared.offset = m.offset + (start - m.start);
        return 0;
      }
      std::snprintf(scan.why, sizeof scan.why,
                    "%#lx-%#lx is MAP_SHARED memory (%s) that is not a memfd held open and sealable against "
                    "shrinking (memfd_create with MFD_ALLOW_SEALING)",
                    static_cast<unsigned long>(m.start), static_cast<unsigned long>(m.end),
                    *scan.path != '\0' ? scan.path : "anonymous");
    }
  }
  if (scan.why[0] == '\0') return 0;
  std::fprintf(stderr,
               "libffverbs[%d]: ibv_reg_mr: EINVAL: %s; ffrouter cannot share it with the router without "
               "breaking it: register private memory, memory from ibv_malloc, or a MAP_SHARED mapping of a "
               "sealable memfd the process keeps open\n",
               static_cast<int>(::getpid()), scan.why);
  return EINVAL;
}

// Makes [start, end) a region: copied into the memfd pool and mapped back
// in place, or shared as it is (examine).
int SharedPages::create(uint64_t start, uint64_t end) {
  AppFile app;
  if (int e = examine(start, end, app); e != 0) return e;
  Region reg;
  reg.start = start;
  reg.end = end;
  if (app.file) {
    reg.file = std::move(app.file);
    reg.offset = app.offset;
    reg.apps_own = true;
  } else {
    size_t len = end - start;
    if (!pool_ || pool_next_ + len > kPoolSpan) {
      ff::UniqueFd fd(::memfd_create("ffv-mr", MFD_CLOEXEC | MFD_ALLOW_SEALING));
      if (!fd) return errno;
      // It grows as regions come, and never shrinks under the router.
      if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK) != 0) return errno;
      pool_ = std::make_shared<ff::UniqueFd>(std::move(fd));
      pool_next_ = 0;
    }
    uint64_t offset = pool_next_;
    if (::ftruncate(pool_->get(), static_cast<off_t>(offset + len)) != 0) return errno;
    pool_next_ += len;  // offsets are never reused: a hole punched stays a hole
    if (int e = reshare(start, end, pool_->get(), offset); e != 0) {
      if (e == EFAULT)
        debug("reg_mr: pages %#lx-%#lx are not all mapped", static_cast<unsigned long>(start),
              static_cast<unsigned long>(end));
      return e;
    }
    reg.file = pool_;
    reg.offset = offset;
  }
  struct stat st {};
  if (::fstat(reg.fd(), &st) == 0) reg.inode = st.st_ino;
  add(std::move(reg));
  return 0;
}

int SharedPages::ensure_registered(Region& reg) {
  uint64_t epoch = RouterLink::get().epoch();
  if (reg.segment != 0 && reg.epoch == epoch) return 0;
  flatbuffers::FlatBufferBuilder fbb;
  int fd = reg.fd();
  auto reply = request<proto::RegisterSegmentReply>(
      fbb, proto::CreateRegisterSegment(fbb, reg.start, reg.end - reg.start, reg.offset), "register segment failed", 0,
      {&fd, 1});
  if (!reply) return reply.error;
  reg.segment = reply->segment();
  reg.epoch = epoch;
  return 0;
}

int acquire_shared_pages(uint64_t addr, uint64_t length, uint64_t& lease) {
  if (addr + length < addr) return EINVAL;
  uint64_t page_start = addr & ~(shm::kPageSize - 1);
  uint64_t page_end = shm::round_up(addr + length, shm::kPageSize);
  if (int e = RouterLink::get().ensure_connected(); e != 0) return e;
  return SharedPages::get().acquire(page_start, page_end, lease);
}

void release_shared_pages(uint64_t lease) { SharedPages::get().release(lease); }

}  // namespace ff::verbs
