// The soft responder for requests that come from another router: frames
// arriving on an inbound link are checked and executed by the Responder
// (responder.h), exactly as for a requester on this router, and answered on
// the same link: an ACK once executed (RC), READ data, an atomic's old
// value, or a NAK carrying the responder's Verdict. After a NAK the
// responder drops what the requester sent behind the refused request until
// it comes back to it (go-back-N); a UC message refused halfway is dropped
// whole.
#include <cstring>

#include "router/common/addresses.h"
#include "router/fabric/soft/engine.h"
#include "router/fabric/soft/link_protocol.h"

namespace ff::router::soft {
namespace {

using shm::RecvWqe;
using wire::Header;
using wire::NakReason;
using wire::Type;

// The header of an answer to `request`.
Header answer_header(const Header& request, Type type, uint8_t reason = 0, uint32_t value = 0,
                     uint32_t payload = 0) {
  Header a{};
  a.type = static_cast<uint8_t>(type);
  a.opcode = reason;
  a.qp_type = request.qp_type;
  a.tenant = request.tenant;
  a.src_qpn = request.dst_qpn;
  a.dst_qpn = request.src_qpn;
  a.seq = request.seq;
  a.src_ip = request.dst_ip;
  a.dst_ip = request.src_ip;
  a.imm = value;
  a.total = request.total;
  a.offset = request.offset;
  a.payload = payload;
  return a;
}

// Appends an answer to `request` and returns where its `payload` bytes go.
std::byte* answer(Link& link, const Header& request, Type type, uint8_t reason = 0, uint32_t value = 0,
                  uint32_t payload = 0) {
  return link.put(answer_header(request, type, reason, value, payload));
}

Origin origin_of(const Link& link, const Header& h) {
  return Origin{h.src_qpn, h.dst_qpn, static_cast<ibv_qp_type>(h.qp_type), &link.peer, nullptr,
                h.tenant,  h.src_ip,  h.dst_ip};
}

Arrival arrival_of(const Header& h) { return Arrival{h.src_qpn, h.opcode, h.imm, (h.flags & wire::kSolicited) != 0}; }

// Whether a request is one the responder takes now: after a NAK, only the
// refused request coming again (or a new life of the requester); after a
// refused UC message, only the next message.
bool in_order(RemoteResponder& rs, const Header& h) {
  if (rs.nak_pending) {
    uint32_t d = h.seq - rs.nak_seq;
    if (d == 0 && h.offset == 0)
      rs.nak_pending = false;  // the requester came back to it
    else if (d <= kWindowWqes)
      return false;  // sent before the requester saw the NAK
    else
      rs.nak_pending = false;  // a new life of the requester
  }
  if (rs.discard) {
    if (h.seq == rs.seq) return false;
    rs.discard = false;
  }
  return true;
}

// Carries out one request for QP t, answering on `link`.
class LinkResponse {
 public:
  LinkResponse(Engine& e, Link& link, Qp& t, const Header& h)
      : e_(e), r_(e.responder()), link_(link), t_(t), rs_(t.remote_resp), h_(h),
        reliable_(h.qp_type == IBV_QPT_RC) {}

  void read() {
    if (!reliable_) return;
    const Mr* mr = nullptr;
    if (Verdict v = r_.check_read(t_, h_.rkey, h_.remote_addr, h_.total, mr); !v) return refuse(v);
    uint64_t len = wire::read_chunk(h_.total, h_.offset);
    Header a = answer_header(h_, Type::kReadResponse, 0, 0, static_cast<uint32_t>(len));
    if (len == 0) {  // no key checked, no memory (mr is null)
      link_.put(a);
    } else {
      Pieces from(*mr, h_.remote_addr + h_.offset, len);
      put_with_payload(link_, a, from, len);
    }
    if (h_.offset + len == h_.total) e_.count(1, h_.total);
  }

  void atomic() {
    if (!reliable_) return;
    uint64_t old = 0;
    if (Verdict v = r_.atomic(t_, h_.opcode, h_.rkey, h_.remote_addr, h_.compare_add, h_.swap, old); !v)
      return refuse(v);
    std::memcpy(answer(link_, h_, Type::kAtomicResponse, 0, 0, 8), &old, 8);
    e_.count(1, 8);
  }

