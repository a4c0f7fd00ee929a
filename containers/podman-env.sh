# Sourced: podman settings for hosts where root lacks CAP_SYS_RESOURCE (as
# in CI here): podman's default ulimits (nofile 1048576) cannot be set, and
# crun refuses hybrid cgroups; runc with the ulimits the host allows works
# (../shared/docs/containers-and-namespaces.md). Unless CONTAINERS_CONF is
# set already, writes such a containers.conf (one per machine, the same each
# time) and points CONTAINERS_CONF at it.
if [ -z "${CONTAINERS_CONF:-}" ]; then
  FF_PODMAN_CONF=/tmp/ffpodman.conf
  cat >"$FF_PODMAN_CONF.$$" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
  mv -f "$FF_PODMAN_CONF.$$" "$FF_PODMAN_CONF"
  export CONTAINERS_CONF=$FF_PODMAN_CONF
fi
