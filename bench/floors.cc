// The machine's floors, measured in the same run as the end-to-end numbers
// (bench/perftest_table.sh): memcpy bandwidth at the sizes the transport
// copies, and the cross-core round trip of one cache line (the least any
// "post on one core, execute on the other" design pays per operation).
//
//   build/bin/floors            prints key=value lines
#include <cstdio>

#include "floors.h"

int main() {
  using namespace ff::bench;
  std::printf("memcpy_4KiB_GBps=%.1f\n", memcpy_gbps(4096));
  std::printf("memcpy_64KiB_GBps=%.1f\n", memcpy_gbps(65536));
  std::printf("cacheline_rtt_ns=%.0f\n", cacheline_rtt_ns());
  return 0;
}
