# Shared helpers for the end-to-end tests (sourced, bash).
#
# A "container" here is what a container runtime gives an app: its own network
# namespace with its own address, its own mount and pid namespaces, and the
# tenant's socket directory bind-mounted at /run/ffrouter. The router's run
# directory (other tenants, admin socket) is hidden from it.
#
# Needs root. Every test cleans up after itself (trap), also on failure.
set -euo pipefail

FF_BUILD=${FF_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../../build" && pwd)}
FFROUTER=${FFROUTER:-$FF_BUILD/bin/ffrouter}  # overridable: a sanitizer build of the router
FFCTL=$FF_BUILD/bin/ffctl
LIBFFVERBS=${LIBFFVERBS:-$FF_BUILD/lib/libffverbs.so}  # overridable: "libasan.so <sanitized libffverbs.so>"
FF_WORK=$(mktemp -d "/tmp/ffe2e.$$.XXXXXX")  # named after this script, as its namespaces
FF_RUN=$FF_WORK/run
FF_NETNS=()
FF_PIDS=()
FF_ROUTER_PID=

# ff_cleanup: what a test made goes away: its processes, its namespaces (those
# in FF_NETNS, and any other named after this script's pid, in case a helper
# ran in a $(...) subshell whose FF_NETNS+= was lost) with whatever still runs
# in them, and $FF_WORK. scripts/check-leftovers.sh checks that nothing stays.
ff_cleanup() {
  set +e
  local p ns netns
  for p in "${FF_PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  for p in "${FF_PIDS[@]}"; do wait "$p" 2>/dev/null; done  # (quietly: no "Killed" notice)
  if [ -n "$FF_ROUTER_PID" ]; then kill "$FF_ROUTER_PID" 2>/dev/null; wait "$FF_ROUTER_PID" 2>/dev/null; fi
  netns=$({
    printf '%s\n' "${FF_NETNS[@]}"
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^ff(c|h)-.+-$$\$|^ff(sw|ov)-$$\$"
  } | sort -u | grep .)
  # A namespace lives on, nameless, while a process is in it: kill those first.
  for _ in $(seq 50); do
    p=$(for ns in $netns; do ip netns pids "$ns" 2>/dev/null; done)
    [ -n "$p" ] || break
    # shellcheck disable=SC2086  # one pid per word
    kill -9 $p 2>/dev/null
    sleep 0.1
  done
  for ns in $netns; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$FF_WORK"
}
trap ff_cleanup EXIT
# SIGTERM/SIGINT/SIGHUP (ctest, ^C) end the test through its EXIT trap too;
# only SIGKILL skips the cleanup.
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "PASS: $*"; }

# ff_tenants_config NAME...: writes a router config with these tenants (no
# network restriction) to $FF_WORK/config.yaml and prints its path.
ff_tenants_config() {
  { echo "tenants:"; for t in "$@"; do echo "  - name: $t"; done; } >"$FF_WORK/config.yaml"
  echo "$FF_WORK/config.yaml"
}

# ff_start_router [ffrouter args...]: starts a router on $FF_RUN and waits until it answers.
ff_start_router() {
  "$FFROUTER" --run-dir "$FF_RUN" "$@" >"$FF_WORK/router.log" 2>&1 &
  FF_ROUTER_PID=$!
  "$FFCTL" --run-dir "$FF_RUN" --wait 10 status >/dev/null || { cat "$FF_WORK/router.log"; fail "router did not start"; }
}

ff_status() { "$FFCTL" --run-dir "$FF_RUN" status; }

