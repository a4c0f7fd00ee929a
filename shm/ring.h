// Single-producer/single-consumer rings of fixed-size descriptors in shared
// memory.
//
// Layout (at a 64-byte aligned offset inside a segment):
//   RingControl (5 cache lines) | T slots[capacity]
// Indices are free-running uint64_t, masked by the power-of-two capacity.
//
// Memory ordering:
//   * The producer writes slots, then store-release producer_index (P1).
//   * The consumer load-acquires producer_index (C1, pairs with P1), copies
//     the slots out, then store-releases consumer_index (C2).
//   * The producer load-acquires consumer_index (P2, pairs with C2) before it
//     reuses slots.
//   * Lap-marked descriptors (LapMarked: completions, which the app reads
//     and whose producer, the router, it trusts): the producer also stores
//     the slot's lap mark last, release (P1'), after the rest of the slot;
//     the consumer load-acquires the mark of the slot it is at (C1', pairs
//     with P1') and takes the slot when the mark is its lap's, without
//     loading producer_index first: one line from the producer's core per
//     poll instead of two in a row. producer_index is still published
//     (P1), for the wakeup protocol and for status views.
//   * Lone copies (LoneCopied: send queues, whose single posts wait on it):
//     when one publish hands over exactly one descriptor that has a short
//     form, the producer also writes that form into the rest of the
//     producer index's line, seqlock-style: lone_index := 0, the bytes,
//     lone_index := the producer index being published (release, L1), then
//     producer_index (P1). The consumer that finds the descriptor at its
//     index i queued load-acquires lone_index (pairs with L1); when it is
//     i + 1 it copies the bytes, fences (acquire) and loads lone_index
//     again: unchanged, the copy is whole and stands for slot i, which it
//     then need not load. The line that said "published" brought the
//     descriptor with it: one line from the producer's core per lone post
//     instead of two in a row.
//   * Sleeping consumer (Dekker): the consumer stores needs_wakeup=1, issues a
//     seq_cst fence, and re-reads producer_index; the producer stores
//     producer_index, issues a seq_cst fence, and reads needs_wakeup. At least
//     one side sees the other's store, so a wakeup is never lost.
//
// Trust: each side keeps its own copy of the capacity and of its own index in
// the process-local handle and never re-reads them from shared memory. The
// other side's index is hostile: an index that implies more than `capacity`
// entries (or runs backwards) marks the ring corrupt, and every later call
// fails. Descriptors are copied out of shared memory before the caller sees
// them, so a descriptor rewritten after posting cannot change under
// validation.
#pragma once

#include <atomic>
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <type_traits>

#include "shm/segment.h"

