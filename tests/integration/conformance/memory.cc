// Memory: registration rules and dead keys, unaligned MRs that share pages
// with other data, ibv_malloc (libffverbs' own API), fork.
#include <dlfcn.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fixture.h"

namespace conformance {
namespace {

TEST_F(Verbs, RegistrationRulesAndDeregisteredKeysStopWorking) {
  Pages buf(1);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(pd, buf.base, buf.size, static_cast<unsigned>(IBV_ACCESS_REMOTE_WRITE)), nullptr);  // needs LOCAL_WRITE
  EXPECT_EQ(errno, EINVAL);
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_mr* other = mr(buf.base, buf.size);  // the same range, twice
  EXPECT_NE(m->lkey, other->lkey);
  Pair p = pair();
  uint32_t stale = m->rkey;
  dereg(m);
  ibv_sge s{reinterpret_cast<uint64_t>(buf.base), 8, other->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 1, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf.base + 64);
  w.wr.rdma.rkey = other->rkey;  // the second registration still works
  ASSERT_EQ(post(p.a, w), 0);
  EXPECT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  w.wr.rdma.rkey = stale;
  ASSERT_EQ(post(p.a, w), 0);
  EXPECT_EQ(poll1(p.scq).status, IBV_WC_REM_ACCESS_ERR);
}

// ibv_reg_mr_iova: the iova keeps the address's offset in its page (the
// kernel's uverbs refuses anything else, whatever the device).
TEST_F(Verbs, IovaWithAnotherOffsetInItsPageIsInvalid) {
  Pages buf(2);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr_iova(pd, buf.base + 8, 4096, 0x70000000 + 4, IBV_ACCESS_LOCAL_WRITE), nullptr);
  EXPECT_EQ(errno, EINVAL);
  ibv_mr* m = ibv_reg_mr_iova(pd, buf.base + 8, 4096, 0x70000000 + 8, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(m, nullptr) << std::strerror(errno);
  EXPECT_EQ(ibv_dereg_mr(m), 0);
}

// --- memory: unaligned MRs keep their page neighbours; ibv_malloc ----------

TEST_F(Verbs, UnalignedMrKeepsItsPageNeighboursIntact) {
  Pages page(3);
  // Neighbours on the same pages as the buffer, before and after it.
  uint8_t* before = page.base + 10;
  uint8_t* buffer = page.base + 1000;
  uint8_t* after = page.base + 1000 + 7000;
  fill(before, 900, 21);
  fill(after, 3000, 22);
  std::vector<uint8_t> before_copy(before, before + 900), after_copy(after, after + 3000);
  ibv_mr* m = mr(buffer, 7000);
  EXPECT_EQ(0, std::memcmp(before, before_copy.data(), 900)) << "registration lost neighbouring data";
  EXPECT_EQ(0, std::memcmp(after, after_copy.data(), 3000)) << "registration lost neighbouring data";
  // Overlapping registrations: the tail of one and the start of the next page.
  ibv_mr* overlap = mr(buffer + 5000, 4000);
  Pages src(2);
  fill(src.base, 7000, 23);
  ibv_mr* sm = mr(src.base, src.size);
  Pair p = pair();
  ibv_sge s{reinterpret_cast<uint64_t>(src.base), 7000, sm->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 1, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buffer);
  w.wr.rdma.rkey = m->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(buffer, src.base, 7000));
  EXPECT_EQ(0, std::memcmp(before, before_copy.data(), 900));
  EXPECT_EQ(0, std::memcmp(after, after_copy.data(), 3000));
  // The app keeps writing its neighbours; the remote side sees its buffer.
  std::memset(after, 0x5c, 100);
  buffer[0] = 0x77;
  ibv_sge back{reinterpret_cast<uint64_t>(src.base + 4096), 16, sm->lkey};
  w = wr(IBV_WR_RDMA_READ, 2, &back, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buffer);
  w.wr.rdma.rkey = m->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(src.base[4096], 0x77);
  dereg(overlap);
  dereg(m);
  EXPECT_EQ(after[0], 0x5c);  // deregistration loses nothing either
  EXPECT_EQ(buffer[0], 0x77);
}

