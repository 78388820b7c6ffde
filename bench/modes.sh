#!/usr/bin/env bash
# bench/modes.sh — vhostd's worker modes side by side: throughput at saturation
# (adaptive against poll) and CPU when the guest is idle (adaptive, event, poll).
#
#   bench/modes.sh                 PAIRS=3 SECS=3 WARMUP=2 SIZE=64 IDLE_SECS=5
#
# Saturation: dpdk-testpmd (net_virtio_user) on CPU 0 loops frames through
# vhostd --backend loopback on CPU 1 (mac forwarding seeded with
# 'start tx_first 32'); the rate is read at the front-end ("show port stats
# all", Rx-pps). poll and adaptive runs alternate, PAIRS pairs, medians and
# the adaptive/poll ratio per pair.
# Idle: the same set-up with the port started but nothing forwarded; after 1 s,
# vhostd's CPU time over IDLE_SECS from /proc/PID/stat (utime + stime).
# Figures only: it fails only when a run moved no traffic at all. Needs root
# and dpdk-testpmd.
set -u
cd "$(dirname "$0")/.." || exit 1
PAIRS=${PAIRS:-3}
SECS=${SECS:-3}
WARMUP=${WARMUP:-2}
SIZE=${SIZE:-64}
IDLE_SECS=${IDLE_SECS:-5}
VHOSTD=${VHOSTD:-target/release/vhostd}
[ -x "$VHOSTD" ] || cargo build --release -q -p vhostd-daemon || exit 1
command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd missing (apt install dpdk-dev)"; exit 1; }
W=$(mktemp -d /tmp/vhostd-modes.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf /var/run/dpdk/vhostd-modes-$$-*
    [ -z "${KEEPW:-}" ] && rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_pair MODE TAG: vhostd on CPU 1, testpmd front-end on CPU 0 reading
# commands from a FIFO (fd 3); waits for the prompt
start_pair() {
    local mode=$1 tag=$2
    rm -f "$W/v.sock" "$W/in"
    taskset -c 1 timeout 120 "$VHOSTD" --socket-path "$W/v.sock" --backend loopback --mode "$mode" \
        > "$W/vhostd-$tag.log" 2>&1 &
    local wpid=$!; PIDS+=("$wpid")
    for _ in $(seq 50); do [ -S "$W/v.sock" ] && break; sleep 0.1; done
    # $! is timeout's pid; the CPU figures need vhostd's own
    VPID=$(pgrep -n -P "$wpid" vhostd) || { echo "vhostd did not start"; return 1; }
    mkfifo "$W/in"
    timeout 120 stdbuf -oL dpdk-testpmd --lcores 0@0,1@0 --no-huge -m 1024 --no-pci \
        --file-prefix="vhostd-modes-$$-$tag" --vdev "net_virtio_user0,path=$W/v.sock,queues=1" \
        -- -i --nb-cores=1 < "$W/in" > "$W/tp-$tag.log" 2>&1 &
    TPID=$!; PIDS+=("$TPID")
    exec 3> "$W/in"
    for _ in $(seq 300); do grep -q 'testpmd> ' "$W/tp-$tag.log" && return 0; sleep 0.2; done
    echo "testpmd did not start ($tag)"; return 1
}
stop_pair() {
    printf 'stop\nquit\n' >&3 2>/dev/null; exec 3>&-
    sleep 1
    kill "$TPID" "$VPID" 2>/dev/null; wait "$TPID" "$VPID" 2>/dev/null
}
# mean Rx-pps over the last SECS one-second samples
rate() {
    local tag=$1
    printf 'set fwd mac\nset txpkts %s\nstart tx_first 32\n' "$SIZE" >&3
    sleep "$WARMUP"
    printf 'show port stats all\n' >&3
    for _ in $(seq "$SECS"); do sleep 1; printf 'show port stats all\n' >&3; done
    sleep 0.5
    grep 'Rx-pps:' "$W/tp-$tag.log" | tail -n "$SECS" | awk '{s += $2} END {printf "%.3f", s / NR / 1e6}'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "bench/modes.sh: loop path, ${SIZE} B, testpmd on CPU 0, vhostd on CPU 1, $PAIRS pairs"
POLL=(); ADAP=(); RATIOS=()
for p in $(seq "$PAIRS"); do
    for mode in poll adaptive; do
        start_pair "$mode" "$mode$p" || exit 1
        r=$(rate "$mode$p")
        stop_pair
        if [ "$mode" = poll ]; then POLL+=("$r"); else ADAP+=("$r"); fi
    done
    for r in "${POLL[-1]}" "${ADAP[-1]}"; do
        awk -v r="$r" 'BEGIN {exit !(r > 0)}' || { echo "FAIL: no traffic in pair $p (poll ${POLL[-1]}, adaptive ${ADAP[-1]} Mpps): see $W"; KEEPW=1; exit 1; }
    done
    RATIOS+=("$(awk -v a="${ADAP[-1]}" -v b="${POLL[-1]}" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')")
    echo "pair $p: poll ${POLL[-1]} Mpps, adaptive ${ADAP[-1]} Mpps, adaptive/poll ${RATIOS[-1]}"
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
echo "saturation: poll $(med "${POLL[@]}") Mpps, adaptive $(med "${ADAP[@]}") Mpps (medians), adaptive/poll per pair: ${RATIOS[*]}"

HZ=$(getconf CLK_TCK)
for mode in adaptive event poll; do
    start_pair "$mode" "idle-$mode" || exit 1
    sleep 1
    t0=$(cpu_ticks "$VPID"); sleep "$IDLE_SECS"; t1=$(cpu_ticks "$VPID")
    stop_pair
    echo "idle guest, mode $mode: vhostd CPU $(awk -v d=$((t1 - t0)) -v hz="$HZ" -v s="$IDLE_SECS" 'BEGIN {printf "%.2f", 100 * d / hz / s}') % of one core over ${IDLE_SECS} s"
done
