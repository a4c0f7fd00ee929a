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
  bool shared() const { return perms[3] == 's'; }
};

// Calls visit(line, arg) for each mapping, in address order, until it
// returns false. Streams through a fixed window: however many mappings there
// are, none is missed, and nothing is allocated (it runs in a fork child).
// Not reentrant (one window per process); the caller serializes.
void for_each_mapping(bool (*visit)(const MapsLine& line, void* arg), void* arg);

}  // namespace ff::verbs
