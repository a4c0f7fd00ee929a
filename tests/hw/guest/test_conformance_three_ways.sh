#!/bin/bash
# In the guest (tests/hw/vm.sh): the verbs conformance suite three ways, case
# by case (each in its own process, with a timeout, so one hang costs one
# case): directly on rxe0 with plain libibverbs (the reference), through the
# router on the verbs fabric over rxe0, and through the router on the soft
# fabric. They must agree: every case passes all three ways, except where
# rxe itself departs from verbs in a way the router cannot hide; those cases
# are listed below with what rxe does, and any other difference fails.
source "$(dirname "$0")/../../e2e/lib.sh"
suite=$FF_BUILD/bin/verbs_conformance_test
gid_index=$FF_RXE_GID_INDEX
unset FF_RXE_GID_INDEX  # through the router the virtual port has one GID, index 0

# rxe 6.1 directly (plain libibverbs), where it departs from verbs:
declare -A rxe_direct=(
  [Verbs.BadLkeyIsLocalProtectionErrorThenEverythingFlushes]="bad lkey completes with LOC_QP_OP_ERR, not LOC_PROT_ERR"
  [Verbs.MessageLargerThanTheReceiveFailsBothSides]="REM_OP_ERR / LOC_QP_OP_ERR instead of REM_INV_REQ_ERR / LOC_LEN_ERR"
  [Verbs.UnreliableConnectedSendAndWrite]="accepts a READ posted on a UC QP"
  [Verbs.SharedReceiveQueueServesSeveralQpsAndSignalsItsLimit]="no IBV_EVENT_QP_LAST_WQE_REACHED when an SRQ QP is moved to ERR"
  [Verbs.ExtendedPostSendApi]="an inline SEND built with ibv_wr_set_inline_data never completes"
  [Datagrams.WrongQkeyOrNoSuchQpIsDroppedSilently]="ignores the Q_Key high bit (use the QP's own Q_Key)"
  [Datagrams.DatagramLargerThanTheMtuFails]="sends UD datagrams larger than the path MTU"
  [Verbs.PeerKilledMidTransferFailsOutstandingAndNewWork]="the forked child's own verbs setup fails (EINVAL) under plain libibverbs"
  [Verbs.BadPostSendArgumentsReturnErrnoAndBadWr]="not run: a garbage opcode oopses rxe 6.1 (req_next_wqe)"
  [Verbs.WorkPostedInErrorIsFlushed]="a receive posted to a QP in ERR never completes"
  [Verbs.AFullSendQueueIsEnomemUntilCompletionsArePolled]="frees a send queue slot when the WR executes, not when its completion is polled"
  [Verbs.AFullReceiveQueueIsEnomemUntilReceivesComplete]="an SRQ takes more receives than the max_wr it reports"
  [Verbs.ObjectsWithAnyCapabilitiesWithinTheReportedLimitsAreMade]="reports max_qp_wr 1048576 and cannot make a QP that deep (ENOMEM)"
  [Windows.Type1UnbindsAndBindsAgain]="not run: rdma-core 44's rxe provider dereferences the NULL MR of a type 1 unbind (ibv_bind_mw with length 0: SIGSEGV)"
  [Windows.SendWithInvalidateFreesTheReceiversWindow]="invalidates the window but leaves IBV_WC_WITH_INV out of the receive's wc_flags"
  [Multicast.ReachesEveryAttachedQpAndStopsOnDetach]="delivers a multicast datagram to no QP of its own device (the receivers here are on the sender's device)"
  [Verbs.ADestroyedQpLeavesNoCompletionInTheCqsItShares]="keeps a destroyed QP's completions in its CQs (mlx4 and mlx5 remove them)"
  [Verbs.AtomicWriteIsOfferedExactlyWhenReported]="rdma-core 44's rxe provider makes a QP with IBV_QP_EX_WITH_ATOMIC_WRITE, which Linux 6.1's rxe neither reports nor executes (LOC_QP_OP_ERR)"
)
# Through the router on rxe0: the device's own completion statuses pass
# through; the router cannot know the cause better than the device.
declare -A rxe_router=(
  [Verbs.MessageLargerThanTheReceiveFailsBothSides]="rxe's statuses (REM_OP_ERR / LOC_QP_OP_ERR)"
)

# The one case the soft fabric skips: it needs a device without XRC.
soft_may_skip=Xrc.WithoutTheCapabilityTheDomainVerbsAreRefused

