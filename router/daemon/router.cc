#include "router/daemon/router.h"

#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "proto/fd.h"
#include "router/control/metrics.h"
#include "router/daemon/config.h"
#include "router/daemon/options.h"
#include "router/fabric/soft/soft_fabric.h"

namespace ff::router {
namespace {

namespace fs = std::filesystem;

void make_dir(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error("cannot create " + dir.string() + ": " + ec.message());
  ::chmod(dir.c_str(), 0755);
}


// The handles (fds plus mappings) one tenant's objects may make the router
// hold: `configured`, or an equal share of what the process has (the smaller
// of its descriptor limit and the kernel's mapping limit), less a reserve
// for sessions, peer links and the router's own files, so that no tenant
// can take them all.
uint64_t handles_per_tenant(uint32_t configured, size_t tenants) {
  if (configured != 0) return configured;
  rlimit nofile{};
  uint64_t total = ::getrlimit(RLIMIT_NOFILE, &nofile) == 0 ? nofile.rlim_cur : 1024;
  std::ifstream max_map_count("/proc/sys/vm/max_map_count");
  uint64_t maps = 0;
  if (max_map_count >> maps && maps < total) total = maps;
  uint64_t reserve = std::min<uint64_t>(1024, total / 4);
  uint64_t each = (total - reserve) / std::max<size_t>(tenants, 1);
  spdlog::info("each tenant may make the router hold {} file descriptors and mappings "
               "(--max-handles-per-tenant)", each);
  return std::max<uint64_t>(each, 1);
}

bool same_network(const std::optional<policy::Ipv4Cidr>& a, const std::optional<policy::Ipv4Cidr>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->network == b->network && a->prefix == b->prefix);
}

}  // namespace

Router::Router(RouterOptions options, std::vector<policy::TenantSpec> tenants,
               std::unique_ptr<Fabric> fabric)
    : options_(std::move(options)),
      limits_{options_.device_name, options_.max_objects_per_session},
      fabric_(std::move(fabric)),
      signals_(io_, SIGINT, SIGTERM, SIGHUP) {
  // The router writes into pipes whose read ends its clients hold (event
  // channels, async fds); a client that closed its end must cost the router
  // an EPIPE, not its life (ffv_hostile: ClosingTheEndsItWaitsOn...).
  std::signal(SIGPIPE, SIG_IGN);
  make_dir(options_.run_dir);
  lock_run_dir();
  listeners_.push_back(
      std::make_shared<Listener>(io_, SessionRole::kAdmin, nullptr, admin_socket_path()));
  bind(*listeners_.back(), 0600);
  for (auto& t : tenants) {
    tenants_.push_back(std::make_unique<policy::TenantSpec>(std::move(t)));
    const policy::TenantSpec& spec = *tenants_.back();
    quotas_.emplace(spec.name, policy::TenantQuota(uint64_t{options_.max_shm_mb_per_tenant} << 20));
    handle_quotas_.emplace(spec.name, policy::TenantQuota());
    make_dir(fs::path(options_.run_dir) / "tenants" / spec.name);
    listeners_.push_back(std::make_shared<Listener>(io_, SessionRole::kTenant, &spec, tenant_socket_path(spec)));
    bind(*listeners_.back(), options_.socket_mode);
    apply_qos(spec);
  }
  share_handles();
  if (!options_.directory.empty()) join_cluster();
  connection_manager_.set_routes(this);
  connection_manager_.set_clock(this);
  if (!options_.metrics_listen.empty())
    metrics_ = std::make_unique<MetricsServer>(
        io_, options_.metrics_listen,
        MetricsServer::Handlers{[this] { return render_metrics(collect_metrics(*this)); },
                                [this] { return running_ && !stopping_; }});
  wait_for_signal();
}

void Router::wait_for_signal() {
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec || stopping_) return;
    if (sig == SIGHUP) {
      service_.reloading();
      reload_config();
      service_.ready(serving());
      return wait_for_signal();
    }
    spdlog::info("signal {}: shutting down", sig);
    stop();
  });
}

std::vector<const policy::TenantSpec*> Router::tenants() const {
  std::vector<const policy::TenantSpec*> out;
  for (const auto& t : tenants_) out.push_back(t.get());
  return out;
}

