// Conversions between the public verbs attribute structs and their wire
// forms in control.fbs. The router fills verbs structs from its fabric; the
// shim hands verbs structs to the app. Both go through these, so a field is
// added in exactly one place.
#pragma once

#include <infiniband/verbs.h>

#include "proto/control_generated.h"

namespace ff::proto {

DeviceAttr to_wire(const ibv_device_attr& a, const ibv_device_attr_ex& ex, uint32_t max_inline);
// Fills `out` (the plain part) from the wire form.
void from_wire(const DeviceAttr& w, ibv_device_attr& out);
// Fills the _ex-only fields that we serve.
void from_wire_ex(const DeviceAttr& w, ibv_device_attr_ex& out);

PortAttr to_wire(const ibv_port_attr& a);
void from_wire(const PortAttr& w, ibv_port_attr& out);

QpCap to_wire(const ibv_qp_cap& c);
ibv_qp_cap from_wire(const QpCap& w);

AhAttr to_wire(const ibv_ah_attr& a);
ibv_ah_attr from_wire(const AhAttr& w);

QpAttr to_wire(const ibv_qp_attr& a);
ibv_qp_attr from_wire(const QpAttr& w);

}  // namespace ff::proto