namespace ff::shm {

template <typename T>
concept Descriptor = std::is_trivially_copyable_v<T> && std::is_standard_layout_v<T> &&
                     (sizeof(T) % 8 == 0);

// A descriptor whose meaningful part varies (a work request: its header,
// then as many SGEs or inline bytes as it says). Rings copy that part only:
// the lines a descriptor moves between the app's core and the router's are
// most of what a small message costs. The bytes of the slot past it are
// not copied, and the reader must not look at them (they are a former
// descriptor's, or the copy's own garbage).
template <typename T>
concept SizedDescriptor = Descriptor<T> && requires(const T& t) {
  { T::kHeaderBytes } -> std::convertible_to<size_t>;
  { T::kCommonBytes } -> std::convertible_to<size_t>;
  { t.wire_bytes() } -> std::convertible_to<size_t>;
};

// A descriptor whose slot says itself that it is published (see the
// memory ordering above): a one-byte `lap`, the producer's to write.
template <typename T>
concept LapMarked = Descriptor<T> && requires(T t) {
  { t.lap } -> std::same_as<uint8_t&>;
};

// A descriptor with a short form (T::Lone, at most 48 bytes) that a lone
// publish also writes into the producer index's line (see above).
// T::to_lone is false for a descriptor the short form cannot hold exactly;
// T::from_lone rebuilds the descriptor to_lone took it from.
template <typename T>
concept LoneCopied = Descriptor<T> && requires(const T& t, typename T::Lone& lone, T& out) {
  requires std::is_trivially_copyable_v<typename T::Lone> && sizeof(typename T::Lone) <= 48 &&
               sizeof(typename T::Lone) % 8 == 0;
  { T::to_lone(t, lone) } -> std::same_as<bool>;
  { T::from_lone(lone, out) } -> std::same_as<void>;
};

// A lone copy's bytes, a word at a time: the consumer may load them while
// the producer stores new ones (the seqlock then tells it so), and relaxed
// atomic words make that a race the language defines (plain moves on x86).
inline void store_words(std::byte* to, const void* from, size_t bytes) {
  for (size_t at = 0; at < bytes; at += 8) {
    uint64_t word;
    std::memcpy(&word, static_cast<const std::byte*>(from) + at, 8);
    std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(to + at)).store(word, std::memory_order_relaxed);
  }
}
inline void load_words(void* to, std::byte* from, size_t bytes) {
  for (size_t at = 0; at < bytes; at += 8) {
    uint64_t word = std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(from + at)).load(std::memory_order_relaxed);
    std::memcpy(static_cast<std::byte*>(to) + at, &word, 8);
  }
}

// Writes all of `from` into slot `to` but its lap mark, which stays the
// slot's.
template <LapMarked T>
inline void copy_but_mark(T* to, const T& from) {
  constexpr size_t at = offsetof(T, lap);
  auto* t = reinterpret_cast<std::byte*>(to);
  const auto* f = reinterpret_cast<const std::byte*>(&from);
  std::memcpy(t, f, at);
  std::memcpy(t + at + 1, f + at + 1, sizeof(T) - at - 1);
}

// The mark of the slot of free-running index `index` in a ring of
// 2^capacity_log2 slots: never 0 (a fresh ring's slots), and not the mark
// the same slot had one lap before.
inline uint8_t lap_mark(uint64_t index, unsigned capacity_log2) {
  return static_cast<uint8_t>((index >> capacity_log2) % 255 + 1);
}

// Writes `from` (the writer's own: its size is trusted) into slot `to`.
template <Descriptor T>
inline void write_descriptor(T* to, const T& from) {
  if constexpr (SizedDescriptor<T>) {
    std::memcpy(static_cast<void*>(to), &from, from.wire_bytes());
  } else {
    std::memcpy(static_cast<void*>(to), &from, sizeof(T));
  }
}

// Copies slot `from` (the other side's, which may rewrite it meanwhile) to
// `to`: the size is read from the copy, so what is validated later is what
// was copied. The common size (kCommonBytes: the header and a short body)
// is copied at once, its lines loaded together; copying the header first
// and then what it says would wait for the other core's lines one after
// the other (measured: the message rate fell by a third).
template <Descriptor T>
inline void read_descriptor(T& to, const T* from) {
  if constexpr (SizedDescriptor<T>) {
    static_assert(T::kHeaderBytes <= T::kCommonBytes && T::kCommonBytes <= sizeof(T));
    std::memcpy(static_cast<void*>(&to), from, T::kCommonBytes);
    if (size_t n = to.wire_bytes(); n > T::kCommonBytes)
      std::memcpy(reinterpret_cast<std::byte*>(&to) + T::kCommonBytes,
                  reinterpret_cast<const std::byte*>(from) + T::kCommonBytes, n - T::kCommonBytes);
  } else {
    std::memcpy(&to, from, sizeof(T));
  }
}

