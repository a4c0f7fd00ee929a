#include "router/fabric/soft/transfer.h"

#include <atomic>

#include "router/fabric/soft/engine.h"

namespace ff::router::soft {

uint64_t rnr_delay_ns(uint8_t code) {
  static constexpr uint32_t kMicros[32] = {
      655360, 10,    20,    30,    40,    60,    80,    120,   160,    240,    320,
      480,    640,   960,   1280,  1920,  2560,  3840,  5120,  7680,   10240,  15360,
      20480,  30720, 40960, 61440, 81920, 122880, 163840, 245760, 327680, 491520};
  return uint64_t{kMicros[code & 31]} * 1000;
}

ibv_wc_status resolve_local(const Engine& e, const Pd& pd, const shm::WireSge* sge, uint32_t n,
                            unsigned need, Sges& out) {
  if (n > shm::kMaxSge) return IBV_WC_LOC_LEN_ERR;
  out.sge = sge;
  out.n = n;
  out.total = 0;
  for (uint32_t i = 0; i < n; ++i) {
    out.total += sge[i].length;
    if (sge[i].length == 0) {
      out.mr[i] = nullptr;
      continue;
    }
    const Mr* mr = e.find_mr(sge[i].lkey);
    if (mr == nullptr || !mr->grants(pd, need, sge[i].addr, sge[i].length)) {
      out.n = i;  // only the SGEs resolved (mr[] past them is unset)
      return IBV_WC_LOC_PROT_ERR;
    }
    out.mr[i] = mr;
  }
  if (out.total > kMaxMessage) return IBV_WC_LOC_LEN_ERR;
  return IBV_WC_SUCCESS;
}

ibv_wc_status gather(const Engine& e, const Qp& q, const shm::SendWqe& w, Sges& s) {
  if ((w.send_flags & IBV_SEND_INLINE) != 0) {
    if (w.inline_len > shm::kMaxInline) return IBV_WC_LOC_LEN_ERR;
    s.flat = reinterpret_cast<const std::byte*>(w.payload.inline_data);
    s.total = w.inline_len;
    return IBV_WC_SUCCESS;
  }
  return resolve_local(e, q.pd, w.payload.sge, w.num_sge, 0, s);
}

ibv_wc_status local_destination(const Engine& e, const Qp& q, const shm::SendWqe& w, Sges& dst) {
  if ((w.send_flags & IBV_SEND_INLINE) != 0) return IBV_WC_LOC_QP_OP_ERR;
  return resolve_local(e, q.pd, w.payload.sge, w.num_sge, IBV_ACCESS_LOCAL_WRITE, dst);
}

uint64_t execute_atomic(std::byte* p, uint32_t wr_opcode, uint64_t compare_add, uint64_t swap) {
  // Segments are page-aligned copies of the app's pages, so the router's
  // address has the app address's 8-byte alignment.
  std::atomic_ref<uint64_t> word(*reinterpret_cast<uint64_t*>(p));
  uint64_t old;
  switch (wr_opcode) {
    case IBV_WR_ATOMIC_CMP_AND_SWP:
      old = compare_add;
      word.compare_exchange_strong(old, swap);
      return old;
    case IBV_WR_ATOMIC_WRITE:  // after everything before it (a release store), as rxe does
      old = word.load(std::memory_order_relaxed);
      word.store(swap, std::memory_order_release);
      return old;
    default:
      return word.fetch_add(compare_add);
  }
}

void write_roce_grh(std::byte (&grh)[kGrhBytes], uint32_t saddr, uint32_t daddr, uint8_t traffic_class,
                    uint8_t hop_limit, uint64_t payload) {
  std::memset(grh, 0, sizeof grh);
  auto* ip = reinterpret_cast<uint8_t*>(grh) + 20;
  uint16_t total = static_cast<uint16_t>(20 + 8 + 12 + 8 + payload + 4);  // IP+UDP+BTH+DETH+payload+ICRC
  uint8_t ttl = hop_limit != 0 ? hop_limit : 64;
  const uint8_t header[20] = {0x45, traffic_class, static_cast<uint8_t>(total >> 8),
                              static_cast<uint8_t>(total), 0, 0, 0x40, 0, ttl, 17, 0, 0,
                              static_cast<uint8_t>(saddr >> 24), static_cast<uint8_t>(saddr >> 16),
                              static_cast<uint8_t>(saddr >> 8), static_cast<uint8_t>(saddr),
                              static_cast<uint8_t>(daddr >> 24), static_cast<uint8_t>(daddr >> 16),
                              static_cast<uint8_t>(daddr >> 8), static_cast<uint8_t>(daddr)};
  std::memcpy(ip, header, sizeof header);
  uint32_t sum = 0;
  for (int i = 0; i < 20; i += 2) sum += (uint32_t{ip[i]} << 8) | ip[i + 1];
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  ip[10] = static_cast<uint8_t>(~sum >> 8);
  ip[11] = static_cast<uint8_t>(~sum);
}

std::byte* Pieces::next(uint64_t max, uint64_t& got) {
  if (remote_ != nullptr) {
    if (pos_ >= flat_len_) return nullptr;
    std::byte* p = remote_->translate(addr_ + pos_, std::min(max, flat_len_ - pos_), got);
    pos_ += got;
    return p;
  }
  if (sges_ == nullptr) {
    if (pos_ >= flat_len_) return nullptr;
    got = std::min(max, flat_len_ - pos_);
    std::byte* p = flat_ + pos_;
    pos_ += got;
    return p;
  }
  while (i_ < sges_->n && pos_ >= sges_->sge[i_].length) {
    ++i_;
    pos_ = 0;
  }
  if (i_ >= sges_->n) return nullptr;
  const shm::WireSge& s = sges_->sge[i_];
  std::byte* p = sges_->mr[i_]->translate(s.addr + pos_, std::min<uint64_t>(max, s.length - pos_), got);
  pos_ += got;
  return p;
}

namespace {

// The last bytes of a message land last: programs (eager-RDMA protocols)
// poll the end of a WRITE's target and must never see it before the rest.
// memcpy may store in any order (tail first, or non-temporal stores), so the
// final kOrderedTail bytes are stored after a full fence, in ascending 8-byte
// steps; x86 keeps ordinary stores in program order.
constexpr uint64_t kOrderedTail = 64;

void copy_ascending(std::byte* d, const std::byte* s, uint64_t n) {
  uint64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::memcpy(d + i, s + i, 8);
    std::atomic_signal_fence(std::memory_order_seq_cst);  // the compiler keeps the order
  }
  for (; i < n; ++i) {
    d[i] = s[i];
    std::atomic_signal_fence(std::memory_order_seq_cst);
  }
}

}  // namespace

