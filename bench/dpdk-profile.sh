#!/usr/bin/env bash
# bench/dpdk-profile.sh — where DPDK's vhost back-end spends its cycles on one
# benchmark path, for comparison with bench/profile.sh (vhostd): perf samples
# dpdk-testpmd with net_vhost (CPU 1) while dpdk-testpmd with net_virtio_user
# (CPU 0) drives it, as bench/dpdk-compare.sh runs them, then prints the
# front-end's rate and the flat profile with DPDK's functions named
# (bench/dpdk-syms.py: Debian's librte_*.so are stripped, their static
# archives are not).
#
#   bench/dpdk-profile.sh g2h|h2g|loop [SIZE] [VDEV_ARGS]
#   e.g. bench/dpdk-profile.sh h2g 64 ",packed_vq=1"
#
# Needs root, dpdk-testpmd and the archives (dpdk-dev, libdpdk-dev), perf
# (linux-perf) and binutils. SECS (default 3) seconds are sampled.
set -u
cd "$(dirname "$0")/.." || exit 1
PATH_=${1:-loop}
SIZE=${2:-64}
VA=${3:-}
SECS=${SECS:-3}
source bench/frontend.sh
frontend_path "$PATH_" "$SIZE" || { echo "usage: $0 g2h|h2g|loop [SIZE] [VDEV_ARGS]"; exit 1; }
case $PATH_ in g2h) BF=rxonly ;; h2g) BF=txonly ;; loop) BF=mac ;; esac
for c in perf dpdk-testpmd objdump nm ar python3; do
    command -v "$c" >/dev/null || { echo "$c missing (see scripts/setup.sh)"; exit 1; }
done
W=$(mktemp -d /tmp/dpdk-profile.XXXXXX)
PFX=dpdk-prof-$$
trap 'profile_cleanup "${BPID:-}" "$PFX-b" "$PFX-f"' EXIT
# non-interactive: forwards by itself; --stats-period keeps it from quitting on EOF
timeout 120 dpdk-testpmd --lcores 0@1,1@1 --no-huge -m 1024 --no-pci --file-prefix="$PFX-b" \
    --vdev "net_vhost0,iface=$W/v.sock,queues=1,client=0" -- --nb-cores=1 \
    --port-topology=loop --forward-mode=$BF --txpkts="$SIZE" --stats-period=3600 \
    < /dev/null > "$W/back.log" 2>&1 &
WPID=$!
for _ in $(seq 150); do [ -S "$W/v.sock" ] && break; sleep 0.1; done
# $! is timeout's pid; perf wants testpmd's own
BPID=$(pgrep -n -P "$WPID" dpdk-testpmd) || { echo "net_vhost did not start"; cat "$W/back.log"; exit 1; }
frontend_start "$W/v.sock" "$PFX-f"
# FRONT=1: sample the front-end's testpmd instead (as bench/profile.sh FRONT=1)
PPID_=$BPID
[ -n "${FRONT:-}" ] && PPID_=$(frontend_pid)
perf record -p "$PPID_" -o "$W/perf.data" -- sleep "$SECS" > /dev/null 2>&1
{
    echo "== DPDK net_vhost $PATH_ $SIZE B${VA:+ ($VA)}: front-end $(frontend_rate)${FRONT:+ (profile: the front-end)}"
    perf report -i "$W/perf.data" --no-children --sort dso,sym --percent-limit 0.5 --stdio 2>/dev/null
} | python3 bench/dpdk-syms.py