struct RingControl {
  alignas(kCacheLine) uint32_t capacity;  // written once by the creator; informative only
  uint32_t slot_size;
  alignas(kCacheLine) std::atomic<uint64_t> producer_index;
  std::atomic<uint64_t> lone_index;  // LoneCopied rings: lone holds slot lone_index - 1; 0: none
  alignas(8) std::byte lone[48];     // T::Lone
  alignas(kCacheLine) uint8_t guard[kCacheLine];  // keeps the two indices' lines apart under prefetch
  alignas(kCacheLine) std::atomic<uint64_t> consumer_index;
  alignas(kCacheLine) std::atomic<uint32_t> consumer_needs_wakeup;
};
static_assert(sizeof(RingControl) == 5 * kCacheLine, "ring control block layout is ABI");
static_assert(offsetof(RingControl, producer_index) == 1 * kCacheLine, "ring control layout is ABI");
static_assert(offsetof(RingControl, consumer_index) == 3 * kCacheLine, "ring control layout is ABI");
static_assert(offsetof(RingControl, lone) + sizeof(RingControl::lone) == 2 * kCacheLine,
              "a lone copy shares the producer index's line");
static_assert(offsetof(RingControl, consumer_needs_wakeup) == 4 * kCacheLine,
              "ring control layout is ABI");

inline constexpr bool is_valid_capacity(uint64_t c) {
  return c >= 2 && c <= (1u << 20) && (c & (c - 1)) == 0;
}

template <Descriptor T>
constexpr size_t ring_bytes(uint32_t capacity) {
  return round_up(sizeof(RingControl) + sizeof(T) * capacity, kCacheLine);
}

// Creator side: writes a fresh control block at `at`. Precondition: `at` is
// 64-byte aligned, zeroed or never used by a live ring, capacity valid.
template <Descriptor T>
void init_ring(std::byte* at, uint32_t capacity) {
  auto* c = new (at) RingControl{};
  c->capacity = capacity;
  c->slot_size = sizeof(T);
  c->producer_index.store(0, std::memory_order_relaxed);
  c->consumer_index.store(0, std::memory_order_relaxed);
  c->consumer_needs_wakeup.store(0, std::memory_order_relaxed);
}

// Attacher side: true when the control block at `at` agrees with what the
// attacher was told over the control socket.
template <Descriptor T>
bool ring_matches(const std::byte* at, uint32_t capacity) {
  const auto* c = reinterpret_cast<const RingControl*>(at);
  return is_valid_capacity(capacity) && c->capacity == capacity && c->slot_size == sizeof(T);
}

// Producer handle. Only one thread may use it at a time (the "sp_" side).
template <Descriptor T>
class RingProducer {
 public:
  RingProducer() = default;
  RingProducer(std::byte* at, uint32_t capacity)
      : ctl_(reinterpret_cast<RingControl*>(at)),
        slots_(reinterpret_cast<T*>(at + sizeof(RingControl))),
        capacity_(capacity),
        mask_(capacity - 1),
        log2_(static_cast<unsigned>(std::countr_zero(capacity))) {}

  // Enqueues all `items` or none. Returns false when the ring lacks room or is corrupt.
  [[nodiscard]] bool sp_push_bulk(std::span<const T> items) {
    if (free_slots(items.size()) < items.size()) return false;
    write_and_publish(items);
    return true;
  }
  // Enqueues as many of `items` as fit; returns how many.
  [[nodiscard]] size_t sp_push_burst(std::span<const T> items) {
    size_t n = std::min(items.size(), free_slots(items.size()));
    if (n > 0) write_and_publish(items.first(n));
    return n;
  }
  [[nodiscard]] bool sp_try_push(const T& item) { return sp_push_bulk(std::span<const T>(&item, 1)); }

  // Posting in place (no copy of the descriptor on this side): sp_claim()
  // is the next free slot to write one in (nullptr when the ring is full or
  // corrupt); sp_commit() counts it in; sp_publish() hands every committed
  // descriptor to the consumer with one store (P1), so a list of work
  // requests moves the producer index's line between the cores once.
  // Until then the consumer sees none of them; a claimed slot left
  // uncommitted is simply the next one claimed.
  [[nodiscard]] T* sp_claim() { return free_slots(1) >= 1 ? &slots_[head_ & mask_] : nullptr; }
  void sp_commit() { ++head_; }
  void sp_publish() {
    if (ctl_ != nullptr) publish();
  }

