// Length-prefixed frames on a Unix stream socket, with file descriptors
// passed by SCM_RIGHTS.
//
// Wire format: FrameHeader (8 bytes, little-endian) then `length` payload
// bytes. The sender attaches exactly `num_fds` descriptors to the first byte
// of the frame; the reader takes that many from the descriptors that arrived
// so far, in order. A frame that claims more fds than arrived, more than
// kMaxFds, or more than kMaxPayload bytes is a protocol error: the connection
// is not worth keeping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "proto/fd.h"

namespace ff::proto {

struct FrameHeader {
  uint32_t length;
  uint16_t num_fds;
  uint16_t reserved;  // must be zero
};
static_assert(sizeof(FrameHeader) == 8, "frame header is wire format");

inline constexpr size_t kMaxPayload = 256 * 1024;
inline constexpr size_t kMaxFds = 8;

struct Frame {
  std::vector<uint8_t> payload;
  std::vector<UniqueFd> fds;
};

// Sends one frame. Blocks (on a blocking socket) or returns EAGAIN before any
// byte was written (on a non-blocking one). Returns 0 or an errno. MSG_NOSIGNAL:
// a closed peer gives EPIPE, never SIGPIPE.
int send_frame(int sock, std::span<const uint8_t> payload, std::span<const int> fds);

// Accumulates bytes and descriptors from a socket and cuts them into frames.
// One reader per socket; not thread-safe.
class FrameReader {
 public:
  enum class Io { kProgress, kWouldBlock, kClosed, kError };

  // One recvmsg. `dontwait` makes it non-blocking for this call.
  Io read_some(int sock, bool dontwait);

  // The next complete frame, or nullopt (needs more bytes, or a protocol
  // error: then error() is non-empty and the connection must be dropped).
  std::optional<Frame> next();

  const std::string& error() const { return error_; }
  int last_errno() const { return errno_; }
  // Bytes of memory the reader holds (for tests: at most about one frame).
  size_t held_bytes() const { return buf_.capacity(); }

 private:
  std::vector<uint8_t> buf_;
  size_t start_ = 0;
  std::deque<UniqueFd> fds_;
  std::string error_;
  int errno_ = 0;
};

// Blocking convenience for clients: reads until one whole frame arrived.
// Returns 0 or an errno (ECONNRESET when the peer closed, EPROTO on a
// protocol error).
int read_frame_blocking(int sock, FrameReader& reader, Frame& out);

}  // namespace ff::proto
