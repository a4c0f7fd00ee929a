/* A UCP client/server over a socket address (UCX's connection managers:
 * with UCX_SOCKADDR_TLS_PRIORITY=rdmacm, librdmacm on the virtual IP), the
 * way applications built on UCX connect: the server listens on ADDR:PORT,
 * the client dials it, and they ping-pong ITERS tagged messages of SIZE
 * bytes, each side checking every byte it receives.
 *   ucp_sockaddr -l ADDR PORT [ITERS [SIZE]]   (server)
 *   ucp_sockaddr ADDR PORT [ITERS [SIZE]]      (client)
 * Exits 0 when every message arrived intact; prints what failed otherwise. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ucp/api/ucp.h>

static ucp_worker_h worker;
static ucp_ep_h conn_ep;
static ucp_conn_request_h pending;

static void die(const char* what, ucs_status_t st) {
  fprintf(stderr, "ucp_sockaddr: %s: %s\n", what, ucs_status_string(st));
  exit(1);
}

static void on_conn_request(ucp_conn_request_h request, void* arg) {
  (void)arg;
  if (pending != NULL) {
    ucp_listener_reject(NULL, request);
    return;
  }
  pending = request;
}

static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t st) {
  (void)arg;
  (void)ep;
  fprintf(stderr, "ucp_sockaddr: endpoint error: %s\n", ucs_status_string(st));
}

static void done_cb(void* request, ucs_status_t st, void* user) {
  (void)request;
  *(ucs_status_t*)user = st;
}

static void recv_cb(void* request, ucs_status_t st, const ucp_tag_recv_info_t* info, void* user) {
  (void)request;
  (void)info;
  *(ucs_status_t*)user = st;
}

/* Drives the worker until `req` (a request or an immediate status) is done. */
static ucs_status_t wait_for(void* req, ucs_status_t* status) {
  if (req == NULL) return UCS_OK;
  if (UCS_PTR_IS_ERR(req)) return UCS_PTR_STATUS(req);
  while (*status == UCS_INPROGRESS) ucp_worker_progress(worker);
  ucp_request_free(req);
  return *status;
}

static void fill(unsigned char* buf, size_t size, unsigned iter, int from_server) {
  for (size_t i = 0; i < size; ++i) buf[i] = (unsigned char)(i * 7 + iter * 13 + (unsigned)from_server);
}

static int check(const unsigned char* buf, size_t size, unsigned iter, int from_server) {
  for (size_t i = 0; i < size; ++i)
    if (buf[i] != (unsigned char)(i * 7 + iter * 13 + (unsigned)from_server)) {
      fprintf(stderr, "ucp_sockaddr: message %u byte %zu is %u\n", iter, i, buf[i]);
      return 0;
    }
  return 1;
}

static void exchange(int sending, unsigned iter, unsigned char* buf, size_t size, int from_server) {
  ucs_status_t st = UCS_INPROGRESS;
  ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
                           .user_data = &st};
  void* req;
  if (sending) {
    fill(buf, size, iter, from_server);
    p.cb.send = done_cb;
    req = ucp_tag_send_nbx(conn_ep, buf, size, iter, &p);
  } else {
    memset(buf, 0, size);
    p.cb.recv = recv_cb;
    req = ucp_tag_recv_nbx(worker, buf, size, iter, (ucp_tag_t)-1, &p);
  }
  st = wait_for(req, &st);
  if (st != UCS_OK) die(sending ? "send" : "receive", st);
  if (!sending && !check(buf, size, iter, from_server)) exit(1);
}

int main(int argc, char** argv) {
  int server = argc > 1 && strcmp(argv[1], "-l") == 0;
  int a = server ? 2 : 1;
  if (argc < a + 2) {
    fprintf(stderr, "usage: ucp_sockaddr [-l] ADDR PORT [ITERS [SIZE]]\n");
    return 2;
  }
  unsigned iters = argc > a + 2 ? (unsigned)atoi(argv[a + 2]) : 1000;
  size_t size = argc > a + 3 ? (size_t)atol(argv[a + 3]) : 4096;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[a + 1]))};
  if (inet_pton(AF_INET, argv[a], &sa.sin_addr) != 1) return 2;

  ucp_params_t params = {.field_mask = UCP_PARAM_FIELD_FEATURES, .features = UCP_FEATURE_TAG};
  ucp_context_h context;
  ucs_status_t st = ucp_init(&params, NULL, &context);
  if (st != UCS_OK) die("ucp_init", st);
  ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE, .thread_mode = UCS_THREAD_MODE_SINGLE};
  st = ucp_worker_create(context, &wp, &worker);
  if (st != UCS_OK) die("ucp_worker_create", st);

  ucp_ep_params_t ep = {.field_mask = UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
                        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
                        .err_handler = {.cb = on_ep_error}};
  ucp_listener_h listener = NULL;
  if (server) {
    ucp_listener_params_t lp = {
        .field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER,
        .sockaddr = {.addr = (const struct sockaddr*)&sa, .addrlen = sizeof sa},
        .conn_handler = {.cb = on_conn_request}};
    st = ucp_listener_create(worker, &lp, &listener);
    if (st != UCS_OK) die("ucp_listener_create", st);
    printf("listening on %s:%s\n", argv[a], argv[a + 1]);
    fflush(stdout);
    while (pending == NULL) ucp_worker_progress(worker);
    ep.field_mask |= UCP_EP_PARAM_FIELD_CONN_REQUEST;
    ep.conn_request = pending;
  } else {
    ep.field_mask |= UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR;
    ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr = (const struct sockaddr*)&sa;
    ep.sockaddr.addrlen = sizeof sa;
  }
  st = ucp_ep_create(worker, &ep, &conn_ep);
  if (st != UCS_OK) die("ucp_ep_create", st);

  unsigned char* buf = malloc(size ? size : 1);
  for (unsigned i = 0; i < iters; ++i) {
    exchange(!server, i, buf, size, 0);  /* client -> server */
    exchange(server, i, buf, size, 1);   /* server -> client */
  }
  printf("%u messages of %zu bytes each way, every byte checked\n", iters, size);

  ucp_request_param_t cp = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS, .flags = UCP_EP_CLOSE_FLAG_FORCE};
  void* close_req = ucp_ep_close_nbx(conn_ep, &cp);
  if (UCS_PTR_IS_PTR(close_req)) {
    while (ucp_request_check_status(close_req) == UCS_INPROGRESS) ucp_worker_progress(worker);
    ucp_request_free(close_req);
  }
  if (listener) ucp_listener_destroy(listener);
  free(buf);
  ucp_worker_destroy(worker);
  ucp_cleanup(context);
  return 0;
}
