# What bench/qos.sh and bench/qos_hosts.sh share (sourced after
# tests/e2e/lib.sh; the caller defines `bw NAME TENANT PORT SIZE [ARGS...]`,
# its ib_write_bw pair in the background, which runs for $T or $D seconds).

# weights_row WB WR PORT CTL...: tenants blue and red, weighted WB and WR by
# the caller, both saturated (1 MiB WRITEs, 1024 in flight, 10 s on PORT and
# PORT+1); their rates over 3 s once both move (no program's start in the
# window), asked of the router that CTL (an ffctl command line) reaches, as
# a table row: weights, blue, red, red/blue, Jain's index.
weights_row() {
  local wb=$1 wr=$2 port=$3 t
  shift 3
  D=10 T=10 bw wb blue "$port" 1048576 -t 1024
  D=10 T=10 bw wr red $((port + 1)) 1048576 -t 1024
  for t in blue red; do
    for _ in $(seq 50); do
      [ "$("$@" -j stats -w 0.2 -c 1 | jq -r ".$t.sent.write.bytes // 0")" != 0 ] && break
    done
  done
  "$@" -j stats -w 3 -c 1 >"$FF_WORK/w.json"
  ff_bg_wait wb
  ff_bg_wait wr
  read -r b r < <(jq -r '"\(.blue.sent.write.bytes // 0) \(.red.sent.write.bytes // 0)"' "$FF_WORK/w.json")
  awk -v b="$b" -v r="$r" -v w="$wb:$wr" 'BEGIN {
    printf "| %s | %.2f Gb/s | %.2f Gb/s | %.3f | %.4f |\n", w, b * 8 / 1e9, r * 8 / 1e9, r / b,
      (b + r) * (b + r) / (2 * (b * b + r * r)) }'
}
