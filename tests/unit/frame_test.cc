#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "proto/frame.h"

namespace ff::proto {
namespace {

struct Pair {
  int a, b;
  Pair() {
    int sv[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    a = sv[0];
    b = sv[1];
  }
  ~Pair() {
    ::close(a);
    ::close(b);
  }
};

TEST(Frame, BackToBackFramesWithDescriptorsArriveInOrder) {
  Pair p;
  std::vector<uint8_t> one{1, 2, 3}, two(100000, 7);
  int fds[2] = {::dup(0), ::dup(1)};
  ASSERT_EQ(send_frame(p.a, one, fds), 0);
  std::thread writer([&] { EXPECT_EQ(send_frame(p.a, two, {}), 0); });
  FrameReader r;
  Frame f;
  ASSERT_EQ(read_frame_blocking(p.b, r, f), 0);
  EXPECT_EQ(f.payload, one);
  ASSERT_EQ(f.fds.size(), 2u);
  struct stat st {};
  EXPECT_EQ(::fstat(f.fds[0].get(), &st), 0);
  ASSERT_EQ(read_frame_blocking(p.b, r, f), 0);
  EXPECT_EQ(f.payload, two);
  EXPECT_TRUE(f.fds.empty());
  writer.join();
  ::close(fds[0]);
  ::close(fds[1]);
}

TEST(Frame, ReaderRejectsLiesAndOversize) {
  Pair p;
  FrameHeader h{static_cast<uint32_t>(kMaxPayload + 1), 0, 0};
  ASSERT_EQ(::send(p.a, &h, sizeof h, 0), 8);
  FrameReader r;
  Frame f;
  EXPECT_EQ(read_frame_blocking(p.b, r, f), EPROTO);
  EXPECT_NE(r.error().find("exceeds"), std::string::npos);

  Pair q;
  FrameHeader lies{0, 2, 0};  // announces descriptors that never come
  ASSERT_EQ(::send(q.a, &lies, sizeof lies, 0), 8);
  FrameReader r2;
  EXPECT_EQ(read_frame_blocking(q.b, r2, f), EPROTO);
}

TEST(Frame, PeerClosingMidFrameIsAResetNotAHang) {
  Pair p;
  FrameHeader h{100, 0, 0};
  ASSERT_EQ(::send(p.a, &h, sizeof h, 0), 8);
  ::shutdown(p.a, SHUT_WR);
  FrameReader r;
  Frame f;
  EXPECT_EQ(read_frame_blocking(p.b, r, f), ECONNRESET);
}

TEST(Frame, SenderRefusesOversize) {
  Pair p;
  std::vector<uint8_t> big(kMaxPayload + 1);
  EXPECT_EQ(send_frame(p.a, big, {}), EMSGSIZE);
}

// A peer that always leaves half a frame unread: the reader holds about one
// frame, however much went through (it once kept every byte ever read).
TEST(Frame, AlwaysHalfAFrameBehindHoldsOneFrameOfMemory) {
  Pair p;
  std::vector<uint8_t> payload(1000, 9);
  FrameHeader h{static_cast<uint32_t>(payload.size()), 0, 0};
  std::vector<uint8_t> frame(sizeof h + payload.size());
  std::memcpy(frame.data(), &h, sizeof h);
  std::memcpy(frame.data() + sizeof h, payload.data(), payload.size());
  FrameReader r;
  size_t frames = 0;
  ASSERT_EQ(::write(p.a, frame.data(), frame.size() / 2), static_cast<ssize_t>(frame.size() / 2));
  for (int round = 0; round < 20000; ++round) {  // 20 MB through the reader
    // The rest of the pending frame, then half of the next one.
    ASSERT_EQ(::write(p.a, frame.data() + frame.size() / 2, frame.size() - frame.size() / 2),
              static_cast<ssize_t>(frame.size() - frame.size() / 2));
    ASSERT_EQ(::write(p.a, frame.data(), frame.size() / 2), static_cast<ssize_t>(frame.size() / 2));
    ASSERT_EQ(r.read_some(p.b, false), FrameReader::Io::kProgress);
    while (auto f = r.next()) ++frames;
    ASSERT_TRUE(r.error().empty()) << r.error();
  }
  EXPECT_GE(frames, 19000u);
  EXPECT_LT(r.held_bytes(), 2 * (sizeof h + kMaxPayload + 16384)) << "the reader kept what it had consumed";
}

}  // namespace
}  // namespace ff::proto
