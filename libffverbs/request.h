// libffverbs internals: one request to the router and its checked answer.
//
// Every verb that asks the router something goes through request(): it sends
// the body, and hands back either a usable reply body or the errno the verb
// reports (the router's, the transport's, or EPROTO for a reply the shim
// cannot use). The verb then follows the verbs ABI itself: an int verb
// returns `error`, a pointer verb returns fail_ptr<T>(error).
#pragma once

#include <cerrno>
#include <cstddef>
#include <span>
#include <type_traits>
#include <utility>

#include "libffverbs/shim.h"

namespace ff::verbs {

// The router's answer to one request. Owns the reply buffer `body` points
// into and the descriptors that came with the reply.
template <typename Body>
struct Answer {
  proto::ControlClient::Result result;  // as received; result.message explains a failure
  const Body* body = nullptr;           // null unless error == 0 (always null for Body = void)
  int error = 0;                        // 0, result.error, or EPROTO

  explicit operator bool() const { return error == 0; }
  const Body* operator->() const { return body; }
  // The i-th descriptor of the reply: borrowed, or taken over by the caller.
  int fd(size_t i) const { return result.fds[i].get(); }
  int release_fd(size_t i) { return result.fds[i].release(); }
};

// Reply bodies with fields the shim dereferences: a reply without them is
// as unusable as one of the wrong type (EPROTO).
inline bool complete(const proto::CreateQpReply& r) { return r.cap() != nullptr; }
inline bool complete(const proto::QueryQpReply& r) { return r.attr() != nullptr; }
inline bool complete(const proto::QueryDeviceReply& r) { return r.attr() != nullptr; }
inline bool complete(const proto::QueryPortReply& r) { return r.attr() != nullptr; }
inline bool complete(const proto::QueryGidReply& r) { return r.gid() != nullptr; }
template <typename Body>
bool complete(const Body&) {
  return true;
}

// Checks a call's result. It succeeds when the router said yes, the reply
// body is a complete Body (any body for Body = void: verbs whose reply only
// says whether they worked) and, when `fds` is not 0, exactly `fds`
// descriptors came with it. A failure is logged as "<what>: <the router's
// message>" when `what` is set.
template <typename Body>
Answer<Body> answer(proto::ControlClient::Result result, const char* what, size_t fds = 0) {
  Answer<Body> a;
  a.result = std::move(result);
  a.error = a.result.error;
  if constexpr (!std::is_void_v<Body>) {
    if (a.error == 0) a.body = a.result.reply()->template body_as<Body>();
    if (a.error == 0 && (a.body == nullptr || !complete(*a.body))) a.error = EPROTO;
  }
  if (a.error == 0 && fds != 0 && a.result.fds.size() != fds) a.error = EPROTO;
  if (a.error != 0) {
    a.body = nullptr;
    if (what != nullptr) debug("%s: %s", what, a.result.message.c_str());
  }
  return a;
}

// Sends `body` (built in `fbb`, with `send_fds` attached) to the router over
// the process's RouterLink and checks the reply as answer() does. The request
// type follows from the body's table type.
template <typename Body, typename Request>
Answer<Body> request(flatbuffers::FlatBufferBuilder& fbb, flatbuffers::Offset<Request> body,
                     const char* what = nullptr, size_t fds = 0, std::span<const int> send_fds = {}) {
  return answer<Body>(
      RouterLink::get().call(fbb, proto::RequestBodyTraits<Request>::enum_value, body.Union(), send_fds), what,
      fds);
}

}  // namespace ff::verbs