// A registration over pages that already have registrations of their own
// (and pages that have none): the shim shares each batch of pages as its
// own piece of one memfd, so the router puts the MR together from pieces at
// different offsets of the file. The device must read and write the app's
// bytes through it (rdma_cm_test's UD case once sent the bytes of another
// piece when two stack buffers met on a page boundary).
TEST_F(Verbs, ARegistrationOverPagesRegisteredSeparatelyMovesTheAppsBytes) {
  Pages page(4);
  ibv_mr* second = mr(page.base + 2 * 4096 + 8, 64);  // pieces made in the order
  ibv_mr* first = mr(page.base + 4096 + 8, 64);       // the file's offsets do not follow
  uint8_t* buffer = page.base + 100;
  size_t len = 4 * 4096 - 200;
  fill(buffer, len, 41);
  ibv_mr* m = mr(buffer, len);
  Pages other(4);
  fill(other.base, len, 42);
  ibv_mr* om = mr(other.base, len);
  Pair p = pair();
  // The device reads the app's bytes through the MR...
  ibv_sge s{reinterpret_cast<uint64_t>(buffer), static_cast<uint32_t>(len), m->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 1, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(other.base);
  w.wr.rdma.rkey = om->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(other.base, buffer, len)) << "the device read other bytes than the app's";
  // ... and writes where the app reads.
  fill(other.base, len, 43);
  w = wr(IBV_WR_RDMA_READ, 2, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(other.base);
  w.wr.rdma.rkey = om->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(buffer, other.base, len)) << "the device wrote where the app does not read";
  dereg(m);
  dereg(om);
  dereg(first);
  dereg(second);
}

TEST_F(Verbs, IbvMallocBuffersNeedNoCopy) {
  using MallocFn = void* (*)(size_t);
  using FreeFn = void (*)(void*);
  auto ff_malloc = reinterpret_cast<MallocFn>(dlsym(RTLD_DEFAULT, "ibv_malloc"));
  auto ff_free = reinterpret_cast<FreeFn>(dlsym(RTLD_DEFAULT, "ibv_free"));
  if (ff_malloc == nullptr) {
    ASSERT_FALSE(expect_shim()) << "libffverbs should provide ibv_malloc";
    GTEST_SKIP() << "ibv_malloc is libffverbs' own API; not on a plain device";
  }
  auto* a = static_cast<uint8_t*>(ff_malloc(64 << 10));
  auto* b = static_cast<uint8_t*>(ff_malloc(100));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 4096, 0u);
  fill(a, 64 << 10, 31);
  ibv_mr* am = mr(a, 64 << 10);
  ibv_mr* bm = mr(b, 100);
  Pair p = pair();
  ibv_sge s{reinterpret_cast<uint64_t>(a + 5), 90, am->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 1, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(b);
  w.wr.rdma.rkey = bm->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(b, a + 5, 90));
  dereg(am);
  dereg(bm);
  ff_free(a);
  ff_free(b);
}

// The mapping /proc/self/maps names for `p` ("" when none).
std::string mapping_of(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  FILE* f = std::fopen("/proc/self/maps", "r");
  char line[512];
  std::string found;
  while (f != nullptr && std::fgets(line, sizeof line, f) != nullptr) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line, "%lx-%lx", &lo, &hi) == 2 && a >= lo && a < hi) {
      found = line;
      break;
    }
  }
  if (f != nullptr) std::fclose(f);
  return found;
}

// With libffverbs, page-aligned allocations of 64 KiB and more come from
// its shared heap (shared_heap.cc): registering one moves no page (the
// mapping is the same arena before and after), RDMA reaches it, realloc
// keeps its bytes, and a fork child gets a private copy it can free.
TEST_F(Verbs, PageAlignedAllocationsRegisterWithoutMovingAPage) {
  Dl_info info{};
  bool shared_heap = dladdr(reinterpret_cast<void*>(dlsym(RTLD_DEFAULT, "posix_memalign")), &info) != 0 &&
                     info.dli_fname != nullptr && std::strstr(info.dli_fname, "libffverbs") != nullptr;
  constexpr size_t kBytes = 256 << 10;
  void* raw = nullptr;
  ASSERT_EQ(posix_memalign(&raw, 4096, kBytes), 0);
  auto* buf = static_cast<uint8_t*>(raw);
  fill(buf, kBytes, 7);
  std::string before = mapping_of(buf);
  if (shared_heap) {
    EXPECT_NE(before.find("ffr-arena"), std::string::npos) << before;
  }
  ibv_mr* m = mr(buf, kBytes);
  if (shared_heap) {
    EXPECT_EQ(mapping_of(buf), before) << "registration moved the pages";
  }
  std::vector<uint8_t> src(4096);
  fill(src.data(), src.size(), 9);
  ibv_mr* sm = mr(src.data(), src.size());
  Pair p = pair();
  ibv_sge s{reinterpret_cast<uint64_t>(src.data()), 4096, sm->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 1, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf + kBytes - 4096);
  w.wr.rdma.rkey = m->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(buf + kBytes - 4096, src.data(), 4096));
  dereg(m);
  dereg(sm);

  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    bool same = std::memcmp(buf + kBytes - 4096, src.data(), 4096) == 0;
    std::memset(buf, 0x5a, 4096);  // its own copy
    __asm__ volatile("" : : "r"(buf) : "memory");  // (a store before free() is not dead here)
    void* more = nullptr;
    bool allocates = posix_memalign(&more, 4096, kBytes) == 0;
    if (allocates) std::memset(more, 1, kBytes);
    free(more);
    free(buf);  // inherited from the parent's heap
    _exit(same && allocates ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child did not see the parent's bytes or could not allocate";
  EXPECT_NE(buf[0], 0x5a) << "the child wrote into the parent's pages";

  auto* grown = static_cast<uint8_t*>(realloc(buf, 2 * kBytes));
  ASSERT_NE(grown, nullptr);
  EXPECT_EQ(0, std::memcmp(grown + kBytes - 4096, src.data(), 4096)) << "realloc lost the bytes";
  free(grown);
}

