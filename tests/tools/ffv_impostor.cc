// An impostor router (tests/e2e/test_multihost_tls.sh): connects to a
// router's peer port and, unless it sends noise, a valid Hello naming NAME:
//   ffv_impostor HOST:PORT NAME plain          the Hello in the clear
//   ffv_impostor HOST:PORT NAME noise          4 KiB of random bytes
//   ffv_impostor HOST:PORT NAME psk KEYFILE    TLS 1.3 with that key (PSK identity NAME)
//   ffv_impostor HOST:PORT NAME cert PEM       TLS 1.3 with that certificate and key
// Its Hello claims the routers' number of pollers: FFR_POLLERS, as the
// routers of the test read it (default 1). It verifies nothing of the router. Prints "accepted: ..." and exits 0 when
// the router answered with its own Hello, "refused: ..." and exits 1 when it
// closed the connection instead (2: usage or setup error).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "router/fabric/soft/wire.h"

namespace {

namespace wire = ff::router::soft::wire;

std::string g_name, g_key;

wire::Hello my_hello() {
  const char* pollers = std::getenv("FFR_POLLERS");
  int n = pollers != nullptr ? std::atoi(pollers) : 1;
  return wire::make_hello(g_name, std::random_device{}() | 1, 0, static_cast<uint16_t>(n > 0 ? n : 1));
}

int usage() {
  std::fprintf(stderr, "usage: ffv_impostor HOST:PORT NAME plain|noise|psk KEYFILE|cert PEM\n");
  return 2;
}

unsigned psk_client(SSL*, const char*, char* identity, unsigned max_identity, unsigned char* psk, unsigned max_psk) {
  if (g_name.size() >= max_identity || g_key.size() > max_psk) return 0;
  std::memcpy(identity, g_name.c_str(), g_name.size() + 1);
  std::memcpy(psk, g_key.data(), g_key.size());
  return static_cast<unsigned>(g_key.size());
}

std::string ssl_errors() {
  std::string out;
  for (unsigned long e; (e = ERR_get_error()) != 0;) {
    const char* r = ERR_reason_error_string(e);
    out += out.empty() ? "" : "; ";
    out += r != nullptr ? r : "error";
  }
  return out.empty() ? "the router closed the connection" : out;
}

int connect_to(const std::string& where) {
  auto colon = where.rfind(':');
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(std::stoi(where.substr(colon + 1))));
  if (colon == std::string::npos || ::inet_pton(AF_INET, where.substr(0, colon).c_str(), &a.sin_addr) != 1) return -1;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  timeval timeout{5, 0};  // a router that neither answers nor closes is a failure of the test
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
  return fd;
}

int verdict(const wire::Hello& theirs, bool got, const std::string& why) {
  if (got && wire::check_hello(theirs).empty()) {
    std::printf("accepted: the router answered as '%s'\n", theirs.name);
    return 0;
  }
  std::printf("refused: %s\n", why.c_str());
  return 1;
}

int in_the_clear(int fd, bool noise) {
  wire::Hello mine = my_hello(), theirs{};
  if (noise) {
    std::mt19937 rng(std::random_device{}());
    char junk[4096];
    for (char& c : junk) c = static_cast<char>(rng());
    (void)!::send(fd, junk, sizeof junk, MSG_NOSIGNAL);
  } else {
    (void)!::send(fd, &mine, sizeof mine, MSG_NOSIGNAL);
  }
  ssize_t n = ::recv(fd, &theirs, sizeof theirs, MSG_WAITALL);
  return verdict(theirs, n == static_cast<ssize_t>(sizeof theirs),
                 n < 0 ? std::strerror(errno) : "the router closed the connection");
}

int through_tls(int fd, const std::string& mode, const std::string& file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  if (mode == "psk") {
    std::ifstream in(file);
    std::stringstream ss;
    ss << in.rdbuf();
    g_key = ss.str();
    while (!g_key.empty() && std::strchr(" \t\r\n", g_key.back()) != nullptr) g_key.pop_back();
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
    SSL_CTX_set_psk_client_callback(ctx, psk_client);
  } else if (SSL_CTX_use_certificate_chain_file(ctx, file.c_str()) != 1 ||
             SSL_CTX_use_PrivateKey_file(ctx, file.c_str(), SSL_FILETYPE_PEM) != 1) {
    std::fprintf(stderr, "ffv_impostor: %s: %s\n", file.c_str(), ssl_errors().c_str());
    return 2;
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (SSL_connect(ssl) != 1) return verdict({}, false, "TLS: " + ssl_errors());
  wire::Hello mine = my_hello(), theirs{};
  SSL_write(ssl, &mine, sizeof mine);
  size_t got = 0;
  for (int r; got < sizeof theirs; got += static_cast<size_t>(r))
    if ((r = SSL_read(ssl, reinterpret_cast<char*>(&theirs) + got, static_cast<int>(sizeof theirs - got))) <= 0) break;
  return verdict(theirs, got == sizeof theirs, "TLS: " + ssl_errors());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage();
  g_name = argv[2];
  std::string mode = argv[3];
  bool tls = mode == "psk" || mode == "cert";
  if ((tls && argc != 5) || (!tls && mode != "plain" && mode != "noise")) return usage();
  int fd = connect_to(argv[1]);
  if (fd < 0) {
    std::fprintf(stderr, "ffv_impostor: cannot connect to %s: %s\n", argv[1], std::strerror(errno));
    return 2;
  }
  return tls ? through_tls(fd, mode, argv[4]) : in_the_clear(fd, mode == "noise");
}
