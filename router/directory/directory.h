// The directory: which router serves a tenant's virtual IP, and where each
// router listens for its peers. Pluggable:
//   * StaticDirectory (`--directory file:PATH`): a YAML file every router
//     of the cluster reads (static.cc);
//   * EtcdDirectory (`--directory etcd:http://HOST:PORT`): every router
//     registers itself and its clients' virtual IPs under a lease and
//     watches the others' (etcd.cc).
// The view is kept in memory: lookups never wait on the network.
//
// Thread contract: lookups and publish/withdraw may come from any thread
// (the view is behind a mutex); backends replace the view from theirs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/tenant.h"

namespace ff::router {

struct DirectoryError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct RouterRecord {
  std::string name;
  std::string address;  // host:port of its peer listener
};

// Addresses of one tenant served by one router.
struct DirectoryEntry {
  std::string tenant;
  policy::Ipv4Cidr addresses;
  std::string router;
};

// What a backend knows: routers (name -> address) and addresses.
struct DirectoryView {
  std::map<std::string, std::string> routers;
  std::vector<DirectoryEntry> entries;
};
// Parses the static directory's YAML (throws DirectoryError naming the line).
DirectoryView parse_static_directory(const std::string& text, const std::string& origin);

class Directory {
 public:
  explicit Directory(std::string self) : self_(std::move(self)) {}
  virtual ~Directory() = default;
  Directory(const Directory&) = delete;
  Directory& operator=(const Directory&) = delete;

  // "file PATH" or "etcd URL", for logs and ffctl.
  virtual std::string describe() const = 0;
  // Re-reads the backend now (a lookup missed: the entry may be seconds
  // old). Blocks briefly; a no-op for the static file.
  virtual void refresh() {}
  const std::string& self() const { return self_; }

  // The router serving `vip` in `tenant`: this router's own clients first,
  // then the directory's entries (the most specific prefix wins).
  std::optional<std::string> router_for(std::string_view tenant, uint32_t vip) const;
  std::optional<std::string> address_of(std::string_view router) const;
  std::vector<RouterRecord> routers() const;
  std::vector<DirectoryEntry> entries() const;

  // A client of this router has `vip` (counted: several processes of one
  // container share it). The backend learns of the first and the last.
  // `done` runs (on the backend's thread, or at once) when the address is
  // in the directory, or the backend gave up for now and retries later:
  // the client's Hello is answered then, so that its peers' routers find it.
  void publish(std::string_view tenant, uint32_t vip, std::function<void()> done = [] {});
  void withdraw(std::string_view tenant, uint32_t vip);

  // Called (from the backend's thread) after the routers changed.
  void on_routers_changed(std::function<void()> f) {
    std::lock_guard lock(mu_);
    routers_changed_ = std::move(f);
  }

 protected:
  // The backend's hooks for this router's own addresses; a new one calls
  // `landed` once it is written (or failed for now), from any thread.
  virtual void published(const std::string& /*tenant*/, uint32_t /*vip*/, bool /*present*/,
                         std::function<void()> landed) {
    landed();
  }
  void replace_view(std::map<std::string, std::string> routers, std::vector<DirectoryEntry> entries);

 private:
  const std::string self_;
  mutable std::mutex mu_;
  std::map<std::string, std::string> routers_;  // name -> address
  std::vector<DirectoryEntry> entries_;
  std::map<std::pair<std::string, uint32_t>, int> local_;
  // Publications under way: who waits for each.
  std::map<std::pair<std::string, uint32_t>, std::vector<std::function<void()>>> landing_;
  std::function<void()> routers_changed_;
};

// `spec` is file:PATH or etcd:URL; `self_address` is where this router's
// peers reach it (empty: from the static file's entry). Throws
// DirectoryError with what to fix.
std::unique_ptr<Directory> open_directory(const std::string& spec, const std::string& self,
                                          const std::string& self_address);

// A YAML directory (throws DirectoryError naming the line):
//   routers:
//     - name: host-a
//       address: 10.99.0.1:7470
//       tenants:
//         blue: [10.50.1.0/24, 10.50.9.7]
std::unique_ptr<Directory> load_static_directory(const std::string& path, const std::string& self);
std::unique_ptr<Directory> open_etcd_directory(const std::string& url, const std::string& self,
                                               const std::string& self_address);

}  // namespace ff::router
