# Helpers for the multi-host tests (sourced after lib.sh's conventions).
#
# Topology: every "host" is a network namespace on a switch (a bridge in its
# own namespace, 10.99.0.0/24) and runs its own ffrouter there, with its own
# run directory. Containers are namespaces on an overlay (another bridge,
# their own addresses) that the programs use for their out-of-band TCP
# exchange; a container reaches no host address at all, only its router's
# tenant socket directory. So every verbs byte between containers on two
# hosts goes container -> its router -> TCP between routers -> other router
# -> other container.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FF_SWITCH="ffsw-$$"
FF_OVERLAY="ffov-$$"
FF_PORT=7470
declare -A FF_HOST_IP FF_HOST_ROUTER
mh_cleanup() {
  set +e
  local pid
  for pid in "${FF_HOST_ROUTER[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${FF_HOST_ROUTER[@]}"; do wait "$pid" 2>/dev/null; done
  ff_cleanup
}
# mh_exit: the EXIT trap (a test that adds its own cleanup calls it last).
# FF_KEEP=DIR: keep the logs (copied to DIR) for a post mortem.
mh_exit() {
  [ -z "${FF_KEEP:-}" ] || { rm -rf "$FF_KEEP"; cp -r "$FF_WORK" "$FF_KEEP"; }
  mh_cleanup
}
trap mh_exit EXIT
for ns in "$FF_SWITCH" "$FF_OVERLAY"; do
  ip netns add "$ns"
  FF_NETNS+=("$ns")
  ip -n "$ns" link set lo up
  ip -n "$ns" link add br0 type bridge
  ip -n "$ns" link set br0 up
done

# mh_plug SWITCH_NS NS IP/PREFIX: NS gets eth0 with that address on SWITCH_NS's bridge.
mh_plug() {
  local sw=$1 ns=$2 ip=$3 port="p$((${#FF_NETNS[@]}))"
  ip -n "$sw" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$sw" link set "$port" master br0 up
  ip -n "$ns" addr add "$ip" dev eth0
  ip -n "$ns" link set eth0 up
}

# mh_host NAME IP: a host namespace on the switch.
mh_host() {
  local ns="ffh-$1-$$"
  ip netns add "$ns"
  FF_NETNS+=("$ns")
  ip -n "$ns" link set lo up
  mh_plug "$FF_SWITCH" "$ns" "$2/24"
  FF_HOST_IP[$1]=$2
}

# mh_container NAME IP: a container namespace on the overlay (10.0.0.0/8:
# every host's containers in one network, each host its own part of it).
mh_container() {
  local ns="ffc-$1-$$"
  ip netns add "$ns"
  FF_NETNS+=("$ns")
  ip -n "$ns" link set lo up
  mh_plug "$FF_OVERLAY" "$ns" "$2/8"
}

# mh_static_directory HOST:TENANT:CIDR...: writes the directory file every
# router reads (one entry per host and tenant).
mh_static_directory() {
  local f=$FF_WORK/directory.yaml h
  echo "routers:" >"$f"
  for h in "${!FF_HOST_IP[@]}"; do
    echo "  - name: $h" >>"$f"
    echo "    address: ${FF_HOST_IP[$h]}:$FF_PORT" >>"$f"
    echo "    tenants:" >>"$f"
    local spec
    for spec in "$@"; do
      IFS=: read -r host tenant cidr <<<"$spec"
      [ "$host" = "$h" ] && echo "      $tenant: [$cidr]" >>"$f"
    done
  done
  echo "file:$f"
}

# Link security (docs/SECURITY.md) for the routers mh_router starts:
# FF_LINK_SECURITY=psk (one key for all, $FF_WORK/link.key), cert (a CA,
# $FF_WORK/ca.pem, and a certificate per router for its name,
# $FF_WORK/HOST.pem), or unset/none: links in the clear.
FF_LINK_SECURITY=${FF_LINK_SECURITY:-none}

# mh_psk FILE: a fresh pre-shared key, mode 0600.
mh_psk() { (umask 077; openssl rand -hex 32 >"$1"); }

# mh_ca PREFIX: a CA, PREFIX.pem and PREFIX.key.
mh_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.pem" \
    -subj "/CN=ffrouter test CA $$" -days 2 2>/dev/null
}

# mh_cert NAME CA_PREFIX OUT: OUT (mode 0600) holds a certificate for router
# NAME that the CA signed, and its private key.
mh_cert() {
  local name=$1 ca=$2 out=$3
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out.key" -out "$out.csr" \
    -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$out.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -days 2 -out "$out.crt" \
    -extfile <(echo "subjectAltName=DNS:$name") 2>/dev/null
  (umask 077; cat "$out.crt" "$out.key" >"$out")
  rm -f "$out.csr" "$out.crt" "$out.key"
}

