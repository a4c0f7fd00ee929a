// rdma_cm conformance: written against librdmacm only, both ends in one
// process on the address FF_CM_ADDR (the container's virtual IP through
// libffverbs and the router: tests/e2e/test_rdma_cm.sh; or a RoCE device's
// address, where it runs unchanged on librdmacm and the kernel's rdma_cm).
// What it checks is what librdmacm shows on RoCE: event order, the private
// data lengths events report, reject statuses, disconnect exchange.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <rdma/rdma_verbs.h>
#include <fcntl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

constexpr int kTimeoutMs = 5000;

sockaddr_in address(uint16_t port, const char* ip = nullptr) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  const char* addr = ip != nullptr ? ip : std::getenv("FF_CM_ADDR");
  if (addr == nullptr || inet_pton(AF_INET, addr, &a.sin_addr) != 1) ADD_FAILURE() << "set FF_CM_ADDR to this host's RDMA address";
  return a;
}
sockaddr* sa(sockaddr_in& a) { return reinterpret_cast<sockaddr*>(&a); }

struct Cm : ::testing::Test {
  rdma_event_channel* server_ch = nullptr;
  rdma_event_channel* client_ch = nullptr;
  rdma_cm_id* listener = nullptr;
  uint16_t port = 0;

  void SetUp() override {
    server_ch = rdma_create_event_channel();
    client_ch = rdma_create_event_channel();
    ASSERT_NE(server_ch, nullptr) << std::strerror(errno);
    ASSERT_NE(client_ch, nullptr) << std::strerror(errno);
    ASSERT_EQ(rdma_create_id(server_ch, &listener, nullptr, RDMA_PS_TCP), 0);
    sockaddr_in a = address(0);
    ASSERT_EQ(rdma_bind_addr(listener, sa(a)), 0) << std::strerror(errno);
    ASSERT_EQ(rdma_listen(listener, 8), 0) << std::strerror(errno);
    port = ntohs(rdma_get_src_port(listener));
    ASSERT_NE(port, 0);
  }
  void TearDown() override {
    if (listener != nullptr) {
      EXPECT_EQ(rdma_destroy_id(listener), 0);
    }
    rdma_destroy_event_channel(client_ch);
    rdma_destroy_event_channel(server_ch);
  }

  // The next event on `ch`, which must be `type` (status checked by the caller).
  static rdma_cm_event* expect(rdma_event_channel* ch, rdma_cm_event_type type) {
    pollfd p{ch->fd, POLLIN, 0};
    if (poll(&p, 1, kTimeoutMs) != 1) {
      ADD_FAILURE() << "no event within " << kTimeoutMs << " ms, expected " << rdma_event_str(type);
      return nullptr;
    }
    rdma_cm_event* e = nullptr;
    if (rdma_get_cm_event(ch, &e) != 0) {
      ADD_FAILURE() << "rdma_get_cm_event: " << std::strerror(errno);
      return nullptr;
    }
    EXPECT_EQ(e->event, type) << rdma_event_str(e->event) << " status " << e->status;
    return e;
  }
  static void ack(rdma_cm_event* e) {
    if (e != nullptr) rdma_ack_cm_event(e);
  }

