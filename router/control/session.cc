#include "router/control/session.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/socket_base.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "proto/frame.h"
#include "router/control/handlers.h"

namespace ff::router {
namespace {

// A client that stops reading its replies is dropped once this much is queued.
constexpr size_t kMaxQueuedReplyBytes = 4 << 20;

}  // namespace

Session::Session(ControlServices& services, SessionRole role, const policy::TenantSpec* tenant, Socket socket,
                 uint64_t id)
    : services_(services), role_(role), tenant_(tenant), socket_(std::move(socket)), id_(id),
      objects_(tenant != nullptr ? &services.handles(*tenant) : nullptr), control_timer_(socket_.get_executor()) {
  socket_.non_blocking(true);
  peer_ = identify_peer(socket_.native_handle());
}

Session::~Session() { objects_.clear(); }

Owner Session::owner() const { return Owner{tenant_->name, id_, virtual_ip()}; }

void Session::start() {
  if (role_ == SessionRole::kTenant) {
    spdlog::info("session {}: tenant {} pid {} ({}) connected", id_, tenant_->name, peer_.pid,
                 peer_.program);
  }
  arm_read();
}

void Session::close(const std::string& why) {
  if (closed_) return;
  closed_ = true;
  size_t objects = objects_.size();
  objects_.clear();
  segments_by_base_.clear();
  boost::system::error_code ignored;
  socket_.cancel(ignored);
  socket_.close(ignored);
  control_timer_.cancel();
  delayed_.reset();
  out_.clear();
  if (role_ == SessionRole::kTenant) {
    spdlog::info("session {}: pid {} closed ({}); destroyed {} objects", id_, peer_.pid, why, objects);
  }
  services_.session_closed(id_);  // may drop the last reference held by the registry
}

void Session::arm_read() {
  // No new requests while replies are stuck or held, or a request waits.
  if (closed_ || reading_ || writing_ || holds_ > 0 || delayed_) return;
  reading_ = true;
  socket_.async_wait(boost::asio::socket_base::wait_read,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       self->reading_ = false;
                       self->on_readable(ec);
                     });
}

void Session::on_readable(const boost::system::error_code& ec) {
  if (closed_) return;
  if (ec) {
    close("socket error: " + ec.message());
    return;
  }
  auto self = shared_from_this();  // handlers may close us
  for (int rounds = 0; rounds < 64; ++rounds) {
    auto io = reader_.read_some(socket_.native_handle(), true);
    if (!handle_buffered()) return;
    if (!reader_.error().empty()) {
      close("protocol error: " + reader_.error());
      return;
    }
    if (io == proto::FrameReader::Io::kClosed) {
      close("client closed the connection");
      return;
    }
    if (io == proto::FrameReader::Io::kError) {
      close(std::string("read failed: ") + std::strerror(reader_.last_errno()));
      return;
    }
    if (io == proto::FrameReader::Io::kWouldBlock || writing_) break;
  }
  arm_read();
}

bool Session::handle_buffered() {
  while (holds_ == 0 && !delayed_) {
    auto frame = reader_.next();
    if (!frame) return !closed_;
    if (must_wait(*frame)) return false;
    handle_frame(*frame);
    if (closed_) return false;
  }
  return false;
}

namespace {
uint64_t steady_now_ns() {
  auto now = std::chrono::steady_clock::now().time_since_epoch();
  return static_cast<uint64_t>(std::chrono::nanoseconds(now).count());
}
}  // namespace

// Every request of a tenant's client, Hello too (a connect storm is a
// control storm), takes its turn in the tenant's control rate.
bool Session::must_wait(proto::Frame& frame) {
  if (role_ != SessionRole::kTenant) return false;
  uint64_t now = steady_now_ns();
  uint64_t wait_ns = services_.admit_control(*tenant_, now);
  if (wait_ns == 0) return false;
  delayed_ = std::move(frame);
  delayed_since_ns_ = now;
  control_timer_.expires_after(std::chrono::nanoseconds(wait_ns));
  // Fired, or cancelled by a new QoS spec or by close().
  control_timer_.async_wait([weak = weak_from_this()](const boost::system::error_code&) {
    if (auto s = weak.lock()) s->resume_delayed();
  });
  return true;
}

