// libffverbs internals: /proc/self/maps, line by line.
#pragma once

#include <cstdint>

namespace ff::verbs {

struct MapsLine {
  uint64_t start, end;
  uint64_t offset;    // in the file, of `start`
  uint64_t inode;
  const char* perms;  // "rw-s": the 4th letter says shared (s) or private (p)
  const char* path;   // "" for anonymous memory
  uint64_t page_size = 0;  // the kernel's, where known (PROCMAP_QUERY)
  bool shared() const { return perms[3] == 's'; }
  bool huge_pages() const;
};

// Calls visit(line, arg) for each mapping, in address order, until it
// returns false. Streams through a fixed window: however many mappings there
// are, none is missed, and nothing is allocated (it runs in a fork child).
// Not reentrant (one window per process); the caller serializes.
void for_each_mapping(bool (*visit)(const MapsLine& line, void* arg), void* arg);

// The same for the mappings overlapping [start, end) only. Where the kernel
// answers PROCMAP_QUERY (6.11) this asks for those alone, so its cost does
// not grow with the number of mappings the process has (thousands of
// registered regions are as many mappings); otherwise it scans.
void for_each_mapping_in(uint64_t start, uint64_t end, bool (*visit)(const MapsLine& line, void* arg), void* arg);

}  // namespace ff::verbs