  // After publishing: true when the consumer armed its doorbell and must be
  // woken (the caller then rings the eventfd). Clears the request.
  [[nodiscard]] bool consumer_needs_wakeup() {
    std::atomic_thread_fence(std::memory_order_seq_cst);  // Dekker with consumer's prepare_to_sleep
    if (ctl_->consumer_needs_wakeup.load(std::memory_order_relaxed) == 0) return false;
    return ctl_->consumer_needs_wakeup.exchange(0, std::memory_order_relaxed) != 0;
  }

  // Pushes the entries the consumer has not taken yet, oldest first, to
  // `to` (moving a ring's content into one of another size, while the
  // consumer stands still). False, with nothing pushed, when they do not
  // fit there or the consumer's index is corrupt.
  [[nodiscard]] bool move_unconsumed_to(RingProducer& to) {
    if (corrupt_ || ctl_ == nullptr) return false;
    uint64_t cons = ctl_->consumer_index.load(std::memory_order_acquire);  // P2
    uint64_t used = head_ - cons;
    if (used > capacity_) {
      corrupt_ = true;
      return false;
    }
    return to.push_from_ring(slots_, capacity_, cons, used);
  }

  // Continues a ring someone else produced into so far (the entries a
  // resize moved there): the next push goes after the producer index the
  // control block holds. For the side that trusts whoever filled it.
  static RingProducer resume(std::byte* at, uint32_t capacity) {
    static_assert(!LoneCopied<T>, "a lone copy left by whoever filled the ring could name a slot again");
    RingProducer p(at, capacity);
    p.head_ = p.published_ = p.ctl_->producer_index.load(std::memory_order_relaxed);
    p.cached_consumer_ = p.ctl_->consumer_index.load(std::memory_order_acquire);
    return p;
  }

  // Pushes the n entries of another ring's slot array (of `capacity`, a
  // power of two) from free-running index `from`; all or none.
  // Whole slots: the other ring may be an app's, whose descriptors'
  // sizes are not to be trusted (nor read twice).
  [[nodiscard]] bool push_from_ring(const T* slots, uint64_t capacity, uint64_t from, uint64_t n) {
    if (free_slots(n) < n) return false;
    for (uint64_t i = 0; i < n; ++i, ++head_) {
      if constexpr (LapMarked<T>) {
        write_marked(slots[(from + i) & (capacity - 1)]);  // marked for this ring's lap
      } else {
        std::memcpy(static_cast<void*>(&slots_[head_ & mask_]), &slots[(from + i) & (capacity - 1)], sizeof(T));
      }
    }
    publish();
    return true;
  }

  bool corrupt() const { return corrupt_; }
  uint64_t produced() const { return head_; }
  uint32_t capacity() const { return static_cast<uint32_t>(capacity_); }

