// ffctl: the operator's view of a running ffrouter, through its admin socket,
// in the manner of iproute2's rdma tool: every command also speaks JSON (-j).
//
//   ffctl [--run-dir DIR] [--wait SECONDS] [-j] COMMAND
//     status                       tenants, clients, their objects, counters
//     peers                        other routers (multi-host), the directory
//     stats [-w [SECONDS]] [-c N]  per-tenant traffic; -w: per-second rates
//     resource show [KIND] [tenant T] [pid P]
//                                  qp (with traffic), cq, mr, pd, srq, ... per client
//     qos [TENANT [max_gbps N] [max_mops N] [burst_kib N] [weight N] [max_control_per_s N]]
//                                  show, or change live, a tenant's caps and weight
//     version                      ffctl's and the router's
//     cdi [--output-dir DIR] [--kind K] [--shim PATH] [--host-run-dir DIR]
//                                  a CDI spec per tenant (cdi.h)
//
// Exit codes: 0 done; 1 the router could not be reached or refused the
// request; 2 a usage error (unknown command, option or filter).
#include <CLI/CLI.hpp>
#include <infiniband/verbs.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "policy/tenant.h"
#include "proto/client.h"
#include "router/common/qos_wire.h"
#include "router/common/traffic_labels.h"
#include "router/common/version.h"
#include "router/ffctl/cdi.h"

namespace {

using nlohmann::json;
using ff::proto::StatusReply;

constexpr int kUnreachable = 1;
constexpr int kUsage = 2;

// One admin status, fetched once per command (twice per -w interval).
struct Router {
  std::string run_dir;
  double wait_seconds = 0;
  ff::proto::ControlClient client;
  bool connected = false;
  std::vector<uint8_t> last;  // the reply's bytes, kept while in use

  // What to ask for: QPs only for `resource show`, and only the clients of
  // one tenant or process when named (the router refuses a reply past its
  // frame limit, EMSGSIZE, rather than send one nobody can read).
  bool with_qps = false;
  std::string only_tenant;
  int only_pid = 0;

