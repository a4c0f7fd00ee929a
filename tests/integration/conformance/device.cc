// The device and its port as programs probe them: a GID table longer than
// its populated entries, with the answers rdma-core gives for an empty entry
// and for one past the table.
#include <cerrno>
#include <cstring>
#include <vector>

#include "fixture.h"

namespace conformance {
namespace {

TEST_F(Verbs, GidTableHasEmptyEntriesAnsweredAsRdmaCoreDoes) {
  ibv_port_attr port{};
  ASSERT_EQ(ibv_query_port(ctx, 1, &port), 0);
  ASSERT_GT(port.gid_tbl_len, 1);
  std::vector<ibv_gid_entry> valid;
  int empty = -1;
  for (int i = 0; i < port.gid_tbl_len; ++i) {
    ibv_gid_entry e{};
    int rc = ibv_query_gid_ex(ctx, 1, static_cast<uint32_t>(i), &e, 0);
    if (rc == ENODATA) {
      if (empty < 0) empty = i;
      continue;
    }
    ASSERT_EQ(rc, 0) << "entry " << i << ": " << std::strerror(rc);
    EXPECT_EQ(e.gid_index, static_cast<uint32_t>(i));
    EXPECT_EQ(e.port_num, 1u);
    valid.push_back(e);
  }
  ASSERT_GE(empty, 0) << "every one of the " << port.gid_tbl_len << " entries is populated";
  ASSERT_FALSE(valid.empty());
  // ibv_query_gid answers an empty entry with a zero GID.
  ibv_gid entry;
  std::memset(&entry, 0xab, sizeof entry);
  ASSERT_EQ(ibv_query_gid(ctx, 1, empty, &entry), 0);
  const ibv_gid zero{};
  EXPECT_EQ(0, std::memcmp(&entry, &zero, sizeof entry));
  // Past the table: an error from every call.
  ibv_gid_entry e{};
  EXPECT_EQ(ibv_query_gid_ex(ctx, 1, static_cast<uint32_t>(port.gid_tbl_len), &e, 0), EINVAL);
  EXPECT_EQ(ibv_query_gid(ctx, 1, port.gid_tbl_len, &entry), -1);
  // The table call gives exactly the valid entries, in order.
  std::vector<ibv_gid_entry> table(valid.size() + 4);
  ssize_t n = ibv_query_gid_table(ctx, table.data(), table.size(), 0);
  ASSERT_EQ(n, static_cast<ssize_t>(valid.size()));
  for (size_t i = 0; i < valid.size(); ++i) {
    EXPECT_EQ(table[i].gid_index, valid[i].gid_index);
    EXPECT_EQ(0, std::memcmp(&table[i].gid, &valid[i].gid, sizeof(ibv_gid)));
    EXPECT_EQ(table[i].gid_type, valid[i].gid_type);
  }
}

}  // namespace
}  // namespace conformance