# mh_link_args HOST: the --link-* arguments of HOST's router (making the key
# or certificates on first use).
mh_link_args() {
  case $FF_LINK_SECURITY in
    psk)
      [ -f "$FF_WORK/link.key" ] || mh_psk "$FF_WORK/link.key"
      echo "--link-psk $FF_WORK/link.key" ;;
    cert)
      [ -f "$FF_WORK/ca.pem" ] || mh_ca "$FF_WORK/ca"
      [ -f "$FF_WORK/$1.pem" ] || mh_cert "$1" "$FF_WORK/ca" "$FF_WORK/$1.pem"
      echo "--link-cert $FF_WORK/$1.pem --link-ca $FF_WORK/ca.pem" ;;
    none) ;;
    *) fail "FF_LINK_SECURITY=$FF_LINK_SECURITY: expected psk, cert or none" ;;
  esac
}

# mh_router HOST DIRECTORY [ffrouter args...]: starts HOST's router in its
# namespace (with FF_LINK_SECURITY's arguments) and waits until it answers.
mh_router() {
  local host=$1 directory=$2 link
  shift 2
  mkdir -p "$FF_WORK/$host"
  link=$(mh_link_args "$host")
  # shellcheck disable=SC2086  # $link: separate words, paths without spaces
  ip netns exec "ffh-$host-$$" "$FFROUTER" --run-dir "$FF_WORK/$host" --router-name "$host" \
    --listen "${FF_HOST_IP[$host]}:$FF_PORT" --directory "$directory" $link "$@" >>"$FF_WORK/router-$host.log" 2>&1 &
  FF_HOST_ROUTER[$host]=$!
  "$FFCTL" --run-dir "$FF_WORK/$host" --wait 10 status >/dev/null || { cat "$FF_WORK/router-$host.log"; fail "router $host did not start"; }
}

mh_ctl() {
  local host=$1
  shift
  "$FFCTL" --run-dir "$FF_WORK/$host" "$@"
}

# mh_wait_peers HOST N: waits until HOST's router has N peers up both ways.
mh_wait_peers() {
  for _ in $(seq 200); do
    [ "$(mh_ctl "$1" peers | grep -c 'outbound=up inbound=up')" -ge "$2" ] && return 0
    sleep 0.05
  done
  mh_ctl "$1" peers
  fail "router $1: fewer than $2 peers connected both ways"
}

# mh_bytes HOST: bytes HOST's router sent to its peers.
mh_bytes() { mh_ctl "$1" peers | sed -n 's/.* bytes_sent=\([0-9]*\).*/\1/p' | paste -sd+ | bc; }

# mh_in HOST CONTAINER TENANT cmd...: runs cmd in CONTAINER, served by HOST's router.
mh_in() {
  local host=$1
  shift
  FF_RUN=$FF_WORK/$host ff_in_container "$@"
}

# mh_pair SRV_HOST SRV CLI_HOST CLI SRV_IP PORT TENANT cmd...: server in SRV
# (HOST's router), client in CLI; both must exit 0. Logs: server.log, client.log.
mh_pair() {
  local shost=$1 srv=$2 chost=$3 cli=$4
  shift 4
  ff_pair_in "$FF_WORK/$shost" "$srv" "$FF_WORK/$chost" "$cli" "$@"
}

# mh_two_hosts: the usual pair: hosts alpha (10.99.0.1) and beta
# (10.99.0.2) with container a (10.50.1.1, tenant default) served by alpha
# and b (10.50.2.1) by beta, both routers up and linked both ways.
# MH_ALPHA_ARGS, MH_BETA_ARGS: more options for either router (words).
mh_two_hosts() {
  mh_host alpha 10.99.0.1
  mh_host beta 10.99.0.2
  mh_container a 10.50.1.1
  mh_container b 10.50.2.1
  local dir
  dir=$(mh_static_directory alpha:default:10.50.1.0/24 beta:default:10.50.2.0/24)
  # shellcheck disable=SC2086  # words
  mh_router alpha "$dir" ${MH_ALPHA_ARGS:-}
  # shellcheck disable=SC2086
  mh_router beta "$dir" ${MH_BETA_ARGS:-}
  mh_wait_peers alpha 1
  mh_wait_peers beta 1
}

# mh_etcd: starts etcd on its own host (10.99.0.100) and sets FF_ETCD to the
# --directory value for it (FF_ETCD_PID: its pid). Call it as is, not in $(...): from a subshell the
# host namespace and the etcd process would not be recorded for the cleanup.
mh_etcd() {
  mh_host etcd 10.99.0.100
  ip netns exec "ffh-etcd-$$" etcd --name ffe2e --data-dir "$FF_WORK/etcd" \
    --listen-client-urls http://10.99.0.100:2379 --advertise-client-urls http://10.99.0.100:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster ffe2e=http://127.0.0.1:2380 >"$FF_WORK/etcd.log" 2>&1 &
  FF_ETCD_PID=$!
  FF_PIDS+=($!)
  for _ in $(seq 200); do
    ip netns exec "ffh-etcd-$$" etcdctl --endpoints http://10.99.0.100:2379 endpoint health >/dev/null 2>&1 &&
      { FF_ETCD="etcd:http://10.99.0.100:2379"; return 0; }
    sleep 0.1
  done
  cat "$FF_WORK/etcd.log" >&2
  fail "etcd did not start"
}
