#!/bin/bash
# No test leaves a namespace, process or file behind. Lists what the tests
# create and must remove, and fails (exit 1, with the list) when any is there:
#   - network namespaces named as tests/e2e/lib.sh and multihost_lib.sh name
#     theirs: ffc-NAME-PID (containers), ffh-NAME-PID (hosts, etcd's too),
#     ffsw-PID and ffov-PID (the switch and the overlay), PID the script's
#     (any ffc-*, ffh-*, ffsw-*, ffov-* counts);
#   - processes: ffrouter, ffctl, etcd, the test tools (ffv_*), perftest
#     (ib_*_bw, ib_*_lat), ibv_*_pingpong, ucx_perftest, verbs_conformance_test,
#     verbs_device_test, the fuzzers, the container wrapper of ff_in_container
#     (unshare ... ff-container) and the qemu of tests/hw/vm.sh;
#   - temporary directories: /tmp/ffe2e.* (lib.sh's FF_WORK: logs, the routers'
#     run directories, etcd's data), /tmp/ffvm.* (vm.sh), /tmp/ffctl-test.*
#     (control_protocol_test), /tmp/fffuzz.* (fuzz_control), and
#     /run/ffrouter (the router's default run directory: no test may use it);
#   - podman containers and pods labelled ffe2e (test_containers.sh,
#     test_kubernetes.sh) and their CDI specs, /var/run/cdi/ffe2e*.
#
#   scripts/check-leftovers.sh                  # everything there now counts
#   scripts/check-leftovers.sh --snapshot FILE  # records what is there now
#   scripts/check-leftovers.sh --since FILE     # only what is not in FILE
#
# scripts/test.sh takes the snapshot before the first test and checks --since
# it after the last, so what existed before the run is not blamed on it. It
# also exports FF_TEST_RUN (a tag every process of the run inherits): with it
# set, what belongs to another run still in progress on this machine is not
# counted (processes without the tag; namespaces and /tmp/ffe2e.PID.* of a
# live test script without it; directories a process without it names, as
# qemu names vm.sh's). Without it, what a test still running owns is not
# counted, every process is. Needs root (other users' processes, ip netns).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0" >&2; exit 2; }

run=${FF_TEST_RUN:-}

# One line per thing: "netns NAME", "process PID:STARTTIME NAME", "path PATH".
items() {
  ip netns list 2>/dev/null | awk '{print $1}' |
    grep -E '^ff(c|h|sw|ov)-.' | sed 's/^/netns /' || true
  local pid args name start
  while read -r pid args; do
    name=${args%% *}
    name=${name##*/}
    case $name in
      ffrouter | ffctl | etcd | ffv_* | ib_*_bw | ib_*_lat | ibv_*_pingpong | ucx_perftest) ;;
      verbs_conformance_test | verbs_device_test | fuzz_frame | fuzz_control | fuzz_descriptor | fuzz_peer) ;;
      unshare) [[ $args == *" ff-container "* ]] || continue ;;
      qemu-system-*) [[ $args == *"mount_tag=job"* && $args == *"/tmp/ffvm."* ]] || continue ;;
      *) continue ;;
    esac
    # The start time (clock ticks since boot) tells a process from a later
    # one that got the same pid.
    start=$(awk '{sub(/.*\) /, ""); print $20}' "/proc/$pid/stat" 2>/dev/null) || continue
    [ -n "$start" ] && echo "process $pid:$start $name"
  done < <(ps -e -ww -o pid= -o args=)
  local p
  for p in /tmp/ffe2e.* /tmp/ffvm.* /tmp/ffctl-test.* /tmp/fffuzz.* /run/ffrouter /var/run/cdi/ffe2e*; do
    [ -e "$p" ] && echo "path $p"
  done
  if command -v podman >/dev/null; then
    podman ps -a --filter label=ffe2e --format '{{.Names}}' 2>/dev/null | sed 's/^/container /' || true
    podman pod ps --filter label=ffe2e --format '{{.Name}}' 2>/dev/null | sed 's/^/pod /' || true
  fi
  return 0
}

# ours PID: PID carries this run's tag.
ours() {
  [ -n "$run" ] || return 1
  local env
  env=$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null) || return 1
  [[ $'\n'$env$'\n' == *$'\n'"FF_TEST_RUN=$run"$'\n'* ]]
}
# in_progress PID: PID is a live test script that is not this run's.
in_progress() {
  [ -n "$1" ] && [ -e "/proc/$1" ] && [[ $(ps -ww -o args= -p "$1" 2>/dev/null) == *tests/* ]] && ! ours "$1"
}

# used_by_other PATH: a live process not of this run names PATH in its
# arguments (the qemu of a vm.sh in progress, the router of a test).
used_by_other() {
  local pid args
  while read -r pid args; do
    [[ $args == *"$1"* ]] && ! ours "$pid" && return 0
  done < <(ps -e -ww -o pid= -o args=)
  return 1
}

# counts KIND WHAT: 0 when the thing is this run's (or, alone, anyone's)
# leftover; 1 when it belongs to a test or run still in progress.
counts() {
  local owner=
  case $1 in
    netns) [[ ${2##*-} =~ ^[0-9]+$ ]] && owner=${2##*-} ;;
    path)
      [[ $2 =~ ^/tmp/ffe2e\.([0-9]+)\. ]] && owner=${BASH_REMATCH[1]}
      [ -n "$owner" ] || ! used_by_other "$2" || return 1
      ;;
    process) [ -z "$run" ] || ours "${2%%:*}" || return 1 ;;
  esac
  ! in_progress "$owner"
}

# new SNAPSHOT: what is there now, not in SNAPSHOT (empty: everything) and
# not another run's.
skipped=0
new() {
  local kind what name
  skipped=0
  while read -r kind what name; do
    [ -n "$kind" ] || continue
    if counts "$kind" "$what"; then echo "$kind $what${name:+ $name}"; else skipped=$((skipped + 1)); fi
  done < <(if [ -n "$1" ]; then items | grep -vxF -f "$1" || true; else items; fi)
}

snapshot=
case ${1:-} in
  --snapshot)
    [ $# -eq 2 ] || usage
    items >"$2"
    exit 0
    ;;
  --since)
    [ $# -eq 2 ] || usage
    [ -r "$2" ] || { echo "check-leftovers: no snapshot $2" >&2; exit 2; }
    snapshot=$2
    ;;
  "") ;;
  *) usage ;;
esac

# A cleanup that has just run may still be reaping: give it a few seconds.
for _ in $(seq 25); do
  left=$(new "$snapshot")
  [ -n "$left" ] || break
  sleep 0.2
done
new "$snapshot" >/dev/null  # once more in this shell: how many were not counted
note=
[ "$skipped" -eq 0 ] || note="; $skipped not counted (another test run in progress)"
if [ -z "$left" ]; then
  echo "leftovers: none: no test namespace, process or temporary file is left$note"
  exit 0
fi

echo "LEFTOVERS: the tests left these behind$note:" >&2
while read -r kind what name; do
  case $kind in
    netns)
      pids=$(ip netns pids "$what" 2>/dev/null | paste -sd' ' || true)
      echo "  network namespace $what${pids:+ (processes in it: $pids)}" >&2
      ;;
    process)
      pid=${what%%:*}
      echo "  process $pid ($name): $(ps -ww -o args= -p "$pid" 2>/dev/null | cut -c1-200 || echo "(gone)")" >&2
      ;;
    path) echo "  $what" >&2 ;;
  esac
done <<<"$left"
echo "(remove them: ip netns del NAME, kill -9 PID, rm -rf PATH)" >&2
exit 1