void copy(Pieces& dst, Pieces& src, uint64_t len) {
  uint64_t left = len;
  std::byte* d = nullptr;
  uint64_t dlen = 0;
  bool fenced = false;
  while (left > 0) {
    uint64_t slen;
    std::byte* s = src.next(left, slen);
    if (s == nullptr || slen == 0) return;
    left -= slen;
    while (slen > 0) {
      if (dlen == 0) {
        d = dst.next(slen, dlen);
        if (d == nullptr || dlen == 0) return;
      }
      uint64_t n = std::min(slen, dlen);
      // Bytes of this step that are among the message's last kOrderedTail.
      uint64_t after = left + slen - n;  // bytes of the message after this step
      uint64_t tail = after >= kOrderedTail ? 0 : std::min(n, kOrderedTail - after);
      if (n > tail) std::memcpy(d, s, n - tail);  // (a small message is all tail: no call)
      if (tail > 0) {
        if (!fenced && len > kOrderedTail) {  // bytes before the tail were stored
          std::atomic_thread_fence(std::memory_order_seq_cst);  // orders non-temporal stores too
          fenced = true;
        }
        copy_ascending(d + (n - tail), s + (n - tail), tail);
      }
      d += n;
      s += n;
      dlen -= n;
      slen -= n;
    }
  }
}

}  // namespace ff::router::soft