 private:
  size_t free_slots(size_t wanted) {
    if (corrupt_ || ctl_ == nullptr) return 0;
    uint64_t used = head_ - cached_consumer_;
    if (capacity_ - used >= wanted) return capacity_ - used;
    // Acquire pairs with the consumer's release store of consumer_index (C2).
    uint64_t cons = ctl_->consumer_index.load(std::memory_order_acquire);
    used = head_ - cons;  // unsigned: a consumer index ahead of head_ wraps to a huge value
    if (used > capacity_) {
      corrupt_ = true;
      return 0;
    }
    cached_consumer_ = cons;
    return capacity_ - used;
  }
  // Slot head_: all of it but the mark, then the mark (release, P1').
  void write_marked(const T& item) {
    T* to = &slots_[head_ & mask_];
    copy_but_mark(to, item);
    __atomic_store_n(&to->lap, lap_mark(head_, log2_), __ATOMIC_RELEASE);
  }
  void write_and_publish(std::span<const T> items) {
    for (const T& item : items) {
      if constexpr (LapMarked<T>) {
        write_marked(item);
      } else {
        write_descriptor(&slots_[head_ & mask_], item);
      }
      ++head_;
    }
    publish();
  }
  // Hands every descriptor written so far to the consumer (P1), a lone one
  // with its short form first (L1).
  void publish() {
    copy_if_lone();
    // Release pairs with the consumer's acquire load of producer_index (C1).
    ctl_->producer_index.store(head_, std::memory_order_release);
    published_ = head_;
  }
  // A publish of exactly one descriptor: its short form into the producer
  // index's line (memory ordering above: L1).
  void copy_if_lone() {
    if constexpr (LoneCopied<T>) {
      typename T::Lone lone;
      if (head_ != published_ + 1 || !T::to_lone(slots_[(head_ - 1) & mask_], lone)) return;
      ctl_->lone_index.store(0, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_release);  // 0 is seen before any new byte
      store_words(ctl_->lone, &lone, sizeof lone);
      ctl_->lone_index.store(head_, std::memory_order_release);
    }
  }

  RingControl* ctl_ = nullptr;
  T* slots_ = nullptr;
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  unsigned log2_ = 0;
  uint64_t head_ = 0;             // own index: never re-read from shared memory
  uint64_t published_ = 0;        // head_ as last published
  uint64_t cached_consumer_ = 0;  // last consumer index seen
  bool corrupt_ = false;
};

// Consumer handle. Only one thread may use it at a time (the "sc_" side).
template <Descriptor T>
class RingConsumer {
 public:
  RingConsumer() = default;
  RingConsumer(std::byte* at, uint32_t capacity)
      : ctl_(reinterpret_cast<RingControl*>(at)),
        slots_(reinterpret_cast<T*>(at + sizeof(RingControl))),
        capacity_(capacity),
        mask_(capacity - 1),
        log2_(static_cast<unsigned>(std::countr_zero(capacity))) {}

  // Copies up to out.size() descriptors out; returns how many (0 when empty or corrupt).
  [[nodiscard]] size_t sc_pop_burst(std::span<T> out) {
    size_t n = std::min(out.size(), available(out.size()));
    copy_out_and_release(out.first(n));
    return n;
  }
  // Copies exactly out.size() descriptors or none.
  [[nodiscard]] bool sc_pop_bulk(std::span<T> out) {
    if (available(out.size()) < out.size()) return false;
    copy_out_and_release(out);
    return true;
  }
  [[nodiscard]] bool sc_try_pop(T& out) { return sc_pop_bulk(std::span<T>(&out, 1)); }

