// Page sharing: app pages become shared memfd-backed pages at registration
// and private again when their last registration goes (see shared_memory.h).
#include <dirent.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

#include "libffverbs/proc_maps.h"
#include "libffverbs/request.h"
#include "libffverbs/shared_memory.h"
#include "shm/arena.h"

namespace shm = ff::shm;
namespace proto = ff::proto;

namespace ff::verbs {

namespace {

// Copies whole pages of our own memory. A page holds whatever else the app
// keeps there (other heap chunks, stack frames), so this deliberately reads
// and writes memory the app's allocator or a sanitizer considers off-limits;
// process_vm_readv does it in the kernel (and fails on unmapped pages
// instead of faulting). The raw system call: sanitizers intercept the libc
// wrapper and would report the deliberate reads.
bool copy_pages(void* dst, const void* src, size_t len) {
  iovec local{dst, len};
  iovec remote{const_cast<void*>(src), len};
  return ::syscall(SYS_process_vm_readv, ::getpid(), &local, 1UL, &remote, 1UL, 0UL) ==
         static_cast<long>(len);
}

// Runs fn(arg) on a freshly mapped stack and returns its result. The
// caller's stack is saved by swapcontext before fn starts and not written
// again until fn returns, so fn may copy and remap the caller's own stack
// pages. fn must not write the caller's memory before its remap is done.
int run_on_private_stack(int (*fn)(void*), void* arg) {
  constexpr size_t kStack = 256 << 10;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return errno;
  struct Call {
    int (*fn)(void*);
    void* arg;
    int result;
  };
  // Lives on the private stack: written after fn returns without touching the caller's pages.
  auto* call = new (stack) Call{fn, arg, 0};
  ucontext_t caller{}, worker{};
  if (::getcontext(&worker) != 0) {
    ::munmap(stack, kStack);
    return errno;
  }
  worker.uc_stack.ss_sp = static_cast<char*>(stack) + 64;
  worker.uc_stack.ss_size = kStack - 64;
  worker.uc_link = &caller;
  auto p = reinterpret_cast<uint64_t>(call);
  ::makecontext(&worker, reinterpret_cast<void (*)()>(+[](unsigned hi, unsigned lo) {
                  auto* c = reinterpret_cast<Call*>((uint64_t{hi} << 32) | lo);
                  c->result = c->fn(c->arg);
                }),
                2, static_cast<unsigned>(p >> 32), static_cast<unsigned>(p & 0xffffffffu));
  int rc = ::swapcontext(&caller, &worker);
  int result = call->result;
  ::munmap(stack, kStack);
  return rc != 0 ? errno : result;
}

// Holds other threads' writes to [start, start + len) while the pages move
// (userfaultfd write protection): a thread that writes there sleeps in its
// page fault until the hold ends, then retries the write on whatever is
// mapped there by then, so no write lands on the old pages after they were
// copied. Kernel faults (a read(2) into the pages) wait too where the app
// may ask for that (CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1);
// otherwise such a system call fails with EFAULT instead of writing pages
// already copied. Where userfaultfd is unavailable (a seccomp filter, an
// old kernel) or the memory is of a kind it cannot protect, the move goes
// on unprotected, as before.
//
// One userfaultfd serves the process (closing one walks every mapping of
// the process: per move, that made thousands of registrations quadratic);
// a fork child opens its own, since the inherited one protects the
// parent's pages. Moves are serialized by their callers (SharedPages::mu_).
//
// Used on the private stack (run_on_private_stack): while the hold lasts
// the calling thread must not write to the range itself, or it would wait
// for itself; errno (thread-local storage, which for a thread's stack lies
// at its top) is the one write it cannot avoid, so a range holding it is
// not held.
class HeldWrites {
 public:
  HeldWrites(uint64_t start, uint64_t len) : range_{start, len} {
    auto errno_at = reinterpret_cast<uint64_t>(&errno);
    if (errno_at + sizeof(int) > start && errno_at < start + len) return;
    int fd = userfaultfd();
    if (fd < 0) return;
    // Write protection covers present pages: make the untouched ones
    // present (the shared zero page, for anonymous memory).
    ::madvise(reinterpret_cast<void*>(start), len, MADV_POPULATE_READ);
    uffdio_register reg{};
    reg.range = range_;
    reg.mode = UFFDIO_REGISTER_MODE_WP;
    if (::ioctl(fd, UFFDIO_REGISTER, &reg) != 0) return;
    fd_ = fd;
    uffdio_writeprotect wp{};
    wp.range = range_;
    wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
    if ((reg.ioctls & (uint64_t{1} << _UFFDIO_WRITEPROTECT)) != 0) ::ioctl(fd, UFFDIO_WRITEPROTECT, &wp);
  }
  HeldWrites(const HeldWrites&) = delete;
  HeldWrites& operator=(const HeldWrites&) = delete;
  // Ends the hold: after a move the range is new, unprotected memory and
  // the held writers only need waking; after a failed one the old pages
  // lose their protection first.
  ~HeldWrites() {
    if (fd_ < 0) return;
    uffdio_writeprotect wp{};
    wp.range = range_;
    ::ioctl(fd_, UFFDIO_WRITEPROTECT, &wp);  // fails harmlessly on moved pages
    ::ioctl(fd_, UFFDIO_UNREGISTER, &range_);
    ::ioctl(fd_, UFFDIO_WAKE, &range_);
  }

