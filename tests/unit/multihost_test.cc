// The pure parts of multi-host: the router-to-router frame decoder, the
// static directory's parser and lookups, endpoints.
#include <gtest/gtest.h>
#include <infiniband/verbs.h>

#include <vector>

#include "router/directory/directory.h"
#include "router/directory/endpoint.h"
#include "router/fabric/soft/wire.h"

namespace {

using namespace ff::router;
namespace wire = ff::router::soft::wire;

std::vector<std::byte> frame(const wire::Header& h, size_t payload) {
  std::vector<std::byte> out(sizeof h + payload, std::byte{0x5a});
  std::memcpy(out.data(), &h, sizeof h);
  return out;
}

wire::Header request(uint8_t op, uint64_t total, uint64_t offset, uint32_t payload) {
  wire::Header h{};
  h.type = static_cast<uint8_t>(wire::Type::kRequest);
  h.opcode = op;
  h.qp_type = IBV_QPT_RC;
  h.total = total;
  h.offset = offset;
  h.payload = payload;
  return h;
}

wire::Decode decode(const std::vector<std::byte>& bytes, size_t& used, const char*& why) {
  wire::Header h;
  std::span<const std::byte> payload;
  return wire::decode(bytes, h, payload, used, why);
}

TEST(Wire, WholeFramesDecodeAndPartialOnesWait) {
  auto bytes = frame(request(IBV_WR_SEND, 100, 0, 100), 100);
  size_t used = 0;
  const char* why = nullptr;
  EXPECT_EQ(decode(bytes, used, why), wire::Decode::kFrame);
  EXPECT_EQ(used, sizeof(wire::Header) + 100);
  bytes.pop_back();
  EXPECT_EQ(decode(bytes, used, why), wire::Decode::kNeedMore);
  bytes.resize(10);
  EXPECT_EQ(decode(bytes, used, why), wire::Decode::kNeedMore);
}

TEST(Wire, FramesWhoseFieldsDoNotAddUpAreRefused) {
  size_t used;
  const char* why = nullptr;
  struct Case {
    wire::Header h;
    size_t payload;
  };
  wire::Header unknown_type{};
  unknown_type.type = 99;
  wire::Header huge = request(IBV_WR_SEND, 1ull << 40, 0, 16);
  wire::Header past_end = request(IBV_WR_RDMA_WRITE, 100, 90, 20);
  wire::Header too_long = request(IBV_WR_SEND, 1 << 20, 0, wire::kMaxChunk + 1);
  wire::Header read_with_data = request(IBV_WR_RDMA_READ, 100, 0, 10);
  wire::Header bad_atomic = request(IBV_WR_ATOMIC_FETCH_AND_ADD, 16, 0, 0);
  wire::Header bad_opcode = request(77, 10, 0, 10);
  wire::Header ack_with_data{};
  ack_with_data.type = static_cast<uint8_t>(wire::Type::kAck);
  ack_with_data.payload = 4;
  wire::Header short_read_response{};
  short_read_response.type = static_cast<uint8_t>(wire::Type::kReadResponse);
  short_read_response.total = 100000;
  short_read_response.payload = 10;
  wire::Header bad_nak{};
  bad_nak.type = static_cast<uint8_t>(wire::Type::kNak);
  bad_nak.opcode = 9;
  for (const auto& c : std::vector<Case>{{unknown_type, 0}, {huge, 16}, {past_end, 20}, {too_long, 0},
                                          {read_with_data, 10}, {bad_atomic, 0},
                                          {ack_with_data, 4}, {short_read_response, 10}, {bad_nak, 0}}) {
    why = nullptr;
    EXPECT_EQ(decode(frame(c.h, c.payload), used, why), wire::Decode::kBad);
    EXPECT_NE(why, nullptr);
  }
  // An opcode this router does not know (a newer router's) is well framed:
  // the request fails (link_test), the link stays.
  EXPECT_EQ(decode(frame(bad_opcode, 10), used, why), wire::Decode::kFrame);
}

TEST(Wire, HelloNamesTheProblem) {
  auto h = wire::make_hello("alpha", 7);
  EXPECT_EQ(wire::check_hello(h), "");
  auto old = h;
  old.version = 0;
  EXPECT_NE(wire::check_hello(old).find("same ffrouter release"), std::string::npos);
  auto garbage = h;
  garbage.magic = 1;
  EXPECT_NE(wire::check_hello(garbage), "");
  auto unnamed = h;
  std::memset(unnamed.name, 'x', sizeof unnamed.name);
  EXPECT_NE(wire::check_hello(unnamed), "");
  EXPECT_EQ(wire::check_hello(wire::make_hello("alpha", 7, 1, 2)), "");
  EXPECT_NE(wire::check_hello(wire::make_hello("alpha", 7, 2, 2)).find("poller"), std::string::npos);
  EXPECT_NE(wire::check_hello(wire::make_hello("alpha", 7, 0, 0)).find("poller"), std::string::npos);
}

TEST(Wire, ReadChunks) {
  EXPECT_EQ(wire::read_chunk(0, 0), 0u);
  EXPECT_EQ(wire::read_chunk(100, 0), 100u);
  EXPECT_EQ(wire::read_chunk(3 * wire::kMaxChunk + 5, wire::kMaxChunk), wire::kMaxChunk);
  EXPECT_EQ(wire::read_chunk(3 * wire::kMaxChunk + 5, 3 * wire::kMaxChunk), 5u);
}

TEST(Endpoint, Parses) {
  auto e = parse_endpoint("10.99.0.1:7470");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->ip, 0x0a630001u);
  EXPECT_EQ(e->port, 7470);
  for (const char* bad : {"10.99.0.1", "10.99.0.1:", "10.99.0.1:0", "10.99.0.1:70000", "host:80", ":80", "1.2.3.4:8x"})
    EXPECT_FALSE(parse_endpoint(bad)) << bad;
}

