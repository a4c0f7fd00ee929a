// Every ffrouter knob in one table: flag, environment variable, default and
// meaning. Parsed once at startup into an immutable RouterOptions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "router/fabric/fabric.h"

namespace ff::router {

struct RouterOptions {
  std::string run_dir = "/run/ffrouter";
  std::string config_path;  // empty: one tenant named "default"
  std::string fabric = "soft";  // soft, verbs or auto
  std::string device;           // verbs fabric: the RDMA device (empty: the first with an active port)
  std::string gid_index = "auto";  // verbs fabric: its GID index, or auto (the RoCE v2 IPv4 GID)
  int gid_index_value = -1;        // gid_index parsed (-1: auto)
  std::string device_name = "ffvirt0";
  uint32_t vendor_id = 0x1af4;       // informative only
  uint32_t vendor_part_id = 0xff01;  // unknown to perftest: its legacy post_send path
  std::string log_level = "info";
  std::string metrics_listen;  // HOST:PORT of /metrics, /healthz, /readyz (empty: off)
  // Multi-host (soft fabric): where virtual IPs live, and this router's name
  // and peer listener.
  std::string directory;    // file:PATH or etcd:http://HOST:PORT (empty: this host alone)
  std::string router_name;  // empty: the host name
  std::string listen;       // HOST:PORT (empty: this router's address in the directory file)
  // How links to the other routers are secured (TLS 1.3): a pre-shared key,
  // or a certificate and the CA; none: in the clear.
  std::string link_psk;   // FILE
  std::string link_cert;  // FILE
  std::string link_ca;    // FILE
  uint32_t socket_mode = 0666;  // tenant sockets; the tenant directory mount is the boundary
  uint32_t poll_spin_us = 100;  // the poller spins this long without work before it sleeps
  uint32_t pollers = 1;         // poller threads; tenants are spread over them
  std::string poller_cpus;      // CPU list (2,3 or 2-5): poller i on the i-th, round (empty: not pinned)
  std::vector<int> poller_cpu_list;  // ... parsed
  // Limits (hostile or runaway tenants): exceeding one gives that client
  // ENOMEM (or its connection refused) and a count in ffctl.
  uint32_t max_sessions = 1024;               // connections, all tenants together
  uint32_t max_sessions_per_tenant = 256;     // so that one tenant cannot take them all
  uint32_t max_objects_per_session = 16384;   // contexts, PDs, MRs, CQs, QPs, ... of one client
  uint32_t max_shm_mb_per_tenant = 8192;      // registered memory plus rings, MiB (0: no limit)
  uint32_t max_handles_per_tenant = 0;        // fds plus mappings (0: an equal share of the process's)
};

struct Knob {
  const char* flag;     // --flag
  const char* env;      // environment variable
  const char* help;
  std::string RouterOptions::*text = nullptr;
  uint32_t RouterOptions::*number = nullptr;
  bool hex = false;  // a number shown in hex (read either way: decimal, or 0x...)
};

// A number knob's value: decimal (leading zeros are decimal, not octal) or
// 0x-prefixed hex, within 32 bits; throws std::invalid_argument naming the
// flag and what it expects.
uint32_t parse_knob_number(const Knob& knob, const std::string& text);
// A number as the knob shows it (log, --help).
std::string format_knob_number(const Knob& knob, uint32_t value);

// The table itself (options.cc).
const std::vector<Knob>& knobs();

// What the fabric is configured with, from the knobs.
FabricConfig fabric_config(const RouterOptions& options);
LinkSecurity link_security(const RouterOptions& options);

// Parses argv (and the knobs' environment variables; flags win). Exits the
// process with a usage message on --help or a bad value.
RouterOptions parse_options(int argc, char** argv);

// Logs every knob: non-default values at info, defaults at debug.
void log_options(const RouterOptions& options);

}  // namespace ff::router