 private:
  // The process's userfaultfd, or -1 where it cannot have one.
  static int userfaultfd() {
    static int fd = -1;
    static pid_t owner = 0;
    pid_t self = ::getpid();
    if (owner == self) return fd;
    if (fd >= 0) ::close(fd);  // the parent's, inherited
    owner = self;
    fd = -1;
    // Kernel faults held too where allowed; user faults only otherwise.
    for (int flags : {0, UFFD_USER_MODE_ONLY}) {
      fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | flags));
      if (fd >= 0) break;
    }
    uffdio_api api{};
    api.api = UFFD_API;
    if (fd >= 0 && (::ioctl(fd, UFFDIO_API, &api) != 0 || (api.features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) == 0)) {
      ::close(fd);
      fd = -1;
    }
    return fd;
  }

  uffdio_range range_;
  int fd_ = -1;  // while holding
};

// Replaces the pages of [start, end) with the same bytes in new memory: the
// memfd `fd` at `offset` (MAP_SHARED), or private anonymous memory when fd
// is -1. The bytes are copied into the new memory first, and mremap then
// puts it in place in one step, so no thread ever sees the range empty;
// writes by other threads are held meanwhile (HeldWrites). mremap is the
// raw system call: memory hooks in the app may not pass MREMAP_FIXED's
// fifth argument on (UCX 1.13's ucm, which patches every library's mremap,
// takes four, and ucx_perftest's buffers went elsewhere: tests/e2e/test_ucx.sh). Runs on a
// private stack: the range may hold the caller's own stack.
int move_pages(uint64_t start, uint64_t end, int fd, uint64_t offset) {
  struct Job {
    uint64_t start, end;
    int fd;
    uint64_t offset;
  } job{start, end, fd, offset};
  return run_on_private_stack(
      [](void* arg) -> int {
        const Job j = *static_cast<const Job*>(arg);  // only reads before the move
        size_t len = j.end - j.start;
        void* dst = j.fd >= 0 ? ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, j.fd, static_cast<off_t>(j.offset))
                              : ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (dst == MAP_FAILED) return errno;
        // No signal handler may run on this thread and write the range.
        sigset_t all, old;
        ::sigfillset(&all);
        ::pthread_sigmask(SIG_SETMASK, &all, &old);
        int result = 0;
        {
          HeldWrites held(j.start, len);
          if (!copy_pages(dst, reinterpret_cast<void*>(j.start), len)) result = EFAULT;
          else if (::syscall(SYS_mremap, dst, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, j.start) == -1)
            result = errno;
        }
        ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
        if (result != 0) ::munmap(dst, len);
        return result;
      },
      &job);
}

}  // namespace

int privatize(uint64_t start, uint64_t end) { return move_pages(start, end, -1, 0); }

int reshare(uint64_t start, uint64_t end, int fd, uint64_t offset) { return move_pages(start, end, fd, offset); }

// True when [start, end) is still mapped from `fd` at `offset` (inside one
// mapping: the kernel merges neighbouring regions of the same file): the
// app may have unmapped (and reused) a buffer while it was registered, and
// such memory is not ours to touch any more.
bool still_mapped_from(uint64_t start, uint64_t end, int fd, uint64_t offset) {
  struct stat ours {}, mapped {};
  if (::fstat(fd, &ours) != 0) return false;
  // The common case without reading the maps: [start, end) is one mapping
  // of the file (only the shim maps it, and its regions never overlap, so
  // the offset is the region's).
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", static_cast<unsigned long>(start),
                static_cast<unsigned long>(end));
  if (::stat(path, &mapped) == 0 && mapped.st_ino == ours.st_ino && mapped.st_dev == ours.st_dev) return true;
  struct Want {
    uint64_t start, end, offset, inode;
    bool found;
  } want{start, end, offset, ours.st_ino, false};
  for_each_mapping_in(
      start, end,
      [](const MapsLine& m, void* arg) {
        auto& w = *static_cast<Want*>(arg);
        w.found = m.start <= w.start && w.end <= m.end && m.inode == w.inode && m.shared() &&
                  m.offset + (w.start - m.start) == w.offset;
        return false;
      },
      &want);
  return want.found;
}

