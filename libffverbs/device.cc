// Device discovery and contexts: ibv_get_device_list, ibv_open_device, ...
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "libffverbs/request.h"

using namespace ff::verbs;
namespace proto = ff::proto;

namespace {

// One device object for the life of the process (contexts point at it).
FfDevice& the_device() {
  static FfDevice* dev = [] {
    auto* d = static_cast<FfDevice*>(std::calloc(1, sizeof(FfDevice)));
    return d;
  }();
  return *dev;
}

void fill_device(const ff::proto::DeviceEntry& e) {
  FfDevice& d = the_device();
  ibv_device& dev = d.device;
  dev.node_type = IBV_NODE_CA;
  dev.transport_type = IBV_TRANSPORT_IB;
  std::snprintf(dev.name, sizeof dev.name, "%s", e.name() != nullptr ? e.name()->c_str() : "ffvirt0");
  // UCX looks for /dev/infiniband/<dev_name>; uverbs0 is what a container
  // runtime is told to create (see README).
  std::snprintf(dev.dev_name, sizeof dev.dev_name, "uverbs0");
  std::snprintf(dev.dev_path, sizeof dev.dev_path, "/sys/class/infiniband_verbs/uverbs0");
  std::snprintf(dev.ibdev_path, sizeof dev.ibdev_path, "/sys/class/infiniband/%s", dev.name);
  d.node_guid = e.node_guid();
}

}  // namespace

extern "C" {

ibv_device** ibv_get_device_list(int* num_devices) {
  if (num_devices != nullptr) *num_devices = 0;
  auto** list = static_cast<ibv_device**>(std::calloc(2, sizeof(ibv_device*)));
  if (list == nullptr) return fail_ptr<ibv_device*>(ENOMEM);
  RouterLink& link = RouterLink::get();
  int e = link.ensure_connected();
  if (e != 0) {
    errno = e;  // an empty list: no router, no devices
    return list;
  }
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::ListDevicesReply>(fbb, proto::CreateListDevices(fbb));
  if (!reply || reply->devices() == nullptr || reply->devices()->size() == 0) {
    debug("the router listed no device: %s", reply.result.message.c_str());
    errno = reply.result.error != 0 ? reply.result.error : ENODEV;
    return list;
  }
  fill_device(*reply->devices()->Get(0));
  list[0] = &the_device().device;
  if (num_devices != nullptr) *num_devices = 1;
  return list;
}

void ibv_free_device_list(ibv_device** list) { std::free(list); }

const char* ibv_get_device_name(ibv_device* device) { return device->name; }

__be64 ibv_get_device_guid(ibv_device* device) {
  return htobe64(reinterpret_cast<FfDevice*>(device)->node_guid);
}

int ibv_get_device_index(ibv_device* device) {
  return device == &the_device().device ? 0 : -1;
}

ibv_context* ibv_open_device(ibv_device* device) {
  if (device != &the_device().device) return fail_ptr<ibv_context>(ENODEV);
  RouterLink& link = RouterLink::get();
  if (int e = link.ensure_connected(); e != 0) return fail_ptr<ibv_context>(e);
  flatbuffers::FlatBufferBuilder fbb;
  auto reply = request<proto::OpenDeviceReply>(fbb, proto::CreateOpenDevice(fbb, 0), "open_device failed", 3);
  if (!reply) return fail_ptr<ibv_context>(reply.error);
  auto* ctx = new (std::nothrow) FfContext();
  if (ctx == nullptr) return fail_ptr<ibv_context>(ENOMEM);
  std::byte* ring = attach_ring<ff::shm::AsyncEvent>(reply.fd(2), ff::shm::async_segment_bytes(),
                                                     ff::shm::kAsyncRingOffset, ff::shm::kAsyncRingCapacity,
                                                     ctx->async_segment);
  if (ring == nullptr) {
    delete ctx;
    return fail_ptr<ibv_context>(EPROTO);
  }
  ctx->async_events = ff::shm::RingConsumer<ff::shm::AsyncEvent>(ring, ff::shm::kAsyncRingCapacity);
  ctx->handle = reply->context();
  ctx->link_epoch = link.epoch();
  ctx->async_fd = reply.release_fd(0);
  ctx->doorbell_fd = reply.release_fd(1);
  // Our own end of the doorbell pipe: a post never blocks on it.
  ::fcntl(ctx->doorbell_fd, F_SETFL, ::fcntl(ctx->doorbell_fd, F_GETFL) | O_NONBLOCK);
  ibv_context& c = ctx->vctx.context;
  c.device = device;
  c.cmd_fd = -1;
  c.async_fd = ctx->async_fd;
  c.num_comp_vectors = reply->num_comp_vectors();
  pthread_mutex_init(&c.mutex, nullptr);
  init_context_ops(*ctx);
  return &c;
}

int ibv_close_device(ibv_context* context) {
  FfContext* ctx = to_ff(context);
  if (!context_is_stale(*ctx)) {
    flatbuffers::FlatBufferBuilder fbb;
    // The router destroys whatever is left under this context; a failure
    // here means the session is gone, which destroyed it all anyway.
    request<void>(fbb, proto::CreateCloseDevice(fbb, ctx->handle));
  }
  ::close(ctx->async_fd);
  ::close(ctx->doorbell_fd);
  pthread_mutex_destroy(&context->mutex);
  delete ctx;
  return 0;
}

}  // extern "C"
