#include "router/common/qos_wire.h"
#include "router/control/handlers.h"

namespace ff::router {

// ffctl qos TENANT ...: the tenant's new caps and weight, held to the
// config file's ranges, applied to its running traffic at once.
Status handle_set_qos(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  const auto* r = req.body_as_SetQos();
  if (r->tenant() == nullptr || r->qos() == nullptr) return Error{EINVAL, "set_qos needs a tenant and its qos"};
  policy::QosSpec q = qos_from_wire(r->qos());
  if (std::string problem = policy::qos_problem(q); !problem.empty()) return Error{EINVAL, "qos: " + problem};
  return s.services().set_tenant_qos(r->tenant()->str(), q);
}

}  // namespace ff::router
