// ffctl: the operator's view of a running ffrouter, through its admin socket.
//
//   ffctl [--run-dir DIR] [--wait SECONDS] status|peers
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "policy/tenant.h"
#include "proto/client.h"

namespace {

int print_status(const ff::proto::StatusReply& s) {
  std::printf("router: %s  fabric: %s\n", s.router_version()->c_str(), s.fabric()->c_str());
  size_t total_clients = 0, total_objects = 0;
  for (const auto* t : *s.tenants()) {
    std::printf("tenant %s  socket %s  clients %u  shm_mib=%llu/%llu  handles=%llu/%llu  limit_refusals=%llu\n",
                t->name()->c_str(), t->socket_path()->c_str(), t->clients()->size(),
                static_cast<unsigned long long>(t->shm_bytes() >> 20),
                static_cast<unsigned long long>(t->shm_limit() >> 20),
                static_cast<unsigned long long>(t->handles()),
                static_cast<unsigned long long>(t->handles_limit()),
                static_cast<unsigned long long>(t->limit_refusals()));
    for (const auto* c : *t->clients()) {
      ++total_clients;
      std::printf("  client session=%llu pid=%d program=%s vip=%s", static_cast<unsigned long long>(c->session_id()),
                  c->pid(), c->program()->c_str(), ff::policy::format_ipv4(c->virtual_ipv4()).c_str());
      for (const auto* o : *c->objects()) {
        std::printf(" %s=%u", o->kind()->c_str(), o->count());
        total_objects += o->count();
      }
      std::printf(" cm_listeners=%u\n", c->cm_listeners());
    }
  }
  std::printf("total clients=%zu objects=%zu\n", total_clients, total_objects);
  if (s.counters() != nullptr) {
    std::printf("counters");
    for (const auto* c : *s.counters())
      std::printf(" %s=%llu", c->name()->c_str(), static_cast<unsigned long long>(c->value()));
    std::printf("\n");
  }
  return 0;
}

// Multi-host: the peer routers, both connections with each, and the
// directory's view.
int print_peers(const ff::proto::StatusReply& s) {
  if (s.directory() == nullptr || s.directory()->size() == 0) {
    std::printf("this router serves its host alone (no --directory)\n");
    return 0;
  }
  std::printf("router %s  directory %s\n", s.router_name()->c_str(), s.directory()->c_str());
  for (const auto* p : *s.peers()) {
    std::printf("peer %s  address %s  outbound=%s inbound=%s  frames_sent=%llu frames_received=%llu "
                "bytes_sent=%llu bytes_received=%llu connects=%llu failures=%llu qps_failed=%llu%s%s\n",
                p->name()->c_str(), p->address()->c_str(), p->outbound_up() ? "up" : "down",
                p->inbound_up() ? "up" : "down", static_cast<unsigned long long>(p->frames_sent()),
                static_cast<unsigned long long>(p->frames_received()),
                static_cast<unsigned long long>(p->bytes_sent()),
                static_cast<unsigned long long>(p->bytes_received()),
                static_cast<unsigned long long>(p->connects()), static_cast<unsigned long long>(p->failures()),
                static_cast<unsigned long long>(p->qps_failed()), p->last_error()->size() > 0 ? "  last_error: " : "",
                p->last_error()->c_str());
  }
  for (const auto* e : *s.directory_entries())
    std::printf("entry tenant=%s addresses=%s router=%s\n", e->tenant()->c_str(), e->addresses()->c_str(),
                e->router()->c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ffctl: inspect a running ffrouter"};
  std::string run_dir = "/run/ffrouter";
  double wait_seconds = 0;
  app.add_option("--run-dir", run_dir, "the router's --run-dir")->envname("FFR_RUN_DIR")->capture_default_str();
  app.add_option("--wait", wait_seconds, "keep trying to reach the router for this many seconds");
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "tenants, connected clients (pid, virtual IP) and their objects");
  app.add_subcommand("peers", "peer routers (multi-host): connections, their state and traffic; directory entries");
  CLI11_PARSE(app, argc, argv);

  const std::string path = run_dir + "/admin.sock";
  ff::proto::ControlClient client;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_seconds);
  int e;
  while ((e = client.connect(path)) != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (e != 0) {
    std::fprintf(stderr, "ffctl: cannot reach the router at %s: %s (is ffrouter running with --run-dir %s?)\n",
                 path.c_str(), std::strerror(e), run_dir.c_str());
    return 1;
  }
  flatbuffers::FlatBufferBuilder fbb;
  auto res = client.call(fbb, ff::proto::RequestBody::AdminStatus, ff::proto::CreateAdminStatus(fbb).Union());
  if (res.error != 0) {
    std::fprintf(stderr, "ffctl: status failed: %s\n", res.message.c_str());
    return 1;
  }
  const auto& reply = *res.reply()->body_as_StatusReply();
  return status->parsed() ? print_status(reply) : print_peers(reply);
}
