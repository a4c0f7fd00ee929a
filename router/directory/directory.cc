#include "router/directory/directory.h"

namespace ff::router {

std::optional<std::string> Directory::router_for(std::string_view tenant, uint32_t vip) const {
  std::lock_guard lock(mu_);
  if (local_.count({std::string(tenant), vip}) != 0) return self_;
  const DirectoryEntry* best = nullptr;
  for (const auto& e : entries_)
    if (e.tenant == tenant && e.addresses.contains(vip) && (best == nullptr || e.addresses.prefix > best->addresses.prefix))
      best = &e;
  if (best == nullptr) return std::nullopt;
  return best->router;
}

std::optional<std::string> Directory::address_of(std::string_view router) const {
  std::lock_guard lock(mu_);
  auto it = routers_.find(std::string(router));
  if (it == routers_.end()) return std::nullopt;
  return it->second;
}

std::vector<RouterRecord> Directory::routers() const {
  std::lock_guard lock(mu_);
  std::vector<RouterRecord> out;
  for (const auto& [name, address] : routers_) out.push_back({name, address});
  return out;
}

std::vector<DirectoryEntry> Directory::entries() const {
  std::lock_guard lock(mu_);
  return entries_;
}

void Directory::publish(std::string_view tenant, uint32_t vip, std::function<void()> done) {
  auto key = std::make_pair(std::string(tenant), vip);
  {
    std::lock_guard lock(mu_);
    bool first = ++local_[key] == 1;
    auto landing = landing_.find(key);
    if (!first && landing == landing_.end()) {
      done();  // in the directory already
      return;
    }
    landing_[key].push_back(std::move(done));
    if (!first) return;  // it lands with the first client's
  }
  published(key.first, vip, true, [this, key] {
    std::vector<std::function<void()>> waiting;
    {
      std::lock_guard lock(mu_);
      waiting = std::move(landing_[key]);
      landing_.erase(key);
    }
    for (auto& w : waiting) w();
  });
}

void Directory::withdraw(std::string_view tenant, uint32_t vip) {
  bool last = false;
  {
    std::lock_guard lock(mu_);
    auto it = local_.find({std::string(tenant), vip});
    if (it == local_.end()) return;
    if (--it->second == 0) {
      local_.erase(it);
      last = true;
    }
  }
  if (last) published(std::string(tenant), vip, false, [] {});
}

void Directory::replace_view(std::map<std::string, std::string> routers, std::vector<DirectoryEntry> entries) {
  std::function<void()> changed;
  {
    std::lock_guard lock(mu_);
    bool routers_differ = routers != routers_;
    routers_ = std::move(routers);
    entries_ = std::move(entries);
    if (routers_differ) changed = routers_changed_;
  }
  if (changed) changed();
}

std::unique_ptr<Directory> open_directory(const std::string& spec, const std::string& self,
                                          const std::string& self_address) {
  if (spec.rfind("file:", 0) == 0) return load_static_directory(spec.substr(5), self);
  if (spec.rfind("etcd:", 0) == 0) {
    if (self_address.empty())
      throw DirectoryError("--directory etcd: needs --listen HOST:PORT (where the other routers reach this one)");
    return open_etcd_directory(spec.substr(5), self, self_address);
  }
  throw DirectoryError("--directory '" + spec + "': expected file:PATH or etcd:http://HOST:PORT");
}

}  // namespace ff::router
