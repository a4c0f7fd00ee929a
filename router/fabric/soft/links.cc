// The poller's side of the links to other routers: reading frames and
// dispatching them (requests to link_responder.cc, answers to
// link_requester.cc), flushing what the requesters and responders queued,
// attaching connections Peers set up, and failing every QP routed through a
// peer whose connection is lost, so that programs see errors, not a hang:
// the head WQE with IBV_WC_RETRY_EXC_ERR, the rest flushed, idle QPs to ERR
// (their receives flush).
#include "router/fabric/soft/engine.h"

#include <cstring>

namespace ff::router::soft {

void Engine::on_frame(Link& link, const wire::Header& h, std::span<const std::byte> payload) {
  // Requests (and control messages) come in on the links peers opened,
  // answers on ours.
  auto type = static_cast<wire::Type>(h.type);
  bool request = type == wire::Type::kRequest || type == wire::Type::kMessage;
  if (request == link.outbound) {
    link.dead = true;
    link.why_dead = request ? "protocol error from the peer: a request on an answer link"
                            : "protocol error from the peer: an answer on a request link";
    return;
  }
  if (type == wire::Type::kMessage) {
    if (!on_message_ || !on_message_(link.peer, payload)) {
      link.dead = true;
      link.why_dead = "the peer sends control messages faster than this router handles them";
    }
  } else if (request) {
    on_request(link, h, payload);
  } else {
    on_answer(link, h, payload);
  }
}

bool Engine::send_message(Peer& peer, std::span<const std::byte> message) {
  if (peer.out == nullptr || peer.out->dead || message.size() > wire::kMaxChunk) return false;
  wire::Header h{};
  h.type = static_cast<uint8_t>(wire::Type::kMessage);
  h.payload = static_cast<uint32_t>(message.size());
  std::memcpy(peer.out->put(h), message.data(), message.size());
  return true;
}

void Engine::attach_link(std::unique_ptr<Link> link, uint64_t incarnation) {
  Peer& p = link->peer;
  if (p.incarnation != 0 && p.incarnation != incarnation) fail_routes_to(p);  // restarted: its QPs are gone
  p.incarnation = incarnation;
  Link*& slot = link->outbound ? p.out : p.in;
  if (slot != nullptr) {
    slot->dead = true;
    slot->why_dead = "replaced by a new connection";
  }
  slot = link.get();
  (link->outbound ? p.out_up : p.in_up).store(true, std::memory_order_relaxed);
  p.connects.fetch_add(1, std::memory_order_relaxed);
  if (link->outbound) p.wanted_since_ns = 0;
  poller().watch_other(link->fd.get());
  links_.push_back(std::move(link));
}

void Engine::fail_routes_to(Peer& peer) {
  for (core::Qp* c : qps()) {
    auto& q = static_cast<Qp&>(*c);
    if (q.route != &peer || !core::answers(q.state)) continue;
    shm::SendWqe w;
    if (q.init.type == IBV_QPT_RC && q.sq.sc_peek(0, w))
      complete_remote_head(q, w, IBV_WC_RETRY_EXC_ERR, 0);
    else
      set_error(q);
    peer.qps_failed.fetch_add(1, std::memory_order_relaxed);
  }
}

void Engine::drop_link(Link& link) {
  Peer& p = link.peer;
  poller().unwatch(link.fd.get());
  Link*& slot = link.outbound ? p.out : p.in;
  if (slot == &link) {
    slot = nullptr;
    (link.outbound ? p.out_up : p.in_up).store(false, std::memory_order_relaxed);
  }
  p.failures.fetch_add(1, std::memory_order_relaxed);
  fail_routes_to(p);
  if (on_link_down_) on_link_down_(p, link.outbound, link.why_dead);
}

bool Engine::receive_links() {
  bool busy = false;
  for (auto& l : links_) {
    if (l->dead) continue;
    auto deliver = [&](const wire::Header& h, std::span<const std::byte> payload) {
      busy = true;
      on_frame(*l, h, payload);
    };
    auto place = [&](const wire::Header& h) {
      Link::Placement p = placement_for(*l, h);
      busy |= p.to != nullptr;
      return p;
    };
    if (!l->receive(deliver, place))
      l->dead = true;
  }
  return busy;
}

bool Engine::flush_links() {
  bool any_dead = false;
  for (auto& l : links_) {
    if (!l->dead && l->tx_pending() && !l->flush()) l->dead = true;
    any_dead |= l->dead;
  }
  if (!any_dead) return false;
  for (size_t i = 0; i < links_.size();) {
    if (!links_[i]->dead) {
      ++i;
      continue;
    }
    std::unique_ptr<Link> gone = std::move(links_[i]);
    links_.erase(links_.begin() + static_cast<std::ptrdiff_t>(i));
    drop_link(*gone);
  }
  return true;
}

}  // namespace ff::router::soft
