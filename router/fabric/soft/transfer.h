// What both halves of the soft transport share, whether the responder is on
// this router (requester.cc) or on another one (link_*.cc): SGE resolution
// against a session's MRs, walking byte ranges made of pieces, the timers of
// the InfiniBand spec, and the RoCE v2 GRH a UD receiver finds.
#pragma once

#include <infiniband/verbs.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "router/fabric/soft/objects.h"
#include "shm/descriptors.h"

namespace ff::router::soft {

class Engine;

inline constexpr uint64_t kMaxMessage = uint64_t{1} << 31;
inline constexpr uint64_t kUdMtu = 4096;  // the port's active MTU
inline constexpr uint32_t kGrhBytes = sizeof(shm::WireGrh);
inline constexpr uint8_t kRoceIpv4PacketType = 2;

// Local ACK timeout: 4.096 us * 2^timeout; 0 means "infinite" in the spec,
// here 2^20 (4.3 s) so that a dead peer is always reported.
inline uint64_t ack_timeout_ns(uint8_t t) { return 4096ull << (t == 0 ? 20 : std::min<uint8_t>(t, 31)); }

// The min_rnr_timer encoding of the InfiniBand spec (table 45), in ns.
uint64_t rnr_delay_ns(uint8_t code);

// Local SGEs resolved against the QP's own MRs.
// Made for every work request: only the first n of mr[] are ever set or
// read, and the array is left unset (zeroing its 128 bytes was a fifth of
// a small WRITE's time in the poller).
struct Sges {
  Sges() {}  // NOLINT: not = default, which would zero mr[] in Sges{}
  const shm::WireSge* sge = nullptr;
  uint32_t n = 0;
  const Mr* mr[shm::kMaxSge];
  uint64_t total = 0;
  // Inline data instead of SGEs.
  const std::byte* flat = nullptr;
};

// Resolves `n` SGEs against the MRs of `pd`, each needing `need` access.
ibv_wc_status resolve_local(const Engine& e, const Pd& pd, const shm::WireSge* sge, uint32_t n,
                            unsigned need, Sges& out);
// The source of a SEND or WRITE: its inline data or its SGEs.
ibv_wc_status gather(const Engine& e, const Qp& q, const shm::SendWqe& w, Sges& s);
// Where a READ's data or an atomic's old value lands: SGEs with LOCAL_WRITE,
// never inline.
ibv_wc_status local_destination(const Engine& e, const Qp& q, const shm::SendWqe& w, Sges& dst);
// An atomic on the 8-byte word at p; returns the old value.
uint64_t execute_atomic(std::byte* p, uint32_t wr_opcode, uint64_t compare_add, uint64_t swap);
// The 40-byte GRH a RoCE v2 device with IPv4 addresses writes in front of a
// UD datagram: 20 unused bytes, then the datagram's IPv4 header (rdma-core's
// ibv_init_ah_from_wc reads the sender's address from there).
void write_roce_grh(std::byte (&grh)[kGrhBytes], uint32_t saddr, uint32_t daddr, uint8_t traffic_class,
                    uint8_t hop_limit, uint64_t payload);

// Walks a byte sequence made of pieces: resolved SGEs, one flat buffer, or a
// remote MR range.
class Pieces {
 public:
  explicit Pieces(const Sges& s) : sges_(&s) {}
  Pieces(std::byte* flat, uint64_t len) : flat_(flat), flat_len_(len) {}
  Pieces(const Mr& mr, uint64_t addr, uint64_t len) : remote_(&mr), addr_(addr), flat_len_(len) {}

  // Next contiguous piece of at most `max` bytes; nullptr at the end.
  std::byte* next(uint64_t max, uint64_t& got);
  // Skips `n` bytes.
  void skip(uint64_t n) {
    uint64_t got;
    while (n > 0 && next(n, got) != nullptr && got > 0) n -= got;
  }

 private:
  const Sges* sges_ = nullptr;
  const Mr* remote_ = nullptr;
  uint64_t addr_ = 0;
  std::byte* flat_ = nullptr;
  uint64_t flat_len_ = 0;
  uint32_t i_ = 0;
  uint64_t pos_ = 0;
};

inline Pieces source_of(const Sges& s) {
  return s.flat != nullptr ? Pieces(const_cast<std::byte*>(s.flat), s.total) : Pieces(s);
}

// Copies `len` bytes from src to dst (both advance).
void copy(Pieces& dst, Pieces& src, uint64_t len);

}  // namespace ff::router::soft