# ff_watch_status: asks the router for its status every 0.2 s in the
# background, keeping the slowest answer (ms) and any failure;
# ff_check_status_watch LIMIT_MS stops it and fails the test if an answer
# took longer or never came. The router must answer its operator whatever a
# tenant does.
ff_watch_status() {
  (
    max=0 n=0
    while :; do
      start=$(date +%s%N)
      echo "$start" >"$FF_WORK/status.inflight"
      rc=0
      timeout 5 "$FFCTL" --run-dir "$FF_RUN" status >/dev/null 2>&1 || rc=$?
      ms=$((($(date +%s%N) - start) / 1000000))
      echo "$(date +%T.%N) rc=$rc ${ms}ms" >>"$FF_WORK/status.log"
      [ $rc -eq 0 ] || echo "status failed (rc $rc) at $(date +%T.%N)" >>"$FF_WORK/status.failures"
      rm -f "$FF_WORK/status.inflight"
      [ "$ms" -le "$max" ] || max=$ms
      n=$((n + 1))
      echo "$n $max" >"$FF_WORK/status.watch.tmp" && mv "$FF_WORK/status.watch.tmp" "$FF_WORK/status.watch"
      sleep 0.2
    done
  ) &
  FF_STATUS_WATCH=$!
  FF_PIDS+=("$FF_STATUS_WATCH")
}
ff_check_status_watch() {
  local n max inflight=0 started
  # A call still waiting counts too (the router may be stuck right now).
  started=$(cat "$FF_WORK/status.inflight" 2>/dev/null || true)
  [ -z "$started" ] || inflight=$((($(date +%s%N) - started) / 1000000))
  kill "$FF_STATUS_WATCH" 2>/dev/null
  wait "$FF_STATUS_WATCH" 2>/dev/null || true
  read -r n max <"$FF_WORK/status.watch" || fail "the status watch recorded nothing"
  [ "$inflight" -le "$max" ] || max=$inflight
  echo "ffctl status answered $n times, the slowest in $max ms"
  [ ! -s "$FF_WORK/status.failures" ] || { cat "$FF_WORK/status.failures"; fail "ffctl status failed"; }
  [ "$max" -le "$1" ] || { cat "$FF_WORK/status.log"; fail "ffctl status took $max ms (limit $1 ms)"; }
}

# ff_router_report MAX_RSS_MB MAX_FDS: the router's peak and current memory,
# its descriptors and the CPU it used; fails when the peak RSS or the open
# descriptors pass the bounds, or when the router, idle now, still uses CPU.
ff_router_report() {
  local st=/proc/$FF_ROUTER_PID hwm rss fds t0 t1
  [ -d "$st" ] || fail "the router died"
  hwm=$(awk '/VmHWM/ {print int($2 / 1024)}' "$st/status")
  rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "$st/status")
  fds=$(ls "$st/fd" | wc -l)
  t0=$(awk '{print $14 + $15}' "$st/stat")
  sleep 1
  t1=$(awk '{print $14 + $15}' "$st/stat")
  echo "router: peak RSS $hwm MiB, RSS now $rss MiB, $fds fds, CPU $((t0 / $(getconf CLK_TCK))) s in all and $((t1 - t0)) ticks in the last idle second"
  [ "$hwm" -le "$1" ] || fail "the router's peak RSS $hwm MiB passed $1 MiB"
  [ "$fds" -le "$2" ] || fail "the router holds $fds fds (bound $2)"
  [ $((t1 - t0)) -le $(($(getconf CLK_TCK) / 5)) ] || fail "the router, idle, used $((t1 - t0)) ticks in a second"
}

# ff_container NAME IPV4: a network namespace with one interface holding IPV4/24.
ff_container() {
  local ns="ffc-$1-$$"
  ip netns add "$ns"
  FF_NETNS+=("$ns")
  ip -n "$ns" link set lo up
  ip -n "$ns" link add eth0 type veth peer name peer0
  ip -n "$ns" addr add "$2/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set peer0 up
}

