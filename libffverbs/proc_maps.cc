#include "libffverbs/proc_maps.h"

#include <fcntl.h>
#include <unistd.h>

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

}  // namespace

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
