#include "router/control/handlers.h"

namespace ff::router {

// One virtual device per router; its GUID is derived from the client's virtual IP.
Status handle_list_devices(Session& s, const proto::Request&, std::vector<UniqueFd>&, ReplyWriter& w) {
  auto& fbb = w.fbb();
  auto entry = proto::CreateDeviceEntry(fbb, fbb.CreateString(s.services().limits().device_name),
                                        policy::node_guid_for(s.virtual_ip()), 0);
  w.set_body(proto::CreateListDevicesReply(fbb, fbb.CreateVector(&entry, 1)));
  return Status{};
}

}  // namespace ff::router
