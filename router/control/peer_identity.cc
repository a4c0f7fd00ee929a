#include "router/control/peer_identity.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "proto/fd.h"

namespace ff::router {

std::vector<uint32_t> local_ipv4_addresses() {
  std::vector<uint32_t> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    if ((i->ifa_flags & IFF_UP) == 0 || (i->ifa_flags & IFF_LOOPBACK) != 0) continue;
    sockaddr_in sin;
    std::memcpy(&sin, i->ifa_addr, sizeof sin);
    out.push_back(ntohl(sin.sin_addr.s_addr));
  }
  ::freeifaddrs(list);
  return out;
}

namespace {

// SO_PEERPIDFD (Linux 6.5), newer than these headers.
constexpr int kSoPeerPidfd = 77;

uint64_t inode_of(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_ino) : 0;
}

}  // namespace

// The addresses of the namespace `ns` (a /proc/PID/ns/net fd or a pidfd)
// and its inode, read by a helper thread: setns() changes only the calling
// thread's namespace, and the helper dies with it, so no other router
// thread ever runs in a client namespace.
static void read_namespace(int ns, PeerIdentity& id) {
  std::thread helper([&] {
    if (::setns(ns, CLONE_NEWNET) != 0) {
      id.error = std::string("setns into the client's network namespace failed: ") + std::strerror(errno) +
                 " (ffrouter needs CAP_SYS_ADMIN)";
      return;
    }
    id.netns_inode = inode_of("/proc/thread-self/ns/net");
    id.addresses = local_ipv4_addresses();
  });
  helper.join();
}

PeerIdentity identify_peer(int sock) {
  PeerIdentity id;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    id.error = std::string("SO_PEERCRED failed: ") + std::strerror(errno);
    return id;
  }
  id.uid = cred.uid;
  id.gid = cred.gid;
  if (cred.pid <= 0) {
    // The client's pid is not in the router's pid namespace (a router
    // without the host's: podman 4.3's kube play ignores hostPID). Its
    // pidfd still leads to its network namespace (SO_PEERPIDFD: Linux 6.5;
    // setns takes a pidfd since 5.8); its name stays unknown.
    int pidfd = -1;
    socklen_t fd_len = sizeof pidfd;
    if (::getsockopt(sock, SOL_SOCKET, kSoPeerPidfd, &pidfd, &fd_len) != 0 || pidfd < 0) {
      id.error = "the client's pid is not visible in the router's pid namespace, and this kernel has no "
                 "SO_PEERPIDFD (Linux 6.5): run ffrouter in the host's pid namespace (podman --pid=host, "
                 "Kubernetes hostPID: true)";
      return id;
    }
    UniqueFd owned(pidfd);
    id.program = "(pid not visible)";
    read_namespace(owned.get(), id);
    return id;
  }
  id.pid = cred.pid;
  const std::string proc = "/proc/" + std::to_string(cred.pid);
  // The program's name (without iostreams: nothing here may throw or
  // misbehave when the router is out of descriptors).
  if (UniqueFd comm(::open((proc + "/comm").c_str(), O_RDONLY | O_CLOEXEC)); comm) {
    char name[64];
    ssize_t n = ::read(comm.get(), name, sizeof name);
    if (n > 0) id.program.assign(name, static_cast<size_t>(n));
    while (!id.program.empty() && id.program.back() == '\n') id.program.pop_back();
  }

  UniqueFd ns(::open((proc + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC));
  if (!ns) {
    id.error = "cannot open " + proc + "/ns/net: " + std::strerror(errno);
    return id;
  }
  struct stat st {};
  ::fstat(ns.get(), &st);
  id.netns_inode = static_cast<uint64_t>(st.st_ino);
  if (id.netns_inode == inode_of("/proc/self/ns/net")) {
    id.addresses = local_ipv4_addresses();
    return id;
  }
  read_namespace(ns.get(), id);
  return id;
}

}  // namespace ff::router