// Past a megabyte of /proc/self/maps too: 25000 small mappings before the
// registered pages in address order (new mappings go below older ones).
TEST_F(Verbs, ForkGivesTheChildAPrivateCopyOfRegisteredMemoryPastManyMappings) {
  Pages buf(1);
  std::strcpy(reinterpret_cast<char*>(buf.base), "parent data");
  ibv_mr* m = mr(buf.base, buf.size);
  ASSERT_NE(m, nullptr);
  std::vector<void*> filler;
  for (int i = 0; i < 25000; ++i) {  // alternate protections: no two merge
    void* p = mmap(nullptr, 4096, i % 2 == 0 ? PROT_READ : PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(p, MAP_FAILED);
    filler.push_back(p);
  }
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::strcpy(reinterpret_cast<char*>(buf.base), "child wrote");  // its own copy
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_STREQ(reinterpret_cast<char*>(buf.base), "parent data") << "the child wrote into the parent's pages";
  for (void* p : filler) munmap(p, 4096);
}

TEST_F(Verbs, ForkGivesTheChildAPrivateCopyOfRegisteredMemory) {
  Pages buf(2);
  std::strcpy(reinterpret_cast<char*>(buf.base), "parent data");
  char on_stack[32] = "stack data";  // registered while fork() runs
  ibv_mr* m = mr(buf.base, buf.size);
  ibv_mr* sm = mr(on_stack, sizeof on_stack);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    bool same = std::strcmp(reinterpret_cast<char*>(buf.base), "parent data") == 0 &&
                std::strcmp(on_stack, "stack data") == 0;
    std::strcpy(reinterpret_cast<char*>(buf.base), "child wrote");  // its own copy
    _exit(same ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child did not see the parent's bytes";
  EXPECT_STREQ(reinterpret_cast<char*>(buf.base), "parent data");
  EXPECT_STREQ(on_stack, "stack data");
  // The registrations still work in the parent.
  Pair p = pair();
  ibv_sge s{reinterpret_cast<uint64_t>(on_stack), 11, sm->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 1, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(buf.base + 4096);
  w.wr.rdma.rkey = m->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_STREQ(reinterpret_cast<char*>(buf.base + 4096), "stack data");
  dereg(sm);
}

// The app's MAP_SHARED mapping of a memfd stays shared with its other
// mappings once registered: what RDMA writes into one mapping shows in the
// other, and what the app stores through the other is what RDMA reads from
// the first. (libffverbs maps the same memfd in the router, sealed against
// shrinking; MAP_SHARED memory it cannot share that way it refuses:
// verbs_device_test.)
TEST_F(Verbs, RegisteredSharedMemfdStaysSharedWithItsOtherMappings) {
  int fd = memfd_create("conformance", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  ASSERT_GE(fd, 0);
  const size_t len = 2 * 4096;
  ASSERT_EQ(ftruncate(fd, static_cast<off_t>(len)), 0);
  auto* one = static_cast<uint8_t*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  auto* other = static_cast<uint8_t*>(mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  ASSERT_NE(one, MAP_FAILED);
  ASSERT_NE(other, MAP_FAILED);
  ibv_mr* m = mr(one, len);
  Pages src(2);
  fill(src.base, len, 31);
  ibv_mr* sm = mr(src.base, src.size);
  Pair p = pair();
  ibv_sge s{reinterpret_cast<uint64_t>(src.base), static_cast<uint32_t>(len), sm->lkey};
  ibv_send_wr w = wr(IBV_WR_RDMA_WRITE, 1, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(one);
  w.wr.rdma.rkey = m->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(other, src.base, len)) << "the other mapping did not see the RDMA WRITE";
  fill(other, len, 32);
  s = {reinterpret_cast<uint64_t>(one), static_cast<uint32_t>(len), m->lkey};
  w = wr(IBV_WR_RDMA_WRITE, 2, &s, 1);
  w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(src.base);
  w.wr.rdma.rkey = sm->rkey;
  ASSERT_EQ(post(p.a, w), 0);
  ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  EXPECT_EQ(0, std::memcmp(src.base, other, len)) << "RDMA did not read what the app stored through the other mapping";
  dereg(m);
  dereg(sm);
  munmap(one, len);
  munmap(other, len);
  close(fd);
}

// Memory unmapped while still registered, and new memory mapped at the same
// addresses: a new registration there is of the new memory (as on a device,
// which pins the pages mapped when it registers), while the old MR keeps
// the pages it had, including those the app still maps. UCX deregisters
// lazily: a freed buffer's MR outlives its munmap, and the next mmap often
// lands on the same addresses (Open MPI's osc ucx lost every UD datagram to
// receive buffers placed there).
TEST_F(Verbs, MemoryMappedAnewWhereAnMrWasIsRegisteredAnew) {
  const size_t page = 4096;
  Pages buf(3);
  uint8_t* middle = buf.base + page;
  fill(buf.base, buf.size, 51);
  ibv_mr* old = mr(buf.base, buf.size);
  // The middle page goes and comes back as new memory, still under `old`.
  ASSERT_EQ(munmap(middle, page), 0);
  ASSERT_EQ(mmap(middle, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), middle);
  fill(middle, page, 52);
  std::vector<uint8_t> app_bytes(middle, middle + page);
  ibv_mr* again = mr(middle, page);
  Pages peer(3);
  ibv_mr* pm = mr(peer.base, peer.size);
  Pair p = pair();
  auto rdma = [&](ibv_wr_opcode op, uint8_t* local, uint32_t lkey, uint8_t* remote, uint32_t rkey, size_t len) {
    ibv_sge s{reinterpret_cast<uint64_t>(local), static_cast<uint32_t>(len), lkey};
    ibv_send_wr w = wr(op, 1, &s, 1);
    w.wr.rdma.remote_addr = reinterpret_cast<uint64_t>(remote);
    w.wr.rdma.rkey = rkey;
    ASSERT_EQ(post(p.a, w), 0);
    ASSERT_EQ(poll1(p.scq).status, IBV_WC_SUCCESS);
  };
  rdma(IBV_WR_RDMA_READ, peer.base, pm->lkey, middle, again->rkey, page);
  EXPECT_EQ(0, std::memcmp(peer.base, app_bytes.data(), page)) << "the new MR read other bytes than the app's";
  fill(peer.base, page, 53);
  rdma(IBV_WR_RDMA_WRITE, peer.base, pm->lkey, middle, again->rkey, page);
  EXPECT_EQ(0, std::memcmp(middle, peer.base, page)) << "the new MR wrote where the app does not read";
  // The old MR still reaches the pages the app kept, and so does a new MR over them.
  fill(peer.base, page, 54);
  rdma(IBV_WR_RDMA_WRITE, peer.base, pm->lkey, buf.base, old->rkey, page);
  EXPECT_EQ(0, std::memcmp(buf.base, peer.base, page)) << "the old MR lost the pages the app kept";
  ibv_mr* kept = mr(buf.base + 2 * page, page);
  fill(peer.base, page, 55);
  rdma(IBV_WR_RDMA_WRITE, peer.base, pm->lkey, buf.base + 2 * page, old->rkey, page);
  rdma(IBV_WR_RDMA_READ, peer.base + page, pm->lkey, buf.base + 2 * page, kept->rkey, page);
  EXPECT_EQ(0, std::memcmp(peer.base + page, peer.base, page)) << "two MRs over the kept page disagree";
  EXPECT_EQ(0, std::memcmp(buf.base + 2 * page, peer.base, page));
  // Deregistration, in any order, leaves the app its bytes.
  std::vector<uint8_t> before(buf.base, buf.base + buf.size);
  dereg(old);
  EXPECT_EQ(0, std::memcmp(buf.base, before.data(), buf.size));
  dereg(again);
  dereg(kept);
  EXPECT_EQ(0, std::memcmp(buf.base, before.data(), buf.size));
  // Everything unmapped and mapped anew, as a freed and reallocated buffer.
  ibv_mr* whole = mr(buf.base, buf.size);
  ASSERT_EQ(munmap(buf.base, buf.size), 0);
  ASSERT_EQ(mmap(buf.base, buf.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0), buf.base);
  ibv_mr* fresh = mr(buf.base, buf.size);
  fill(peer.base, peer.size, 56);
  rdma(IBV_WR_RDMA_WRITE, peer.base, pm->lkey, buf.base, fresh->rkey, peer.size);
  EXPECT_EQ(0, std::memcmp(buf.base, peer.base, peer.size)) << "the MR over reallocated memory wrote elsewhere";
  dereg(whole);
  dereg(fresh);
  EXPECT_EQ(0, std::memcmp(buf.base, peer.base, peer.size));
  dereg(pm);
}

}  // namespace
}  // namespace conformance