# FF_CONFORMANCE_CASES=REGEX: only the cases it matches (when working on them).
cases=$("$suite" --gtest_list_tests | awk '/^[^ ]/ {s=$1; next} {print s $1}' | grep -E "${FF_CONFORMANCE_CASES:-.}" || true)
[ -n "$cases" ] || fail "no conformance cases listed"

# run_case HOW CASE: 0 when the case passed.
run_case() {
  case $1 in
    direct) FF_RXE_GID_INDEX=$gid_index timeout 90 "$suite" --gtest_filter="$2" ;;
    *) ff_in_container c1 default env FF_EXPECT_SHIM=1 timeout 90 "$suite" --gtest_filter="$2" ;;
  esac >"$FF_WORK/case.log" 2>&1
}

declare -A result took
ff_container c1 10.44.0.2
for how in direct verbs soft; do
  if [ "$how" != direct ]; then
    ff_start_router --fabric "$how" --device "$FF_RXE_DEV"
  fi
  for c in $cases; do
    if [ "$how" = direct ] && [[ ${rxe_direct[$c]:-} == "not run"* ]]; then
      result[$how,$c]=skip
      continue
    fi
    t0=$(date +%s%N)
    if run_case "$how" "$c"; then
      # A skipped case passed by not running: shown as such (see below).
      if grep -q '^\[  SKIPPED \] .* (' "$FF_WORK/case.log"; then result[$how,$c]=skip; else result[$how,$c]=pass; fi
    else
      result[$how,$c]=fail
      # A case that crashed or hung says nothing of the kind: its last lines then.
      { grep -E "Failure|Expected|Which is|actual" "$FF_WORK/case.log" || tail -3 "$FF_WORK/case.log"; } |
        head -6 | sed "s/^/    [$how] /" >>"$FF_WORK/details"
    fi
    ms=$((($(date +%s%N) - t0) / 1000000))
    took[$how]=$((${took[$how]:-0} + ms))
    [ "$ms" -lt 10000 ] || echo "$how $c took $ms ms" >>"$FF_WORK/slow"
  done
  if [ "$how" != direct ]; then
    kill "$FF_ROUTER_PID"
    wait "$FF_ROUTER_PID" || true
    FF_ROUTER_PID=
  fi
done

bad=0
printf '%-62s %-7s %-7s %-7s\n' case direct verbs soft
for c in $cases; do
  d=${result[direct,$c]} v=${result[verbs,$c]} s=${result[soft,$c]}
  printf '%-62s %-7s %-7s %-7s\n' "$c" "$d" "$v" "$s"
  note=
  # A case skips what its device does not offer (rxe has no device memory,
  # say); the soft fabric offers everything but the absence of XRC.
  if [ "$s" = fail ]; then note+=" soft fabric fails;"; bad=1; fi
  if [ "$s" = skip ] && [ "$c" != "$soft_may_skip" ]; then note+=" soft fabric skips it;"; bad=1; fi
  if [ "$v" = fail ] && [ -z "${rxe_router[$c]:-}" ]; then note+=" verbs fabric fails;"; bad=1; fi
  if [ "$d" = fail ] && [ -z "${rxe_direct[$c]:-}" ]; then note+=" rxe fails a case not listed;"; bad=1; fi
  [ -n "$note" ] && echo "  !!$note"
  [ "$d" != pass ] && [ -n "${rxe_direct[$c]:-}" ] && echo "  rxe: ${rxe_direct[$c]}"
  [ "$v" != pass ] && [ -n "${rxe_router[$c]:-}" ] && echo "  via router on rxe: ${rxe_router[$c]}"
  [ "$d" = pass ] && [ -n "${rxe_direct[$c]:-}" ] && echo "  (listed as an rxe departure but passes now: update the list)"
done
[ -f "$FF_WORK/details" ] && { echo "--- failures"; cat "$FF_WORK/details"; }
echo "time: direct $((took[direct] / 1000)) s, verbs fabric $((took[verbs] / 1000)) s, soft fabric $((took[soft] / 1000)) s"
[ -f "$FF_WORK/slow" ] && cat "$FF_WORK/slow"
[ $bad -eq 0 ] || fail "the three runs disagree beyond rxe's listed departures"
pass "conformance: $(wc -w <<<"$cases") cases agree three ways (direct on rxe, verbs fabric, soft fabric)"
echo "1 passed, 0 failed"
