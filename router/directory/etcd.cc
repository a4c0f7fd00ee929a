// The etcd directory: every router keeps, under its own lease (TTL
// kLeaseTtl, renewed every second),
//   /ffrouter/routers/<name>            -> its peer address (HOST:PORT)
//   /ffrouter/vips/<tenant>/<a.b.c.d>   -> its name, per client virtual IP
// and watches /ffrouter/ for changes, re-reading the prefix on each. A
// router that dies stops renewing: its keys vanish within the TTL, and the
// others stop routing to it. Spoken: etcd v3's JSON gateway (HTTP/1.1, keys
// and values base64), with Boost.Beast, on two threads of its own (renewals
// and writes; the watch stream), so the router's threads do not wait on etcd
// (but for refresh(): bounded, rate-limited, skipped while etcd fails).
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <deque>
#include <thread>

#include "router/directory/directory.h"
#include "router/directory/endpoint.h"

namespace ff::router {
namespace {

namespace asio = boost::asio;
namespace http = boost::beast::http;
using asio::ip::tcp;
using nlohmann::json;

constexpr int kLeaseTtl = 5;
constexpr auto kRenewEvery = std::chrono::seconds(1);
constexpr timeval kCallWait{2, 0};         // per socket step, on the directory's own threads
constexpr timeval kRefreshWait{0, 200000};  // per socket step, on the control thread
constexpr auto kRefreshEvery = std::chrono::milliseconds(100);
constexpr char kPrefix[] = "/ffrouter/";
constexpr char kPrefixEnd[] = "/ffrouter0";  // '/' + 1: the end of the prefix range
constexpr char kRouters[] = "/ffrouter/routers/";
constexpr char kVips[] = "/ffrouter/vips/";

std::string base64(std::string_view in) {
  auto byte = [](char c) { return static_cast<uint32_t>(static_cast<uint8_t>(c)); };
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = byte(in[i]) << 16 | byte(in[i + 1]) << 8 | byte(in[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = byte(in[i]) << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = byte(in[i]) << 16 | byte(in[i + 1]) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::optional<std::string> unbase64(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  return out;
}

struct EtcdError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class EtcdDirectory final : public Directory {
 public:
  EtcdDirectory(std::string url, const std::string& self, std::string self_address)
      : Directory(self), url_(std::move(url)), self_address_(std::move(self_address)) {
    std::string rest = url_;
    if (rest.rfind("http://", 0) == 0) rest = rest.substr(7);
    while (!rest.empty() && rest.back() == '/') rest.pop_back();
    auto ep = parse_endpoint(rest);
    if (!ep) throw DirectoryError("etcd URL '" + url_ + "': expected http://IPV4:PORT, e.g. http://127.0.0.1:2379");
    endpoint_ = tcp::endpoint(asio::ip::address_v4(ep->ip), ep->port);
    try {
      register_self();
      reload();
    } catch (const EtcdError& e) {
      throw DirectoryError("cannot use etcd at " + url_ + ": " + e.what() + " (is etcd running there?)");
    }
    renewer_ = std::thread([this] { renew_loop(); });
    watcher_ = std::thread([this] { watch_loop(); });
  }

  ~EtcdDirectory() override {
    {
      std::lock_guard lock(ops_mu_);
      stop_ = true;
    }
    ops_cv_.notify_all();
    int fd = watch_fd_.load();
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
    renewer_.join();
    watcher_.join();
    // Leave now rather than when the lease runs out.
    try {
      call("/v3/lease/revoke", json{{"ID", lease_}});
    } catch (const EtcdError&) {
    }
  }

  std::string describe() const override { return "etcd " + url_; }

  // A lookup missed, on the control thread: the one etcd call a router
  // thread makes, so it is bounded (kRefreshWait per step), at most one per
  // kRefreshEvery whatever the clients ask, and skipped while etcd is
  // failing (the watch and the renewals go on on their own threads).
  void refresh() override {
    auto now = std::chrono::steady_clock::now();
    if (failing_.load() || now - last_refresh_ < kRefreshEvery) return;
    last_refresh_ = now;
    try {
      reload(kRefreshWait);
    } catch (const EtcdError& e) {
      failing_ = true;  // until the renewer reaches etcd again
      spdlog::warn("etcd: {}", e.what());
    }
  }

 protected:
  // Writes go through the renewal thread, never the caller's (the control
  // thread must not wait on etcd). A new address is written before the
  // client's Hello is answered (`landed`: Session::hold), so that once a
  // program can name its GID to a peer, the peer's router can find it; a
  // write that fails is answered anyway and retried.
  void published(const std::string& tenant, uint32_t vip, bool present, std::function<void()> landed) override {
    {
      std::lock_guard lock(ops_mu_);
      ops_.push_back({tenant, vip, present, std::move(landed)});
    }
    ops_cv_.notify_all();
  }

 private:
  struct Op {
    std::string tenant;
    uint32_t vip;
    bool present;
    std::function<void()> landed;  // called once, after the first attempt
  };

  // Bounded waits (Linux applies the send timeout to connect too): a hung
  // etcd must not hang whoever asked.
  static void open(tcp::socket& s, bool bounded_reads, timeval limit = kCallWait) {
    s.open(tcp::v4());
    ::setsockopt(s.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    if (bounded_reads) ::setsockopt(s.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  }

  http::request<http::string_body> request(const std::string& target, const json& body) const {
    http::request<http::string_body> req{http::verb::post, target, 11};
    req.set(http::field::host, endpoint_.address().to_string());
    req.set(http::field::content_type, "application/json");
    req.body() = body.dump();
    req.prepare_payload();
    return req;
  }

  // One request on a fresh connection: etcd is near, and this keeps no
  // state to get wrong after etcd restarts.
  json call(const std::string& target, const json& body, timeval limit = kCallWait) {
    try {
      asio::io_context io;
      tcp::socket s(io);
      open(s, /*bounded_reads=*/true, limit);
      s.connect(endpoint_);
      http::write(s, request(target, body));
      boost::beast::flat_buffer buf;
      http::response<http::string_body> res;
      http::read(s, buf, res);
      if (res.result() != http::status::ok)
        throw EtcdError(target + " answered " + std::to_string(res.result_int()) + ": " + res.body());
      return json::parse(res.body());
    } catch (const boost::system::system_error& e) {
      throw EtcdError(target + ": " + e.code().message());
    } catch (const json::exception& e) {
      throw EtcdError(target + ": unreadable answer: " + e.what());
    }
  }

  void put(const std::string& key, const std::string& value) {
    call("/v3/kv/put", json{{"key", base64(key)}, {"value", base64(value)}, {"lease", lease_}});
  }
  static std::string vip_key(const std::string& tenant, uint32_t vip) {
    return kVips + tenant + "/" + policy::format_ipv4(vip);
  }

  // A lease, our router key, and every local address (again, after etcd
  // lost our lease).
  void register_self() {
    json grant = call("/v3/lease/grant", json{{"TTL", kLeaseTtl}});
    if (!grant.contains("ID")) throw EtcdError("lease grant without an ID: " + grant.dump());
    lease_ = grant["ID"].is_string() ? grant["ID"].get<std::string>() : std::to_string(grant["ID"].get<int64_t>());
    put(kRouters + self(), self_address_);
    std::vector<std::pair<std::string, uint32_t>> mine;
    {
      std::lock_guard lock(ops_mu_);
      for (const auto& [key, n] : published_) mine.push_back(key);
    }
    for (const auto& [tenant, vip] : mine) put(vip_key(tenant, vip), self());
  }

  void reload(timeval limit = kCallWait) {
    json r = call("/v3/kv/range", json{{"key", base64(kPrefix)}, {"range_end", base64(kPrefixEnd)}}, limit);
    DirectoryView view;
    if (r.contains("kvs")) {
      for (const auto& kv : r["kvs"]) {
        auto key = unbase64(kv.value("key", ""));
        auto value = unbase64(kv.value("value", ""));
        if (!key || !value) continue;
        if (key->rfind(kRouters, 0) == 0) {
          std::string name = key->substr(sizeof kRouters - 1);
          if (!name.empty() && parse_endpoint(*value)) view.routers[name] = *value;
        } else if (key->rfind(kVips, 0) == 0) {
          std::string rest = key->substr(sizeof kVips - 1);
          auto slash = rest.find('/');
          if (slash == std::string::npos) continue;
          auto ip = policy::parse_ipv4(rest.substr(slash + 1));
          if (!ip) continue;
          view.entries.push_back({rest.substr(0, slash), policy::Ipv4Cidr{*ip, 32}, *value});
        }
      }
    }
    replace_view(std::move(view.routers), std::move(view.entries));
  }

  void renew_loop() {
    std::unique_lock lock(ops_mu_);
    while (!stop_) {
      ops_cv_.wait_for(lock, kRenewEvery, [this] { return stop_ || !ops_.empty(); });
      if (stop_) break;
      std::deque<Op> ops;
      ops.swap(ops_);
      for (const auto& op : ops) {
        auto key = std::make_pair(op.tenant, op.vip);
        if (op.present)
          published_[key] = 1;
        else
          published_.erase(key);
      }
      auto due = std::chrono::steady_clock::now() >= next_renewal_;
      lock.unlock();
      try {
        for (auto& op : ops) {
          if (op.present)
            put(vip_key(op.tenant, op.vip), self());
          else
            call("/v3/kv/deleterange", json{{"key", base64(vip_key(op.tenant, op.vip))}});
          if (op.landed) std::exchange(op.landed, nullptr)();
        }
        if (due) {
          json r = call("/v3/lease/keepalive", json{{"ID", lease_}});
          // An expired lease comes back without a TTL: etcd forgot us
          // (it restarted, or we were cut off longer than the TTL).
          const json& result = r.contains("result") ? r["result"] : r;
          if (!result.contains("TTL") || result["TTL"] == "0" || result["TTL"] == 0) {
            spdlog::warn("etcd: lease expired; registering again");
            register_self();
          }
          next_renewal_ = std::chrono::steady_clock::now() + kRenewEvery;
          if (failing_) spdlog::info("etcd: reachable again at {}", url_);
          failing_ = false;
        }
      } catch (const EtcdError& e) {
        if (!failing_) spdlog::warn("etcd: {} (retrying every second)", e.what());
        failing_ = true;
        next_renewal_ = std::chrono::steady_clock::now() + kRenewEvery;
        // Ops that failed go again; their clients are answered now.
        for (auto& op : ops)
          if (op.landed) std::exchange(op.landed, nullptr)();
        std::lock_guard relock(ops_mu_);
        for (auto it = ops.rbegin(); it != ops.rend(); ++it) ops_.push_front(std::move(*it));
      }
      lock.lock();
      if (!ops_.empty()) ops_cv_.wait_for(lock, kRenewEvery);  // do not spin on a dead etcd
    }
  }

  // Watches the prefix; every event (and every reconnection) re-reads it.
  void watch_loop() {
    while (!stopping()) {
      try {
        asio::io_context io;
        tcp::socket s(io);
        open(s, /*bounded_reads=*/false);  // the stream waits for events as long as it takes
        watch_fd_ = s.native_handle();
        s.connect(endpoint_);
        if (stopping()) break;
        http::write(s, request("/v3/watch", json{{"create_request",
                                                 {{"key", base64(kPrefix)}, {"range_end", base64(kPrefixEnd)}}}}));
        boost::beast::flat_buffer buf;
        http::response_parser<http::buffer_body> parser;
        parser.body_limit(boost::none);
        http::read_header(s, buf, parser);
        reload();  // whatever changed before the watch started
        char chunk[8192];
        while (!parser.is_done() && !stopping()) {
          parser.get().body().data = chunk;
          parser.get().body().size = sizeof chunk;
          boost::system::error_code ec;
          http::read_some(s, buf, parser, ec);
          if (ec == http::error::need_buffer) ec = {};
          if (ec) throw boost::system::system_error(ec);
          if (parser.get().body().size < sizeof chunk) reload();
        }
      } catch (const std::exception& e) {
        if (stopping()) break;
        spdlog::debug("etcd watch: {}; again in a second", e.what());
      }
      watch_fd_ = -1;
      std::unique_lock lock(ops_mu_);
      ops_cv_.wait_for(lock, kRenewEvery, [this] { return stop_; });
    }
    watch_fd_ = -1;
  }

  bool stopping() {
    std::lock_guard lock(ops_mu_);
    return stop_;
  }

  std::string url_;
  std::string self_address_;
  tcp::endpoint endpoint_;
  std::string lease_;
  std::mutex ops_mu_;
  std::condition_variable ops_cv_;
  std::deque<Op> ops_;
  std::map<std::pair<std::string, uint32_t>, int> published_;  // what we registered (renewer's)
  bool stop_ = false;
  std::atomic<bool> failing_{false};  // the renewer's view of etcd
  std::chrono::steady_clock::time_point last_refresh_{};  // control thread's
  std::chrono::steady_clock::time_point next_renewal_{};
  std::atomic<int> watch_fd_{-1};
  std::thread renewer_;
  std::thread watcher_;
};

}  // namespace

std::unique_ptr<Directory> open_etcd_directory(const std::string& url, const std::string& self,
                                               const std::string& self_address) {
  return std::make_unique<EtcdDirectory>(url, self, self_address);
}

}  // namespace ff::router
