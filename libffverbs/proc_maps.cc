#include "libffverbs/proc_maps.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace ff::verbs {
namespace {

// "start-end perms offset dev inode   path": false when the line is not one.
bool parse(char* text, MapsLine& out) {
  char* p = nullptr;
  out.start = std::strtoull(text, &p, 16);
  if (*p != '-') return false;
  out.end = std::strtoull(p + 1, &p, 16);
  if (*p != ' ' || std::strlen(p + 1) < 4) return false;
  out.perms = p + 1;
  p[5] = '\0';
  char* rest = p + 6;
  out.offset = std::strtoull(rest, &rest, 16);
  rest = std::strchr(rest + 1, ' ');  // past the device
  out.inode = rest != nullptr ? std::strtoull(rest, &rest, 10) : 0;
  if (rest == nullptr) rest = p + 5;  // "" (the NUL written above)
  while (*rest == ' ') ++rest;
  out.path = rest;
  return true;
}

// PROCMAP_QUERY (linux/fs.h since 6.11; Debian 12's headers predate it).
struct ProcmapQuery {
  uint64_t size;
  uint64_t query_flags;
  uint64_t query_addr;
  uint64_t vma_start, vma_end;
  uint64_t vma_flags;
  uint64_t vma_page_size;
  uint64_t vma_offset;
  uint64_t inode;
  uint32_t dev_major, dev_minor;
  uint32_t vma_name_size, build_id_size;
  uint64_t vma_name_addr, build_id_addr;
};
static_assert(sizeof(ProcmapQuery) == 104);
constexpr unsigned long kProcmapQuery = _IOWR('f', 17, ProcmapQuery);
constexpr uint64_t kVmaReadable = 0x1, kVmaWritable = 0x2, kVmaExecutable = 0x4, kVmaShared = 0x8;
constexpr uint64_t kCoveringOrNextVma = 0x10;

// false when the kernel does not know the query (ENOTTY): scan instead.
bool query_mappings(int fd, uint64_t start, uint64_t end, bool (*visit)(const MapsLine& line, void* arg), void* arg) {
  char name[256];
  for (uint64_t at = start; at < end;) {
    ProcmapQuery q{};
    q.size = sizeof q;
    q.query_flags = kCoveringOrNextVma;
    q.query_addr = at;
    q.vma_name_size = sizeof name;
    q.vma_name_addr = reinterpret_cast<uint64_t>(name);
    if (::ioctl(fd, kProcmapQuery, &q) != 0) return errno != ENOTTY && errno != EINVAL;  // ENOENT: none left
    if (q.vma_start >= end) return true;
    char perms[5] = {(q.vma_flags & kVmaReadable) != 0 ? 'r' : '-', (q.vma_flags & kVmaWritable) != 0 ? 'w' : '-',
                     (q.vma_flags & kVmaExecutable) != 0 ? 'x' : '-', (q.vma_flags & kVmaShared) != 0 ? 's' : 'p', '\0'};
    if (q.vma_name_size == 0) name[0] = '\0';
    MapsLine m{q.vma_start, q.vma_end, q.vma_offset, q.inode, perms, name, q.vma_page_size};
    if (!visit(m, arg)) return true;
    at = q.vma_end;
  }
  return true;
}

}  // namespace

bool MapsLine::huge_pages() const {
  return page_size > 4096 || std::strstr(path, "anon_hugepage") != nullptr || std::strstr(path, "/hugepages") != nullptr;
}

void for_each_mapping_in(uint64_t start, uint64_t end, bool (*visit)(const MapsLine& line, void* arg), void* arg) {
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  bool answered = query_mappings(fd, start, end, visit, arg);
  ::close(fd);
  if (answered) return;
  struct Range {
    uint64_t start, end;
    bool (*visit)(const MapsLine&, void*);
    void* arg;
  } range{start, end, visit, arg};
  for_each_mapping(
      [](const MapsLine& m, void* a) {
        auto& r = *static_cast<Range*>(a);
        if (m.end <= r.start) return true;
        return m.start < r.end && r.visit(m, r.arg);
      },
      &range);
}

void for_each_mapping(bool (*visit)(const MapsLine& line, void* arg), void* arg) {
  int fd = ::open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  static char window[1 << 16];
  size_t have = 0;
  bool go_on = true;
  while (go_on) {
    ssize_t n = ::read(fd, window + have, sizeof window - 1 - have);
    if (n <= 0) break;
    have += static_cast<size_t>(n);
    window[have] = '\0';
    char* line = window;
    for (char* nl; go_on && (nl = std::strchr(line, '\n')) != nullptr; line = nl + 1) {
      *nl = '\0';
      MapsLine m;
      if (parse(line, m)) go_on = visit(m, arg);
    }
    have = static_cast<size_t>(window + have - line);  // a partial line moves to the front
    std::memmove(window, line, have);
    if (have == sizeof window - 1) have = 0;  // a line longer than the window: skipped
  }
  ::close(fd);
}

}  // namespace ff::verbs
