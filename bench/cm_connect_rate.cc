// Connection setup between two processes (two containers, on one host or
// two): N rdma_cm connections one after the other, each timed from
// rdma_create_id to ESTABLISHED (address and route resolution, a QP,
// connect, the server's accept), then N TCP connects to the same server,
// each timed over connect(). Prints the median and 99th percentile of both.
//   cm_connect_rate -s IP PORT N      (server: rdma_cm on PORT, TCP on PORT+1)
//   cm_connect_rate IP PORT N         (client)
// bench/cm_connect_hosts.sh runs it through routers (docs/PERFORMANCE.md).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <rdma/rdma_cma.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

sockaddr_in address(const char* ip, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) {
    std::fprintf(stderr, "cm_connect_rate: %s is not an IPv4 address\n", ip);
    std::exit(2);
  }
  return a;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "cm_connect_rate: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

// The next event on `ch`, which must be `want` with status 0; acked.
rdma_cm_id* expect(rdma_event_channel* ch, rdma_cm_event_type want) {
  rdma_cm_event* e = nullptr;
  if (rdma_get_cm_event(ch, &e) != 0) die("rdma_get_cm_event");
  if (e->event != want || e->status != 0) {
    std::fprintf(stderr, "cm_connect_rate: got %s (status %d), wanted %s\n", rdma_event_str(e->event), e->status,
                 rdma_event_str(want));
    std::exit(1);
  }
  rdma_cm_id* id = e->id;
  rdma_ack_cm_event(e);
  return id;
}

ibv_qp_init_attr qp_attr() {
  ibv_qp_init_attr a{};
  a.qp_type = IBV_QPT_RC;
  a.cap.max_send_wr = a.cap.max_recv_wr = 4;
  a.cap.max_send_sge = a.cap.max_recv_sge = 1;
  return a;
}

rdma_conn_param conn_param() {
  rdma_conn_param p{};
  p.responder_resources = p.initiator_depth = 1;
  p.retry_count = p.rnr_retry_count = 7;
  return p;
}

void serve(const char* ip, int port, int n) {
  rdma_event_channel* ch = rdma_create_event_channel();
  rdma_cm_id* listener = nullptr;
  if (ch == nullptr || rdma_create_id(ch, &listener, nullptr, RDMA_PS_TCP) != 0) die("rdma_create_id");
  sockaddr_in cm = address(ip, port);
  if (rdma_bind_addr(listener, reinterpret_cast<sockaddr*>(&cm)) != 0 || rdma_listen(listener, 16) != 0)
    die("rdma_listen");
  int tcp = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in t = address(ip, port + 1);
  if (bind(tcp, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0 || listen(tcp, 64) != 0) die("TCP listen");
  std::printf("listening\n");
  std::fflush(stdout);
  for (int i = 0; i < n; ++i) {
    rdma_cm_id* id = expect(ch, RDMA_CM_EVENT_CONNECT_REQUEST);
    ibv_qp_init_attr a = qp_attr();
    rdma_conn_param p = conn_param();
    if (rdma_create_qp(id, nullptr, &a) != 0 || rdma_accept(id, &p) != 0) die("rdma_accept");
    expect(ch, RDMA_CM_EVENT_ESTABLISHED);
    expect(ch, RDMA_CM_EVENT_DISCONNECTED);
    rdma_disconnect(id);
    rdma_destroy_qp(id);
    rdma_destroy_id(id);
  }
  for (int i = 0; i < n; ++i) {
    int c = accept(tcp, nullptr, nullptr);
    if (c < 0) die("accept");
    char byte;
    (void)!read(c, &byte, 1);  // until the client closes
    close(c);
  }
  close(tcp);
  rdma_destroy_id(listener);
  rdma_destroy_event_channel(ch);
}

void report(const char* what, std::vector<double>& us) {
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double v : us) sum += v;
  std::printf("%-8s n=%zu median=%.0f us p99=%.0f us rate=%.0f/s\n", what, us.size(), us[us.size() / 2],
              us[us.size() * 99 / 100], 1e6 * static_cast<double>(us.size()) / sum);
}

void dial(const char* ip, int port, int n) {
  using clock = std::chrono::steady_clock;
  rdma_event_channel* ch = rdma_create_event_channel();
  if (ch == nullptr) die("rdma_create_event_channel");
  sockaddr_in cm = address(ip, port);
  std::vector<double> cm_us, tcp_us;
  for (int i = 0; i < n; ++i) {
    auto t0 = clock::now();
    rdma_cm_id* id = nullptr;
    if (rdma_create_id(ch, &id, nullptr, RDMA_PS_TCP) != 0) die("rdma_create_id");
    if (rdma_resolve_addr(id, nullptr, reinterpret_cast<sockaddr*>(&cm), 2000) != 0) die("rdma_resolve_addr");
    expect(ch, RDMA_CM_EVENT_ADDR_RESOLVED);
    if (rdma_resolve_route(id, 2000) != 0) die("rdma_resolve_route");
    expect(ch, RDMA_CM_EVENT_ROUTE_RESOLVED);
    ibv_qp_init_attr a = qp_attr();
    rdma_conn_param p = conn_param();
    if (rdma_create_qp(id, nullptr, &a) != 0 || rdma_connect(id, &p) != 0) die("rdma_connect");
    expect(ch, RDMA_CM_EVENT_ESTABLISHED);
    cm_us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
    rdma_disconnect(id);
    expect(ch, RDMA_CM_EVENT_DISCONNECTED);
    rdma_destroy_qp(id);
    rdma_destroy_id(id);
  }
  sockaddr_in t = address(ip, port + 1);
  for (int i = 0; i < n; ++i) {
    auto t0 = clock::now();
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0) die("TCP connect");
    tcp_us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
    close(s);
  }
  report("rdma_cm", cm_us);
  report("tcp", tcp_us);
  rdma_destroy_event_channel(ch);
}

}  // namespace

int main(int argc, char** argv) {
  bool server = argc > 1 && std::strcmp(argv[1], "-s") == 0;
  int a = server ? 2 : 1;
  if (argc != a + 3) {
    std::fprintf(stderr, "usage: cm_connect_rate [-s] IP PORT N\n");
    return 2;
  }
  int port = std::atoi(argv[a + 1]), n = std::atoi(argv[a + 2]);
  if (n < 1) return 2;
  if (server)
    serve(argv[a], port, n);
  else
    dial(argv[a], port, n);
  return 0;
}