  // A client id resolved to the listener (or to `port_to`), with a QP.
  rdma_cm_id* resolved_client(uint16_t port_to = 0) {
    rdma_cm_id* id = nullptr;
    EXPECT_EQ(rdma_create_id(client_ch, &id, nullptr, RDMA_PS_TCP), 0);
    sockaddr_in dst = address(port_to != 0 ? port_to : port);
    EXPECT_EQ(rdma_resolve_addr(id, nullptr, sa(dst), kTimeoutMs), 0) << std::strerror(errno);
    ack(expect(client_ch, RDMA_CM_EVENT_ADDR_RESOLVED));
    EXPECT_NE(id->verbs, nullptr);
    EXPECT_EQ(rdma_resolve_route(id, kTimeoutMs), 0);
    ack(expect(client_ch, RDMA_CM_EVENT_ROUTE_RESOLVED));
    EXPECT_EQ(id->route.num_paths, 1);
    ibv_qp_init_attr attr = qp_attr();
    EXPECT_EQ(rdma_create_qp(id, nullptr, &attr), 0) << std::strerror(errno);
    return id;
  }
  // A conn param carrying `data` (a string).
  static rdma_conn_param with_data(const char* data, uint8_t responder_resources, uint8_t initiator_depth) {
    rdma_conn_param p{};
    p.private_data = data;
    p.private_data_len = static_cast<uint8_t>(std::strlen(data) + 1);
    p.responder_resources = responder_resources;
    p.initiator_depth = initiator_depth;
    p.retry_count = 7;
    p.rnr_retry_count = 7;
    return p;
  }
  static ibv_qp_init_attr qp_attr() {
    ibv_qp_init_attr attr{};
    attr.qp_type = IBV_QPT_RC;
    attr.cap.max_send_wr = attr.cap.max_recv_wr = 4;
    attr.cap.max_send_sge = attr.cap.max_recv_sge = 1;
    return attr;
  }
  static void destroy(rdma_cm_id* id) {
    if (id->qp != nullptr) rdma_destroy_qp(id);
    EXPECT_EQ(rdma_destroy_id(id), 0);
  }

  struct Connection {
    rdma_cm_id* client = nullptr;
    rdma_cm_id* server = nullptr;
  };
  // Both disconnect (each gets DISCONNECTED once) and go.
  void disconnect_both(Connection& c) {
    EXPECT_EQ(rdma_disconnect(c.client), 0);
    ack(expect(server_ch, RDMA_CM_EVENT_DISCONNECTED));
    EXPECT_EQ(rdma_disconnect(c.server), 0);
    ack(expect(client_ch, RDMA_CM_EVENT_DISCONNECTED));
    destroy(c.client);
    destroy(c.server);
  }
  // Client and server through the handshake, with private data both ways.
  Connection connect() {
    Connection c;
    c.client = resolved_client();
    const char req[] = "hello from the client";
    rdma_conn_param param = with_data(req, 1, 2);
    EXPECT_EQ(rdma_connect(c.client, &param), 0) << std::strerror(errno);
    rdma_cm_event* e = expect(server_ch, RDMA_CM_EVENT_CONNECT_REQUEST);
    if (e == nullptr) return c;
    EXPECT_EQ(e->listen_id, listener);
    EXPECT_EQ(e->param.conn.private_data_len, 56) << "the REQ's whole private data field";
    EXPECT_STREQ(static_cast<const char*>(e->param.conn.private_data), req);
    EXPECT_EQ(e->param.conn.responder_resources, 2) << "the requester's initiator depth";
    EXPECT_EQ(e->param.conn.initiator_depth, 1) << "the requester's responder resources";
    EXPECT_EQ(e->param.conn.qp_num, c.client->qp->qp_num);
    c.server = e->id;
    EXPECT_NE(c.server->verbs, nullptr);
    ack(e);
    ibv_qp_init_attr attr = qp_attr();
    EXPECT_EQ(rdma_create_qp(c.server, nullptr, &attr), 0) << std::strerror(errno);
    const char rep[] = "welcome";
    rdma_conn_param answer = with_data(rep, 1, 1);
    EXPECT_EQ(rdma_accept(c.server, &answer), 0) << std::strerror(errno);
    e = expect(client_ch, RDMA_CM_EVENT_ESTABLISHED);
    if (e != nullptr) {
      EXPECT_EQ(e->status, 0);
      EXPECT_EQ(e->param.conn.private_data_len, 196) << "the REP's whole private data field";
      EXPECT_STREQ(static_cast<const char*>(e->param.conn.private_data), rep);
      EXPECT_EQ(e->param.conn.qp_num, c.server->qp->qp_num);
    }
    ack(e);
    e = expect(server_ch, RDMA_CM_EVENT_ESTABLISHED);
    if (e != nullptr) {
      EXPECT_EQ(e->param.conn.private_data_len, 0);
    }
    ack(e);
    return c;
  }
};

