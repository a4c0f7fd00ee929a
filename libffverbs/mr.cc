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
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "libffverbs/shim.h"
#include "shm/arena.h"

using namespace ff::verbs;
namespace shm = ff::shm;

namespace {

constexpr uint64_t kPage = shm::kPageSize;

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
        // The router forgets the segment; the app keeps its (now memfd-backed) memory.
        if (reg.epoch == RouterLink::get().epoch()) {
          flatbuffers::FlatBufferBuilder fbb;
          RouterLink::get().call(fbb, ff::proto::RequestBody::ReleaseSegment,
                                 ff::proto::CreateReleaseSegment(fbb, reg.segment).Union());
        }
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
    void* copy = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (copy == MAP_FAILED) return errno;
    // process_vm_readv instead of memcpy: unmapped pages give EFAULT, not SIGSEGV.
    iovec local{copy, len};
    iovec remote{reinterpret_cast<void*>(start), len};
    ssize_t n = ::process_vm_readv(::getpid(), &local, 1, &remote, 1, 0);
    if (n != static_cast<ssize_t>(len)) {
      ::munmap(copy, len);
      debug("reg_mr: pages %#lx-%#lx are not all mapped", static_cast<unsigned long>(start),
            static_cast<unsigned long>(end));
      return EFAULT;
    }
    void* placed = ::mmap(reinterpret_cast<void*>(start), len, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_FIXED, fd.get(), 0);
    ::munmap(copy, len);
    if (placed == MAP_FAILED) return errno;
    Region reg;
    reg.end = end;
    reg.fd = std::move(fd);
    regions_.emplace(start, std::move(reg));
    return 0;
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

  std::mutex mu_;
  std::map<uint64_t, Region> regions_;  // by start; disjoint, page-aligned
};

// The ibv_malloc arenas.
class Arenas {
 public:
  static Arenas& get() {
    static Arenas* a = new Arenas();
    return *a;
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