# ff_in_container NAME TENANT cmd...: runs cmd in the container, with
# libffverbs preloaded and only tenants/TENANT mounted at /run/ffrouter.
ff_in_container() {
  local ns="ffc-$1-$$" tenant=$2
  shift 2
  ip netns exec "$ns" unshare --mount --pid --fork --kill-child --mount-proc \
    env FF_TENANT_DIR="$FF_RUN/tenants/$tenant" FF_HIDE="$FF_RUN" LD_PRELOAD_LATER="$LIBFFVERBS" \
    bash -c '
      set -e
      mount --make-rprivate /
      mount -t tmpfs ffrun /run
      mkdir -p /run/ffrouter
      # Read-only: connecting to a socket needs no write access, and the
      # container cannot replace the router'"'"'s socket (docs/SECURITY.md).
      mount --bind "$FF_TENANT_DIR" /run/ffrouter
      mount -o remount,bind,ro /run/ffrouter
      mount -t tmpfs ffhide "$FF_HIDE"
      # UCX only uses a verbs device whose /dev/infiniband/<dev_name> is a
      # character device; runtimes pass /dev/null under that name.
      mkdir -p /dev/infiniband
      mount -t tmpfs ffdev /dev/infiniband
      mknod /dev/infiniband/uverbs0 c 1 3
      unset FF_TENANT_DIR FF_HIDE
      export LD_PRELOAD=$LD_PRELOAD_LATER; unset LD_PRELOAD_LATER
      exec "$@"' ff-container "$@"
}

# ff_container_pair A IPA B IPB: two containers on one /24, joined by a veth
# pair (their own network, for the programs' out-of-band TCP exchange).
ff_container_pair() {
  local a="ffc-$1-$$" b="ffc-$3-$$"
  ip netns add "$a"
  FF_NETNS+=("$a")
  ip netns add "$b"
  FF_NETNS+=("$b")
  ip -n "$a" link set lo up
  ip -n "$b" link set lo up
  ip -n "$a" link add eth0 type veth peer name eth0 netns "$b"
  ip -n "$a" addr add "$2/24" dev eth0
  ip -n "$b" addr add "$4/24" dev eth0
  ip -n "$a" link set eth0 up
  ip -n "$b" link set eth0 up
}

# ff_wait_listen NAME PORT: waits until something listens on TCP PORT in container NAME.
ff_wait_listen() {
  local ns="ffc-$1-$$"
  for _ in $(seq 200); do
    ip netns exec "$ns" ss -Hltn "sport = :$2" | grep -q . && return 0
    sleep 0.05
  done
  return 1
}

# ff_bytes: the router's "bytes moved" counter.
ff_bytes() { ff_status | sed -n 's/.* bytes=\([0-9]*\).*/\1/p'; }

# ff_pair SERVER CLIENT SERVER_IP PORT TENANT cmd...: runs `cmd` as a server in
# container SERVER and `cmd SERVER_IP` as its client in container CLIENT.
# Logs in $FF_WORK/server.log and client.log; fails the test unless both exit 0.
ff_pair() {
  local srv=$1 cli=$2 ip=$3 port=$4 tenant=$5
  shift 5
  ff_pair_in "" "$srv" "" "$cli" "$ip" "$port" "$tenant" "$@"
}

# ff_pair_moving SERVER CLIENT SERVER_IP PORT TENANT cmd...: ff_pair, which
# must make the router move bytes; FF_MOVED says how many.
ff_pair_moving() {
  local before
  before=$(ff_bytes)
  ff_pair "$@"
  FF_MOVED=$(( $(ff_bytes) - before ))
  [ "$FF_MOVED" -gt 0 ] || fail "${*:6}: the router moved nothing"
}

# The last result line perftest's client printed (its numbers, one space apart).
ff_perftest_result() { grep -E '^ +[0-9]+ +[0-9]+' "$FF_WORK/client.log" | tail -1 | tr -s ' \t' ' '; }

