// A tenant's QoS spec on the control protocol (proto::Qos), both ways: the
// router's status and SetQos handler and ffctl use the same two functions.
#pragma once

#include "policy/qos.h"
#include "proto/control_generated.h"

namespace ff {

inline flatbuffers::Offset<proto::Qos> qos_to_wire(flatbuffers::FlatBufferBuilder& fbb, const policy::QosSpec& q) {
  return proto::CreateQos(fbb, q.max_gbps, q.max_mops, q.burst_bytes, q.weight, q.max_control_per_s);
}

// The defaults where the message has none.
inline policy::QosSpec qos_from_wire(const proto::Qos* w) {
  policy::QosSpec q;
  if (w != nullptr) q = {w->max_gbps(), w->max_mops(), w->burst_bytes(), w->weight(), w->max_control_per_s()};
  return q;
}

}  // namespace ff
