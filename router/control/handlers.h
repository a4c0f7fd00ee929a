// One handler per control message, each in its own file under handlers/.
// A handler runs only after the frame passed the flatbuffers verifier and the
// session is allowed to send that message; it checks every handle against the
// session's own table.
#pragma once

#include "proto/control_generated.h"
#include "router/control/session.h"

namespace ff::router {

using Handler = HandlerStatus (*)(Session&, const proto::Request&, ReplyWriter&);

HandlerStatus handle_hello(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_list_devices(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_open_device(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_close_device(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_query_device(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_query_port(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_query_gid(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_query_pkey(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_alloc_pd(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_dealloc_pd(Session&, const proto::Request&, ReplyWriter&);
HandlerStatus handle_admin_status(Session&, const proto::Request&, ReplyWriter&);

// The handler for a request body type on a session of `role`, or nullptr
// when that role may not send it.
Handler find_handler(SessionRole role, proto::RequestBody type);

// Shared by handlers that take a context handle.
ContextObject* find_context(Session& s, uint32_t handle);

}  // namespace ff::router
