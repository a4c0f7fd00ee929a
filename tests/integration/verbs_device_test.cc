// The virtual device through the public verbs API. Written against
// libibverbs only; it runs with LD_PRELOAD=libffverbs.so and a router
// (tests/e2e/test_verbs_device.sh), and would run unchanged on a real device.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <cstdio>
#include <sys/resource.h>
#include <sys/mman.h>
#include <infiniband/verbs.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

struct Device : ::testing::Test {
  ibv_device** list = nullptr;
  ibv_context* ctx = nullptr;
  void SetUp() override {
    int n = 0;
    list = ibv_get_device_list(&n);
    ASSERT_NE(list, nullptr);
    ASSERT_EQ(n, 1) << "is the router running and FFV_SOCKET set?";
    ctx = ibv_open_device(list[0]);
    ASSERT_NE(ctx, nullptr) << std::strerror(errno);
  }
  void TearDown() override {
    if (ctx != nullptr) {
      EXPECT_EQ(ibv_close_device(ctx), 0);
    }
    if (list != nullptr) ibv_free_device_list(list);
  }
};

TEST_F(Device, ListsOneNamedDeviceWithAGuid) {
  EXPECT_STREQ(ibv_get_device_name(list[0]), "ffvirt0");
  EXPECT_NE(ibv_get_device_guid(list[0]), 0u);
  EXPECT_EQ(list[1], nullptr);
  EXPECT_EQ(list[0]->transport_type, IBV_TRANSPORT_IB);
}

TEST_F(Device, QueryDeviceAndExtendedQueryAgree) {
  ibv_device_attr a{};
  ASSERT_EQ(ibv_query_device(ctx, &a), 0);
  ibv_device_attr_ex ex{};
  ASSERT_EQ(ibv_query_device_ex(ctx, nullptr, &ex), 0);  // inline: verbs_context op
  EXPECT_EQ(0, std::memcmp(&a, &ex.orig_attr, sizeof a));
  EXPECT_EQ(a.phys_port_cnt, 1);
  EXPECT_EQ(a.node_guid, ibv_get_device_guid(list[0]));
  EXPECT_GT(a.max_qp_rd_atom, 0);
  EXPECT_EQ(a.atomic_cap, IBV_ATOMIC_HCA);
  EXPECT_EQ(ex.odp_caps.general_caps, 0u);  // no ODP: apps must not take ODP paths
  ibv_query_device_ex_input in{};
  in.comp_mask = 1;
  EXPECT_EQ(ibv_query_device_ex(ctx, &in, &ex), EINVAL);
}

TEST_F(Device, PortIsActiveRoceWithMtu4096) {
  ibv_port_attr p{};
  ASSERT_EQ(ibv_query_port(ctx, 1, &p), 0);  // inline: verbs_context::query_port
  EXPECT_EQ(p.state, IBV_PORT_ACTIVE);
  EXPECT_EQ(p.link_layer, IBV_LINK_LAYER_ETHERNET);
  EXPECT_EQ(p.active_mtu, IBV_MTU_4096);
  EXPECT_EQ(p.gid_tbl_len, 16);  // index 0 populated, the rest empty (as real devices' tables)
  EXPECT_EQ(p.pkey_tbl_len, 1);
  EXPECT_NE(ibv_query_port(ctx, 2, &p), 0);
  EXPECT_NE(ibv_query_port(ctx, 0, &p), 0);
}

