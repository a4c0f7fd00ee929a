#!/bin/bash
# In both guests of `tests/hw/vm.sh --hosts 2` (each runs this): every
# tests/hw/hosts/test_*.sh in turn, the two guests in step (each test meets
# the other guest's copy at its rendezvous points). Exit 0 when all pass.
here=$(cd "$(dirname "$0")" && pwd)
failed=()
for t in "$here"/test_*.sh; do
  echo "=== $t"
  t0=$SECONDS
  if bash "$t"; then echo "=== ok ($((SECONDS - t0)) s): $t"; else failed+=("$t"); echo "=== FAILED: $t"; fi
done
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED on host %s: %s\n' "$FF_VM_HOST" "${failed[@]}"
  exit 1
fi
echo "all two-host tests passed on host $FF_VM_HOST"