  // SEND and WRITE (with or without immediate), chunk by chunk. A message
  // that consumes a receive takes it at its first chunk and completes it
  // after the last.
  void message(std::span<const std::byte> payload) {
    const bool first = h_.offset == 0;
    const bool send =
        h_.opcode == IBV_WR_SEND || h_.opcode == IBV_WR_SEND_WITH_IMM || h_.opcode == IBV_WR_SEND_WITH_INV;
    const bool consumes = send || h_.opcode == IBV_WR_RDMA_WRITE_WITH_IMM;
    const Mr* mr = nullptr;
    if (!send && first) {
      if (Verdict v = r_.check_write(t_, h_.rkey, h_.remote_addr, h_.total, mr); !v) return refuse(v);
    }
    if (consumes && first) {
      Sges ignored;
      if (Verdict v = r_.take_receive(t_, send ? h_.total : 0, arrival_of(h_), ignored); !v) return refuse(v);
      rs_.receiving = true;
      rs_.seq = h_.seq;
    } else if (consumes && (!rs_.receiving || rs_.seq != h_.seq)) {
      return;  // the rest of a message this QP did not take
    }
    if (send ? !land_send(payload) : !land_write(payload)) return;
    if (h_.offset + h_.payload != h_.total) return;  // more chunks to come
    if (consumes) {
      rs_.receiving = false;
      if (Verdict v = r_.finish_receive(t_, arrival_of(h_), send ? IBV_WC_RECV : IBV_WC_RECV_RDMA_WITH_IMM, h_.total);
          !v)
        return refuse(v);
    }
    e_.count(1, h_.total);
    if (reliable_) answer(link_, h_, Type::kAck);
  }

  // RC: NAK, and drop what follows until the requester resends; UC: drop
  // the rest of the message.
  void refuse(const Verdict& v) {
    rs_.receiving = false;
    if (reliable_) {
      auto [reason, value] = nak_of(v);
      answer(link_, h_, Type::kNak, static_cast<uint8_t>(reason), value);
      rs_.nak_pending = true;
      rs_.nak_seq = h_.seq;
    } else {
      rs_.discard = true;
      rs_.seq = h_.seq;
    }
  }

 private:
  bool land_send(std::span<const std::byte> payload) {
    Sges dst;
    if (Verdict v = r_.resolve_receive(t_, arrival_of(h_), dst); !v) {
      refuse(v);
      return false;
    }
    Pieces to(dst);
    to.skip(h_.offset);
    land(to, payload);
    return true;
  }

  // Each chunk is checked against the MR as it is now.
  bool land_write(std::span<const std::byte> payload) {
    if (h_.payload == 0) return true;
    const Mr* mr = nullptr;
    if (Verdict v = r_.check_write(t_, h_.rkey, h_.remote_addr + h_.offset, h_.payload, mr); !v) {
      if (rs_.receiving)
        r_.complete_receive(t_, arrival_of(h_), IBV_WC_RECV_RDMA_WITH_IMM, 0, v.status);
      refuse(v);
      return false;
    }
    Pieces to(*mr, h_.remote_addr + h_.offset, h_.payload);
    land(to, payload);
    return true;
  }

