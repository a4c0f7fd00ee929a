// Who is on the other end of a Unix socket, learnt from the kernel
// (SO_PEERCRED) and /proc, never from anything the client says.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ff::router {

struct PeerIdentity {
  pid_t pid = 0;  // in the router's pid namespace
  uid_t uid = 0;
  gid_t gid = 0;
  std::string program;               // /proc/<pid>/comm
  uint64_t netns_inode = 0;          // identifies the client's network namespace
  std::vector<uint32_t> addresses;   // IPv4 (host order) of its namespace's up, non-loopback interfaces
  std::string error;                 // non-empty when the namespace could not be read
};

// Reads the peer's credentials and the IPv4 addresses of its network
// namespace. Needs CAP_SYS_ADMIN (setns) for clients in other namespaces; the
// namespace is entered by a short-lived helper thread, never by the caller.
PeerIdentity identify_peer(int connected_socket);

// IPv4 addresses of the calling thread's network namespace, in interface order.
std::vector<uint32_t> local_ipv4_addresses();

}  // namespace ff::router
