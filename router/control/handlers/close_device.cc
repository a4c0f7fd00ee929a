#include "router/control/handlers.h"

namespace ff::router {

// Destroys a context and everything created under it (as closing the
// uverbs fd does in the kernel).
Status handle_close_device(Session& s, const proto::Request& req, std::vector<UniqueFd>&, ReplyWriter&) {
  int e = s.objects().remove_tree(req.body_as_CloseDevice()->context(), ObjectKind::kContext);
  if (e != 0) return Error{EINVAL, "no such context"};
  return Status{};
}

}  // namespace ff::router
