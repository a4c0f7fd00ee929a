// Memory registration.
//
// The router must reach every byte an RDMA operation touches. Ordinary app
// memory is made shared page by page: the pages covering a registration are
// copied into a sealed memfd, the memfd is mapped over the very same
// addresses (MAP_FIXED|MAP_SHARED), and the memfd goes to the router as a
// segment. Whole pages are copied, so data sharing a page with the buffer
// survives; a page is shared once, however many registrations cover it
// (regions are reference-counted). ibv_malloc memory lives in a shared arena
// from the start and is registered with no copy at all.
//
// Caveats (README): a thread writing the pages of a buffer *while* it is
// being registered for the first time can lose that write; registering
// memory the app itself mapped MAP_SHARED gives the app a private copy; after
// fork() a child shares, rather than copies, registered pages.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <pthread.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "libffverbs/shim.h"
#include "shm/arena.h"

using namespace ff::verbs;
namespace shm = ff::shm;

namespace {

constexpr uint64_t kPage = shm::kPageSize;

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

// True when [start, end) is still exactly one mapping of `fd`: the app may
// have unmapped (and reused) a buffer while it was registered, and such
// memory is not ours to touch any more.
bool still_mapped_from(uint64_t start, uint64_t end, int fd) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/map_files/%lx-%lx", static_cast<unsigned long>(start),
                static_cast<unsigned long>(end));
  struct stat mapped {}, ours {};
  return ::stat(path, &mapped) == 0 && ::fstat(fd, &ours) == 0 && mapped.st_ino == ours.st_ino &&
         mapped.st_dev == ours.st_dev;
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

// In a fork child: every mapping backed by one of our memfds (registered
// pages, ibv_malloc arenas, rings) becomes private memory holding the same
// bytes, as fork() promises. Without this the child would share those
// pages with the parent, its stack and heap included.
void privatize_shared_pages_in_child() {
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  static char maps[1 << 20];  // the child is single-threaded here
  size_t used = 0;
  ssize_t n;
  while (used < sizeof maps - 1 && (n = ::read(fd, maps + used, sizeof maps - 1 - used)) > 0)
    used += static_cast<size_t>(n);
  ::close(fd);
  maps[used] = '\0';
  for (char* line = maps; line != nullptr && *line != '\0';) {
    char* next = std::strchr(line, '\n');
    if (next != nullptr) *next++ = '\0';
    // ffv-mr: registered pages; ffr-*: arenas and the router's rings (a
    // child polling an inherited CQ must not take the parent's completions).
    if (std::strstr(line, "/memfd:ffv-mr") != nullptr || std::strstr(line, "/memfd:ffr-") != nullptr) {
      uint64_t start = std::strtoull(line, nullptr, 16);
      uint64_t end = std::strtoull(std::strchr(line, '-') + 1, nullptr, 16);
      privatize(start, end);
    }
    line = next;
  }
}

struct Region {
  uint64_t end;
  ff::UniqueFd fd;
  uint32_t segment = 0;     // router handle, valid for `epoch`
  uint64_t epoch = 0;
  uint32_t refs = 0;
  bool pinned = false;      // arenas: never released
};

// Process-wide table of shared page ranges. Thread-safe.
class SharedPages {
 public:
  static SharedPages& get() {
    static SharedPages* p = new SharedPages();  // never destroyed (see RouterLink)
    return *p;
  }