TEST_F(Device, GidIsIpv4MappedRoceV2) {
  ibv_gid gid{};
  ASSERT_EQ(ibv_query_gid(ctx, 1, 0, &gid), 0);
  const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  EXPECT_EQ(0, std::memcmp(gid.raw, prefix, sizeof prefix));
  if (const char* want = std::getenv("FF_EXPECT_VIP")) {
    char text[32];
    std::snprintf(text, sizeof text, "%u.%u.%u.%u", gid.raw[12], gid.raw[13], gid.raw[14], gid.raw[15]);
    EXPECT_STREQ(text, want);
  }
  ibv_gid_entry e{};
  ASSERT_EQ(ibv_query_gid_ex(ctx, 1, 0, &e, 0), 0);
  EXPECT_EQ(e.gid_type, IBV_GID_TYPE_ROCE_V2);
  EXPECT_EQ(0, std::memcmp(e.gid.raw, gid.raw, 16));
  EXPECT_EQ(ibv_query_gid_ex(ctx, 1, 1, &e, 0), ENODATA);  // empty
  EXPECT_EQ(ibv_query_gid_ex(ctx, 1, 16, &e, 0), EINVAL);  // past the table
  EXPECT_NE(ibv_query_gid(ctx, 1, 16, &gid), 0);
  ibv_gid_entry table[4]{};
  ASSERT_EQ(ibv_query_gid_table(ctx, table, 4, 0), 1);
  EXPECT_EQ(table[0].gid_index, 0u);
  EXPECT_EQ(table[0].gid_type, IBV_GID_TYPE_ROCE_V2);
}

TEST_F(Device, OnePkey) {
  __be16 pkey = 0;
  ASSERT_EQ(ibv_query_pkey(ctx, 1, 0, &pkey), 0);
  EXPECT_EQ(be16toh(pkey), 0xffff);
  EXPECT_NE(ibv_query_pkey(ctx, 1, 1, &pkey), 0);
  EXPECT_EQ(ibv_get_pkey_index(ctx, 1, htobe16(0xffff)), 0);
  EXPECT_LT(ibv_get_pkey_index(ctx, 1, htobe16(0x1234)), 0);
}

TEST_F(Device, ProtectionDomains) {
  std::vector<ibv_pd*> pds;
  for (int i = 0; i < 64; ++i) {
    pds.push_back(ibv_alloc_pd(ctx));
    ASSERT_NE(pds.back(), nullptr);
    EXPECT_EQ(pds.back()->context, ctx);
  }
  for (ibv_pd* pd : pds) EXPECT_EQ(ibv_dealloc_pd(pd), 0);
}