  // Copies the i-th queued descriptor (0 = oldest) without consuming it; the
  // slot stays the consumer's until sc_release. For queues whose entries
  // wait for an event (receive WQEs wait for a SEND). False when fewer than
  // i+1 are queued or the ring is corrupt.
  [[nodiscard]] bool sc_peek(size_t i, T& out) {
    if (available(i + 1) < i + 1) return false;
    read_slot(tail_ + i, out);
    return true;
  }
  // Starts loading the i-th queued descriptor's first lines (the common
  // size of a SizedDescriptor) while the caller works on an earlier one:
  // they come from the producer's core. Only a descriptor already known to
  // be published (no index is re-read): a slot the producer may still be
  // writing is left alone.
  void sc_prefetch(size_t i) const {
    if (cached_producer_ - tail_ <= i) return;
    const auto* at = reinterpret_cast<const std::byte*>(&slots_[(tail_ + i) & mask_]);
    size_t bytes = sizeof(T);
    if constexpr (SizedDescriptor<T>) bytes = T::kCommonBytes;
    for (size_t off = 0; off < bytes; off += kCacheLine) __builtin_prefetch(at + off);
  }
  // Consumes the n oldest descriptors. Precondition: n were peeked.
  void sc_release(size_t n) {
    tail_ += n;
    sc_publish_released();
  }
  // Consumes them without telling the producer yet: a run of descriptors
  // consumed one by one then costs the producer's core one line transfer
  // (sc_publish_released), not one per descriptor. Their slots stay
  // unavailable to the producer until then.
  void sc_release_unpublished(size_t n) { tail_ += n; }
  void sc_publish_released() {
    // Release pairs with the producer's acquire load of consumer_index (P2).
    ctl_->consumer_index.store(tail_, std::memory_order_release);
  }
  // Drops the queued descriptors `drop` picks and keeps the others in
  // order; returns how many went. Every slot from the consumer's index to
  // the producer's is the consumer's until it releases it, so the kept
  // descriptors move toward the newest end (newest first) and the consumer
  // index then passes the slots freed at the oldest end; the producer,
  // meanwhile, only writes past what it published. A moved descriptor
  // keeps its new slot's lap mark: that slot is published already. (What
  // mlx5 does to a destroyed QP's completions in its CQs.)
  template <typename Drop>
  size_t sc_remove_if(Drop drop) {
    static_assert(!LoneCopied<T>, "a lone copy names its slot by index: moving slots would belie it");
    size_t queued = available(capacity_);
    size_t dropped = 0;
    for (size_t i = queued; i-- > 0;) {
      T item;
      read_descriptor(item, &slots_[(tail_ + i) & mask_]);
      if (drop(static_cast<const T&>(item))) {
        ++dropped;
      } else if (dropped > 0) {
        T* to = &slots_[(tail_ + i + dropped) & mask_];
        if constexpr (LapMarked<T>) {
          copy_but_mark(to, item);
        } else {
          write_descriptor(to, item);
        }
      }
    }
    if (dropped > 0) sc_release(dropped);
    return dropped;
  }

  // Drops everything queued and forgets a corruption: the consumer starts
  // over at the producer's current index (a QP reset). Whatever the
  // producer does next is checked against that new start.
  void sc_reset_to_producer() {
    if (ctl_ == nullptr) return;
    // Acquire pairs with the producer's release store of producer_index (P1).
    tail_ = cached_producer_ = ctl_->producer_index.load(std::memory_order_acquire);
    corrupt_ = false;
    ctl_->consumer_index.store(tail_, std::memory_order_release);
  }

  // Entries queued right now (re-reads the producer index); 0 when corrupt.
  size_t size_guess() { return available(capacity_); }

  // True when nothing is queued right now (re-reads the producer index).
  bool empty_guess() { return available(1) == 0; }

