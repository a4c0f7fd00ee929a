// Connection setup: rdma_cm through the router against plain TCP, between
// two ends in one process on the same address (FF_CM_ADDR, the container's
// virtual IP). One iteration of RdmaCmConnect is what an app pays for a new
// RC connection: an id, address and route resolution, a QP, connect,
// accept, ESTABLISHED on both sides (and, outside the timing, the
// disconnect). TcpConnect is connect + accept on a listening socket.
//
//   bench/through_router.sh cm_connect_bench
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>

namespace {

sockaddr_in address(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  const char* ip = std::getenv("FF_CM_ADDR");
  inet_pton(AF_INET, ip != nullptr ? ip : "127.0.0.1", &a.sin_addr);
  return a;
}

rdma_cm_event* next(rdma_event_channel* ch, rdma_cm_event_type want) {
  rdma_cm_event* e = nullptr;
  if (rdma_get_cm_event(ch, &e) != 0) return nullptr;
  if (e->event != want || e->status != 0) {
    rdma_ack_cm_event(e);
    return nullptr;
  }
  return e;
}

bool step(rdma_event_channel* ch, rdma_cm_event_type want) {
  rdma_cm_event* e = next(ch, want);
  if (e != nullptr) rdma_ack_cm_event(e);
  return e != nullptr;
}

void BM_RdmaCmConnect(benchmark::State& state) {
  if (std::getenv("FF_CM_ADDR") == nullptr) return state.SkipWithError("set FF_CM_ADDR (bench/through_router.sh cm_connect_bench)");
  rdma_event_channel* server_ch = rdma_create_event_channel();
  rdma_event_channel* client_ch = rdma_create_event_channel();
  rdma_cm_id* listener = nullptr;
  sockaddr_in any = address(0);
  if (server_ch == nullptr || client_ch == nullptr || rdma_create_id(server_ch, &listener, nullptr, RDMA_PS_TCP) != 0 ||
      rdma_bind_addr(listener, reinterpret_cast<sockaddr*>(&any)) != 0 || rdma_listen(listener, 16) != 0)
    return state.SkipWithError("no rdma_cm listener");
  sockaddr_in dst = address(ntohs(rdma_get_src_port(listener)));
  ibv_qp_init_attr attr{};
  attr.qp_type = IBV_QPT_RC;
  attr.cap.max_send_wr = attr.cap.max_recv_wr = 4;
  attr.cap.max_send_sge = attr.cap.max_recv_sge = 1;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    rdma_cm_id* client = nullptr;
    bool ok = rdma_create_id(client_ch, &client, nullptr, RDMA_PS_TCP) == 0 &&
              rdma_resolve_addr(client, nullptr, reinterpret_cast<sockaddr*>(&dst), 2000) == 0 &&
              step(client_ch, RDMA_CM_EVENT_ADDR_RESOLVED) && rdma_resolve_route(client, 2000) == 0 &&
              step(client_ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
    ibv_qp_init_attr a = attr;
    ok = ok && rdma_create_qp(client, nullptr, &a) == 0;
    rdma_conn_param param{};
    param.retry_count = param.rnr_retry_count = 7;
    ok = ok && rdma_connect(client, &param) == 0;
    rdma_cm_event* req = ok ? next(server_ch, RDMA_CM_EVENT_CONNECT_REQUEST) : nullptr;
    rdma_cm_id* server = req != nullptr ? req->id : nullptr;
    if (req != nullptr) rdma_ack_cm_event(req);
    a = attr;
    ok = server != nullptr && rdma_create_qp(server, nullptr, &a) == 0 && rdma_accept(server, &param) == 0 &&
         step(client_ch, RDMA_CM_EVENT_ESTABLISHED) && step(server_ch, RDMA_CM_EVENT_ESTABLISHED);
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (ok) {
      rdma_disconnect(client);
      step(server_ch, RDMA_CM_EVENT_DISCONNECTED);
      rdma_disconnect(server);
      step(client_ch, RDMA_CM_EVENT_DISCONNECTED);
    }
    for (rdma_cm_id* id : {client, server}) {
      if (id == nullptr) continue;
      if (id->qp != nullptr) rdma_destroy_qp(id);
      rdma_destroy_id(id);
    }
    if (!ok) return state.SkipWithError("a connection failed");
  }
  rdma_destroy_id(listener);
  rdma_destroy_event_channel(client_ch);
  rdma_destroy_event_channel(server_ch);
}

void BM_TcpConnect(benchmark::State& state) {
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = address(0);
  socklen_t len = sizeof a;
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd, 64) != 0 ||
      ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return state.SkipWithError("no TCP listener");
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    int s = ok ? ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC) : -1;
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    // Closed with a reset: thousands of TIME_WAIT ports would slow connect()
    // itself (its search for a free local port), which is not what is measured.
    linger reset{1, 0};
    ::setsockopt(c, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    ::close(c);
    if (s >= 0) ::close(s);
    if (s < 0) return state.SkipWithError("a TCP connection failed");
  }
  ::close(lfd);
}

BENCHMARK(BM_RdmaCmConnect)->Unit(benchmark::kMicrosecond)->MinTime(1.0)->UseManualTime();
BENCHMARK(BM_TcpConnect)->Unit(benchmark::kMicrosecond)->MinTime(1.0)->UseManualTime();

}  // namespace

BENCHMARK_MAIN();
