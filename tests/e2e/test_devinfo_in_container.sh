#!/bin/bash
# Unmodified ibv_devices and ibv_devinfo -v, in a container that shares only
# the tenant's socket directory with the router, list the virtual device with
# the GID of the container's own address.
source "$(dirname "$0")/lib.sh"

cat >"$FF_WORK/config.yaml" <<YAML
tenants:
  - name: blue
    network: 10.77.0.0/16
  - name: red
YAML
ff_start_router --config "$FF_WORK/config.yaml"
ff_container c1 10.77.1.2

out=$(ff_in_container c1 blue ibv_devices)
echo "$out"
grep -Eq 'ffvirt0[[:space:]]+02ff00000a4d0102' <<<"$out" || fail "ibv_devices did not list ffvirt0 with the GUID of 10.77.1.2"

out=$(ff_in_container c1 blue ibv_devinfo -v)
grep -q 'hca_id:	ffvirt0' <<<"$out" || fail "ibv_devinfo -v shows no ffvirt0"
grep -q 'PORT_ACTIVE (4)' <<<"$out" || fail "port is not active"
grep -q 'link_layer:		Ethernet' <<<"$out" || fail "link layer is not Ethernet"
grep -q 'active_mtu:		4096 (5)' <<<"$out" || fail "MTU is not 4096"
grep -q 'GID\[  0\]:		::ffff:10.77.1.2, RoCE v2' <<<"$out" || { echo "$out"; fail "GID is not ::ffff:10.77.1.2 RoCE v2"; }
pass "ibv_devices and ibv_devinfo -v see ffvirt0 with GID ::ffff:10.77.1.2"

# The container cannot see the router's run directory (other tenants, admin socket).
ff_in_container c1 blue bash -c "test ! -e $FF_RUN/admin.sock && test ! -e $FF_RUN/tenants/red" ||
  fail "the container can see the router's run directory"
pass "the container sees only its tenant's socket directory"

# An address outside the tenant's network is refused, with the reason.
ff_container c2 10.88.1.2
out=$(ff_in_container c2 blue env FFV_DEBUG=1 ibv_devices 2>&1 || true)
grep -q 'inside tenant .blue. network 10.77.0.0/16' <<<"$out" || { echo "$out"; fail "no clear refusal for an address outside the tenant network"; }
pass "a client outside the tenant network is refused with a reason"
echo "3 passed, 0 failed"