  // fork() prepare (parent, forking thread): the parent goes on writing its
  // own stack right after fork(), which would write into the child's copy
  // while the page is still shared. So the forking thread's stack pages that
  // are registered become private for the duration of the fork.
  void before_fork() {
    mu_.lock();  // the table stays consistent across fork (unlocked in both)
    // The range the forking thread may write after fork(): its frames
    // below the stack pointer and everything above it up to the stack's
    // top. (The extent pthread_getattr_np reports for the main thread stops
    // at the first registered page inside [stack], so it cannot be used for
    // the lower bound.)
    auto sp = reinterpret_cast<uint64_t>(__builtin_frame_address(0));
    uint64_t lo = sp > (uint64_t{1} << 20) ? sp - (uint64_t{1} << 20) : 0;
    uint64_t hi = sp + (uint64_t{8} << 20);
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      void* stack = nullptr;
      size_t size = 0;
      if (pthread_attr_getstack(&attr, &stack, &size) == 0 && reinterpret_cast<uint64_t>(stack) + size > sp)
        hi = reinterpret_cast<uint64_t>(stack) + size;
      pthread_attr_destroy(&attr);
    }
    for (auto& [start, reg] : regions_) {
      uint64_t a = std::max(start, lo), b = std::min(reg.end, hi);
      if (a >= b) continue;
      if (privatize(a, b) == 0) stack_pages_.push_back({a, b, start});
    }
  }
  // fork() parent: the stack pages go back to being shared with the router.
  void after_fork_parent() {
    for (const auto& p : stack_pages_) {
      auto it = regions_.find(p.region);
      if (it != regions_.end()) reshare(p.start, p.end, it->second.fd.get(), p.start - p.region);
    }
    stack_pages_.clear();
    mu_.unlock();
  }
  // fork() child: the parent's regions are not ours (their segments belong
  // to the parent's session), and their pages become private copies.
  void after_fork_child() {
    stack_pages_.clear();
    regions_.clear();
    mu_.unlock();
    privatize_shared_pages_in_child();
  }

  int acquire(uint64_t start, uint64_t end) {
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

  void release(uint64_t start, uint64_t end) {
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
          RouterLink::get().call(fbb, ff::proto::RequestBody::ReleaseSegment,
                                 ff::proto::CreateReleaseSegment(fbb, reg.segment).Union());
        }
        if (still_mapped_from(r->first, reg.end, reg.fd.get())) privatize(r->first, reg.end);
        r = regions_.erase(r);
      } else {
        ++r;
      }
    }
  }

  // Adds an already shared range (an arena) that is never released.
  int add_pinned(uint64_t start, uint64_t end, int fd) {
    std::lock_guard lock(mu_);
    Region reg;
    reg.end = end;
    reg.fd.reset(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    reg.pinned = true;
    reg.refs = 1;
    auto [it, ok] = regions_.emplace(start, std::move(reg));
    return ensure_registered(it->first, it->second);
  }

 private:
  std::map<uint64_t, Region>::iterator find(uint64_t start) {
    auto it = regions_.upper_bound(start);
    if (it != regions_.begin() && std::prev(it)->second.end > start) --it;
    return it;
  }

  // Copies [start, end) into a new sealed memfd and maps it in place.
  int create(uint64_t start, uint64_t end) {
    size_t len = end - start;
    ff::UniqueFd fd(::memfd_create("ffv-mr", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!fd) return errno;
    if (::ftruncate(fd.get(), static_cast<off_t>(len)) != 0) return errno;
    if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) return errno;
    if (int e = copy_and_remap(start, len, fd.get()); e != 0) return e;
    Region reg;
    reg.end = end;
    reg.fd = std::move(fd);
    regions_.emplace(start, std::move(reg));
    return 0;
  }

  // Between copying the pages and mapping the copy over them, nothing may
  // write to them, or the write is lost. The calling thread's own stack may
  // be on those pages (a registered stack buffer), and every call it makes
  // writes there; so the copy and the remap run on a separate stack
  // (run_on_private_stack) while the caller's frames stay untouched.
  static int copy_and_remap(uint64_t start, size_t len, int fd) {
    struct Job {
      uint64_t start;
      size_t len;
      int fd;
    } job{start, len, fd};
    int e = run_on_private_stack(
        [](void* arg) -> int {
          const Job j = *static_cast<const Job*>(arg);  // only reads before the remap
          void* copy = ::mmap(nullptr, j.len, PROT_READ | PROT_WRITE, MAP_SHARED, j.fd, 0);
          if (copy == MAP_FAILED) return errno;
          int result = 0;
          if (!copy_pages(copy, reinterpret_cast<void*>(j.start), j.len)) result = EFAULT;
          else if (::mmap(reinterpret_cast<void*>(j.start), j.len, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_FIXED, j.fd, 0) == MAP_FAILED)
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

  int ensure_registered(uint64_t start, Region& reg) {
    uint64_t epoch = RouterLink::get().epoch();
    if (reg.segment != 0 && reg.epoch == epoch) return 0;
    flatbuffers::FlatBufferBuilder fbb;
    auto body = ff::proto::CreateRegisterSegment(fbb, start, reg.end - start);
    int fd = reg.fd.get();
    auto r = RouterLink::get().call(fbb, ff::proto::RequestBody::RegisterSegment, body.Union(), {&fd, 1});
    const auto* reply = r.error == 0 ? r.reply()->body_as_RegisterSegmentReply() : nullptr;
    if (reply == nullptr) {
      debug("register segment failed: %s", r.message.c_str());
      return r.error != 0 ? r.error : EPROTO;
    }
    reg.segment = reply->segment();
    reg.epoch = epoch;
    return 0;
  }

  struct StackPages {
    uint64_t start, end, region;
  };
  std::mutex mu_;
  std::map<uint64_t, Region> regions_;  // by start; disjoint, page-aligned
  std::vector<StackPages> stack_pages_;  // privatized for the fork in progress
};

// The ibv_malloc arenas.
class Arenas {
 public:
  static Arenas& get() {
    static Arenas* a = new Arenas();
    return *a;
  }
  // Fork child: the arenas' pages are private copies now (see
  // privatize_shared_pages_in_child); buffers the child already holds stay
  // usable as memory, and new ibv_malloc calls get a fresh arena.
  void forget_after_fork() {
    new (&mu_) std::mutex();
    for (auto& a : arenas_) a.release();  // leaked on purpose: their mappings became the child's private memory
    arenas_.clear();
  }
  void* allocate(size_t size) {
    std::lock_guard lock(mu_);
    for (auto& a : arenas_)
      if (void* p = a->allocate(size)) return p;
    size_t bytes = std::max(arena_bytes(), shm::round_up(size, kPage) + kPage);
    try {
      auto arena = std::make_unique<shm::SharedArena>(shm::SharedArena::create_segment(bytes));
      const auto& m = arena->mapping();
      auto base = reinterpret_cast<uint64_t>(m.base());
      if (int e = SharedPages::get().add_pinned(base, base + m.size(), m.fd()); e != 0) {
        errno = e;
        return nullptr;
      }
      arenas_.push_back(std::move(arena));
      return arenas_.back()->allocate(size);
    } catch (const std::exception& e) {
      debug("ibv_malloc: cannot create an arena: %s", e.what());
      errno = ENOMEM;
      return nullptr;
    }
  }
  bool free(void* p) {
    std::lock_guard lock(mu_);
    for (auto& a : arenas_)
      if (a->contains(p)) return a->free(p);
    return false;
  }

 private:
  static size_t arena_bytes() {
    const char* mb = std::getenv("FFV_ARENA_MB");
    long v = mb != nullptr ? std::atol(mb) : 0;
    return (v > 0 ? static_cast<size_t>(v) : 64) << 20;
  }
  std::mutex mu_;
  std::vector<std::unique_ptr<shm::SharedArena>> arenas_;
};

ibv_mr* register_mr(ibv_pd* ibpd, void* addr, size_t length, uint64_t iova, unsigned access) {
  FfPd* pd = to_ff(ibpd);
  if (context_is_stale(*to_ff(ibpd->context))) return fail_ptr<ibv_mr>(EIO);
  if (length == 0) return fail_ptr<ibv_mr>(EINVAL);
  auto a = reinterpret_cast<uint64_t>(addr);
  uint64_t page_start = 0, page_end = 0;
  if (int e = acquire_shared_pages(a, length, page_start, page_end); e != 0) return fail_ptr<ibv_mr>(e);
  flatbuffers::FlatBufferBuilder fbb;
  auto r = RouterLink::get().call(fbb, ff::proto::RequestBody::RegMr,
                                  ff::proto::CreateRegMr(fbb, pd->handle, a, length, iova, access).Union());
  const auto* reply = r.error == 0 ? r.reply()->body_as_RegMrReply() : nullptr;
  if (reply == nullptr) {
    debug("reg_mr failed: %s", r.message.c_str());
    release_shared_pages(page_start, page_end);
    return fail_ptr<ibv_mr>(r.error != 0 ? r.error : EPROTO);
  }
  auto* mr = static_cast<FfMr*>(std::calloc(1, sizeof(FfMr)));
  if (mr == nullptr) return fail_ptr<ibv_mr>(ENOMEM);
  mr->mr.context = ibpd->context;
  mr->mr.pd = ibpd;
  mr->mr.addr = addr;
  mr->mr.length = length;
  mr->mr.handle = reply->mr();
  mr->mr.lkey = reply->lkey();
  mr->mr.rkey = reply->rkey();
  mr->handle = reply->mr();
  mr->page_start = page_start;
  mr->page_end = page_end;
  return &mr->mr;
}

}  // namespace

namespace ff::verbs {

void shared_memory_before_fork() { SharedPages::get().before_fork(); }
void shared_memory_after_fork_parent() { SharedPages::get().after_fork_parent(); }
void shared_memory_after_fork_child() {
  SharedPages::get().after_fork_child();
  Arenas::get().forget_after_fork();
}

int acquire_shared_pages(uint64_t addr, uint64_t length, uint64_t& page_start, uint64_t& page_end) {
  if (addr + length < addr) return EINVAL;
  page_start = addr & ~(kPage - 1);
  page_end = shm::round_up(addr + length, kPage);
  if (int e = RouterLink::get().ensure_connected(); e != 0) return e;
  return SharedPages::get().acquire(page_start, page_end);
}

void release_shared_pages(uint64_t page_start, uint64_t page_end) {
  SharedPages::get().release(page_start, page_end);
}

}  // namespace ff::verbs

#undef ibv_reg_mr
#undef ibv_reg_mr_iova

extern "C" {

ibv_mr* ibv_reg_mr(ibv_pd* pd, void* addr, size_t length, int access) {
  return register_mr(pd, addr, length, reinterpret_cast<uint64_t>(addr), static_cast<unsigned>(access));
}

ibv_mr* ibv_reg_mr_iova(ibv_pd* pd, void* addr, size_t length, uint64_t iova, int access) {
  return register_mr(pd, addr, length, iova, static_cast<unsigned>(access));
}

ibv_mr* ibv_reg_mr_iova2(ibv_pd* pd, void* addr, size_t length, uint64_t iova, unsigned int access) {
  return register_mr(pd, addr, length, iova, access);
}

int ibv_dereg_mr(ibv_mr* ibmr) {
  FfMr* mr = to_ff(ibmr);
  if (!context_is_stale(*to_ff(ibmr->context))) {
    flatbuffers::FlatBufferBuilder fbb;
    auto r = RouterLink::get().call(fbb, ff::proto::RequestBody::DeregMr,
                                    ff::proto::CreateDeregMr(fbb, mr->handle).Union());
    if (r.error == EBUSY || r.error == EINVAL) return r.error;  // the MR stays valid
  }
  release_shared_pages(mr->page_start, mr->page_end);
  std::free(mr);
  return 0;
}

// Re-registration would change keys and ranges in place; apps can
// deregister and register instead.
int ibv_rereg_mr(ibv_mr*, int, ibv_pd*, void*, size_t, int) { return fail_int(EOPNOTSUPP); }

// Zero-copy buffers: memory from a shared arena that the router already
// maps, so registering it costs no copy and no remap. Declared in
// libffverbs/ffverbs.h.
void* ibv_malloc(size_t size) {
  if (size == 0) return nullptr;
  if (int e = RouterLink::get().ensure_connected(); e != 0) {
    errno = e;
    return nullptr;
  }
  return Arenas::get().allocate(size);
}

void ibv_free(void* ptr) {
  if (ptr != nullptr && !Arenas::get().free(ptr)) debug("ibv_free: %p was not returned by ibv_malloc", ptr);
}

}  // extern "C"