  const StatusReply* status(std::string& error) {
    if (!connected) {
      const std::string path = run_dir + "/admin.sock";
      auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(wait_seconds);
      int e;
      while ((e = client.connect(path)) != 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      if (e != 0) {
        error = "cannot reach the router at " + path + ": " + std::strerror(e) + " (is ffrouter running with --run-dir " +
                run_dir + "?)";
        return nullptr;
      }
      connected = true;
    }
    flatbuffers::FlatBufferBuilder fbb;
    auto res = client.call(fbb, ff::proto::RequestBody::AdminStatus,
                           ff::proto::CreateAdminStatusDirect(fbb, with_qps,
                                                              only_tenant.empty() ? nullptr : only_tenant.c_str(),
                                                              only_pid)
                               .Union());
    if (res.error != 0) {
      error = "status failed: " + res.message;
      return nullptr;
    }
    last = std::move(res.buffer);
    return flatbuffers::GetRoot<ff::proto::Reply>(last.data())->body_as_StatusReply();
  }

  // After status(): the connection is up.
  bool set_qos(const std::string& tenant, const ff::policy::QosSpec& q, std::string& error) {
    flatbuffers::FlatBufferBuilder fbb;
    auto qos = ff::qos_to_wire(fbb, q);
    auto res = client.call(fbb, ff::proto::RequestBody::SetQos,
                           ff::proto::CreateSetQosDirect(fbb, tenant.c_str(), qos).Union());
    if (res.error != 0) error = "qos failed: " + res.message;
    return res.error == 0;
  }
};

const char* qp_type_name(uint32_t type) {
  switch (type) {
    case IBV_QPT_RC: return "RC";
    case IBV_QPT_UC: return "UC";
    case IBV_QPT_UD: return "UD";
    default: return "?";
  }
}

std::string str(const flatbuffers::String* s) { return s != nullptr ? s->str() : std::string(); }

template <typename T>
std::vector<uint64_t> values(const flatbuffers::Vector<T>* v) {
  std::vector<uint64_t> out;
  if (v != nullptr)
    for (auto x : *v) out.push_back(x);
  return out;
}

// A Traffic table as JSON: only what is not zero, by label.
json traffic_json(const ff::proto::Traffic* t) {
  json j = {{"sent", json::object()}, {"received", {{"ops", 0}, {"bytes", 0}}}, {"completions", json::object()}};
  if (t == nullptr) return j;  // a router older than the counters
  auto ops = values(t->ops()), bytes = values(t->bytes()), completions = values(t->completions());
  json by_opcode = json::object();
  for (size_t i = 0; i < ops.size(); ++i)
    if (ops[i] != 0 || (i < bytes.size() && bytes[i] != 0))
      by_opcode[std::string(ff::label_at(ff::kOpcodeLabels, i))] = {{"ops", ops[i]},
                                                                    {"bytes", i < bytes.size() ? bytes[i] : 0}};
  json by_status = json::object();
  for (size_t i = 0; i < completions.size(); ++i)
    if (completions[i] != 0) by_status[std::string(ff::label_at(ff::kStatusLabels, i))] = completions[i];
  j["sent"] = by_opcode;
  j["received"] = {{"ops", t->received()}, {"bytes", t->received_bytes()}};
  j["completions"] = by_status;
  j["rnr_waits"] = t->rnr_waits();
  return j;
}

json client_json(const ff::proto::ClientStatus& c) {
  json objects = json::object();
  for (const auto* o : *c.objects()) objects[str(o->kind())] = o->count();
  json qps = json::array();
  if (c.qps() != nullptr)
    for (const auto* q : *c.qps())
      qps.push_back({{"qpn", q->qp_num()},
                     {"type", q->type()},
                     {"traffic", traffic_json(q->traffic())},
                     {"send_queued", q->send_queued()},
                     {"recv_queued", q->recv_queued()}});
  return {{"session", c.session_id()},  {"pid", c.pid()},        {"program", str(c.program())},
          {"vip", ff::policy::format_ipv4(c.virtual_ipv4())}, {"objects", objects},
          {"cm_listeners", c.cm_listeners()}, {"qps", qps}};
}

// Whole values as JSON integers (weight 3, burst_kib 256), as before the
// key table: scripts that read them as integers keep working.
json qos_json(const ff::policy::QosSpec& q) {
  json out = json::object();
  for (const auto& k : ff::policy::kQosKeys) {
    double v = k.get(q);
    out[k.name] = v == std::floor(v) && v < 9e15 ? json(static_cast<uint64_t>(v)) : json(v);
  }
  return out;
}

json qos_json(const ff::proto::TenantStatus& t) {
  json out = qos_json(ff::qos_from_wire(t.qos()));
  out["throttled_seconds"] = static_cast<double>(t.throttled_ns()) / 1e9;
  out["control_delayed_seconds"] = static_cast<double>(t.control_delayed_ns()) / 1e9;
  return out;
}

json status_json(const StatusReply& s) {
  json tenants = json::array();
  for (const auto* t : *s.tenants()) {
    json clients = json::array();
    for (const auto* c : *t->clients()) clients.push_back(client_json(*c));
    tenants.push_back({{"name", str(t->name())},
                       {"poller", t->poller()},
                       {"socket", str(t->socket_path())},
                       {"shm_bytes", t->shm_bytes()},
                       {"shm_limit", t->shm_limit()},
                       {"handles", t->handles()},
                       {"handles_limit", t->handles_limit()},
                       {"limit_refusals", t->limit_refusals()},
                       {"clients", clients},
                       {"traffic", traffic_json(t->traffic())},
                       {"qos", qos_json(*t)}});
  }
  json counters = json::object();
  if (s.counters() != nullptr)
    for (const auto* c : *s.counters()) counters[str(c->name())] = c->value();
  return {{"router", str(s.router_version())}, {"fabric", str(s.fabric())}, {"tenants", tenants},
          {"counters", counters}};
}

void print_json(const json& j) { std::printf("%s\n", j.dump(2).c_str()); }

int print_status(const StatusReply& s) {
  std::printf("router: %s  fabric: %s\n", s.router_version()->c_str(), s.fabric()->c_str());
  size_t total_clients = 0, total_objects = 0;
  for (const auto* t : *s.tenants()) {
    std::printf("tenant %s  poller %u  socket %s  clients %u  shm_mib=%llu/%llu  handles=%llu/%llu  "
                "limit_refusals=%llu\n",
                t->name()->c_str(), t->poller(), t->socket_path()->c_str(), t->clients()->size(),
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

json peers_json(const StatusReply& s) {
  json peers = json::array();
  if (s.peers() != nullptr)
    for (const auto* p : *s.peers())
      peers.push_back({{"name", str(p->name())},
                       {"address", str(p->address())},
                       {"outbound_up", p->outbound_up()},
                       {"inbound_up", p->inbound_up()},
                       {"frames_sent", p->frames_sent()},
                       {"frames_received", p->frames_received()},
                       {"bytes_sent", p->bytes_sent()},
                       {"bytes_received", p->bytes_received()},
                       {"connects", p->connects()},
                       {"failures", p->failures()},
                       {"qps_failed", p->qps_failed()},
                       {"last_error", str(p->last_error())}});
  json entries = json::array();
  if (s.directory_entries() != nullptr)
    for (const auto* e : *s.directory_entries())
      entries.push_back({{"tenant", str(e->tenant())}, {"addresses", str(e->addresses())}, {"router", str(e->router())}});
  return {{"router", str(s.router_name())}, {"directory", str(s.directory())}, {"peers", peers},
          {"entries", entries}};
}

// Multi-host: the peer routers, both connections with each, and the
// directory's view.
int print_peers(const StatusReply& s) {
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

// stats: each tenant's traffic as JSON ({tenant: traffic}); -w: the
// difference over an interval, per second.
json stats_json(const StatusReply& s) {
  json out = json::object();
  for (const auto* t : *s.tenants()) out[str(t->name())] = traffic_json(t->traffic());
  return out;
}

// Numbers in `now` less those in `before` (same shape), divided by `seconds`.
json rate(const json& now, const json& before, double seconds) {
  if (now.is_number()) {
    double d = before.is_number() ? now.get<double>() - before.get<double>() : now.get<double>();
    return d / seconds;
  }
  if (!now.is_object()) return now;
  json out = json::object();
  for (auto it = now.begin(); it != now.end(); ++it)
    out[it.key()] = rate(it.value(), before.is_object() && before.contains(it.key()) ? before[it.key()] : json(),
                         seconds);
  return out;
}

void print_stats_text(const json& stats, bool per_second) {
  const char* unit = per_second ? "/s" : "";
  for (auto t = stats.begin(); t != stats.end(); ++t) {
    std::printf("tenant %s", t.key().c_str());
    for (auto o = t.value()["sent"].begin(); o != t.value()["sent"].end(); ++o)
      std::printf("  %s: ops%s=%.0f bytes%s=%.0f", o.key().c_str(), unit, o.value()["ops"].get<double>(), unit,
                  o.value()["bytes"].get<double>());
    std::printf("  received: ops%s=%.0f bytes%s=%.0f", unit, t.value()["received"]["ops"].get<double>(), unit,
                t.value()["received"]["bytes"].get<double>());
    std::printf("  completions%s:", unit);
    for (auto c = t.value()["completions"].begin(); c != t.value()["completions"].end(); ++c)
      std::printf(" %s=%.0f", c.key().c_str(), c.value().get<double>());
    std::printf("  rnr_waits%s=%.0f\n", unit, t.value()["rnr_waits"].get<double>());
  }
}

int fail(const std::string& error) {
  std::fprintf(stderr, "ffctl: %s\n", error.c_str());
  return kUnreachable;
}

// resource show [KIND] [tenant T] [pid P]: false (after saying why) on a
// filter that does not parse.
struct ResourceFilter {
  std::string kind;  // singular, as in rdma(8); empty: every kind
  std::string tenant;
  std::optional<int> pid;
};
bool parse_filter(const std::vector<std::string>& words, ResourceFilter& f) {
  for (size_t i = 0; i < words.size(); ++i) {
    if (words[i] == "tenant" && i + 1 < words.size()) {
      f.tenant = words[++i];
    } else if (words[i] == "pid" && i + 1 < words.size()) {
      try {
        f.pid = std::stoi(words[++i]);
      } catch (const std::exception&) {
        std::fprintf(stderr, "ffctl: pid '%s' is not a number\n", words[i].c_str());
        return false;
      }
    } else if (i == 0) {
      f.kind = words[i];
    } else {
      std::fprintf(stderr, "ffctl: resource show [KIND] [tenant NAME] [pid PID]: unexpected '%s'\n",
                   words[i].c_str());
      return false;
    }
  }
  static const std::vector<std::string> kKinds = {"context", "pd",  "segment", "mr",         "channel", "cq",
                                                  "qp",      "srq", "ah",      "cm_channel", "cm_id", "mw", "xrcd"};
  if (!f.kind.empty() && std::find(kKinds.begin(), kKinds.end(), f.kind) == kKinds.end()) {
    std::fprintf(stderr, "ffctl: unknown object kind '%s' (known: context pd segment mr channel cq qp srq ah "
                         "cm_channel cm_id mw xrcd)\n", f.kind.c_str());
    return false;
  }
  return true;
}

// qos: every tenant's; qos TENANT KEY VALUE...: changes those keys, the
// others stay as they are.
int run_qos(Router& router, const StatusReply& s, const std::vector<std::string>& words, bool as_json) {
  if (words.empty()) {
    json out = json::object();
    for (const auto* t : *s.tenants()) out[str(t->name())] = qos_json(*t);
    if (as_json) {
      print_json(out);
      return 0;
    }
    for (auto t = out.begin(); t != out.end(); ++t) {
      std::printf("tenant %s ", t.key().c_str());
      for (const auto& k : ff::policy::kQosKeys) std::printf(" %s %.15g", k.name, t.value()[k.name].get<double>());
      std::printf("  throttled %.3f s  control_delayed %.3f s\n", t.value()["throttled_seconds"].get<double>(),
                  t.value()["control_delayed_seconds"].get<double>());
    }
    return 0;
  }
  const ff::proto::TenantStatus* tenant = nullptr;
  for (const auto* t : *s.tenants())
    if (str(t->name()) == words[0]) tenant = t;
  if (tenant == nullptr) return fail("no tenant named '" + words[0] + "' (ffctl qos lists them)");
  ff::policy::QosSpec q = ff::qos_from_wire(tenant->qos());
  if (words.size() % 2 != 1) {
    std::fprintf(stderr, "ffctl: qos %s: each key needs a value (keys: %s)\n", words[0].c_str(),
                 ff::policy::qos_key_names().c_str());
    return kUsage;
  }
  for (size_t i = 1; i + 1 < words.size(); i += 2) {
    const ff::policy::QosKey* key = ff::policy::find_qos_key(words[i]);
    if (key == nullptr) {
      std::fprintf(stderr, "ffctl: qos: unknown key '%s' (known: %s)\n", words[i].c_str(),
                   ff::policy::qos_key_names().c_str());
      return kUsage;
    }
    char* end = nullptr;
    double v = std::strtod(words[i + 1].c_str(), &end);
    std::string problem = end == words[i + 1].c_str() || *end != '\0' ? std::string(key->name) + " must be a number"
                                                                       : ff::policy::set_qos_key(q, *key, v);
    if (!problem.empty()) {
      std::fprintf(stderr, "ffctl: qos: %s, not '%s'\n", problem.c_str(), words[i + 1].c_str());
      return kUsage;
    }
  }
  std::string error;
  if (!router.set_qos(words[0], q, error)) return fail(error);
  if (as_json) {
    json out = qos_json(q);
    out["tenant"] = words[0];
    print_json(out);
  }
  return 0;
}

int run_version(Router& router, bool as_json) {
  std::string error;
  const StatusReply* s = router.status(error);
  std::string router_version = s != nullptr ? str(s->router_version()) : "unreachable: " + error;
  if (as_json) {
    print_json({{"ffctl", std::string("ffctl ") + ff::kVersion}, {"router", router_version}});
  } else {
    std::printf("ffctl %s\nrouter: %s\n", ff::kVersion, router_version.c_str());
  }
  return s != nullptr ? 0 : kUnreachable;
}

// stats: totals, or with `watch` per-second rates every `watch` seconds.
int run_stats(Router& router, const StatusReply& first, bool as_json, std::optional<double> watch, int count) {
  json before = stats_json(first);
  if (!watch) {
    if (as_json) {
      print_json(before);
    } else {
      print_stats_text(before, false);
    }
    return 0;
  }
  std::string error;
  for (int n = 0; count == 0 || n < count; ++n) {
    std::this_thread::sleep_for(std::chrono::duration<double>(*watch));
    const StatusReply* s = router.status(error);
    if (s == nullptr) return fail(error);
    json now = stats_json(*s);
    json per_second = rate(now, before, *watch);
    if (as_json) {
      std::printf("%s\n", per_second.dump().c_str());  // one line per interval
    } else {
      print_stats_text(per_second, true);
    }
    std::fflush(stdout);
    before = std::move(now);
  }
  return 0;
}

// One row per QP (with its traffic), and per client a count of each other kind.
json resource_rows(const StatusReply& s, const ResourceFilter& f) {
  json out = json::array();
  for (const auto* t : *s.tenants()) {
    if (!f.tenant.empty() && str(t->name()) != f.tenant) continue;
    for (const auto* c : *t->clients()) {
      if (f.pid && c->pid() != *f.pid) continue;
      json base = {{"tenant", str(t->name())}, {"pid", c->pid()}, {"program", str(c->program())},
                   {"session", c->session_id()}};
      if ((f.kind.empty() || f.kind == "qp") && c->qps() != nullptr) {
        for (const auto* q : *c->qps()) {
          json row = base;
          row["kind"] = "qp";
          row["qpn"] = q->qp_num();
          row["type"] = qp_type_name(q->type());
          row["traffic"] = traffic_json(q->traffic());
          row["send_queued"] = q->send_queued();
          row["recv_queued"] = q->recv_queued();
          out.push_back(row);
        }
      }
      if (f.kind == "qp") continue;
      for (const auto* o : *c->objects()) {
        std::string plural = str(o->kind());
        std::string singular = plural.empty() ? plural : plural.substr(0, plural.size() - 1);
        if (singular == "qp" || (!f.kind.empty() && singular != f.kind) || (f.kind.empty() && o->count() == 0))
          continue;
        json row = base;
        row["kind"] = singular;
        row["count"] = o->count();
        out.push_back(row);
      }
    }
  }
  return out;
}

void print_resource_rows(const json& rows) {
  for (const auto& row : rows) {
    std::printf("tenant %s pid %d program %s session %llu %s", row["tenant"].get<std::string>().c_str(),
                row["pid"].get<int>(), row["program"].get<std::string>().c_str(),
                static_cast<unsigned long long>(row["session"].get<uint64_t>()), row["kind"].get<std::string>().c_str());
    if (row.contains("qpn")) {
      std::printf(" qpn %u type %s", row["qpn"].get<uint32_t>(), row["type"].get<std::string>().c_str());
      for (auto o = row["traffic"]["sent"].begin(); o != row["traffic"]["sent"].end(); ++o)
        std::printf(" %s_ops=%llu %s_bytes=%llu", o.key().c_str(),
                    static_cast<unsigned long long>(o.value()["ops"].get<uint64_t>()), o.key().c_str(),
                    static_cast<unsigned long long>(o.value()["bytes"].get<uint64_t>()));
      std::printf(" received=%llu rnr_waits=%llu send_queued=%u recv_queued=%u",
                  static_cast<unsigned long long>(row["traffic"]["received"]["ops"].get<uint64_t>()),
                  static_cast<unsigned long long>(row["traffic"]["rnr_waits"].get<uint64_t>()),
                  row["send_queued"].get<uint32_t>(), row["recv_queued"].get<uint32_t>());
    } else {
      std::printf(" count %u", row["count"].get<uint32_t>());
    }
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ffctl: inspect a running ffrouter"};
  Router router;
  router.run_dir = "/run/ffrouter";
  bool as_json = false;
  app.add_option("--run-dir", router.run_dir, "the router's --run-dir")->envname("FFR_RUN_DIR")->capture_default_str();
  app.add_option("--wait", router.wait_seconds, "keep trying to reach the router for this many seconds");
  app.add_flag("-j,--json", as_json, "JSON output");
  app.require_subcommand(1);
  auto* status = app.add_subcommand("status", "tenants, connected clients (pid, virtual IP) and their objects");
  auto* peers = app.add_subcommand("peers", "peer routers (multi-host): connections, their state and traffic; "
                                            "directory entries");
  auto* stats = app.add_subcommand("stats", "per-tenant traffic: work requests and bytes by opcode, receives, "
                                            "completions by status");
  std::optional<double> watch;
  int count = 0;
  stats->add_option("-w,--watch", watch, "print per-second rates over intervals of this many seconds (default 1)")
      ->expected(0, 1)
      ->default_str("1");
  stats->add_option("-c,--count", count, "with -w: stop after this many intervals (default: never)");
  auto* resource = app.add_subcommand("resource", "objects per client");
  auto* show = resource->add_subcommand("show", "list objects: qp (with traffic), cq, mr, pd, srq, ah, ...");
  resource->require_subcommand(1);
  std::vector<std::string> filter_words;
  show->add_option("filter", filter_words, "[KIND] [tenant NAME] [pid PID]");
  auto* qos = app.add_subcommand("qos", "show each tenant's caps, weight and throttled time; or change a "
                                      "tenant's live: qos TENANT [max_gbps N] [max_mops N] [burst_kib N] [weight N] [max_control_per_s N] "
                                      "(until the next change or config reload)");
  std::vector<std::string> qos_words;
  qos->add_option("words", qos_words, "[TENANT [KEY VALUE]...]");
  auto* version = app.add_subcommand("version", "ffctl's version and the router's");
  ff::ffctl::CdiOptions cdi_options;
  auto* cdi = ff::ffctl::add_cdi_command(app, cdi_options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kUsage;
  }
  if (watch && *watch <= 0) watch = 1;
  ResourceFilter filter;
  if (resource->parsed()) {
    if (!parse_filter(filter_words, filter)) return kUsage;
    router.with_qps = filter.kind.empty() || filter.kind == "qp";
    router.only_tenant = filter.tenant;
    router.only_pid = filter.pid.value_or(0);
  }
  if (version->parsed()) return run_version(router, as_json);

  std::string error;
  const StatusReply* s = router.status(error);
  if (s == nullptr) return fail(error);
  if (status->parsed()) {
    if (as_json) print_json(status_json(*s));
    return as_json ? 0 : print_status(*s);
  }
  if (peers->parsed()) {
    if (as_json) print_json(peers_json(*s));
    return as_json ? 0 : print_peers(*s);
  }
  if (stats->parsed()) return run_stats(router, *s, as_json, watch, count);
  if (qos->parsed()) return run_qos(router, *s, qos_words, as_json);
  if (cdi->parsed()) {
    std::vector<std::string> tenants;
    for (const auto* t : *s->tenants()) tenants.push_back(str(t->name()));
    return ff::ffctl::run_cdi(cdi_options, router.run_dir, tenants, as_json);
  }
  json rows = resource_rows(*s, filter);
  if (as_json) {
    print_json(rows);
  } else {
    print_resource_rows(rows);
  }
  return 0;
}
