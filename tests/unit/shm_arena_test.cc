#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "shm/arena.h"

namespace ff::shm {
namespace {

TEST(ArenaAllocator, AlignsAndCoalesces) {
  ArenaAllocator a(1 << 20);
  auto x = a.allocate(100, 64);
  auto y = a.allocate(5000, 4096);
  auto z = a.allocate(64, 64);
  ASSERT_TRUE(x && y && z);
  EXPECT_EQ(*x % 64, 0u);
  EXPECT_EQ(*y % 4096, 0u);
  EXPECT_EQ(a.block_size(*x), 128u);
  EXPECT_FALSE(a.release(*x + 64));  // not a block start
  EXPECT_TRUE(a.release(*y));
  EXPECT_FALSE(a.release(*y));  // double free
  EXPECT_TRUE(a.release(*x));
  EXPECT_TRUE(a.release(*z));
  EXPECT_EQ(a.bytes_in_use(), 0u);
  EXPECT_EQ(a.free_fragments(), 1u);
  EXPECT_TRUE(a.allocate(1 << 20, 64));  // the whole space is one block again
}

TEST(ArenaAllocator, RejectsImpossibleRequests) {
  ArenaAllocator a(4096);
  EXPECT_FALSE(a.allocate(0, 64));
  EXPECT_FALSE(a.allocate(8192, 64));
  EXPECT_FALSE(a.allocate(64, 96));  // not a power of two
}

TEST(ArenaAllocator, RandomWorkloadKeepsBlocksDisjoint) {
  ArenaAllocator a(1 << 22);
  std::mt19937 rng(7);
  std::vector<std::pair<size_t, size_t>> live;
  for (int i = 0; i < 20000; ++i) {
    if (!live.empty() && (rng() % 2 == 0)) {
      size_t k = rng() % live.size();
      ASSERT_TRUE(a.release(live[k].first));
      live.erase(live.begin() + static_cast<long>(k));
    } else {
      size_t size = 1 + rng() % 20000;
      size_t align = size_t{64} << (rng() % 7);
      if (auto off = a.allocate(size, align)) {
        ASSERT_EQ(*off % align, 0u);
        for (auto& [o, s] : live) ASSERT_TRUE(*off + size <= o || o + s <= *off);
        live.emplace_back(*off, a.block_size(*off));
      }
    }
  }
  for (auto& [o, s] : live) ASSERT_TRUE(a.release(o));
  EXPECT_EQ(a.free_fragments(), 1u);
}

TEST(SharedArena, BuffersArePageAlignedAndVisibleThroughASecondMapping) {
  Mapping seg = SharedArena::create_segment(1 << 20);
  SharedArena arena(Mapping::attach(seg.fd(), SegmentKind::kArena));
  auto* p = static_cast<char*>(arena.allocate(10000));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kPageSize, 0u);
  std::strcpy(p, "written by the client");
  size_t off = arena.segment_offset(p);
  EXPECT_STREQ(seg.at<char>(off), "written by the client");  // what the router sees
  EXPECT_TRUE(arena.free(p));
  EXPECT_FALSE(arena.free(p));
  int on_stack = 0;
  EXPECT_FALSE(arena.free(&on_stack));
  EXPECT_EQ(arena.allocate(2u << 20), nullptr);  // larger than the arena
}

}  // namespace
}  // namespace ff::shm