void Router::share_handles() {
  const uint64_t each = handles_per_tenant(options_.max_handles_per_tenant, tenants_.size());
  for (const auto& t : tenants_) handle_quotas_[t->name].set_limit(each);
}

void Router::reload_config() {
  if (options_.config_path.empty()) {
    spdlog::info("SIGHUP: no --config to re-read (the router serves the default tenant); nothing changed");
    return;
  }
  std::vector<policy::TenantSpec> next;
  try {
    next = load_tenants(options_.config_path);
  } catch (const ConfigError& e) {
    spdlog::error("SIGHUP: config not reloaded, the running one stays: {}", e.what());
    return;
  } catch (const std::exception& e) {  // whatever the file holds, the router goes on
    spdlog::error("SIGHUP: config not reloaded, the running one stays: {}: {}", options_.config_path, e.what());
    return;
  }
  apply_tenants(std::move(next));
}

void Router::apply_tenants(std::vector<policy::TenantSpec> next) {
  if (stopping_) return;
  std::vector<std::string> added, removed, changed;
  // Removed first, so that a name's quotas are free for nobody else.
  for (size_t i = 0; i < tenants_.size();) {
    const policy::TenantSpec& t = *tenants_[i];
    if (std::any_of(next.begin(), next.end(), [&](const auto& n) { return n.name == t.name; })) {
      ++i;
      continue;
    }
    removed.push_back(t.name);
    remove_tenant(t);
    removed_tenants_.push_back(std::move(tenants_[i]));
    tenants_.erase(tenants_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  std::vector<std::unique_ptr<policy::TenantSpec>> ordered;
  for (auto& n : next) {
    auto it = std::find_if(tenants_.begin(), tenants_.end(), [&](const auto& t) { return t && t->name == n.name; });
    if (it != tenants_.end()) {
      policy::TenantSpec& t = **it;
      bool network_changed = !same_network(t.network, n.network);
      bool qos_changed = !(t.qos == n.qos);
      if (network_changed || t.virtual_ip != n.virtual_ip || qos_changed) changed.push_back(t.name);
      t.network = n.network;
      t.virtual_ip = n.virtual_ip;
      if (network_changed) close_sessions_outside(t);
      if (qos_changed) {  // applies to its running traffic at once
        t.qos = n.qos;
        apply_qos(t);
      }
      ordered.push_back(std::move(*it));
      continue;
    }
    auto t = std::make_unique<policy::TenantSpec>(std::move(n));
    std::string name = t->name;
    if (add_tenant(*t)) {
      added.push_back(name);
      ordered.push_back(std::move(t));
    }
  }
  tenants_ = std::move(ordered);
  share_handles();
  auto list = [](const std::vector<std::string>& names) {
    std::string out;
    for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? std::string("none") : out;
  };
  spdlog::info("config {} reloaded: {} tenant(s); added: {}; removed: {}; changed: {}", options_.config_path,
               tenants_.size(), list(added), list(removed), list(changed));
}

Status Router::set_tenant_qos(const std::string& tenant, const policy::QosSpec& qos) {
  for (auto& t : tenants_) {
    if (t->name != tenant) continue;
    t->qos = qos;
    apply_qos(*t);
    spdlog::info(
        "tenant {}: qos now max_gbps {} max_mops {} burst {} B weight {} max_control_per_s {} (until the next "
        "change or reload)",
        tenant, qos.max_gbps, qos.max_mops, qos.burst_bytes, qos.weight, qos.max_control_per_s);
    return Status{};
  }
  return Error{EINVAL, "no tenant named '" + tenant + "' (ffctl status lists them)"};
}

void Router::apply_qos(const policy::TenantSpec& t) {
  fabric_->configure_tenant(t.name, t.qos);
  double per_s = t.qos.max_control_per_s;
  auto now = std::chrono::steady_clock::now().time_since_epoch();
  control_rates_[t.name].bucket.reconfigure(per_s, policy::control_burst(per_s),
                                            static_cast<uint64_t>(std::chrono::nanoseconds(now).count()));
  // Requests waiting for their turn under the old rate go now (as QPs
  // parked under old caps do).
  for (const auto& [id, s] : sessions_)
    if (s->tenant() == &t) s->release_control_wait();
}

uint64_t Router::admit_control(const policy::TenantSpec& t, uint64_t now_ns) {
  auto it = control_rates_.find(t.name);
  if (it == control_rates_.end()) return 0;
  return it->second.bucket.reserve(1, now_ns) - now_ns;
}

void Router::control_waited(const policy::TenantSpec& t, uint64_t ns) {
  if (auto it = control_rates_.find(t.name); it != control_rates_.end()) it->second.delayed_ns += ns;
}

uint64_t Router::control_delayed_ns(const policy::TenantSpec& t) const {
  auto it = control_rates_.find(t.name);
  return it == control_rates_.end() ? 0 : it->second.delayed_ns;
}

bool Router::add_tenant(const policy::TenantSpec& t) {
  quotas_.try_emplace(t.name, uint64_t{options_.max_shm_mb_per_tenant} << 20);
  handle_quotas_.try_emplace(t.name);
  auto l = std::make_shared<Listener>(io_, SessionRole::kTenant, &t, tenant_socket_path(t));
  try {
    make_dir(fs::path(options_.run_dir) / "tenants" / t.name);
    bind(*l, options_.socket_mode);
  } catch (const std::exception& e) {
    spdlog::error("tenant {} not added: {}", t.name, e.what());
    return false;
  }
  listeners_.push_back(l);
  apply_qos(t);
  if (running_) accept_next(l);
  return true;
}

void Router::remove_tenant(const policy::TenantSpec& t) {
  for (auto it = listeners_.begin(); it != listeners_.end(); ++it) {
    if ((*it)->tenant != &t) continue;
    close(**it);
    ::unlink((*it)->path.c_str());
    listeners_.erase(it);
    break;
  }
  for (auto& s : sessions())
    if (s->tenant() == &t) s->close("tenant " + t.name + " was removed from the config");
}

void Router::close_sessions_outside(const policy::TenantSpec& t) {
  if (!t.network) return;
  for (auto& s : sessions())
    if (s->tenant() == &t && s->greeted() && !t.network->contains(s->virtual_ip()))
      s->close("virtual IP " + policy::format_ipv4(s->virtual_ip()) + " is outside tenant " + t.name +
               "'s network " + t.network->to_string() + " since the config was reloaded");
}

void Router::close(Listener& l) {
  boost::system::error_code ignored;
  l.closed = true;
  l.acceptor.close(ignored);
  l.retry.cancel();
}

void Router::join_cluster() {
  try {
    directory_ = open_directory(options_.directory, options_.router_name, options_.listen);
  } catch (const DirectoryError& e) {
    throw FabricStartError(std::string("directory: ") + e.what());
  }
  std::string listen = options_.listen;
  if (listen.empty()) {
    auto own = directory_->address_of(options_.router_name);
    if (!own)
      throw FabricStartError("router '" + options_.router_name + "' is not in " + directory_->describe() +
                             ": add it there, or pass --router-name (its name) and --listen HOST:PORT");
    listen = *own;
  }
  auto cluster = fabric_->join_cluster(io_, *directory_, listen, link_security(options_));
  if (!cluster && cluster.error().code == EOPNOTSUPP) {
    // Its data between hosts goes device to device: the routers' control
    // messages travel on the soft fabric's links, which carry nothing else.
    FabricConfig links_only = fabric_config(options_);
    links_only.pollers = 1;  // control messages only: no tenant's traffic
    links_only.poller_cpus.clear();
    links_only.poller_name = "ffr-links";
    message_links_ = std::make_unique<SoftFabric>(links_only);
    auto links = message_links_->join_cluster(io_, *directory_, listen, link_security(options_));
    if (!links) throw FabricStartError(links.error().message);
    cluster = fabric_->join_cluster_over(std::move(*links), io_, *directory_);
  }
  if (!cluster) throw FabricStartError(cluster.error().message);
  cluster_ = std::move(*cluster);
  cluster_->on_messages(
      [this](const std::string& router, std::span<const std::byte> message) {
        connection_manager_.receive(router, message);
      },
      [this](const std::string& router) { connection_manager_.router_lost(router); });
}

void Router::session_greeted(Session& s) {
  if (directory_ && s.tenant() != nullptr) directory_->publish(s.tenant()->name, s.virtual_ip(), s.hold());
}

Router::~Router() {
  connection_manager_.set_routes(nullptr);
  connection_manager_.set_clock(nullptr);
  if (cluster_) cluster_->on_messages(nullptr, nullptr);
  cluster_.reset();
  directory_.reset();
  for (auto& l : listeners_) ::unlink(l->path.c_str());
}

std::string Router::tenant_socket_path(const policy::TenantSpec& t) const {
  return (fs::path(options_.run_dir) / "tenants" / t.name / "ffrouter.sock").string();
}

std::string Router::admin_socket_path() const {
  return (fs::path(options_.run_dir) / "admin.sock").string();
}

// One router per run directory: the lock (in the run directory itself, which
// no container sees) says whether another one serves it. Sockets are not
// proof: a tenant's socket directory is visible inside its containers.
void Router::lock_run_dir() {
  std::string path = (fs::path(options_.run_dir) / "ffrouter.lock").string();
  run_dir_lock_ = UniqueFd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!run_dir_lock_) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  if (::flock(run_dir_lock_.get(), LOCK_EX | LOCK_NB) != 0)
    throw std::runtime_error("another ffrouter is already serving " + options_.run_dir + " (it holds " + path +
                             "); stop it or choose another --run-dir");
}

void Router::bind(Listener& l, unsigned mode) {
  if (l.path.size() >= sizeof(sockaddr_un::sun_path))
    throw std::runtime_error("socket path too long (max 107 bytes): " + l.path +
                             "; choose a shorter --run-dir");
  // With the run directory locked, whatever is at a socket's path is stale,
  // or was put there by someone else (a container's root can replace files
  // in a tenant directory mounted read-write): it goes, never followed.
  std::error_code ec;
  // (Not even connected to: a listener that never accepts could hold us.)
  if (fs::symlink_status(l.path, ec).type() != fs::file_type::not_found) {
    spdlog::info("{}: replacing what was there (a previous router's socket, or anything else)", l.path);
    fs::remove_all(l.path, ec);
    if (ec) throw std::runtime_error("cannot remove " + l.path + ": " + ec.message());
  }
  boost::asio::local::stream_protocol::endpoint ep(l.path);
  l.acceptor.open(ep.protocol());
  l.acceptor.bind(ep);
  if (::chmod(l.path.c_str(), mode) != 0)
    throw std::runtime_error("chmod " + l.path + ": " + std::strerror(errno));
  l.acceptor.listen(boost::asio::socket_base::max_listen_connections);
  spdlog::info("listening on {} ({})", l.path, l.tenant != nullptr ? "tenant " + l.tenant->name : "admin");
}

void Router::accept_next(std::shared_ptr<Listener> l) {
  Listener& listener = *l;
  listener.acceptor.async_accept([this, l = std::move(l)](const boost::system::error_code& ec,
                                                          boost::asio::local::stream_protocol::socket sock) mutable {
    if (stopping_ || l->closed) return;
    if (ec) return accept_failed(std::move(l), ec);
    l->backoff = std::chrono::milliseconds(0);
    admit(*l, std::move(sock));
    accept_next(std::move(l));
  });
}

// EMFILE and friends: keep serving the clients we have, and try again later
// (at once, the same error would come back and spin the control thread).
void Router::accept_failed(std::shared_ptr<Listener> l, const boost::system::error_code& ec) {
  if (++l->failures == 1 || l->failures % 100 == 0)
    spdlog::warn("accept on {} failed: {} ({} times so far; retrying with backoff)", l->path, ec.message(),
                 l->failures);
  l->backoff = std::clamp(l->backoff * 2, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
  l->retry.expires_after(l->backoff);
  Listener& listener = *l;
  listener.retry.async_wait([this, l = std::move(l)](const boost::system::error_code& wait_ec) mutable {
    if (!wait_ec && !stopping_ && !l->closed) accept_next(std::move(l));
  });
}

void Router::admit(Listener& l, boost::asio::local::stream_protocol::socket sock) {
  if (l.role == SessionRole::kTenant && (sessions_.size() >= options_.max_sessions ||
                                         tenant_sessions(*l.tenant) >= options_.max_sessions_per_tenant)) {
    // Refused before any work is done for it: the peer sees the connection close.
    ++sessions_refused_;
    quota(*l.tenant).count_refusal();
    if (sessions_refused_ == 1 || sessions_refused_ % 1000 == 0)
      spdlog::warn("refusing connections on {}: --max-sessions {} or --max-sessions-per-tenant {} reached "
                   "({} refused so far)",
                   l.path, options_.max_sessions, options_.max_sessions_per_tenant, sessions_refused_);
    return;
  }
  uint64_t id = next_session_id_++;
  auto s = std::make_shared<Session>(*this, l.role, l.tenant, std::move(sock), id);
  sessions_.emplace(id, s);
  s->start();
}

void Router::run() {
  running_ = true;
  for (auto& l : listeners_) accept_next(l);
  if (metrics_) metrics_->start();
  spdlog::info("ffrouter ready: fabric {}, device {}, {} tenant(s), run dir {}", fabric_->name(),
               options_.device_name, tenants_.size(), options_.run_dir);
  service_.ready(serving());
  io_.run();
}

std::string Router::serving() const {
  return "serving " + std::to_string(tenants_.size()) + " tenant(s) on the " + std::string(fabric_->name()) +
         " fabric, run dir " + options_.run_dir;
}

void Router::stop() {
  boost::asio::post(io_, [this] {
    if (stopping_) return;
    stopping_ = true;
    service_.stopping();
    boost::system::error_code ignored;
    signals_.cancel(ignored);
    for (auto& l : listeners_) close(*l);
    if (metrics_) metrics_->stop();
    if (cluster_) cluster_->shutdown();
    for (auto& s : sessions()) s->close("router shutting down");
    for (auto& [key, timer] : cm_timers_) timer->cancel();
  });
}

std::vector<std::shared_ptr<Session>> Router::sessions() const {
  std::vector<std::shared_ptr<Session>> out;
  out.reserve(sessions_.size());
  for (const auto& [id, s] : sessions_) out.push_back(s);
  return out;
}

bool Router::serves_here(const std::string& tenant, uint32_t vip) const {
  return std::any_of(sessions_.begin(), sessions_.end(), [&](const auto& entry) {
    const Session& s = *entry.second;
    return s.greeted() && s.tenant() != nullptr && s.tenant()->name == tenant && s.virtual_ip() == vip;
  });
}

bool Router::reachable(const std::string& tenant, uint32_t vip) { return router_for(tenant, vip).has_value(); }

std::optional<std::string> Router::router_for(const std::string& tenant, uint32_t vip) {
  if (serves_here(tenant, vip)) return std::string();
  if (!directory_) return std::nullopt;
  auto router = directory_->router_for(tenant, vip);
  if (router && *router == directory_->self()) return std::string();
  return router;
}

void Router::send(const std::string& router, std::vector<std::byte> message) {
  if (cluster_) return cluster_->send_message(router, std::move(message));
  boost::asio::post(io_, [this, router] { connection_manager_.router_lost(router); });
}

// The CM's timers are the router's, so that a stopping router cancels them
// instead of waiting up to a DREQ timeout to exit.
void Router::after(std::chrono::milliseconds delay, std::function<void()> fire) {
  if (stopping_) return;
  uint64_t key = next_timer_++;
  auto& timer = cm_timers_.emplace(key, std::make_unique<boost::asio::steady_timer>(io_, delay)).first->second;
  timer->async_wait([this, key, fire = std::move(fire)](const boost::system::error_code& ec) {
    cm_timers_.erase(key);
    if (!ec) fire();
  });
}

void Router::session_closed(uint64_t session_id) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  const Session& s = *it->second;
  if (directory_ && s.greeted() && s.tenant() != nullptr) directory_->withdraw(s.tenant()->name, s.virtual_ip());
  sessions_.erase(it);
}

size_t Router::tenant_sessions(const policy::TenantSpec& t) const {
  size_t n = 0;
  for (const auto& [id, s] : sessions_)
    if (s->tenant() == &t) ++n;
  return n;
}

}  // namespace ff::router