# ff_pair_in SRV_RUN SRV CLI_RUN CLI SERVER_IP PORT TENANT cmd...: ff_pair with
# each side served by the router whose run directory is given (empty: $FF_RUN).
#
# perftest calibrates its cycle counter against the clock before it reports;
# on a loaded 2-core machine that fit can fail ("Correlation coefficient r^2
# ... < 0.9", then "Can't produce a report"), which says nothing about the
# transfer: such a run is repeated once.
ff_pair_in() {
  local srun=${1:-$FF_RUN} srv=$2 crun=${3:-$FF_RUN} cli=$4 ip=$5 port=$6 tenant=$7
  shift 7
  local attempt
  for attempt in 1 2; do
    FF_RUN=$srun ff_in_container "$srv" "$tenant" timeout 120 "$@" >"$FF_WORK/server.log" 2>&1 &
    local spid=$!
    if ! ff_wait_listen "$srv" "$port"; then
      kill "$spid" 2>/dev/null || true; cat "$FF_WORK/server.log"; fail "$* server did not start"
    fi
    local crc=0 src=0
    FF_RUN=$crun ff_in_container "$cli" "$tenant" timeout 120 "$@" "$ip" >"$FF_WORK/client.log" 2>&1 || crc=$?
    wait "$spid" || src=$?
    [ $crc -ne 0 ] || [ $src -ne 0 ] || return 0
    if [ $attempt -eq 1 ] && grep -q "Correlation coefficient r^2" "$FF_WORK/server.log" "$FF_WORK/client.log"; then
      echo "note: $*: perftest could not calibrate its clock (machine busy); running it again"
      sleep 1
      continue
    fi
    echo "--- server ($src)"; tail -20 "$FF_WORK/server.log"; echo "--- client ($crc)"; tail -20 "$FF_WORK/client.log"
    fail "$* (server rc $src, client rc $crc)"
  done
}

# ff_bg_pair NAME SRV CLI SERVER_IP PORT TENANT cmd...: a perftest-style pair
# in the background: `cmd` as the server in container SRV (listening on TCP
# PORT), `cmd SERVER_IP` as its client in CLI; logs in $FF_WORK/NAME.server
# and NAME.client. ff_bg_wait NAME waits for both (in this shell, not a
# subshell: they are its children), fails the test if either failed, and
# sets $ff_result to the client's last result line (perftest: the line
# that starts with the message size). Multi-host: FF_BG_SRUN and FF_BG_CRUN
# name the run directories of the routers that serve the server and the
# client (default $FF_RUN).
declare -gA FF_BG_SERVER FF_BG_CLIENT
ff_bg_pair() {
  local name=$1 srv=$2 cli=$3 ip=$4 port=$5 tenant=$6
  shift 6
  FF_RUN=${FF_BG_SRUN:-$FF_RUN} ff_in_container "$srv" "$tenant" timeout 120 "$@" >"$FF_WORK/$name.server" 2>&1 &
  FF_BG_SERVER[$name]=$!
  ff_wait_listen "$srv" "$port" || { cat "$FF_WORK/$name.server"; fail "$name: $1's server did not start"; }
  FF_RUN=${FF_BG_CRUN:-$FF_RUN} ff_in_container "$cli" "$tenant" timeout 120 "$@" "$ip" >"$FF_WORK/$name.client" 2>&1 &
  FF_BG_CLIENT[$name]=$!
}
ff_bg_wait() {
  local name=$1
  wait "${FF_BG_CLIENT[$name]}" ||
    { tail -20 "$FF_WORK/$name.client" "$FF_WORK/$name.server" >&2; fail "$name: the client failed"; }
  wait "${FF_BG_SERVER[$name]}" || { tail -20 "$FF_WORK/$name.server" >&2; fail "$name: the server failed"; }
  ff_result=$(grep -E '^ *[0-9]+ +[0-9]+ ' "$FF_WORK/$name.client" | tail -1)
}