  Engine& e_;
  Responder& r_;
  Link& link_;
  Qp& t_;
  RemoteResponder& rs_;
  const Header& h_;
  const bool reliable_;
};

}  // namespace

void Engine::on_datagram(Link& link, const Header& h, std::span<const std::byte> payload) {
  if ((h.opcode != IBV_WR_SEND && h.opcode != IBV_WR_SEND_WITH_IMM) || h.offset != 0 || h.total != h.payload ||
      h.total > kUdMtu)
    return;
  DatagramHeader g{h.src_ip, h.dst_ip, static_cast<uint8_t>(h.remote_addr), static_cast<uint8_t>(h.remote_addr >> 8)};
  if (is_multicast_ipv4(h.dst_ip)) {  // a multicast group: its members here
    auto fresh = [&] { return Pieces(const_cast<std::byte*>(payload.data()), payload.size()); };
    if (int n = responder_.deliver_multicast(origin_of(link, h), h.rkey, g, fresh, h.total, arrival_of(h)); n > 0)
      count(static_cast<uint64_t>(n), h.total * static_cast<uint64_t>(n));
    return;
  }
  Pieces from(const_cast<std::byte*>(payload.data()), payload.size());
  if (responder_.deliver_datagram(origin_of(link, h), h.rkey, h.dst_ip, g, from, h.total, arrival_of(h)))
    count(1, h.total);
}

// Where the payload of a WRITE chunk whose header is in may be received to
// before the rest of it is (Link::receive): the checks its delivery makes
// before it writes, made now and changing nothing. Its delivery (of the
// remainder) checks again, so a QP reset or an MR deregistered meanwhile
// refuses the request as it would have; the bytes placed before went to
// pages this QP was allowed to write when the chunk came, kept mapped
// until they are in.
Link::Placement Engine::placement_for(const Link& link, const Header& h) const {
  if (link.outbound || h.opcode != IBV_WR_RDMA_WRITE || (h.qp_type != IBV_QPT_RC && h.qp_type != IBV_QPT_UC) ||
      h.payload <= Link::kThroughBuffer)
    return {};
  Qp* t = responder_.connected(origin_of(link, h));
  if (t == nullptr || t->remote_resp.nak_pending || t->remote_resp.discard) return {};
  const Mr* mr = nullptr;
  if (h.offset == 0 && !responder_.check_write(*t, h.rkey, h.remote_addr, h.total, mr)) return {};
  uint32_t bytes = h.payload - Link::kThroughBuffer;
  if (!responder_.check_write(*t, h.rkey, h.remote_addr + h.offset, bytes, mr) || mr == nullptr) return {};
  uint64_t contiguous = 0;
  std::byte* to = mr->translate(h.remote_addr + h.offset, bytes, contiguous);
  if (to == nullptr || contiguous != bytes) return {};
  std::shared_ptr<const void> keep = mr->segment_holding(to);
  if (keep == nullptr) return {};
  return {to, bytes, std::move(keep), &access_epoch(), access_epoch()};
}

void Engine::on_request(Link& link, const Header& h, std::span<const std::byte> payload) {
  if (h.qp_type == IBV_QPT_UD) return on_datagram(link, h, payload);
  // A placed chunk's remainder (Link::receive) stands for the chunk as sent.
  const bool chunk_starts_message = h.offset - link.placed_ahead() == 0;
  Qp* t = responder_.connected(origin_of(link, h));
  if (t == nullptr) {
    if (h.qp_type == IBV_QPT_RC && chunk_starts_message)
      answer(link, h, Type::kNak, static_cast<uint8_t>(NakReason::kNotReady));
    return;
  }
  if (link.placement_failed()) {
    // What was placed did not land (its QP, MR or window changed while it
    // came): the request fails, as it would have at its first byte.
    const Mr* mr = nullptr;
    Verdict v = responder_.check_write(*t, h.rkey, h.remote_addr + h.offset - link.placed_ahead(),
                                       link.placed_ahead(), mr);
    return LinkResponse(*this, link, *t, h).refuse(!v ? v : Verdict::failed(IBV_WC_REM_ACCESS_ERR));
  }
  if (!in_order(t->remote_resp, h)) return;
  LinkResponse response(*this, link, *t, h);
  if (!wire::serves_opcode(h.opcode))  // a newer router's: this request fails (RC: an invalid request NAK)
    return response.refuse(Verdict::failed(IBV_WC_REM_INV_REQ_ERR));
  switch (h.opcode) {
    case IBV_WR_RDMA_READ:
      return response.read();
    case IBV_WR_ATOMIC_CMP_AND_SWP:
    case IBV_WR_ATOMIC_FETCH_AND_ADD:
    case IBV_WR_ATOMIC_WRITE:
      return response.atomic();
    default:  // SEND, WRITE (+IMM)
      return response.message(payload);
  }
}

}  // namespace ff::router::soft
