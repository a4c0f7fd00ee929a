// Page sharing: app pages become shared memfd-backed pages at registration
// and private again when their last registration goes (see shared_memory.h).
#include <fcntl.h>
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

}  // namespace

// Turns [start, end) (a MAP_SHARED memfd mapping) into private anonymous
// memory with the same bytes, on the private stack (the range may hold the
// caller's own stack).
int privatize(uint64_t start, uint64_t end) {
  struct Range {
    uint64_t start, end;
  } r{start, end};
  return run_on_private_stack(
      [](void* arg) -> int {
        const Range rr = *static_cast<const Range*>(arg);
        size_t len = rr.end - rr.start;
        void* tmp = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (tmp == MAP_FAILED) return errno;
        if (!copy_pages(tmp, reinterpret_cast<void*>(rr.start), len)) {
          ::munmap(tmp, len);
          return EFAULT;
        }
        void* p = ::mmap(reinterpret_cast<void*>(rr.start), len, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        int e = p == MAP_FAILED ? errno : 0;
        if (p != MAP_FAILED) copy_pages(p, tmp, len);
        ::munmap(tmp, len);
        return e;
      },
      &r);
}

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
  for_each_mapping(
      [](const MapsLine& m, void* arg) {
        auto& w = *static_cast<Want*>(arg);
        if (m.end <= w.start) return true;
        w.found = m.start <= w.start && w.end <= m.end && m.inode == w.inode && m.shared() &&
                  m.offset + (w.start - m.start) == w.offset;
        return false;
      },
      &want);
  return want.found;
}

// The reverse: writes the bytes of private [start, end) into `fd` at
// `offset` and maps the memfd back over the range.
int reshare(uint64_t start, uint64_t end, int fd, uint64_t offset) {
  struct Job {
    uint64_t start, end;
    int fd;
    uint64_t offset;
  } j{start, end, fd, offset};
  return run_on_private_stack(
      [](void* arg) -> int {
        const Job jj = *static_cast<const Job*>(arg);
        size_t len = jj.end - jj.start;
        void* view = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, jj.fd, static_cast<off_t>(jj.offset));
        if (view == MAP_FAILED) return errno;
        copy_pages(view, reinterpret_cast<void*>(jj.start), len);
        ::munmap(view, len);
        void* p = ::mmap(reinterpret_cast<void*>(jj.start), len, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_FIXED, jj.fd, static_cast<off_t>(jj.offset));
        return p == MAP_FAILED ? errno : 0;
      },
      &j);
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
    it = regions_.upper_bound(at);
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

// Memory that copying into a memfd would break rather than share: the
// app's own MAP_SHARED mappings (the copy would leave their other mappings
// behind: another process, or the same file mapped elsewhere, would no
// longer see what RDMA writes) and huge pages (4 KiB pages cannot be mapped
// over part of a huge page). 0, or EINVAL after saying why on stderr.
int refuse_unshareable(uint64_t start, uint64_t end) {
  struct Scan {
    uint64_t start, end;
    char why[160];
  } scan{start, end, {}};
  for_each_mapping(
      [](const MapsLine& m, void* arg) {
        auto& s = *static_cast<Scan*>(arg);
        if (m.end <= s.start) return true;
        if (m.start >= s.end) return false;
        const char* what = std::strstr(m.path, "anon_hugepage") != nullptr || std::strstr(m.path, "/hugepages") != nullptr
                               ? "huge pages"
                           : m.shared() ? "MAP_SHARED memory"
                                        : nullptr;
        if (what != nullptr)
          std::snprintf(s.why, sizeof s.why, "%#lx-%#lx is %s (%s)", static_cast<unsigned long>(m.start),
                        static_cast<unsigned long>(m.end), what, *m.path != '\0' ? m.path : "anonymous");
        return what == nullptr;
      },
      &scan);
  if (scan.why[0] == '\0') return 0;
  std::fprintf(stderr,
               "libffverbs[%d]: ibv_reg_mr: EINVAL: %s; ffrouter cannot share it with the router without "
               "breaking it: register memory from ibv_malloc, or private memory\n",
               static_cast<int>(::getpid()), scan.why);
  return EINVAL;
}

}  // namespace

// Copies [start, end) into a new sealed memfd and maps it in place.
int SharedPages::create(uint64_t start, uint64_t end) {
  if (int e = refuse_unshareable(start, end); e != 0) return e;
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
  if (int e = copy_and_remap(start, len, pool_->get(), offset); e != 0) return e;
  Region reg;
  reg.end = end;
  reg.file = pool_;
  reg.offset = offset;
  regions_.emplace(start, std::move(reg));
  return 0;
}

// Between copying the pages and mapping the copy over them, nothing may
// write to them, or the write is lost. The calling thread's own stack may
// be on those pages (a registered stack buffer), and every call it makes
// writes there; so the copy and the remap run on a separate stack
// (run_on_private_stack) while the caller's frames stay untouched.
int SharedPages::copy_and_remap(uint64_t start, size_t len, int fd, uint64_t offset) {
  struct Job {
    uint64_t start;
    size_t len;
    int fd;
    uint64_t offset;
  } job{start, len, fd, offset};
  int e = run_on_private_stack(
      [](void* arg) -> int {
        const Job j = *static_cast<const Job*>(arg);  // only reads before the remap
        void* copy = ::mmap(nullptr, j.len, PROT_READ | PROT_WRITE, MAP_SHARED, j.fd, static_cast<off_t>(j.offset));
        if (copy == MAP_FAILED) return errno;
        int result = 0;
        if (!copy_pages(copy, reinterpret_cast<void*>(j.start), j.len)) result = EFAULT;
        else if (::mmap(reinterpret_cast<void*>(j.start), j.len, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_FIXED, j.fd, static_cast<off_t>(j.offset)) == MAP_FAILED)
          result = errno;
        ::munmap(copy, j.len);
        return result;
      },
      &job);
  if (e == EFAULT)
    debug("reg_mr: pages %#lx-%#lx are not all mapped", static_cast<unsigned long>(start),
          static_cast<unsigned long>(start + len));
  return e;
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