SharedPages& SharedPages::get() {
  static SharedPages* p = new SharedPages();  // never destroyed (see RouterLink)
  return *p;
}

int SharedPages::acquire(uint64_t start, uint64_t end) {
  std::lock_guard lock(mu_);
  // Fill the gaps between existing regions with new ones.
  uint64_t at = start;
  auto it = regions_.upper_bound(start);
  if (it != regions_.begin() && std::prev(it)->second.end > start) --it;
  while (at < end) {
    if (it != regions_.end() && it->first <= at) {
      at = it->second.end;
      ++it;
      continue;
    }
    uint64_t gap_end = it != regions_.end() ? std::min(end, it->first) : end;
    if (int e = create(at, gap_end); e != 0) return e;
    at = gap_end;
    it = regions_.lower_bound(at);  // the region that ended the gap, if one did
  }
  // Make sure the router knows every region (again, after a reconnect) and take references.
  for (auto r = find(start); r != regions_.end() && r->first < end; ++r) {
    if (int e = ensure_registered(r->first, r->second); e != 0) return e;
  }
  for (auto r = find(start); r != regions_.end() && r->first < end; ++r) ++r->second.refs;
  return 0;
}

void SharedPages::release(uint64_t start, uint64_t end) {
  std::lock_guard lock(mu_);
  for (auto r = find(start); r != regions_.end() && r->first < end;) {
    Region& reg = r->second;
    if (reg.refs > 0) --reg.refs;
    if (reg.refs == 0 && !reg.pinned) {
      // The router forgets the segment, and the pages become ordinary
      // private memory again (with their bytes): nothing stays shared
      // past the last registration, so a later fork() copies them as usual.
      if (reg.epoch == RouterLink::get().epoch()) {
        flatbuffers::FlatBufferBuilder fbb;
        request<void>(fbb, proto::CreateReleaseSegment(fbb, reg.segment));
      }
      if (reg.apps_own) {  // the app's own file: its mapping stays as it is
        r = regions_.erase(r);
        continue;
      }
      bool mapped = still_mapped_from(r->first, reg.end, reg.fd(), reg.offset);
      bool kept = mapped && privatize(r->first, reg.end) == 0;
      if (!mapped || kept)  // the file's pages go back to the system
        ::fallocate(reg.fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(reg.offset),
                    static_cast<off_t>(reg.end - r->first));
      r = regions_.erase(r);
    } else {
      ++r;
    }
  }
}

int SharedPages::add_pinned(uint64_t start, uint64_t end, int fd) {
  std::lock_guard lock(mu_);
  Region reg;
  reg.end = end;
  reg.file = std::make_shared<ff::UniqueFd>(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  reg.pinned = true;
  reg.refs = 1;
  auto [it, ok] = regions_.emplace(start, std::move(reg));
  return ensure_registered(it->first, it->second);
}

std::map<uint64_t, SharedPages::Region>::iterator SharedPages::find(uint64_t start) {
  auto it = regions_.upper_bound(start);
  if (it != regions_.begin() && std::prev(it)->second.end > start) --it;
  return it;
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
  reg.end = end;
  if (app.file) {
    reg.file = std::move(app.file);
    reg.offset = app.offset;
    reg.apps_own = true;
    regions_.emplace(start, std::move(reg));
    return 0;
  }
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
  regions_.emplace(start, std::move(reg));
  return 0;
}

int SharedPages::ensure_registered(uint64_t start, Region& reg) {
  uint64_t epoch = RouterLink::get().epoch();
  if (reg.segment != 0 && reg.epoch == epoch) return 0;
  flatbuffers::FlatBufferBuilder fbb;
  int fd = reg.fd();
  auto reply = request<proto::RegisterSegmentReply>(fbb, proto::CreateRegisterSegment(fbb, start, reg.end - start, reg.offset),
                                                    "register segment failed", 0, {&fd, 1});
  if (!reply) return reply.error;
  reg.segment = reply->segment();
  reg.epoch = epoch;
  return 0;
}

int acquire_shared_pages(uint64_t addr, uint64_t length, uint64_t& page_start, uint64_t& page_end) {
  if (addr + length < addr) return EINVAL;
  page_start = addr & ~(shm::kPageSize - 1);
  page_end = shm::round_up(addr + length, shm::kPageSize);
  if (int e = RouterLink::get().ensure_connected(); e != 0) return e;
  return SharedPages::get().acquire(page_start, page_end);
}

void release_shared_pages(uint64_t page_start, uint64_t page_end) {
  SharedPages::get().release(page_start, page_end);
}

}  // namespace ff::verbs
