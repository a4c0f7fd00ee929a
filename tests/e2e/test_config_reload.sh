#!/bin/bash
# SIGHUP re-reads --config while clients run: a new tenant's socket appears
# and serves, a removed tenant's socket goes and its clients are closed, a
# narrowed network closes the clients it leaves out, a broken file is refused
# with its line and the running config stays; the router lives through all.
source "$(dirname "$0")/lib.sh"
config=$FF_WORK/config.yaml
cat >"$config" <<'EOF'
tenants:
  - name: blue
  - name: red
EOF
ff_start_router --config "$config"
ff_container a 10.53.0.5
ff_container b 10.54.0.5

# clients_of TENANT: how many clients ffctl shows for the tenant ("" when the
# tenant is not listed).
clients_of() { ff_status | sed -n "s/^tenant $1 .* clients \([0-9]*\) .*/\1/p"; }
# wait_for CMD...: until CMD succeeds, at most 10 s.
wait_for() {
  for _ in $(seq 200); do "$@" && return 0; sleep 0.05; done
  return 1
}
has_clients() { [ "$(clients_of "$1")" = "$2" ]; }

# A client in each tenant that keeps its device open: ibv_rc_pingpong's
# server waits for its peer's TCP connection.
ff_in_container a red ibv_rc_pingpong -g 0 -p 18515 >"$FF_WORK/red.log" 2>&1 &
FF_PIDS+=($!)
ff_in_container b blue ibv_rc_pingpong -g 0 -p 18516 >"$FF_WORK/blue.log" 2>&1 &
FF_PIDS+=($!)
wait_for has_clients red 1 || { ff_status; fail "red's client did not connect"; }
wait_for has_clients blue 1 || { ff_status; fail "blue's client did not connect"; }

cat >"$config" <<'EOF'
tenants:
  - name: blue
  - name: green
EOF
ff_hup
grep -q "added: green; removed: red; changed: none" "$FF_WORK/router.log" ||
  { cat "$FF_WORK/router.log"; fail "the reload did not add green and remove red"; }
[ -S "$FF_RUN/tenants/green/ffrouter.sock" ] || fail "green's socket did not appear"
[ ! -e "$FF_RUN/tenants/red/ffrouter.sock" ] || fail "red's socket is still there"
[ -z "$(clients_of red)" ] || { ff_status; fail "ffctl still shows tenant red"; }
grep -q "tenant red was removed from the config" "$FF_WORK/router.log" || fail "red's client was not closed"
[ "$(clients_of blue)" = 1 ] || { ff_status; fail "blue's client was disturbed"; }
ff_in_container a green ibv_devinfo | grep -q ffvirt0 || fail "green's socket does not serve"
pass "SIGHUP: a new tenant serves at once, a removed one's socket and clients are gone, the others untouched"

cp "$config" "$FF_WORK/good.yaml"
cat >"$config" <<'EOF'
tenants:
  - name: blue
  - nmae: green
EOF
ff_hup
grep -q "config not reloaded.*config.yaml:3" "$FF_WORK/router.log" ||
  { cat "$FF_WORK/router.log"; fail "a broken config was not refused with its line"; }
[ -S "$FF_RUN/tenants/green/ffrouter.sock" ] && [ "$(clients_of blue)" = 1 ] ||
  { ff_status; fail "a refused config changed the running one"; }
ff_in_container a green ibv_devinfo | grep -q ffvirt0 || fail "green stopped serving after a refused reload"
pass "SIGHUP with a broken config: refused with its line, the running config stays"

cat >"$config" <<'EOF'
tenants:
  - name: blue
    network: 10.99.0.0/16
  - name: green
EOF
ff_hup
grep -q "changed: blue" "$FF_WORK/router.log" || { cat "$FF_WORK/router.log"; fail "blue's change was not applied"; }
wait_for has_clients blue 0 || { ff_status; fail "blue's client outside the new network still runs"; }
grep -q "10.54.0.5 is outside tenant blue's network 10.99.0.0/16" "$FF_WORK/router.log" ||
  fail "the router did not say why it closed blue's client"
if ff_in_container b blue ibv_devinfo >"$FF_WORK/devinfo.log" 2>&1 && grep -q ffvirt0 "$FF_WORK/devinfo.log"; then
  fail "a new client outside blue's new network was served"
fi
pass "SIGHUP narrowing a tenant's network closes the clients it leaves out and refuses new ones"
echo "3 passed, 0 failed"
