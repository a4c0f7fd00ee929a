// A session as far as rdma_cm's connection manager sees one: it holds ids
// (up to `room`) and one event channel. Shared by the connection manager's
// unit tests and its fuzz target (tests/fuzz/fuzz_cm.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>

#include "router/cm/connection_manager.h"

namespace ff::router::cm::test_support {

struct CmOwner : IdOwner {
  explicit CmOwner(ConnectionManager& m, size_t max_ids = 1000) : manager(m), room(max_ids) {
    auto made = Channel::create();
    channel = made->first;
    read_end = std::move(made->second);  // the client's end: a write with no reader is SIGPIPE
  }
  ~CmOwner() override {
    while (!ids.empty()) drop(ids.rbegin()->first);
  }
  std::optional<uint32_t> adopt(std::shared_ptr<Id> id) override {
    if (ids.size() >= room) return std::nullopt;
    uint32_t h = next++;
    ids[h] = id;
    manager.set_handle(*id, h);
    return h;
  }
  void drop(uint32_t handle) override {
    auto it = ids.find(handle);
    if (it == ids.end()) return;
    auto id = it->second;
    ids.erase(it);
    manager.destroy(*id);
  }
  ConnectionManager& manager;
  size_t room;
  std::shared_ptr<Channel> channel;
  UniqueFd read_end;
  std::map<uint32_t, std::shared_ptr<Id>> ids;
  uint32_t next = 1;
};

}  // namespace ff::router::cm::test_support