void Session::resume_delayed() {
  if (closed_ || !delayed_) return;
  auto self = shared_from_this();  // the handler may close us
  services_.control_waited(*tenant_, steady_now_ns() - delayed_since_ns_);
  proto::Frame frame = std::move(*delayed_);
  delayed_.reset();
  handle_frame(frame);
  if (!handle_buffered()) return;
  arm_read();
}

std::function<void()> Session::hold() {
  ++holds_;
  return [weak = weak_from_this(), executor = socket_.get_executor()] {
    boost::asio::post(executor, [weak] {
      if (auto s = weak.lock()) s->release_hold();
    });
  };
}

Session::Answer Session::answer_later(ReplyWriter& w, uint64_t request_id) {
  w.later_ = true;
  ++holds_;
  return [weak = weak_from_this(), request_id](Status status) {
    auto s = weak.lock();
    if (!s || s->closed_) return;
    ReplyWriter reply;
    s->queue(reply, request_id, status);  // sent once the hold ends, behind what was queued before
    s->release_hold();
  };
}

void Session::release_hold() {
  if (--holds_ > 0 || closed_) return;
  auto self = shared_from_this();
  flush();
  if (!handle_buffered()) return;
  arm_read();
}

void Session::handle_frame(proto::Frame& frame) {
  flatbuffers::Verifier verifier(frame.payload.data(), frame.payload.size(),
                                 /*max_depth=*/16, /*max_tables=*/1000);
  if (!proto::VerifyRequestBuffer(verifier)) {
    // The frame boundary is intact, so the stream is still usable: answer
    // (the request id is unreadable: 0) and carry on.
    ReplyWriter w;
    queue(w, 0, Error{EBADMSG, "malformed request: failed flatbuffers verification"});
    return;
  }
  const proto::Request* req = proto::GetRequest(frame.payload.data());
  ReplyWriter w;
  Status status = dispatch(frame, *req, w);
  if (w.later_) return;
  queue(w, req->id(), status);
  if (role_ == SessionRole::kTenant && req->body_type() == proto::RequestBody::Hello && !status) {
    flush();
    close("refused: " + status.error().message);
  }
}

// Who may send what, with how many fds, in which order; then the handler.
Status Session::dispatch(proto::Frame& frame, const proto::Request& req, ReplyWriter& w) {
  HandlerEntry entry = find_handler(role_, req.body_type());
  // The verifier accepts a union whose type is set and whose value is
  // absent; no handler takes a missing body (found by fuzz_control).
  if (req.body() == nullptr) return Error{EBADMSG, "request without a body"};
  if (entry.handler == nullptr)
    return Error{EOPNOTSUPP, role_ == SessionRole::kAdmin ? "not an admin request" : "unknown or admin-only request"};
  if (frame.fds.size() != entry.fds)  // descriptors that do not belong are closed (frame.fds owns them)
    return Error{EINVAL, "this request takes " + std::to_string(entry.fds) + " file descriptor(s), " +
                             std::to_string(frame.fds.size()) + " came"};
  if (role_ == SessionRole::kTenant && !greeted() && req.body_type() != proto::RequestBody::Hello)
    return Error{EPROTO, "the first request must be Hello"};
  if (entry.creates && objects_.size() >= services_.limits().max_objects_per_session) {
    services_.quota(*tenant_).count_refusal();
    return Error{ENOMEM, "this client holds " + std::to_string(objects_.size()) +
                             " objects, the limit (--max-objects-per-session)"};
  }
  if (entry.creates && !services_.handles(*tenant_).fits(router_handles(entry.kind))) {
    const policy::TenantQuota& h = services_.handles(*tenant_);
    return Error{ENOMEM, "tenant '" + tenant_->name + "' makes the router hold " + std::to_string(h.used()) +
                             " file descriptors and mappings; the limit is " + std::to_string(h.limit()) +
                             " (--max-handles-per-tenant): destroy objects, or raise the limit"};
  }
  return entry.handler(*this, req, frame.fds, w);
}