  // Arms the wakeup request and re-checks. Returns true when the ring is still
  // empty and the caller may block on the doorbell; false when work arrived
  // (the request is withdrawn).
  bool prepare_to_sleep() {
    ctl_->consumer_needs_wakeup.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);  // Dekker with producer's consumer_needs_wakeup
    if (available(1) == 0 && !corrupt_) return true;
    ctl_->consumer_needs_wakeup.store(0, std::memory_order_relaxed);
    return false;
  }
  void cancel_sleep() { ctl_->consumer_needs_wakeup.store(0, std::memory_order_relaxed); }

  // Pushes the entries queued and not yet taken, oldest first, to `to` (a
  // fresh ring whose producer then resumes after them: RingProducer::resume).
  // Nothing is consumed here; the caller drops this ring after. False,
  // nothing pushed, when they do not fit or the producer index is corrupt.
  [[nodiscard]] bool move_queued_to(RingProducer<T>& to) {
    size_t n = available(capacity_);
    if (corrupt_) return false;
    return to.push_from_ring(slots_, capacity_, tail_, n);
  }

  bool corrupt() const { return corrupt_; }
  uint64_t consumed() const { return tail_; }
  // Entries queued, as the shared indices say now: for another thread than
  // the consumer's (a status view). The consumer's index is read first: it
  // only grows, and never past the producer's, so a producer index read
  // after it is not behind it (unless the app wrote garbage: then 0). The
  // producer's index is the app's to write, so the answer is clamped to the
  // capacity; 0 before attach.
  uint32_t queued_now() const {
    if (ctl_ == nullptr) return 0;
    // Acquire: the producer index read next is at least as new.
    uint64_t cons = ctl_->consumer_index.load(std::memory_order_acquire);
    // Acquire pairs with the producer's release store of producer_index (P1).
    uint64_t prod = ctl_->producer_index.load(std::memory_order_acquire);
    if (prod < cons) return 0;
    return static_cast<uint32_t>(std::min<uint64_t>(prod - cons, capacity_));
  }
  uint32_t capacity() const { return static_cast<uint32_t>(capacity_); }

 private:
  size_t available(size_t wanted) {
    if (corrupt_ || ctl_ == nullptr) return 0;
    uint64_t ready = cached_producer_ - tail_;
    if (ready >= wanted) return ready;
    if constexpr (LapMarked<T>) {
      // The slots say it themselves (C1', pairs with the producer's P1').
      while (ready < wanted && ready < capacity_) {
        const auto* mark = reinterpret_cast<const std::byte*>(&slots_[cached_producer_ & mask_]) + offsetof(T, lap);
        if (__atomic_load_n(reinterpret_cast<const uint8_t*>(mark), __ATOMIC_ACQUIRE) !=
            lap_mark(cached_producer_, log2_))
          break;
        ++cached_producer_;
        ++ready;
      }
      return ready;
    }
    // Acquire pairs with the producer's release store of producer_index (P1).
    uint64_t prod = ctl_->producer_index.load(std::memory_order_acquire);
    ready = prod - tail_;  // unsigned: a producer index behind tail_ wraps to a huge value
    if (ready > capacity_) {
      corrupt_ = true;
      return 0;
    }
    cached_producer_ = prod;
    return ready;
  }
  // The descriptor at free-running index `index` (queued): from the lone
  // copy when it stands for that slot (memory ordering above), else the slot.
  // The copy is looked up for the last descriptor known to be published
  // only (where a lone post's is); the others are read from their slots,
  // without a look at the line the producer keeps writing to (a miss per
  // descriptor in a stream of lists).
  void read_slot(uint64_t index, T& out) {
    if constexpr (LoneCopied<T>) {
      if (index + 1 == cached_producer_ && ctl_->lone_index.load(std::memory_order_acquire) == index + 1) {
        typename T::Lone lone;
        load_words(&lone, ctl_->lone, sizeof lone);
        std::atomic_thread_fence(std::memory_order_acquire);  // the bytes are loaded before the check
        if (ctl_->lone_index.load(std::memory_order_relaxed) == index + 1) {
          T::from_lone(lone, out);
          return;
        }
      }
    }
    read_descriptor(out, &slots_[index & mask_]);
  }
  void copy_out_and_release(std::span<T> out) {
    if (out.empty()) return;
    for (T& item : out) {
      read_slot(tail_, item);
      ++tail_;
    }
    // Release pairs with the producer's acquire load of consumer_index (P2):
    // the slots are ours no longer.
    ctl_->consumer_index.store(tail_, std::memory_order_release);
  }

  RingControl* ctl_ = nullptr;
  T* slots_ = nullptr;  // the consumer writes only sc_remove_if's moves
  uint64_t capacity_ = 0;
  uint64_t mask_ = 0;
  unsigned log2_ = 0;
  uint64_t tail_ = 0;             // own index: never re-read from shared memory
  uint64_t cached_producer_ = 0;  // last producer index seen
  bool corrupt_ = false;
};

}  // namespace ff::shm