TEST_F(Device, UnimplementedVerbsFailWithEopnotsuppNeverCrash) {
  ibv_pd* pd = ibv_alloc_pd(ctx);
  ASSERT_NE(pd, nullptr);
  ibv_cq* cq = ibv_create_cq(ctx, 16, nullptr, nullptr, 0);
  ASSERT_NE(cq, nullptr);
  ibv_srq_init_attr_ex sx{};
  sx.attr.max_wr = 8;
  sx.attr.max_sge = 1;
  sx.comp_mask = IBV_SRQ_INIT_ATTR_TYPE | IBV_SRQ_INIT_ATTR_PD | IBV_SRQ_INIT_ATTR_CQ;
  sx.srq_type = IBV_SRQT_TM;
  sx.pd = pd;
  sx.cq = cq;
  errno = 0;
  EXPECT_EQ(ibv_create_srq_ex(ctx, &sx), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
  ibv_ah_attr ah{};
  ah.port_num = 1;
  ah.is_global = 1;
  ah.grh.dgid.raw[0] = 0xfe;  // not an IPv4-mapped GID: no such address here
  errno = 0;
  EXPECT_EQ(ibv_create_ah(pd, &ah), nullptr);
  EXPECT_EQ(errno, EINVAL);
  // XRC is served (conformance xrc.cc); a domain asked without its fd and
  // oflags is EINVAL, as rdma-core says.
  ibv_xrcd_init_attr x{};
  errno = 0;
  EXPECT_EQ(ibv_open_xrcd(ctx, &x), nullptr);
  EXPECT_EQ(errno, EINVAL);
  // Memory windows are offered exactly when reported (conformance device.cc).
  EXPECT_EQ(ibv_destroy_cq(cq), 0);
  EXPECT_EQ(ibv_dealloc_pd(pd), 0);
}

TEST_F(Device, StackBuffersCanBeRegistered) {
  // The registering thread's own frames share the buffer's page.
  ibv_pd* pd = ibv_alloc_pd(ctx);
  ASSERT_NE(pd, nullptr);
  volatile char before = 'b';
  char buf[64];
  volatile char after = 'a';
  std::strcpy(buf, "on the stack");
  ibv_mr* mr = ibv_reg_mr(pd, buf, sizeof buf, IBV_ACCESS_LOCAL_WRITE);
  ASSERT_NE(mr, nullptr) << std::strerror(errno);
  EXPECT_STREQ(buf, "on the stack");
  EXPECT_EQ(before, 'b');
  EXPECT_EQ(after, 'a');
  EXPECT_EQ(ibv_dereg_mr(mr), 0);
  EXPECT_EQ(ibv_dealloc_pd(pd), 0);
}

// Memory the shim cannot share with the router without breaking it is
// refused with EINVAL (and a line on stderr saying why), never silently
// decoupled: the app's own MAP_SHARED mappings of anything but a memfd it
// can seal (a copy would leave their other mappings behind) and huge pages.
// Private memory next to them is fine.
TEST_F(Device, SharedMappingsAndHugePagesAreRefusedNotDecoupled) {
  ibv_pd* pd = ibv_alloc_pd(ctx);
  ASSERT_NE(pd, nullptr);
  const size_t page = 4096;
  auto* shared = static_cast<char*>(mmap(nullptr, 4 * page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(shared, MAP_FAILED);
  errno = 0;
  EXPECT_EQ(ibv_reg_mr(pd, shared + 100, 2 * page, IBV_ACCESS_LOCAL_WRITE), nullptr);
  EXPECT_EQ(errno, EINVAL);
  shared[0] = 'x';  // still the app's own mapping, unchanged
  EXPECT_EQ(shared[0], 'x');
  munmap(shared, 4 * page);
  // A memfd is shared in place when libffverbs can seal it against
  // shrinking (the router maps it): not without MFD_ALLOW_SEALING, nor once
  // the app closed its fd; with both, it is, and the seal stays.
  for (unsigned flags : {0u, unsigned{MFD_ALLOW_SEALING}}) {
    int fd = memfd_create("device-test", MFD_CLOEXEC | flags);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 2 * page), 0);
    void* map = mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ASSERT_NE(map, MAP_FAILED);
    errno = 0;
    ibv_mr* mr = ibv_reg_mr(pd, map, 2 * page, IBV_ACCESS_LOCAL_WRITE);
    if (flags == 0) {
      EXPECT_EQ(mr, nullptr);
      EXPECT_EQ(errno, EINVAL);
    } else {
      ASSERT_NE(mr, nullptr) << std::strerror(errno);
      EXPECT_NE(fcntl(fd, F_GET_SEALS) & F_SEAL_SHRINK, 0);
      EXPECT_NE(ftruncate(fd, page), 0) << "shrunk under the router";
      EXPECT_EQ(ibv_dereg_mr(mr), 0);
      close(fd);  // now nothing can seal it any more
      fd = -1;
      errno = 0;
      EXPECT_EQ(ibv_reg_mr(pd, static_cast<char*>(map) + page, page, IBV_ACCESS_LOCAL_WRITE), nullptr);
      EXPECT_EQ(errno, EINVAL);
    }
    munmap(map, 2 * page);
    if (fd >= 0) close(fd);
  }
  const size_t huge = 2u << 20;
  void* big = mmap(nullptr, huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
  if (big != MAP_FAILED) {  // only where huge pages are reserved (vm.nr_hugepages)
    errno = 0;
    EXPECT_EQ(ibv_reg_mr(pd, static_cast<char*>(big) + page, page, IBV_ACCESS_LOCAL_WRITE), nullptr);
    EXPECT_EQ(errno, EINVAL);
    munmap(big, huge);
  }
  auto* own = static_cast<char*>(mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ibv_mr* mr = ibv_reg_mr(pd, own, page, IBV_ACCESS_LOCAL_WRITE);
  EXPECT_NE(mr, nullptr) << std::strerror(errno);
  if (mr != nullptr) {
    EXPECT_EQ(ibv_dereg_mr(mr), 0);
  }
  munmap(own, page);
  EXPECT_EQ(ibv_dealloc_pd(pd), 0);
}

// Each registration of separate memory is a region of its own, but they
// share the shim's memfd: a thousand of them fit in a descriptor limit of
// 128 (one fd each exhausted `ulimit -n 1024` at 1000).
TEST_F(Device, ThousandsOfRegistrationsHoldFewDescriptors) {
  rlimit old{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit tight = old;
  tight.rlim_cur = 128;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &tight), 0);
  ibv_pd* pd = ibv_alloc_pd(ctx);
  ASSERT_NE(pd, nullptr);
  const size_t page = 4096, n = 1000;
  // Every other page: no two registrations share or touch a page.
  auto* pages = static_cast<char*>(mmap(nullptr, 2 * n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(pages, MAP_FAILED);
  std::vector<ibv_mr*> mrs;
  for (size_t i = 0; i < n; ++i) {
    char* p = pages + 2 * i * page;
    std::snprintf(p, 32, "page %zu", i);
    ibv_mr* mr = ibv_reg_mr(pd, p, page, IBV_ACCESS_LOCAL_WRITE);
    if (mr == nullptr) {
      ADD_FAILURE() << "registration " << i << ": " << std::strerror(errno);
      break;
    }
    mrs.push_back(mr);
  }
  for (ibv_mr* mr : mrs) EXPECT_EQ(ibv_dereg_mr(mr), 0);
  char expect[32];
  for (size_t i = 0; i < mrs.size(); ++i) {
    std::snprintf(expect, sizeof expect, "page %zu", i);
    EXPECT_STREQ(pages + 2 * i * page, expect) << "registering and deregistering kept the bytes";
  }
  munmap(pages, 2 * n * page);
  EXPECT_EQ(ibv_dealloc_pd(pd), 0);
  setrlimit(RLIMIT_NOFILE, &old);
}

// Registration moves the pages under the app's feet (copied into shared
// memory and mapped back in place; private again at deregistration). A
// thread that keeps writing to those pages meanwhile must never lose a
// write: it stores a counter and checks, before each store, that it reads
// back what it stored last.
TEST_F(Device, WritesByOtherThreadsDuringRegistrationAreNeverLost) {
  ibv_pd* pd = ibv_alloc_pd(ctx);
  ASSERT_NE(pd, nullptr);
  const size_t page = 4096, pages = 16;
  auto* buf = static_cast<char*>(mmap(nullptr, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(buf, MAP_FAILED);
  std::memset(buf, 1, pages * page);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> lost{0}, stores{0};
  // One counter per page, so a store lands in every page of the region.
  std::thread writer([&] {
    auto* counters = reinterpret_cast<volatile uint64_t*>(buf);
    uint64_t last = 0;
    for (size_t i = 0; i < pages; ++i) counters[i * page / 8] = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      ++last;
      for (size_t i = 0; i < pages; ++i) {
        if (counters[i * page / 8] != last - 1) lost.fetch_add(1, std::memory_order_relaxed);
        counters[i * page / 8] = last;
      }
      stores.fetch_add(1, std::memory_order_relaxed);
    }
  });
  while (stores.load() == 0) std::this_thread::yield();
  int rounds = 0;
  for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
       std::chrono::steady_clock::now() < until && lost.load() == 0; ++rounds) {
    ibv_mr* mr = ibv_reg_mr(pd, buf, pages * page, IBV_ACCESS_LOCAL_WRITE);
    ASSERT_NE(mr, nullptr) << std::strerror(errno);
    ASSERT_EQ(ibv_dereg_mr(mr), 0);
  }
  stop = true;
  writer.join();
  EXPECT_EQ(lost.load(), 0u) << "writes lost in " << rounds << " registrations (" << stores.load() << " passes)";
  std::printf("%d registrations, %lu passes over %zu pages by the writer\n", rounds,
              static_cast<unsigned long>(stores.load()), pages);
  munmap(buf, pages * page);
  EXPECT_EQ(ibv_dealloc_pd(pd), 0);
}

TEST_F(Device, AsyncFdIsPollableAndHonoursNonblocking) {
  int flags = fcntl(ctx->async_fd, F_GETFL);
  ASSERT_GE(flags, 0);
  EXPECT_EQ(flags & O_NONBLOCK, 0) << "a verbs async_fd starts out blocking";
  ASSERT_EQ(fcntl(ctx->async_fd, F_SETFL, flags | O_NONBLOCK), 0);
  ibv_async_event ev{};
  errno = 0;
  EXPECT_EQ(ibv_get_async_event(ctx, &ev), -1);
  EXPECT_EQ(errno, EAGAIN);
  pollfd p{ctx->async_fd, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
}

TEST_F(Device, ConcurrentQueriesFromManyThreads) {
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        ibv_port_attr p{};
        if (ibv_query_port(ctx, 1, &p) != 0 || p.state != IBV_PORT_ACTIVE) ++failures;
        ibv_pd* pd = ibv_alloc_pd(ctx);
        if (pd == nullptr || ibv_dealloc_pd(pd) != 0) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures, 0);
}

TEST_F(Device, ForkedChildGetsAFreshSessionNotTheParents) {
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Inherited objects belong to the parent's session.
    if (ibv_alloc_pd(ctx) != nullptr) _exit(2);
    ibv_device** l = ibv_get_device_list(nullptr);
    if (l == nullptr || l[0] == nullptr) _exit(3);
    ibv_context* c = ibv_open_device(l[0]);
    if (c == nullptr) _exit(4);
    ibv_pd* pd = ibv_alloc_pd(c);
    if (pd == nullptr || ibv_dealloc_pd(pd) != 0 || ibv_close_device(c) != 0) _exit(5);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  ibv_pd* pd = ibv_alloc_pd(ctx);  // the parent's session is untouched
  ASSERT_NE(pd, nullptr);
  EXPECT_EQ(ibv_dealloc_pd(pd), 0);
}

// Run last and alone: kills the router named by FF_ROUTER_PID while one
// thread waits in ibv_get_async_event, one in ibv_get_cq_event and one spins
// in ibv_poll_cq. All three must return; verbs then fail cleanly.
TEST_F(Device, RouterLossIsDeviceFatalAndVerbsFailCleanly) {
  const char* router = std::getenv("FF_ROUTER_PID");
  if (router == nullptr) GTEST_SKIP() << "needs FF_ROUTER_PID (run by test_verbs_device.sh)";
  ibv_comp_channel* ch = ibv_create_comp_channel(ctx);
  ASSERT_NE(ch, nullptr);
  ibv_cq* armed = ibv_create_cq(ctx, 4, nullptr, ch, 0);
  ibv_cq* spun = ibv_create_cq(ctx, 4, nullptr, nullptr, 0);
  ASSERT_NE(armed, nullptr);
  ASSERT_NE(spun, nullptr);
  ASSERT_EQ(ibv_req_notify_cq(armed, 0), 0);
  std::atomic<int> event_type{-1}, cq_event_rc{1}, poll_rc{0};
  std::thread async_waiter([&] {
    ibv_async_event ev{};
    if (ibv_get_async_event(ctx, &ev) == 0) {
      event_type = ev.event_type;
      ibv_ack_async_event(&ev);
    }
  });
  std::thread cq_waiter([&] {
    ibv_cq* got = nullptr;
    void* cq_ctx = nullptr;
    cq_event_rc = ibv_get_cq_event(ch, &got, &cq_ctx);
  });
  std::thread spinner([&] {
    ibv_wc wc;
    int rc;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while ((rc = ibv_poll_cq(spun, 1, &wc)) == 0 && std::chrono::steady_clock::now() < deadline) {
    }
    poll_rc = rc;
  });
  usleep(100 * 1000);  // let them all block
  ASSERT_EQ(kill(static_cast<pid_t>(std::atoi(router)), SIGKILL), 0);
  async_waiter.join();
  cq_waiter.join();
  spinner.join();
  EXPECT_EQ(event_type, IBV_EVENT_DEVICE_FATAL);
  EXPECT_EQ(cq_event_rc, -1) << "ibv_get_cq_event must fail, not hang";
  EXPECT_LT(poll_rc, 0) << "ibv_poll_cq must report the loss";
  ibv_port_attr p{};
  EXPECT_NE(ibv_query_port(ctx, 1, &p), 0);
  errno = 0;
  EXPECT_EQ(ibv_alloc_pd(ctx), nullptr);
  EXPECT_NE(errno, 0);
  int n = -1;
  ibv_device** l = ibv_get_device_list(&n);
  EXPECT_EQ(n, 0);
  ibv_free_device_list(l);
}

}  // namespace
