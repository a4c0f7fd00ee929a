// Writes the control-plane fuzz seeds: one input per request type, each a
// well-formed request (2-byte length + flatbuffer) naming plausible handles,
// so the fuzzer starts inside every handler.
//   make_seeds DIR
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "proto/control_generated.h"

namespace {

using namespace ff::proto;
using Build = std::function<flatbuffers::Offset<void>(flatbuffers::FlatBufferBuilder&)>;

void append(std::vector<uint8_t>& out, RequestBody type, const Build& body) {
  flatbuffers::FlatBufferBuilder fbb;
  fbb.Finish(CreateRequest(fbb, 7, type, body(fbb)));
  out.push_back(static_cast<uint8_t>(fbb.GetSize()));
  out.push_back(static_cast<uint8_t>(fbb.GetSize() >> 8));
  out.insert(out.end(), fbb.GetBufferPointer(), fbb.GetBufferPointer() + fbb.GetSize());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string dir = argv[1];
  // A prefix that builds objects 1..4 (context, PD, CQ, QP) for later requests.
  std::vector<uint8_t> base;
  append(base, RequestBody::OpenDevice, [](auto& f) { return CreateOpenDevice(f, 0).Union(); });
  append(base, RequestBody::AllocPd, [](auto& f) { return CreateAllocPd(f, 1).Union(); });
  append(base, RequestBody::CreateCq, [](auto& f) { return CreateCreateCq(f, 1, 16, 0, 0).Union(); });
  QpCap cap(8, 8, 1, 1, 0);
  append(base, RequestBody::CreateQp,
         [&](auto& f) { return CreateCreateQp(f, 2, 3, 3, 0, 2 /*RC*/, false, &cap).Union(); });
  struct Tail {
    const char* name;
    RequestBody type;
    Build body;
  };
  const std::vector<Tail> tails = {
      {"query_device", RequestBody::QueryDevice, [](auto& f) { return CreateQueryDevice(f, 1).Union(); }},
      {"query_port", RequestBody::QueryPort, [](auto& f) { return CreateQueryPort(f, 1, 1).Union(); }},
      {"query_gid", RequestBody::QueryGid, [](auto& f) { return CreateQueryGid(f, 1, 1, 0).Union(); }},
      {"modify_qp", RequestBody::ModifyQp,
       [](auto& f) {
         QpAttr a{};
         return CreateModifyQp(f, 4, 1 | 16 | 32 | 8, &a).Union();
       }},
      {"query_qp", RequestBody::QueryQp, [](auto& f) { return CreateQueryQp(f, 4).Union(); }},
      {"reg_mr", RequestBody::RegMr, [](auto& f) { return CreateRegMr(f, 2, 0x100000, 4096, 0x100000, 7).Union(); }},
      {"create_srq", RequestBody::CreateSrq, [](auto& f) { return CreateCreateSrq(f, 2, 16, 1, 0).Union(); }},
      {"create_ah", RequestBody::CreateAh,
       [](auto& f) {
         AhAttr a{};
         return CreateCreateAh(f, 2, &a).Union();
       }},
      {"channel", RequestBody::CreateCompChannel, [](auto& f) { return CreateCreateCompChannel(f, 1).Union(); }},
      {"destroy_qp", RequestBody::DestroyQp, [](auto& f) { return CreateDestroyQp(f, 4).Union(); }},
      {"close_device", RequestBody::CloseDevice, [](auto& f) { return CreateCloseDevice(f, 1).Union(); }},
  };
  auto write = [&](const std::string& name, const std::vector<uint8_t>& input) {
    FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
    if (f == nullptr) return false;
    std::fwrite(input.data(), 1, input.size(), f);
    std::fclose(f);
    return true;
  };
  for (const Tail& tail : tails) {
    std::vector<uint8_t> input = base;
    append(input, tail.type, tail.body);
    if (!write(tail.name, input)) return 1;
  }
  // rdma_cm: a listener (6) and a client id (7) on channel 5 through the
  // whole handshake with the session's own address (the passive id is 8).
  std::vector<uint8_t> cm = base;
  CmAddr own(0x0a000001, 7000);
  CmConnParam param(1, 1, 0, 7, 7, 0, 1);
  append(cm, RequestBody::CmCreateChannel, [](auto& f) { return CreateCmCreateChannel(f).Union(); });
  append(cm, RequestBody::CmCreateId, [](auto& f) { return CreateCmCreateId(f, 5, 0x0106, 2).Union(); });
  append(cm, RequestBody::CmBindAddr, [&](auto& f) { return CreateCmBindAddr(f, 6, &own).Union(); });
  append(cm, RequestBody::CmListen, [](auto& f) { return CreateCmListen(f, 6, 4).Union(); });
  append(cm, RequestBody::CmCreateId, [](auto& f) { return CreateCmCreateId(f, 5, 0x0106, 2).Union(); });
  append(cm, RequestBody::CmResolveAddr, [&](auto& f) { return CreateCmResolveAddr(f, 7, false, nullptr, &own).Union(); });
  append(cm, RequestBody::CmResolveRoute, [](auto& f) { return CreateCmResolveRoute(f, 7).Union(); });
  append(cm, RequestBody::CmConnect, [&](auto& f) { return CreateCmConnect(f, 7, &param).Union(); });
  for (int i = 0; i < 3; ++i)
    append(cm, RequestBody::CmGetEvent, [](auto& f) { return CreateCmGetEvent(f, 5).Union(); });
  append(cm, RequestBody::CmAccept, [&](auto& f) { return CreateCmAccept(f, 8, &param).Union(); });
  append(cm, RequestBody::CmEstablish, [](auto& f) { return CreateCmEstablish(f, 7).Union(); });
  append(cm, RequestBody::CmDisconnect, [](auto& f) { return CreateCmDisconnect(f, 7).Union(); });
  append(cm, RequestBody::CmDestroyId, [](auto& f) { return CreateCmDestroyId(f, 6).Union(); });
  return write("rdma_cm", cm) ? 0 : 1;
}
