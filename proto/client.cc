#include "proto/client.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace ff::proto {

int ControlClient::connect(const std::string& path) {
  std::lock_guard lock(mu_);
  sockaddr_un a{};
  if (path.size() >= sizeof a.sun_path) return ENAMETOOLONG;
  UniqueFd s(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) return errno;
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  int r;
  do {
    r = ::connect(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  } while (r != 0 && errno == EINTR);
  if (r != 0) return errno;
  sock_ = std::move(s);
  reader_ = FrameReader();
  return 0;
}

void ControlClient::disconnect() {
  std::lock_guard lock(mu_);
  sock_.reset();
}

ControlClient::Result ControlClient::call(flatbuffers::FlatBufferBuilder& fbb, RequestBody type,
                                          flatbuffers::Offset<void> body, std::span<const int> fds) {
  std::lock_guard lock(mu_);
  Result res;
  if (!sock_) {
    res.error = ENOTCONN;
    res.message = "not connected to the router";
    return res;
  }
  uint64_t id = next_id_++;
  fbb.Finish(CreateRequest(fbb, id, type, body));
  int e = send_frame(sock_.get(), {fbb.GetBufferPointer(), fbb.GetSize()}, fds);
  Frame f;
  if (e == 0) e = read_frame_blocking(sock_.get(), reader_, f);
  if (e != 0) {
    sock_.reset();
    res.error = e;
    res.message = std::string("router connection lost: ") + std::strerror(e);
    return res;
  }
  flatbuffers::Verifier v(f.payload.data(), f.payload.size());
  if (!v.VerifyBuffer<Reply>(nullptr) || flatbuffers::GetRoot<Reply>(f.payload.data())->id() != id) {
    sock_.reset();
    res.error = EPROTO;
    res.message = "malformed or mismatched reply from the router";
    return res;
  }
  res.buffer = std::move(f.payload);
  res.fds = std::move(f.fds);
  const Reply* r = res.reply();
  res.error = r->error();
  if (r->message() != nullptr) res.message = r->message()->str();
  return res;
}

}  // namespace ff::proto
