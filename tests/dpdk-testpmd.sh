#!/usr/bin/env bash
# Real client 1: DPDK virtio-user (dpdk-testpmd, net_virtio_user) against
# vhostd --backend loopback.
#
#   tests/dpdk-testpmd.sh [QUEUE_PAIRS]      (default 1)
#
# testpmd forwards in io mode, seeded with one burst per queue (start
# tx_first): every frame vhostd loops back is sent again, so a fixed number
# of frames (32 per queue) circulates. After a few seconds testpmd stops.
# Pass when nothing was lost and both sides count the same frames:
#   testpmd TX == vhostd TX == vhostd RX, and testpmd RX == testpmd TX - 32*Q
#   (the last 32*Q frames are delivered by vhostd but testpmd stopped polling),
#   every queue pair carried traffic, and vhostd counts no drop or ring error.
# (`rxonly` + `tx_first` is not used: testpmd 22.11 loses the seed burst in
# some runs against DPDK's own net_vhost too.)
set -uo pipefail
TEST_NAME="dpdk-testpmd q=${1:-1}${VDEV_ARGS:-}"
source "$(dirname "$0")/lib.sh"
Q=${1:-1}
SECS=${TESTPMD_SECS:-3}
need_bin dpdk-testpmd dpdk-dev
[ -x "$VHOSTD" ] || skip "$VHOSTD not built (cargo build)"
W=$(mktemp -d /tmp/vhostd-testpmd.XXXXXX)
FAILED=0
trap 'cleanup_pids; if [ "$FAILED" = 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$W"; else log "files kept in $W"; fi' EXIT

start_bg "$W/vhostd.log" env RUST_LOG=${RUST_LOG:-debug} "$VHOSTD" --socket-path "$W/v.sock" --backend loopback --queues "$Q" \
  --name dpdk --control-socket "$W/ctl.sock"
wait_socket "$W/v.sock" 10 || { cat "$W/vhostd.log" >&2; fail "vhostd did not create its socket"; exit 1; }

# testpmd needs an open stdin and exits at EOF: feed it commands with pauses.
# Commands go in only once testpmd shows its prompt: it may take seconds to
# set up its 1 GiB of memory (the first run on a machine, a loaded CI box),
# and commands queued before that run back to back, so `stop` would follow
# `start` within milliseconds. (That was the "loop died early" of earlier
# runs: testpmd's forwarding ran for a few ms, not a lost frame or kick.)
run_testpmd() { # run_testpmd ATTEMPT
  local log="$W/testpmd-$1.log"
  : > "$log"
  { wait_prompt "$log" 90; printf 'set fwd io\nstart tx_first 1\n'; sleep "$SECS"; printf 'stop\n'; sleep 1; printf 'quit\n'; } |
    timeout 180 dpdk-testpmd -l 0-1 --no-huge -m 1024 --no-pci --file-prefix="vhostd-t$$-$1" \
      --vdev "net_virtio_user0,path=$W/v.sock,queues=$Q${VDEV_ARGS:-}" -- -i --nb-cores=1 --rxq="$Q" --txq="$Q" \
      >> "$log" 2>&1
  local rc=$?
  rm -rf "/var/run/dpdk/vhostd-t$$-$1" 2>/dev/null
  return $rc
}
INFLIGHT=$((32 * Q))
attempt=1
J0=$(stats_json "$W/ctl.sock") || { fail "vhostctl stats failed"; exit 1; }
run_testpmd "$attempt" || { tail -20 "$W/testpmd-$attempt.log" >&2; fail "testpmd exited with an error"; exit 1; }
grep -q 'testpmd> ' "$W/testpmd-$attempt.log" || fail "testpmd never showed its prompt"
# "Accumulated forward statistics for all ports" block: last RX/TX lines.
read -r TP_RX TP_TX < <(awk '/Accumulated forward statistics/ {acc=1} acc && /RX-packets:/ {rx=$2} acc && /TX-packets:/ {tx=$2} END {print rx+0, tx+0}' "$W/testpmd-$attempt.log")
sleep 0.5
J=$(stats_json "$W/ctl.sock") || { fail "vhostctl stats failed"; exit 1; }
d() { echo $(( $(sum_field "$J" "$1" "$2") - $(sum_field "$J0" "$1" "$2") )); }
V_RX=$(d rx packets); V_TX=$(d tx packets)
V_DROPS=$(d all drops); V_ERR=$(d all ring_errors)
log "testpmd RX=$TP_RX TX=$TP_TX; vhostd rx=$V_RX tx=$V_TX drops=$V_DROPS ring_errors=$V_ERR"
"$VHOSTCTL" --control-socket "$W/ctl.sock" stats >&2

[ "$TP_TX" -gt 10000 ] || fail "too little traffic: testpmd TX=$TP_TX"
[ "$TP_TX" = "$V_TX" ] || fail "testpmd sent $TP_TX, vhostd took $V_TX"
[ "$V_RX" = "$V_TX" ] || fail "vhostd took $V_TX, delivered $V_RX"
[ "$TP_RX" = $((TP_TX - INFLIGHT)) ] || fail "testpmd RX=$TP_RX, expected TX-$INFLIGHT=$((TP_TX - INFLIGHT)) (frames lost)"
[ "$V_DROPS" = 0 ] || fail "vhostd dropped $V_DROPS frames"
[ "$V_ERR" = 0 ] || fail "vhostd ring errors: $V_ERR"
for i in $(seq 0 $((Q - 1))); do
  n=$(python3 -c 'import json,sys; g=lambda s: [q for q in json.loads(s)["ports"][0]["queues"] if q["name"]=="rx"+sys.argv[3]][0]["packets"]; print(g(sys.argv[1]) - g(sys.argv[2]))' "$J" "$J0" "$i")
  [ "$n" -gt 0 ] || fail "queue pair $i carried no traffic"
done
grep -q "front-end connected" "$W/vhostd.log" || fail "vhostd never saw the front-end"
[ "$FAILED" = 0 ] && pass "$TP_TX frames looped through vhostd, none lost, counters agree"
exit "$FAILED"