const char* kDirectory = R"(routers:
  - name: alpha
    address: 10.99.0.1:7470
    tenants:
      blue: [10.50.1.0/24, 10.50.9.7]
  - name: beta
    address: 10.99.0.2:7470
    tenants:
      blue: [10.50.2.0/24, 10.50.1.128/25]
      red: [10.50.1.0/24]
)";

class FileDirectory : public Directory {
 public:
  FileDirectory(const std::string& self, DirectoryView v) : Directory(self) {
    replace_view(std::move(v.routers), std::move(v.entries));
  }
  std::string describe() const override { return "test"; }
};

TEST(StaticDirectory, LooksUpTheMostSpecificEntryPerTenant) {
  FileDirectory d("alpha", parse_static_directory(kDirectory, "dir.yaml"));
  EXPECT_EQ(d.router_for("blue", 0x0a320105), "alpha");   // 10.50.1.5
  EXPECT_EQ(d.router_for("blue", 0x0a320185), "beta");    // 10.50.1.133: the /25 wins
  EXPECT_EQ(d.router_for("blue", 0x0a320907), "alpha");   // 10.50.9.7/32
  EXPECT_EQ(d.router_for("red", 0x0a320105), "beta");
  EXPECT_FALSE(d.router_for("red", 0x0a320205));          // red has no 10.50.2.0/24
  EXPECT_FALSE(d.router_for("green", 0x0a320105));
  EXPECT_EQ(d.address_of("beta"), "10.99.0.2:7470");
  EXPECT_EQ(d.routers().size(), 2u);
}

TEST(StaticDirectory, OwnClientsComeFirstAndAreCounted) {
  FileDirectory d("alpha", parse_static_directory(kDirectory, "dir.yaml"));
  d.publish("blue", 0x0a320185);
  d.publish("blue", 0x0a320185);
  EXPECT_EQ(d.router_for("blue", 0x0a320185), "alpha");
  d.withdraw("blue", 0x0a320185);
  EXPECT_EQ(d.router_for("blue", 0x0a320185), "alpha");  // one process of the container is still here
  d.withdraw("blue", 0x0a320185);
  EXPECT_EQ(d.router_for("blue", 0x0a320185), "beta");
}

TEST(StaticDirectory, MistakesNameTheLine) {
  auto error_of = [](const std::string& text) -> std::string {
    try {
      parse_static_directory(text, "dir.yaml");
    } catch (const DirectoryError& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of("routers: 3").find("'routers' list"), std::string::npos);
  EXPECT_NE(error_of("routers:\n  - name: a\n").find("dir.yaml:2: a router needs a name and an address"),
            std::string::npos);
  EXPECT_NE(error_of("routers:\n  - name: a\n    address: nowhere\n").find("dir.yaml:3"), std::string::npos);
  EXPECT_NE(error_of("routers:\n  - name: a\n    address: 1.2.3.4:5\n    colour: red\n").find("unknown router key"),
            std::string::npos);
  EXPECT_NE(error_of("routers:\n  - {name: a, address: '1.2.3.4:5'}\n  - {name: a, address: '1.2.3.5:5'}\n")
                .find("appears twice"),
            std::string::npos);
  EXPECT_NE(error_of("routers:\n  - name: a\n    address: 1.2.3.4:5\n    tenants:\n      blue: [10.1.1.1/24]\n")
                .find("dir.yaml:5: '10.1.1.1/24' is not an IPv4 address or CIDR"),
            std::string::npos);
  EXPECT_NE(error_of("routers:\n  - {name: a, address: '1.2.3.4:5', tenants: {b: [10.0.0.0/8]}}\n"
                     "  - {name: c, address: '1.2.3.5:5', tenants: {b: [10.0.0.0/8]}}\n")
                .find("listed for two routers"),
            std::string::npos);
  EXPECT_NE(error_of("routers: [").find("not valid YAML"), std::string::npos);
}

}  // namespace
