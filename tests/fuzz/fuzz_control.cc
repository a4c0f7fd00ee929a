// libFuzzer: the control plane. Each input is split into request payloads
// (2-byte little-endian length, then the bytes) that a live session handles
// in turn: flatbuffers verification, dispatch, and every handler with
// whatever handles, sizes and flags the input names. The session starts
// greeted (and so does every request after a Hello in the input), over a
// socketpair whose other end is drained.
#include <sys/socket.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "router/control/session.h"
#include "router/fabric/soft/soft_fabric.h"
#include "router/daemon/router.h"

namespace {

using namespace ff;

struct World {
  std::string dir;
  router::RouterOptions options;
  std::vector<policy::TenantSpec> tenants{{"fuzz", std::nullopt, policy::parse_ipv4("10.0.0.1"), {}}};
  std::unique_ptr<router::Router> router;
  boost::asio::io_context io;
  World() {
    char tmpl[] = "/tmp/fffuzz.XXXXXX";
    dir = ::mkdtemp(tmpl);
    options.run_dir = dir + "/run";
    options.max_objects_per_session = 256;
    options.max_shm_mb_per_tenant = 256;
    spdlog::set_level(spdlog::level::off);
    router = std::make_unique<router::Router>(options, tenants, std::make_unique<router::SoftFabric>(router::fabric_config(options)));
  }
  ~World() { std::filesystem::remove_all(dir); }
};

World& world() {
  // Lives for the whole fuzzing run (libFuzzer ends it with exit()); its run
  // directory goes then.
  static World* w = [] {
    auto* made = new World();
    static std::string dir = made->dir;
    std::atexit([] { std::filesystem::remove_all(dir); });
    return made;
  }();
  return *w;
}

void drain(int fd) {
  char buf[65536];
  while (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  World& w = world();
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
  boost::asio::local::stream_protocol::socket sock(w.io, boost::asio::local::stream_protocol(), sv[0]);
  auto session = std::make_shared<router::Session>(*w.router, router::SessionRole::kTenant,
                                                   w.router->tenants().front(), std::move(sock), 1);
  {
    flatbuffers::FlatBufferBuilder fbb;
    fbb.Finish(proto::CreateRequest(fbb, 1, proto::RequestBody::Hello,
                                    proto::CreateHello(fbb, static_cast<uint32_t>(proto::ProtocolVersion::Current), fbb.CreateString("fuzz")).Union()));
    proto::Frame hello;
    hello.payload.assign(fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
    session->handle_frame(hello);
  }
  size_t at = 0;
  for (int n = 0; n < 32 && at + 2 <= size; ++n) {
    size_t len = data[at] | (size_t{data[at + 1]} << 8);
    at += 2;
    len = std::min(len, size - at);
    proto::Frame f;
    f.payload.assign(data + at, data + at + len);
    at += len;
    session->handle_frame(f);
    drain(sv[1]);
  }
  session->close("fuzz input done");
  ::close(sv[1]);
  return 0;
}