TEST_F(Cm, HandshakeCarriesPrivateDataAndConnectsTheQps) {
  Connection c = connect();
  ASSERT_NE(c.server, nullptr);
  ibv_qp_attr attr{};
  ibv_qp_init_attr init{};
  ASSERT_EQ(ibv_query_qp(c.client->qp, &attr, IBV_QP_STATE | IBV_QP_DEST_QPN | IBV_QP_ACCESS_FLAGS, &init), 0);
  EXPECT_EQ(attr.qp_state, IBV_QPS_RTS);
  EXPECT_EQ(attr.dest_qp_num, c.server->qp->qp_num);
  EXPECT_NE(attr.qp_access_flags & IBV_ACCESS_REMOTE_WRITE, 0u) << "rdma_cm grants remote writes";
  // A SEND from the client lands in the server's receive.
  char in[32] = {}, out[32] = "through rdma_cm";
  ibv_mr* rmr = rdma_reg_msgs(c.server, in, sizeof in);
  ibv_mr* smr = rdma_reg_msgs(c.client, out, sizeof out);
  ASSERT_NE(rmr, nullptr);
  ASSERT_NE(smr, nullptr);
  ASSERT_EQ(rdma_post_recv(c.server, nullptr, in, sizeof in, rmr), 0);
  ASSERT_EQ(rdma_post_send(c.client, nullptr, out, sizeof out, smr, IBV_SEND_SIGNALED), 0);
  ibv_wc wc{};
  ASSERT_EQ(rdma_get_send_comp(c.client, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_EQ(rdma_get_recv_comp(c.server, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_STREQ(in, out);
  rdma_dereg_mr(rmr);
  rdma_dereg_mr(smr);
  disconnect_both(c);
}

TEST_F(Cm, RejectWithAndWithoutPrivateData) {
  for (bool with_data : {false, true}) {
    rdma_cm_id* client = resolved_client();
    rdma_conn_param param{};
    param.retry_count = param.rnr_retry_count = 7;
    ASSERT_EQ(rdma_connect(client, &param), 0);
    rdma_cm_event* e = expect(server_ch, RDMA_CM_EVENT_CONNECT_REQUEST);
    ASSERT_NE(e, nullptr);
    rdma_cm_id* server = e->id;
    ack(e);
    const char why[] = "go away";
    ASSERT_EQ(rdma_reject(server, with_data ? why : nullptr, with_data ? sizeof why : 0), 0);
    e = expect(client_ch, RDMA_CM_EVENT_REJECTED);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->status, 28) << "IB_CM_REJ_CONSUMER_DEFINED";
    EXPECT_EQ(e->param.conn.private_data_len, 148);
    if (with_data) {
      EXPECT_STREQ(static_cast<const char*>(e->param.conn.private_data), why);
    }
    ack(e);
    destroy(client);
    destroy(server);
  }
}

TEST_F(Cm, ConnectingWhereNobodyListensIsRejected) {
  rdma_cm_id* other = nullptr;  // a port bound but not listening
  ASSERT_EQ(rdma_create_id(server_ch, &other, nullptr, RDMA_PS_TCP), 0);
  sockaddr_in a = address(0);
  ASSERT_EQ(rdma_bind_addr(other, sa(a)), 0);
  rdma_cm_id* client = resolved_client(ntohs(rdma_get_src_port(other)));
  rdma_conn_param param{};
  ASSERT_EQ(rdma_connect(client, &param), 0);
  rdma_cm_event* e = expect(client_ch, RDMA_CM_EVENT_REJECTED);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->status, 8) << "IB_CM_REJ_INVALID_SERVICE_ID";
  ack(e);
  destroy(client);
  EXPECT_EQ(rdma_destroy_id(other), 0);
}

// Polls `cq` until `n` completions arrived or the timeout passed; returns them.
std::vector<ibv_wc> completions(ibv_cq* cq, size_t n) {
  std::vector<ibv_wc> got;
  for (int waited = 0; got.size() < n && waited < kTimeoutMs; ++waited) {
    ibv_wc wc[8];
    int k = ibv_poll_cq(cq, 8, wc);
    if (k < 0) break;
    got.insert(got.end(), wc, wc + k);
    if (k == 0) usleep(1000);
  }
  return got;
}

// Disconnecting with sends outstanding (two received, two waiting for
// receives that never come): librdmacm moves the QP to ERR, so every send
// completes, received or flushed, and the peer gets DISCONNECTED.
TEST_F(Cm, DisconnectWithTrafficInFlightFlushesAndEndsBothSides) {
  Connection c = connect();
  ASSERT_NE(c.server, nullptr);
  static char in[2][65536], out[4][65536];
  ibv_mr* rmr = rdma_reg_msgs(c.server, in, sizeof in);
  ibv_mr* smr = rdma_reg_msgs(c.client, out, sizeof out);
  ASSERT_NE(rmr, nullptr);
  ASSERT_NE(smr, nullptr);
  for (auto& b : in) ASSERT_EQ(rdma_post_recv(c.server, nullptr, b, sizeof b, rmr), 0);
  for (auto& b : out) ASSERT_EQ(rdma_post_send(c.client, nullptr, b, sizeof b, smr, IBV_SEND_SIGNALED), 0);
  EXPECT_EQ(rdma_disconnect(c.client), 0);
  std::vector<ibv_wc> sent = completions(c.client->send_cq, 4);
  ASSERT_EQ(sent.size(), 4u) << "every send completes";
  size_t flushed = 0;
  for (const ibv_wc& wc : sent) {
    EXPECT_TRUE(wc.status == IBV_WC_SUCCESS || wc.status == IBV_WC_WR_FLUSH_ERR) << ibv_wc_status_str(wc.status);
    flushed += wc.status == IBV_WC_WR_FLUSH_ERR ? 1 : 0;
  }
  EXPECT_GE(flushed, 2u) << "two sends had no receive to go to";
  ack(expect(server_ch, RDMA_CM_EVENT_DISCONNECTED));
  EXPECT_EQ(rdma_disconnect(c.server), 0);
  EXPECT_EQ(completions(c.server->recv_cq, 2).size(), 2u) << "the receives completed or flushed";
  ack(expect(client_ch, RDMA_CM_EVENT_DISCONNECTED));
  rdma_dereg_mr(rmr);
  rdma_dereg_mr(smr);
  destroy(c.client);
  destroy(c.server);
}

// A listener destroyed with a request its app never read (the server died
// mid-handshake): the request's id goes with it, and the requester is
// REJECTED (28: the consumer's reject, as a destroyed kernel id sends).
TEST_F(Cm, AListenerGoneMidHandshakeRejectsItsRequester) {
  rdma_cm_id* client = resolved_client();
  rdma_conn_param param{};
  param.retry_count = param.rnr_retry_count = 7;
  ASSERT_EQ(rdma_connect(client, &param), 0);
  pollfd p{server_ch->fd, POLLIN, 0};
  ASSERT_EQ(poll(&p, 1, kTimeoutMs), 1) << "the request arrived (unread)";
  ASSERT_EQ(rdma_destroy_id(listener), 0);
  listener = nullptr;
  rdma_cm_event* e = expect(client_ch, RDMA_CM_EVENT_REJECTED);
  if (e != nullptr) {
    EXPECT_EQ(e->status, 28);
  }
  ack(e);
  destroy(client);
}

// After the DREQ and DREP, each side whose id is still there leaves
// timewait (TIMEWAIT_EXIT, about 2 s later on RoCE); an id destroyed first
// hears nothing more.
TEST_F(Cm, BothSidesLeaveTimewaitAfterTheDisconnect) {
  Connection c = connect();
  ASSERT_NE(c.server, nullptr);
  EXPECT_EQ(rdma_disconnect(c.client), 0);
  ack(expect(server_ch, RDMA_CM_EVENT_DISCONNECTED));
  EXPECT_EQ(rdma_disconnect(c.server), 0);
  ack(expect(client_ch, RDMA_CM_EVENT_DISCONNECTED));
  ack(expect(client_ch, RDMA_CM_EVENT_TIMEWAIT_EXIT));
  ack(expect(server_ch, RDMA_CM_EVENT_TIMEWAIT_EXIT));
  destroy(c.client);
  destroy(c.server);
}

TEST_F(Cm, APeerThatGoesAwayIsDisconnected) {
  Connection c = connect();
  ASSERT_NE(c.server, nullptr);
  destroy(c.server);  // no DREQ answered: its peer just learns it is gone
  ack(expect(client_ch, RDMA_CM_EVENT_DISCONNECTED));
  EXPECT_EQ(rdma_disconnect(c.client), 0);
  destroy(c.client);
}

// An address in the subnet that nobody answers for: ADDR_ERROR with
// -ETIMEDOUT once the app's timeout has passed, not a hang.
TEST_F(Cm, AnAddressNobodyHasIsAnAddressErrorInBoundedTime) {
  sockaddr_in nobody = address(0);
  nobody.sin_addr.s_addr = htonl((ntohl(nobody.sin_addr.s_addr) & 0xffffff00u) | 0xfeu);  // .254 of its /24
  nobody.sin_port = htons(port);
  rdma_cm_id* id = nullptr;
  ASSERT_EQ(rdma_create_id(client_ch, &id, nullptr, RDMA_PS_TCP), 0);
  ASSERT_EQ(rdma_resolve_addr(id, nullptr, sa(nobody), 500), 0) << std::strerror(errno);
  rdma_cm_event* e = expect(client_ch, RDMA_CM_EVENT_ADDR_ERROR);
  if (e != nullptr) {
    EXPECT_EQ(e->status, -ETIMEDOUT);
  }
  ack(e);
  EXPECT_EQ(rdma_destroy_id(id), 0);
}

TEST_F(Cm, BindRules) {
  rdma_cm_id* a = nullptr;
  rdma_cm_id* b = nullptr;
  ASSERT_EQ(rdma_create_id(server_ch, &a, nullptr, RDMA_PS_TCP), 0);
  ASSERT_EQ(rdma_create_id(server_ch, &b, nullptr, RDMA_PS_TCP), 0);
  sockaddr_in taken = address(port);
  errno = 0;
  EXPECT_EQ(rdma_bind_addr(a, sa(taken)), -1);
  EXPECT_EQ(errno, EADDRINUSE);
  sockaddr_in elsewhere = address(0, "192.0.2.77");  // TEST-NET-1: nobody's
  errno = 0;
  EXPECT_EQ(rdma_bind_addr(a, sa(elsewhere)), -1);
  EXPECT_EQ(errno, ENODEV) << "no RDMA device has that address (the kernel's rdma_cm on 6.1)";
  sockaddr_in loopback = address(0, "127.0.0.1");
  EXPECT_EQ(rdma_bind_addr(a, sa(loopback)), 0) << "loopback is a wildcard to rdma_cm: " << std::strerror(errno);
  EXPECT_EQ(a->verbs, nullptr) << "a wildcard names no device";
  sockaddr_in ephemeral = address(0);
  EXPECT_EQ(rdma_bind_addr(b, sa(ephemeral)), 0);
  EXPECT_NE(rdma_get_src_port(b), 0);
  errno = 0;
  EXPECT_EQ(rdma_bind_addr(b, sa(ephemeral)), -1) << "bound twice";
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(rdma_destroy_id(a), 0);
  EXPECT_EQ(rdma_destroy_id(b), 0);
}

// RDMA_OPTION_ID_REUSEADDR: ids that all set it share a port, but only
// one of them may listen there, and one that did not set it is refused.
TEST_F(Cm, ReuseAddrSharesAPortButNotTheListen) {
  rdma_cm_id* ids[3] = {};
  for (auto*& id : ids) ASSERT_EQ(rdma_create_id(server_ch, &id, nullptr, RDMA_PS_TCP), 0);
  int on = 1, off = 0;
  ASSERT_EQ(rdma_set_option(ids[0], RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR, &on, sizeof on), 0) << std::strerror(errno);
  ASSERT_EQ(rdma_set_option(ids[1], RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR, &on, sizeof on), 0);
  sockaddr_in shared = address(0);
  ASSERT_EQ(rdma_bind_addr(ids[0], sa(shared)), 0);
  shared.sin_port = rdma_get_src_port(ids[0]);
  EXPECT_EQ(rdma_bind_addr(ids[1], sa(shared)), 0) << "both set REUSEADDR: " << std::strerror(errno);
  errno = 0;
  EXPECT_EQ(rdma_bind_addr(ids[2], sa(shared)), -1) << "it did not set REUSEADDR";
  EXPECT_EQ(errno, EADDRINUSE);
  errno = 0;
  EXPECT_EQ(rdma_set_option(ids[1], RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR, &off, sizeof off), -1);
  EXPECT_EQ(errno, EINVAL) << "cleared only before binding";
  errno = 0;
  EXPECT_EQ(rdma_listen(ids[0], 4), -1) << "another id holds the port";
  EXPECT_EQ(errno, EADDRINUSE);
  EXPECT_EQ(rdma_destroy_id(ids[1]), 0);
  ids[1] = nullptr;
  EXPECT_EQ(rdma_listen(ids[0], 4), 0) << "alone on it now: " << std::strerror(errno);
  errno = 0;
  EXPECT_EQ(rdma_set_option(ids[0], RDMA_OPTION_ID, RDMA_OPTION_ID_REUSEADDR, &on, sizeof on), -1);
  EXPECT_EQ(errno, EINVAL) << "not while listening";
  for (auto* id : ids) {
    if (id != nullptr) {
      EXPECT_EQ(rdma_destroy_id(id), 0);
    }
  }
}

TEST_F(Cm, ANonBlockingChannelSaysEagainAndPollsReady) {
  int flags = fcntl(client_ch->fd, F_GETFL);
  ASSERT_EQ(fcntl(client_ch->fd, F_SETFL, flags | O_NONBLOCK), 0);
  rdma_cm_event* e = nullptr;
  errno = 0;
  EXPECT_EQ(rdma_get_cm_event(client_ch, &e), -1);
  EXPECT_EQ(errno, EAGAIN);
  pollfd p{client_ch->fd, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 0);
  rdma_cm_id* id = nullptr;
  ASSERT_EQ(rdma_create_id(client_ch, &id, nullptr, RDMA_PS_TCP), 0);
  sockaddr_in dst = address(port);
  ASSERT_EQ(rdma_resolve_addr(id, nullptr, sa(dst), kTimeoutMs), 0);
  EXPECT_EQ(poll(&p, 1, kTimeoutMs), 1);
  ASSERT_EQ(rdma_get_cm_event(client_ch, &e), 0);
  EXPECT_EQ(e->event, RDMA_CM_EVENT_ADDR_RESOLVED);
  ack(e);
  EXPECT_EQ(poll(&p, 1, 0), 0) << "readable with no event left";
  EXPECT_EQ(rdma_destroy_id(id), 0);
  EXPECT_STREQ(rdma_event_str(RDMA_CM_EVENT_TIMEWAIT_EXIT), "RDMA_CM_EVENT_TIMEWAIT_EXIT");
  int n = 0;
  ibv_context** devices = rdma_get_devices(&n);
  ASSERT_NE(devices, nullptr) << std::strerror(errno);
  EXPECT_GE(n, 1);
  EXPECT_NE(devices[0], nullptr);
  EXPECT_EQ(devices[n], nullptr) << "NULL-terminated";
  rdma_free_devices(devices);
}

// RDMA_PS_UDP: SIDR. The requester's ESTABLISHED carries what it needs to
// address the passive QP (ah_attr, qp_num, qkey) and the reply's private
// data (136 bytes); the passive side gets no ESTABLISHED; nobody listening
// is UNREACHABLE with status 1.
TEST_F(Cm, DatagramIdsLearnTheirPeerFromTheSidrReply) {
  rdma_cm_id* ud_listener = nullptr;
  ASSERT_EQ(rdma_create_id(server_ch, &ud_listener, nullptr, RDMA_PS_UDP), 0);
  sockaddr_in a = address(0);
  ASSERT_EQ(rdma_bind_addr(ud_listener, sa(a)), 0);
  ASSERT_EQ(rdma_listen(ud_listener, 4), 0);
  uint16_t ud_port = ntohs(rdma_get_src_port(ud_listener));
  auto ud_client = [&](uint16_t to) {
    rdma_cm_id* id = nullptr;
    EXPECT_EQ(rdma_create_id(client_ch, &id, nullptr, RDMA_PS_UDP), 0);
    sockaddr_in dst = address(to);
    EXPECT_EQ(rdma_resolve_addr(id, nullptr, sa(dst), kTimeoutMs), 0);
    ack(expect(client_ch, RDMA_CM_EVENT_ADDR_RESOLVED));
    EXPECT_EQ(rdma_resolve_route(id, kTimeoutMs), 0);
    ack(expect(client_ch, RDMA_CM_EVENT_ROUTE_RESOLVED));
    ibv_qp_init_attr attr = qp_attr();
    attr.qp_type = IBV_QPT_UD;
    EXPECT_EQ(rdma_create_qp(id, nullptr, &attr), 0) << std::strerror(errno);
    rdma_conn_param param{};
    EXPECT_EQ(rdma_connect(id, &param), 0) << std::strerror(errno);
    return id;
  };
  rdma_cm_id* lonely = ud_client(static_cast<uint16_t>(ud_port + 1 == 0 ? 1 : ud_port + 1));
  rdma_cm_event* e = expect(client_ch, RDMA_CM_EVENT_UNREACHABLE);
  if (e != nullptr) {
    EXPECT_EQ(e->status, 1) << "IB_SIDR_UNSUPPORTED";
  }
  ack(e);
  destroy(lonely);
  rdma_cm_id* client = ud_client(ud_port);
  e = expect(server_ch, RDMA_CM_EVENT_CONNECT_REQUEST);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->param.ud.private_data_len, 180);
  rdma_cm_id* server = e->id;
  ack(e);
  ibv_qp_init_attr attr = qp_attr();
  attr.qp_type = IBV_QPT_UD;
  ASSERT_EQ(rdma_create_qp(server, nullptr, &attr), 0) << std::strerror(errno);
  const char hi[] = "ud reply";
  rdma_conn_param answer = with_data(hi, 0, 0);
  ASSERT_EQ(rdma_accept(server, &answer), 0) << std::strerror(errno);
  e = expect(client_ch, RDMA_CM_EVENT_ESTABLISHED);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->param.ud.private_data_len, 136);
  EXPECT_STREQ(static_cast<const char*>(e->param.ud.private_data), hi);
  EXPECT_EQ(e->param.ud.qp_num, server->qp->qp_num);
  EXPECT_EQ(e->param.ud.qkey, RDMA_UDP_QKEY);
  // A datagram to the address the event gave.
  ibv_ah* ah = ibv_create_ah(client->pd, &e->param.ud.ah_attr);
  ASSERT_NE(ah, nullptr) << std::strerror(errno);
  uint32_t qpn = e->param.ud.qp_num, qkey = e->param.ud.qkey;
  ack(e);
  char in[64 + 40] = {}, out[64] = "a datagram";
  ibv_mr* rmr = rdma_reg_msgs(server, in, sizeof in);
  ibv_mr* smr = rdma_reg_msgs(client, out, sizeof out);
  ASSERT_EQ(rdma_post_recv(server, nullptr, in, sizeof in, rmr), 0);
  ASSERT_EQ(rdma_post_ud_send(client, nullptr, out, sizeof out, smr, IBV_SEND_SIGNALED, ah, qpn), 0);
  (void)qkey;
  ibv_wc wc{};
  ASSERT_EQ(rdma_get_send_comp(client, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  ASSERT_EQ(rdma_get_recv_comp(server, &wc), 1);
  EXPECT_EQ(wc.status, IBV_WC_SUCCESS);
  EXPECT_STREQ(in + 40, out) << "after the 40-byte GRH; byte_len " << wc.byte_len << ", wc_flags " << wc.wc_flags
                              << ", src_qp " << wc.src_qp << ", in at " << static_cast<void*>(in) << ", out at "
                              << static_cast<void*>(out) << ", GRH bytes set "
                              << std::count_if(in, in + 40, [](char c) { return c != 0; });
  rdma_dereg_mr(rmr);
  rdma_dereg_mr(smr);
  ibv_destroy_ah(ah);
  pollfd p{server_ch->fd, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 100), 0) << "no ESTABLISHED on the passive side";
  destroy(client);
  destroy(server);
  EXPECT_EQ(rdma_destroy_id(ud_listener), 0);
}

TEST_F(Cm, ManyConnectDisconnectCyclesLeaveNothing) {
  int cycles = std::getenv("FF_CM_CYCLES") != nullptr ? std::atoi(std::getenv("FF_CM_CYCLES")) : 100;
  for (int i = 0; i < cycles && !HasFailure(); ++i) {
    Connection c = connect();
    if (c.server == nullptr) break;
    disconnect_both(c);
  }
}

}  // namespace
