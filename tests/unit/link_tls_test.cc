// Link security (router/fabric/soft/tls.h) without a router: the key file's
// checks and their messages, a handshake between two ends that hold the
// same key and one between ends that do not, the poller's nonblocking reads
// and writes through TLS, and a peer gone mid-write (EPIPE, not SIGPIPE).
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "router/fabric/soft/tls.h"

namespace {

using ff::router::LinkSecurity;
using ff::router::soft::LinkTls;
using ff::router::soft::Ssl;

const std::string kKey = "0123456789abcdef0123456789abcdef0123456789abcdef";

struct TempFile {
  explicit TempFile(const std::string& text, mode_t mode = 0600) {
    char name[] = "/tmp/ff_link_tls_XXXXXX";
    int fd = ::mkstemp(name);
    path = name;
    EXPECT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
    ::fchmod(fd, mode);
    ::close(fd);
  }
  ~TempFile() { ::unlink(path.c_str()); }
  std::string path;
};

std::string open_error(const LinkSecurity& s) {
  try {
    LinkTls::open(s, "alpha");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// Both ends' handshake on a nonblocking socketpair: the server's failure, or "".
std::string handshake(ssl_st* client, ssl_st* server) {
  bool c = false, s = false;
  for (int i = 0; i < 1000 && !(c && s); ++i) {
    for (auto [ssl, done] : {std::pair{client, &c}, std::pair{server, &s}}) {
      if (*done) continue;
      int r = SSL_do_handshake(ssl);
      *done = r == 1;
      int e = SSL_get_error(ssl, r);
      if (r != 1 && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
        return (ssl == server ? "" : "client: ") + ff::router::soft::tls_error_text(ssl, r);
    }
  }
  return c && s ? "" : "no progress";
}

struct Pair {
  Pair(const LinkTls& client_tls, const LinkTls& server_tls) {
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fd), 0);
    client = client_tls.session(fd[0], false, "beta", nullptr);
    server = server_tls.session(fd[1], true, "", &claimed);
  }
  ~Pair() {
    client.reset();
    server.reset();
    if (fd[0] >= 0) ::close(fd[0]);
    if (fd[1] >= 0) ::close(fd[1]);
  }
  int fd[2] = {-1, -1};
  std::string claimed;
  Ssl client, server;
};

TEST(LinkTls, NoKnobsMeansLinksInTheClear) { EXPECT_EQ(LinkTls::open({}, "alpha"), nullptr); }

TEST(LinkTls, KeyFileErrorsSayWhatToDo) {
  TempFile shared(kKey + "\n", 0644), short_key("tooshort\n"), good(kKey + "\n");
  EXPECT_NE(open_error({shared.path, "", ""}).find("chmod 600 " + shared.path), std::string::npos);
  EXPECT_NE(open_error({short_key.path, "", ""}).find("openssl rand -hex 32"), std::string::npos);
  EXPECT_NE(open_error({"/nonexistent/key", "", ""}).find("/nonexistent/key"), std::string::npos);
  EXPECT_NE(open_error({good.path, good.path, good.path}).find("exclude each other"), std::string::npos);
  EXPECT_NE(open_error({"", good.path, ""}).find("go together"), std::string::npos);
  EXPECT_NE(open_error({"", good.path, good.path}).find("--link-cert " + good.path), std::string::npos);
  EXPECT_EQ(open_error({good.path, "", ""}), "");
}

TEST(LinkTls, TheSameKeyConnectsAndTheClientNamesItself) {
  TempFile key(kKey + "\n");
  auto alpha = LinkTls::open({key.path, "", ""}, "alpha");
  auto beta = LinkTls::with_key(kKey, "beta");  // the line end is not part of the key
  Pair p(*alpha, *beta);
  ASSERT_EQ(handshake(p.client.get(), p.server.get()), "");
  EXPECT_EQ(p.claimed, "alpha");
  EXPECT_EQ(beta->check_name(p.server.get(), "alpha", p.claimed), "");
  EXPECT_NE(beta->check_name(p.server.get(), "gamma", p.claimed), "");
}

TEST(LinkTls, AnotherKeyIsRefusedByTheServer) {
  auto alpha = LinkTls::with_key(kKey, "alpha");
  auto mallory = LinkTls::with_key(std::string(kKey.rbegin(), kKey.rend()), "beta");
  Pair p(*mallory, *alpha);
  EXPECT_EQ(handshake(p.client.get(), p.server.get()), "binder does not verify");
  EXPECT_EQ(p.claimed, "beta");  // what the log names
}

// As a Link drives them: records collect behind the writer and go out at
// each flush; the reader reads until TLS would block.
TEST(LinkTls, ReadsAndWritesNeverBlockAndCarryEveryByte) {
  auto tls = LinkTls::with_key(kKey, "alpha");
  Pair p(*tls, *tls);
  ASSERT_EQ(handshake(p.client.get(), p.server.get()), "");
  ASSERT_TRUE(ff::router::soft::tls_buffer_writes(p.client.get()));
  std::vector<char> out(4 << 20), in(out.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>(i * 7 + i / 65536);
  size_t sent = 0, got = 0;
  std::string why;
  char none;
  EXPECT_EQ(ff::router::soft::tls_read(p.server.get(), &none, 1, why), 0);  // nothing yet: would block
  while (got < in.size()) {
    for (ssize_t w = 1; w > 0 && sent < out.size(); sent += static_cast<size_t>(w)) {
      w = ff::router::soft::tls_write(p.client.get(), out.data() + sent, out.size() - sent, why);
      ASSERT_GE(w, 0) << why;
    }
    ASSERT_GE(ff::router::soft::tls_flush(p.client.get(), why), 0) << why;
    ssize_t r = ff::router::soft::tls_read(p.server.get(), in.data() + got, in.size() - got, why);
    ASSERT_GE(r, 0) << why;
    got += static_cast<size_t>(r);
  }
  EXPECT_EQ(in, out);
  EXPECT_EQ(ff::router::soft::tls_unsent(p.client.get()), 0u);
}

TEST(LinkTls, APeerGoneMidWriteIsAnErrorNotASignal) {
  auto tls = LinkTls::with_key(kKey, "alpha");
  Pair p(*tls, *tls);
  ASSERT_EQ(handshake(p.client.get(), p.server.get()), "");
  p.server.reset();
  ::close(p.fd[1]);
  p.fd[1] = -1;
  std::string why;
  std::vector<char> data(1 << 16);
  ssize_t w = 0;
  for (int i = 0; i < 100 && w >= 0; ++i)
    w = ff::router::soft::tls_write(p.client.get(), data.data(), data.size(), why);
  EXPECT_EQ(w, -1);  // SIGPIPE would have ended this test
  EXPECT_NE(why.find("TLS"), std::string::npos) << why;
}

TEST(LinkTls, APeerGoneWithoutGoodbyeIsAClosedConnection) {
  auto tls = LinkTls::with_key(kKey, "alpha");
  Pair p(*tls, *tls);
  ASSERT_EQ(handshake(p.client.get(), p.server.get()), "");
  ::shutdown(p.fd[1], SHUT_WR);  // no close_notify: the frames delimit themselves
  std::string why;
  char byte;
  EXPECT_EQ(ff::router::soft::tls_read(p.client.get(), &byte, 1, why), -1);
  EXPECT_EQ(why, "the peer closed the connection");
}

}  // namespace
