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
# FRONT=1 samples the front-end (testpmd, CPU 0) instead, its DPDK functions
# named: what this back-end costs the front-end (bench/dpdk-profile.sh takes
# FRONT=1 too, for the same view against DPDK net_vhost).
# PERF_CG (default -g) is passed to perf record: PERF_CG="--call-graph
# dwarf,4096" names the callers of libc's functions (no frame pointers), e.g.
# which of the two copies of the loop path a memmove sample belongs to.
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
[ -x "$VHOSTD" ] || cargo build --release -q -p vhostd-daemon -p vhostctl || exit 1
W=$(mktemp -d /tmp/vhostd-profile.XXXXXX)
PFX=vhostd-prof-$$
trap 'profile_cleanup "${VPID:-}" "$PFX"' EXIT
taskset -c 1 timeout 120 "$VHOSTD" --socket-path "$W/v.sock" --control-socket "$W/c.sock" --backend "$BK" --mode poll > "$W/vhostd.log" 2>&1 &
WPID=$!
for _ in $(seq 50); do [ -S "$W/v.sock" ] && break; sleep 0.1; done
# $! is timeout's pid; perf wants vhostd's own
VPID=$(pgrep -n -P "$WPID" vhostd) || { echo "vhostd did not start"; cat "$W/vhostd.log"; exit 1; }
frontend_start "$W/v.sock" "$PFX"
# vhostd's counters around the window: how often each queue's pass found
# nothing to do (empty_polls against bursts, i.e. passes that moved frames)
VHOSTCTL=${VHOSTCTL:-$(dirname "$VHOSTD")/vhostctl}
[ -x "$VHOSTCTL" ] || VHOSTCTL=target/release/vhostctl
snap() { timeout 5 "$VHOSTCTL" --control-socket "$W/c.sock" stats --json > "$1" 2>/dev/null || true; }
snap "$W/s0.json"
# FRONT=1: the front-end's testpmd is sampled instead (its DPDK libraries named by
# bench/dpdk-syms.py), to see what a back-end costs the front-end
PPID_=$VPID
[ -n "${FRONT:-}" ] && PPID_=$(frontend_pid)
if [ -n "${NOPERF:-}" ]; then sleep "$SECS"; else perf record ${PERF_CG:--g} -p "$PPID_" -o "$W/perf.data" -- sleep "$SECS" > /dev/null 2>&1; fi
snap "$W/s1.json"
echo "== $PATH_ $SIZE B${VA:+ ($VA)}: front-end $(frontend_rate)"
python3 - "$W/s0.json" "$W/s1.json" <<'PY' || true
import json, sys
try:
    a, b = (json.load(open(f))["ports"][0]["queues"] for f in sys.argv[1:3])
    assert all("empty_polls" in q for q in a + b)
except (OSError, ValueError, KeyError, IndexError, AssertionError):
    sys.exit("   (no vhostd counters: vhostctl missing or too old for empty_polls)")
out = []
for q0, q1 in zip(a, b):
    d = {k: q1.get(k, 0) - q0.get(k, 0) for k in ("packets", "bursts", "empty_polls")}
    if d["bursts"] == 0:
        out.append(f"{q1['name']}: idle ({d['empty_polls']} empty passes)")
        continue
    # an empty pass costs ~0.1 us, a busy one frames x tens of ns: compare
    # counts, not shares
    out.append(f"{q1['name']}: {d['packets'] / d['bursts']:.0f} frames per busy pass, "
               f"{d['empty_polls'] / d['bursts']:.1f} empty passes per busy one")
print("   vhostd " + "; ".join(out) if out else "   vhostd: no passes counted")
PY
if [ -n "${FRONT:-}" ]; then
    echo "   (the front-end's testpmd, CPU 0)"
    perf report -i "$W/perf.data" --no-children --sort dso,sym --percent-limit 0.5 --stdio 2>/dev/null |
        python3 bench/dpdk-syms.py
    exit 0
fi
perf report -i "$W/perf.data" --no-children --percent-limit 1 --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/ +[^ ]+ +[^ ]+ +\[\.\] / /; s/ +[^ ]+ +\[kernel[^]]*\] +\[k\] / [k] /'
