// Moving pages: app pages become shared memfd-backed pages at registration
// and private again when their last registration goes (the table of what is
// shared is shared_pages.cc; see shared_memory.h).
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

}  // namespace ff::verbs
