#!/usr/bin/env bash
# bench/profile.sh — where vhostd's cycles go on one benchmark path: perf
# samples vhostd (on CPU 1) while dpdk-testpmd with net_virtio_user (CPU 0)
# drives it, then prints the front-end's rate and perf's flat profile.
#
#   bench/profile.sh g2h|h2g|loop [SIZE] [VDEV_ARGS]
#   e.g. bench/profile.sh loop 64 ",packed_vq=1"
#
# Needs root, dpdk-testpmd (dpdk-dev) and perf (linux-perf). vhostd runs
# with --mode poll. The release profile keeps debug info, so symbols resolve.
set -u
cd "$(dirname "$0")/.." || exit 1
PATH_=${1:-loop}
SIZE=${2:-64}
VA=${3:-}
SECS=${SECS:-3}
VHOSTD=${VHOSTD:-target/release/vhostd}
source bench/frontend.sh
frontend_path "$PATH_" "$SIZE" || { echo "usage: $0 g2h|h2g|loop [SIZE] [VDEV_ARGS]"; exit 1; }
case $PATH_ in g2h) BK=sink ;; h2g) BK=source:$SIZE ;; loop) BK=loopback ;; esac
command -v perf >/dev/null || { echo "perf missing (apt install linux-perf)"; exit 1; }
[ -x "$VHOSTD" ] || cargo build --release -q -p vhostd-daemon || exit 1
W=$(mktemp -d /tmp/vhostd-profile.XXXXXX)
PFX=vhostd-prof-$$
trap 'profile_cleanup "${VPID:-}" "$PFX"' EXIT
taskset -c 1 timeout 120 "$VHOSTD" --socket-path "$W/v.sock" --backend "$BK" --mode poll > "$W/vhostd.log" 2>&1 &
WPID=$!
for _ in $(seq 50); do [ -S "$W/v.sock" ] && break; sleep 0.1; done
# $! is timeout's pid; perf wants vhostd's own
VPID=$(pgrep -n -P "$WPID" vhostd) || { echo "vhostd did not start"; cat "$W/vhostd.log"; exit 1; }
frontend_start "$W/v.sock" "$PFX"
if [ -n "${NOPERF:-}" ]; then sleep "$SECS"; else perf record -g -p "$VPID" -o "$W/perf.data" -- sleep "$SECS" > /dev/null 2>&1; fi
echo "== $PATH_ $SIZE B${VA:+ ($VA)}: front-end $(frontend_rate)"
perf report -i "$W/perf.data" --no-children --percent-limit 1 --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/ +[^ ]+ +[^ ]+ +\[\.\] / /; s/ +[^ ]+ +\[kernel[^]]*\] +\[k\] / [k] /'
