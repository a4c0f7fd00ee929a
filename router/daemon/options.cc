#include "router/daemon/options.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

#include "router/common/version.h"

namespace ff::router {

const std::vector<Knob>& knobs() {
  static const std::vector<Knob> table = {
      {"--run-dir", "FFR_RUN_DIR",
       "directory for admin.sock and tenants/<tenant>/ffrouter.sock", &RouterOptions::run_dir},
      {"--config", "FFR_CONFIG", "YAML file declaring tenants (none: one tenant named 'default')",
       &RouterOptions::config_path},
      {"--fabric", "FFR_FABRIC",
       "what executes the verbs: soft (the router itself, no RDMA hardware), verbs (an RDMA device "
       "through rdma-core) or auto (verbs when a usable device exists, else soft)",
       &RouterOptions::fabric},
      {"--device", "FFR_DEVICE",
       "verbs fabric: the RDMA device to own, e.g. mlx5_0 or rxe0 (empty: the first with an active port)",
       &RouterOptions::device},
      {"--gid-index", "FFR_GID_INDEX",
       "verbs fabric: GID index of the device's port 1 (auto: its RoCE v2 IPv4-mapped GID)",
       &RouterOptions::gid_index},
      {"--device-name", "FFR_DEVICE_NAME", "name of the virtual device apps see",
       &RouterOptions::device_name},
      {"--vendor-id", "FFR_VENDOR_ID", "vendor_id reported by ibv_query_device", nullptr,
       &RouterOptions::vendor_id, true},
      {"--vendor-part-id", "FFR_VENDOR_PART_ID",
       "vendor_part_id reported by ibv_query_device (a ConnectX id, e.g. 4123, steers perftest "
       "to its ibv_wr_* path)",
       nullptr, &RouterOptions::vendor_part_id},
      {"--directory", "FFR_DIRECTORY",
       "join other hosts' routers (soft fabric): file:PATH (a YAML list of routers and the virtual "
       "IPs they serve) or etcd:http://HOST:PORT (routers register themselves and their clients); "
       "empty: this host alone",
       &RouterOptions::directory},
      {"--router-name", "FFR_ROUTER_NAME", "this router's name in the directory (empty: the host name)",
       &RouterOptions::router_name},
      {"--listen", "FFR_LISTEN",
       "HOST:PORT where peer routers connect (empty: this router's address in the directory file)",
       &RouterOptions::listen},
      {"--link-psk", "FFR_LINK_PSK",
       "FILE holding the key every router of the cluster shares (mode 0600; make it with `openssl rand -hex 32`): "
       "links to other routers use TLS 1.3 and refuse whoever lacks the key (empty: see --link-cert)",
       &RouterOptions::link_psk},
      {"--link-cert", "FFR_LINK_CERT",
       "FILE (PEM, mode 0600) with this router's certificate, for its --router-name, and private key: links "
       "use TLS 1.3, both ends verify the other's certificate against --link-ca and its name (empty: see "
       "--link-psk; neither: links in the clear)",
       &RouterOptions::link_cert},
      {"--link-ca", "FFR_LINK_CA", "FILE (PEM): the CA that signs every router's --link-cert",
       &RouterOptions::link_ca},
      {"--log-level", "FFR_LOG_LEVEL", "trace, debug, info, warn, error", &RouterOptions::log_level},
      {"--metrics-listen", "FFR_METRICS_LISTEN",
       "HOST:PORT where HTTP serves /metrics (Prometheus text format), /healthz and /readyz (empty: off)",
       &RouterOptions::metrics_listen},
      {"--poll-spin-us", "FFR_POLL_SPIN_US",
       "microseconds the poller keeps spinning without work before it sleeps (0: sleep at once)",
       nullptr, &RouterOptions::poll_spin_us},
      {"--pollers", "FFR_POLLERS",
       "poller threads (1-64): each serves the tenants placed on it (by a hash of the tenant's name, the same "
       "on every router), so tenants spread over cores and one tenant's traffic stays on one",
       nullptr, &RouterOptions::pollers},
      {"--poller-cpus", "FFR_POLLER_CPUS",
       "CPUs to pin the pollers to, e.g. 2,3 or 2-5: poller i on the i-th, round (empty: unpinned)",
       &RouterOptions::poller_cpus},
      {"--max-sessions", "FFR_MAX_SESSIONS", "connections accepted at once, all tenants together",
       nullptr, &RouterOptions::max_sessions},
      {"--max-sessions-per-tenant", "FFR_MAX_SESSIONS_PER_TENANT",
       "connections one tenant may hold (one tenant cannot exhaust --max-sessions)", nullptr,
       &RouterOptions::max_sessions_per_tenant},
      {"--max-objects-per-session", "FFR_MAX_OBJECTS_PER_SESSION",
       "verbs objects one client may hold (contexts, PDs, MRs, CQs, QPs, ...)", nullptr,
       &RouterOptions::max_objects_per_session},
      {"--max-shm-mb-per-tenant", "FFR_MAX_SHM_MB_PER_TENANT",
       "MiB of shared memory one tenant may hold in the router: registered memory plus rings (0: no limit)",
       nullptr, &RouterOptions::max_shm_mb_per_tenant},
      {"--max-handles-per-tenant", "FFR_MAX_HANDLES_PER_TENANT",
       "file descriptors plus memory mappings the router may hold for one tenant's objects (0: an equal "
       "share, among the configured tenants, of the smaller of RLIMIT_NOFILE and vm.max_map_count, less a "
       "reserve)",
       nullptr, &RouterOptions::max_handles_per_tenant},
      {"--socket-mode", "FFR_SOCKET_MODE", "permission bits of the tenant sockets (octal, e.g. 0660)",
       nullptr, &RouterOptions::socket_mode},
  };
  return table;
}

namespace {

// The --link-* knobs together (the files themselves are checked when the
// router joins its cluster).
void check_link_security(const RouterOptions& o) {
  if (!o.link_psk.empty() && !o.link_cert.empty())
    throw CLI::ValidationError("--link-psk", "exclusive with --link-cert: secure the links one way");
  if (o.link_cert.empty() != o.link_ca.empty())
    throw CLI::ValidationError(o.link_cert.empty() ? "--link-ca" : "--link-cert",
                               "--link-cert and --link-ca go together (this router's certificate, and the CA "
                               "that signs every router's)");
  if ((!o.link_psk.empty() || !o.link_cert.empty()) && o.directory.empty())
    throw CLI::ValidationError(o.link_psk.empty() ? "--link-cert" : "--link-psk",
                               "secures links to other routers: it needs --directory");
}

void check_log_level(const std::string& level) {
  for (const char* known : {"trace", "debug", "info", "warn", "error", "critical", "off"})
    if (level == known) return;
  throw CLI::ValidationError("--log-level", "'" + level + "' is not a level; use trace, debug, info, warn, error, "
                                            "critical or off");
}

// --poller-cpus: "2,3", "2-5", "0,4-7"; each a CPU this process may run on.
std::vector<int> parse_cpu_list(const std::string& text) {
  std::vector<int> cpus;
  if (text.empty()) return cpus;
  auto bad = [&](const std::string& why) { return CLI::ValidationError("--poller-cpus", "'" + text + "': " + why); };
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (::sched_getaffinity(0, sizeof allowed, &allowed) != 0)
    throw bad(std::string("cannot read this process's CPUs: ") + std::strerror(errno));
  // One number, all of [from, to): no sign, no overflow, nothing left over.
  auto number = [&](const char* from, const char* to) {
    int v = -1;
    auto [end, ec] = std::from_chars(from, to, v);
    if (from == to || ec != std::errc() || end != to || v < 0 || v >= CPU_SETSIZE)
      throw bad("expected CPU numbers and ranges, e.g. 2,3 or 2-5");
    return v;
  };
  size_t at = 0;
  while (at <= text.size()) {
    size_t comma = std::min(text.find(',', at), text.size());
    const char* item = text.data() + at;
    const char* item_end = text.data() + comma;
    const char* dash = std::find(item, item_end, '-');
    int first = number(item, dash);
    int last = dash == item_end ? first : number(dash + 1, item_end);
    if (last < first) throw bad("expected CPU numbers and ranges, e.g. 2,3 or 2-5");
    for (int cpu = first; cpu <= last; ++cpu) {
      if (!CPU_ISSET(static_cast<size_t>(cpu), &allowed))
        throw bad("CPU " + std::to_string(cpu) + " is not one this router may run on (see `taskset -p` and `nproc`)");
      cpus.push_back(cpu);
    }
    at = comma + 1;
  }
  return cpus;
}

}  // namespace

uint32_t parse_knob_number(const Knob& knob, const std::string& text) {
  bool hex = text.size() > 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X');
  std::string digits = hex ? text.substr(2) : text;
  bool ok = !digits.empty() && digits.size() <= 10;
  for (char c : digits)
    ok = ok && (hex ? std::isxdigit(static_cast<unsigned char>(c)) : std::isdigit(static_cast<unsigned char>(c))) != 0;
  unsigned long long v = ok ? std::stoull(digits, nullptr, hex ? 16 : 10) : 0;
  if (!ok || v > UINT32_MAX)
    throw std::invalid_argument(std::string(knob.flag) + " '" + text +
                                "': expected a number 0-4294967295, decimal or 0x-prefixed hex");
  return static_cast<uint32_t>(v);
}

std::string format_knob_number(const Knob& knob, uint32_t value) {
  if (!knob.hex) return std::to_string(value);
  char text[16];
  std::snprintf(text, sizeof text, "0x%x", value);
  return text;
}

RouterOptions parse_options(int argc, char** argv) {
  RouterOptions o;
  CLI::App app{"ffrouter: serves virtual RDMA verbs to containers"};
  app.set_version_flag("--version", std::string("ffrouter ") + kVersion);
  std::string socket_mode_text;
  // Numbers are read as text: CLI11 would take a leading 0 as octal.
  std::vector<std::string> number_texts(knobs().size());
  for (size_t i = 0; i < knobs().size(); ++i) {
    const Knob& k = knobs()[i];
    if (k.text != nullptr) {
      app.add_option(k.flag, o.*(k.text), k.help)->envname(k.env)->capture_default_str();
    } else if (std::string(k.flag) == "--socket-mode") {
      app.add_option(k.flag, socket_mode_text, k.help)->envname(k.env)->default_str("0666");
    } else {
      number_texts[i] = format_knob_number(k, o.*(k.number));
      app.add_option(k.flag, number_texts[i], k.help)->envname(k.env)->capture_default_str();
    }
  }
  try {
    app.parse(argc, argv);
    for (size_t i = 0; i < knobs().size(); ++i)
      if (knobs()[i].number != nullptr && !number_texts[i].empty())
        o.*(knobs()[i].number) = parse_knob_number(knobs()[i], number_texts[i]);
    check_log_level(o.log_level);
    if (!socket_mode_text.empty()) {
      size_t used = 0;
      unsigned long mode = std::stoul(socket_mode_text, &used, 8);
      if (used != socket_mode_text.size() || mode > 0777)
        throw CLI::ValidationError("--socket-mode", "expected octal permission bits like 0660");
      o.socket_mode = static_cast<uint32_t>(mode);
    }
    if (o.fabric != "soft" && o.fabric != "verbs" && o.fabric != "auto")
      throw CLI::ValidationError("--fabric", "'" + o.fabric + "' is not a fabric; use soft, verbs or auto");
    if (o.gid_index != "auto") {
      size_t used = 0;
      unsigned long idx = 256;
      if (!o.gid_index.empty() && std::isdigit(static_cast<unsigned char>(o.gid_index[0])) != 0)
        idx = std::stoul(o.gid_index, &used, 10);
      if (used != o.gid_index.size() || idx > 255)
        throw CLI::ValidationError("--gid-index", "expected auto or a number 0-255");
      o.gid_index_value = static_cast<int>(idx);
    }
    if (o.router_name.empty()) {
      char host[256] = {};
      ::gethostname(host, sizeof host - 1);
      o.router_name = host;
    }
    if (o.router_name.empty() || o.router_name.size() > 63)
      throw CLI::ValidationError("--router-name", "1-63 characters");
    if (!o.directory.empty() && o.directory.rfind("file:", 0) != 0 && o.directory.rfind("etcd:", 0) != 0)
      throw CLI::ValidationError("--directory", "'" + o.directory + "': expected file:PATH or etcd:http://HOST:PORT");
    check_link_security(o);
    if (o.pollers < 1 || o.pollers > kMaxPollers)
      throw CLI::ValidationError("--pollers", "expected 1-" + std::to_string(kMaxPollers) + " poller threads");
    o.poller_cpu_list = parse_cpu_list(o.poller_cpus);
    if (o.device_name.empty() || o.device_name.size() >= 64 ||
        o.device_name.find('/') != std::string::npos)
      throw CLI::ValidationError("--device-name", "1-63 characters, no '/'");
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 2, as the
    // router's own checks do.
    std::exit(app.exit(e) == 0 ? 0 : 2);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ffrouter: bad option value: %s\n", e.what());
    std::exit(2);
  }
  return o;
}

void log_options(const RouterOptions& o) {
  const RouterOptions defaults;
  for (const Knob& k : knobs()) {
    std::string value = k.text != nullptr ? o.*(k.text) : format_knob_number(k, o.*(k.number));
    bool is_default = k.text != nullptr ? o.*(k.text) == defaults.*(k.text)
                                        : o.*(k.number) == defaults.*(k.number);
    spdlog::log(is_default ? spdlog::level::debug : spdlog::level::info, "option {} = {}{}",
                k.flag, value, is_default ? " (default)" : "");
  }
}

FabricConfig fabric_config(const RouterOptions& o) {
  FabricConfig c;
  c.poll_spin_us = o.poll_spin_us;
  c.pollers = o.pollers;
  c.poller_cpus = o.poller_cpu_list;
  c.vendor_id = o.vendor_id;
  c.vendor_part_id = o.vendor_part_id;
  c.device = o.device;
  c.gid_index = o.gid_index_value;
  return c;
}

LinkSecurity link_security(const RouterOptions& o) { return {o.link_psk, o.link_cert, o.link_ca}; }

}  // namespace ff::router