# ff_hup: the router re-reads its config; waits until its log says what it
# did, and fails the test if SIGHUP ended it.
ff_hup() {
  local before
  before=$(grep -c 'reloaded' "$FF_WORK/router.log" || true)
  kill -HUP "$FF_ROUTER_PID"
  for _ in $(seq 200); do
    [ "$(grep -c 'reloaded' "$FF_WORK/router.log" || true)" -gt "$before" ] && break
    sleep 0.05
  done
  [ "$(grep -c 'reloaded' "$FF_WORK/router.log" || true)" -gt "$before" ] ||
    { cat "$FF_WORK/router.log"; fail "the router did not say what SIGHUP did"; }
  kill -0 "$FF_ROUTER_PID" 2>/dev/null || { cat "$FF_WORK/router.log"; fail "SIGHUP killed the router"; }
}

# ff_cm_pair_in NAME SRV_RUN SRV SRV_IP CLI_RUN CLI TENANT SERVER_CMD... -- CLIENT_CMD...:
# an rdma_cm pair, the server in container SRV (address SRV_IP) served by the
# router of run directory SRV_RUN, the client in CLI (empty run directory:
# $FF_RUN). The client starts once the server listens, on rdma_cm (its
# router shows cm_listeners) or on TCP (fi_pingpong first waits there for
# its out-of-band exchange), and is retried while the server runs, for up
# to 10 s.
# A pair that fails after connecting is run once more, saying so: one CI run
# saw ib_write_lat -R fail its first handshake SEND (IBV_WC_RETRY_EXC_ERR),
# not reproduced since (issue 14's notes).
ff_cm_pair_in() {
  local name=$1 srun=${2:-$FF_RUN} srv=$3 ip=$4 crun=${5:-$FF_RUN} cli=$6 tenant=$7 server=() client=() round
  shift 7
  while [ "$1" != "--" ]; do server+=("$1"); shift; done
  shift
  client=("$@")
  for round in 1 2; do
    FF_RUN=$srun ff_in_container "$srv" "$tenant" timeout 60 "${server[@]}" >"$FF_WORK/server.log" 2>&1 &
    local spid=$! rc=1
    for _ in $(seq 200); do
      FF_RUN=$srun ff_status | grep "vip=$ip " | grep -q "cm_listeners=[1-9]" && break
      ip netns exec "ffc-$srv-$$" ss -Hltn | grep -q . && break
      sleep 0.05
    done
    for _ in $(seq 100); do
      FF_RUN=$crun ff_in_container "$cli" "$tenant" timeout 60 "${client[@]}" >"$FF_WORK/client.log" 2>&1 && { rc=0; break; }
      grep -q "Bad wc status" "$FF_WORK/client.log" && break
      kill -0 "$spid" 2>/dev/null || break
      sleep 0.1
    done
    if [ $rc -eq 0 ]; then
      wait "$spid" || { tail -40 "$FF_WORK/server.log"; tail -15 "$FF_WORK/client.log"; fail "$name: server"; }
      return 0
    fi
    echo "RETRY ($name, round $round): $(tail -3 "$FF_WORK/client.log" | tr '\n' ' ')"
    for pid in $(FF_RUN=$srun ff_status | grep "vip=$ip " | sed -n 's/.* pid=\([0-9]*\).*/\1/p'); do kill -9 "$pid" 2>/dev/null; done
    wait "$spid" 2>/dev/null || true
  done
  tail -5 "$FF_WORK/client.log"; tail -5 "$FF_WORK/server.log"
  # What each router held of rdma_cm then (listeners, ids), for a REJECTED.
  echo "server's router:"; FF_RUN=$srun ff_status | grep -E "cm_|rdma_cm" | head -10
  echo "client's router:"; FF_RUN=$crun ff_status | grep -E "cm_|rdma_cm" | head -10
  fail "$name: client"
}

