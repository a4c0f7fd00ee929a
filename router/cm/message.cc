#include "router/cm/message.h"

#include <endian.h>
#include <rdma/rdma_cma.h>

#include <algorithm>
#include <cstring>

namespace ff::router::cm {
namespace {

constexpr uint8_t kVersion = 1;

// Every integer little-endian; 120 bytes, then the private data.
struct WireMessage {
  uint8_t version;
  uint8_t type;
  uint8_t qp_type;
  uint8_t tenant_length;
  uint16_t port_space;
  uint16_t private_length;
  uint64_t from;
  uint64_t to;
  uint32_t src_ip, dst_ip;
  uint16_t src_port, dst_port;
  uint8_t responder_resources, initiator_depth, flow_control, retry_count, rnr_retry_count, srq;
  uint8_t unreachable;
  uint8_t reserved;
  uint32_t qp_num;
  uint32_t psn;
  int32_t status;
  char tenant[kMaxTenantName + 1];
};
static_assert(sizeof(WireMessage) == 120);

bool known_port_space(uint16_t ps) {
  return ps == RDMA_PS_TCP || ps == RDMA_PS_UDP || ps == RDMA_PS_IB || ps == RDMA_PS_IPOIB;
}

}  // namespace

std::vector<std::byte> encode(const Message& m) {
  WireMessage w{};
  w.version = kVersion;
  w.type = static_cast<uint8_t>(m.type);
  w.qp_type = m.qp_type;
  size_t tenant = std::min(m.tenant.size(), kMaxTenantName);
  w.tenant_length = static_cast<uint8_t>(tenant);
  std::memcpy(w.tenant, m.tenant.data(), tenant);
  size_t data = std::min(m.private_data.size(), kMaxPrivateData);
  w.port_space = htole16(m.port_space);
  w.private_length = htole16(static_cast<uint16_t>(data));
  w.from = htole64(m.from);
  w.to = htole64(m.to);
  w.src_ip = htole32(m.src.ip);
  w.dst_ip = htole32(m.dst.ip);
  w.src_port = htole16(m.src.port);
  w.dst_port = htole16(m.dst.port);
  w.responder_resources = m.param.responder_resources;
  w.initiator_depth = m.param.initiator_depth;
  w.flow_control = m.param.flow_control;
  w.retry_count = m.param.retry_count;
  w.rnr_retry_count = m.param.rnr_retry_count;
  w.srq = m.param.srq;
  w.unreachable = m.unreachable ? 1 : 0;
  w.qp_num = htole32(m.param.qp_num);
  w.psn = htole32(m.psn);
  w.status = static_cast<int32_t>(htole32(static_cast<uint32_t>(m.status)));
  std::vector<std::byte> out(sizeof w + data);
  std::memcpy(out.data(), &w, sizeof w);
  if (data != 0) std::memcpy(out.data() + sizeof w, m.private_data.data(), data);
  return out;
}

std::optional<Message> decode(std::span<const std::byte> bytes, std::string& why) {
  WireMessage w;
  if (bytes.size() < sizeof w) return why = "shorter than a CM message's header", std::nullopt;
  std::memcpy(&w, bytes.data(), sizeof w);
  if (w.version != kVersion) return why = "CM message of another version", std::nullopt;
  if (w.type < 1 || w.type > kLastMessageType) return why = "unknown CM message type", std::nullopt;
  if (w.tenant_length == 0 || w.tenant_length > kMaxTenantName) return why = "CM message without a tenant", std::nullopt;
  uint16_t data = le16toh(w.private_length);
  if (data > kMaxPrivateData) return why = "CM private data longer than any message carries", std::nullopt;
  if (bytes.size() != sizeof w + data) return why = "CM message length does not match its private data", std::nullopt;
  Message m;
  m.port_space = le16toh(w.port_space);
  if (!known_port_space(m.port_space)) return why = "CM message for an unknown port space", std::nullopt;
  if (w.unreachable > 1) return why = "CM message with a bad flag", std::nullopt;
  m.type = static_cast<MessageType>(w.type);
  m.tenant.assign(w.tenant, w.tenant_length);
  m.from = le64toh(w.from);
  m.to = le64toh(w.to);
  m.qp_type = w.qp_type;
  m.unreachable = w.unreachable != 0;
  m.src = {le32toh(w.src_ip), le16toh(w.src_port)};
  m.dst = {le32toh(w.dst_ip), le16toh(w.dst_port)};
  m.param = {w.responder_resources, w.initiator_depth, w.flow_control, w.retry_count, w.rnr_retry_count, w.srq,
             le32toh(w.qp_num)};
  m.psn = le32toh(w.psn) & 0xffffff;
  m.status = static_cast<int32_t>(le32toh(static_cast<uint32_t>(w.status)));
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data() + sizeof w);
  m.private_data.assign(p, p + data);
  return m;
}

}  // namespace ff::router::cm