void Session::queue(ReplyWriter& w, uint64_t request_id, const Status& status) {
  auto& fbb = w.fbb_;
  const std::string& text = status.error().message;
  auto message = text.empty() ? 0 : fbb.CreateString(text);
  proto::ReplyBuilder rb(fbb);
  rb.add_id(request_id);
  rb.add_error(status.error().code);
  if (!message.IsNull()) rb.add_message(message);
  if (status && w.type_ != proto::ReplyBody::NONE) {
    rb.add_body_type(w.type_);
    rb.add_body(w.body_);
  }
  fbb.Finish(rb.Finish());
  if (fbb.GetSize() > proto::kMaxPayload) {
    // A reply the client's frame reader would refuse: an error it can read.
    ReplyWriter small;
    return queue(small, request_id,
                 Error{EMSGSIZE, "the reply would pass the frame limit (" + std::to_string(proto::kMaxPayload >> 10) +
                                     " KiB): ask for less (ffctl: name a tenant or a pid)"});
  }

  Outgoing o;
  proto::FrameHeader h{fbb.GetSize(), static_cast<uint16_t>(status ? w.fds_.size() : 0), 0};
  o.bytes.resize(sizeof h + fbb.GetSize());
  std::memcpy(o.bytes.data(), &h, sizeof h);
  std::memcpy(o.bytes.data() + sizeof h, fbb.GetBufferPointer(), fbb.GetSize());
  if (status) o.fds = std::move(w.fds_);
  out_bytes_ += o.bytes.size();
  out_.push_back(std::move(o));
  if (out_bytes_ > kMaxQueuedReplyBytes) {
    close("client does not read its replies");
    return;
  }
  flush();
}

void Session::flush() {
  while (!closed_ && holds_ == 0 && !out_.empty()) {
    Outgoing& o = out_.front();
    iovec iov{o.bytes.data() + o.sent, o.bytes.size() - o.sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * proto::kMaxFds)];
    if (o.sent == 0 && !o.fds.empty()) {
      std::memset(control, 0, sizeof control);
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * o.fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * o.fds.size());
      for (size_t i = 0; i < o.fds.size(); ++i) {
        int fd = o.fds[i].get();
        std::memcpy(CMSG_DATA(c) + i * sizeof(int), &fd, sizeof fd);
      }
    }
    ssize_t r = ::sendmsg(socket_.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        if (!writing_) {
          writing_ = true;
          socket_.async_wait(boost::asio::socket_base::wait_write,
                             [self = shared_from_this()](const boost::system::error_code& ec) {
                               self->writing_ = false;
                               if (ec) return self->close("socket error: " + ec.message());
                               self->flush();
                               self->arm_read();
                             });
        }
        return;
      }
      close(std::string("send failed: ") + std::strerror(errno));
      return;
    }
    o.sent += static_cast<size_t>(r);
    if (o.sent == o.bytes.size()) {
      out_bytes_ -= o.bytes.size();
      out_.pop_front();  // our copies of the passed fds close here
    } else {
      o.fds.clear();  // they went out with the first byte
    }
  }
}

}  // namespace ff::router

namespace ff::router {

std::optional<uint32_t> Session::adopt(std::shared_ptr<cm::Id> id) {
  if (closed_ || objects_.size() >= services_.limits().max_objects_per_session) return std::nullopt;
  auto& manager = services_.connection_manager();
  uint32_t handle = objects_.add(std::make_unique<CmIdObject>(manager, id));
  manager.set_handle(*id, handle);
  return handle;
}

void Session::drop(uint32_t handle) { objects_.remove(handle, ObjectKind::kCmId); }

}  // namespace ff::router
