// The data path's counters as the poller keeps them: one block per QP and
// one per tenant, each written by the poller thread alone and read by the
// control thread at any time (ffctl, /metrics). A single writer needs no
// read-modify-write: a relaxed load and store per event, no locked
// instruction on the per-WQE path; readers see each counter whole.
#pragma once

#include <cstdint>

#include "router/common/single_writer_counter.h"
#include "router/fabric/fabric.h"
#include "shm/descriptors.h"

namespace ff::router::core {

using router::SingleWriterCounter;

class LiveTraffic {
 public:
  // Work requests the requester executed (`opcode`: ibv_wr_opcode).
  void sent(uint32_t opcode, uint64_t bytes, uint64_t wqes = 1) {
    size_t i = TrafficCounters::opcode_index(opcode);
    if (i >= TrafficCounters::kOpcodes) return;  // refused before it ran
    ops_[i].add(wqes);
    bytes_[i].add(bytes);
  }
  // A completion written to the app's CQ.
  void completed(const shm::Cqe& c) {
    completions_[c.status < TrafficCounters::kStatuses ? c.status : uint32_t{IBV_WC_GENERAL_ERR}].add(1);
    if (c.status == IBV_WC_SUCCESS && (c.opcode & IBV_WC_RECV) != 0) {
      received_.add(1);
      received_bytes_.add(c.byte_len);
    }
  }
  // A work request waits for the responder's receive.
  void rnr_waited() { rnr_waits_.add(1); }
  TrafficCounters snapshot() const {
    TrafficCounters t;
    for (size_t i = 0; i < TrafficCounters::kOpcodes; ++i) {
      t.ops[i] = ops_[i].get();
      t.bytes[i] = bytes_[i].get();
    }
    t.received = received_.get();
    t.received_bytes = received_bytes_.get();
    t.rnr_waits = rnr_waits_.get();
    for (size_t i = 0; i < TrafficCounters::kStatuses; ++i) t.completions[i] = completions_[i].get();
    return t;
  }

 private:
  SingleWriterCounter ops_[TrafficCounters::kOpcodes];
  SingleWriterCounter bytes_[TrafficCounters::kOpcodes];
  SingleWriterCounter received_;
  SingleWriterCounter received_bytes_;
  SingleWriterCounter rnr_waits_;
  SingleWriterCounter completions_[TrafficCounters::kStatuses];
};

}  // namespace ff::router::core
