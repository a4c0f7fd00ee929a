// Blocking client side of the control protocol, used by libffverbs, ffctl
// and tests. One request in flight at a time; thread-safe (a mutex serializes
// round trips, and replies are matched to requests by id).
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "proto/control_generated.h"
#include "proto/fd.h"
#include "proto/frame.h"

namespace ff::proto {

// The control protocol's version, as Hello carries it.
inline constexpr uint32_t kProtocolVersion = static_cast<uint32_t>(ProtocolVersion::Current);

class ControlClient {
 public:
  // Connects to the Unix socket at `path`. Returns 0 or an errno.
  int connect(const std::string& path);
  void disconnect();
  bool connected() const { return sock_.get() >= 0; }
  int fd() const { return sock_.get(); }

  struct Result {
    int error = 0;          // transport errno, or the router's error for this request
    std::string message;    // the router's explanation, if any
    std::vector<uint8_t> buffer;  // the verified reply (keeps reply() alive)
    std::vector<UniqueFd> fds;
    const Reply* reply() const { return buffer.empty() ? nullptr : flatbuffers::GetRoot<Reply>(buffer.data()); }
  };

  // Sends a Request whose body is (type, body) built in `fbb` (not yet
  // finished) and waits for its reply. Transport failures disconnect.
  // `fds` travel with the request.
  Result call(flatbuffers::FlatBufferBuilder& fbb, RequestBody type, flatbuffers::Offset<void> body,
              std::span<const int> fds = {});

 private:
  std::mutex mu_;
  UniqueFd sock_;
  FrameReader reader_;
  uint64_t next_id_ = 1;
};

}  // namespace ff::proto