# ucp_sockaddr_pair SRV SRV_IP SRV_RUN CLI CLI_RUN TENANT: tests/tools/ucp_sockaddr's
# server in container SRV and its client in CLI (empty run directories:
# $FF_RUN), connecting by socket address through UCX's rdmacm connection
# manager only; both must exit 0. The client starts once the server listens
# (cm_listeners).
ucp_sockaddr_pair() {
  local srv=$1 ip=$2 srun=${3:-$FF_RUN} cli=$4 crun=${5:-$FF_RUN} tenant=$6
  local env=(env UCX_SOCKADDR_TLS_PRIORITY=rdmacm UCX_TLS=rc_verbs,ud_verbs UCX_NET_DEVICES=ffvirt0:1)
  FF_RUN=$srun ff_in_container "$srv" "$tenant" "${env[@]}" timeout 60 "$FF_BUILD/bin/ucp_sockaddr" -l "$ip" 13400 \
    >"$FF_WORK/server.log" 2>&1 &
  local spid=$! rc=0
  for _ in $(seq 200); do
    FF_RUN=$srun ff_status | grep "vip=$ip " | grep -q "cm_listeners=[1-9]" && break
    sleep 0.05
  done
  FF_RUN=$crun ff_in_container "$cli" "$tenant" "${env[@]}" timeout 60 "$FF_BUILD/bin/ucp_sockaddr" "$ip" 13400 \
    >"$FF_WORK/client.log" 2>&1 || rc=$?
  [ $rc -eq 0 ] || { kill "$spid" 2>/dev/null; tail -5 "$FF_WORK/client.log"; fail "ucp_sockaddr client (rc $rc)"; }
  wait "$spid" || { tail -5 "$FF_WORK/server.log"; fail "ucp_sockaddr server"; }
  grep -q "every byte checked" "$FF_WORK/client.log" || fail "ucp_sockaddr: $(tail -3 "$FF_WORK/client.log")"
}

# ff_cm_programs PAIR REPORT SERVER_IP: the unmodified rdma_cm programs, each
# run by `PAIR NAME SERVER_CMD... -- CLIENT_CMD...` (ff_cm_pair_in with its
# containers) against a server on SERVER_IP, each success told to REPORT:
# ucmatose (several connections), udaddy (UD, SIDR), rdma_server/rdma_client,
# perftest -R, libfabric's verbs provider (MSG endpoints, and RDM ones
# through rxm: what fabtests' fi_rdm_pingpong drives; fabtests is not a
# Debian 12 package).
ff_cm_programs() {
  local pair=$1 report=$2 ip=$3 t
  "$pair" "ucmatose" ucmatose -c 4 -C 50 -- ucmatose -s "$ip" -c 4 -C 50
  "$report" "ucmatose: 4 connections, 50 messages each"
  "$pair" "udaddy" udaddy -c 4 -C 20 -- udaddy -s "$ip" -c 4 -C 20
  "$report" "udaddy: 4 UD endpoints (RDMA_PS_UDP), 20 datagrams each"
  "$pair" "rdma_server/rdma_client" rdma_server -s "$ip" -- rdma_client -s "$ip"
  "$report" "rdma_server / rdma_client (rdma_getaddrinfo, rdma_create_ep, rdma_get_request)"
  for t in "ib_send_bw" "ib_write_bw" "ib_read_bw" "ib_send_lat" "ib_write_lat" "ib_write_bw -q 4" "ib_send_bw -c UD"; do
    # shellcheck disable=SC2086
    "$pair" "$t -R" $t -R -n 500 -- $t -R -n 500 "$ip"
    grep -qE '^ +[0-9]+ +[0-9]+' "$FF_WORK/client.log" || fail "$t -R printed no result"
    "$report" "$t -R"
  done
  local provider
  for provider in "verbs -e msg" "verbs;ofi_rxm -e rdm"; do
    local fi=(fi_pingpong -p "${provider%% *}" -e "${provider##* }" -I 100 -S 4096)
    "$pair" "fi_pingpong -p $provider" "${fi[@]}" -- "${fi[@]}" "$ip"
    grep -qE '^4k +100 ' "$FF_WORK/client.log" || fail "fi_pingpong -p $provider printed no 4 KiB result: $(tail -3 "$FF_WORK/client.log")"
    "$report" "fi_pingpong -p '${provider%% *}' ${provider#* } (libfabric over rdma_cm)"
  done
}
