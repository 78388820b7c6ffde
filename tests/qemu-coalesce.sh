#!/usr/bin/env bash
# Interrupts a real guest takes, with and without host-side coalescing.
# Boots the QEMU 10 guest (MSI-X: one vector per queue, read from the
# guest's /proc/interrupts) three times against vhostd with --coalesce off,
# 200,64 and adaptive; each boot moves MIB MiB each way over TCP (sha256
# checked) and the script prints interrupts, calls and bytes per interrupt.
# Fails if a transfer fails or if fixed coalescing folds no call at all.
#
#   tests/qemu-coalesce.sh [MIB]     (default 16)
set -uo pipefail
MB=${1:-16}
TEST_NAME="qemu-coalesce"
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
FAILED=0
OUT=$(mktemp -d /tmp/vhostd-coal.XXXXXX)
declare -A R
for mode in off 200,64 adaptive; do
  f=$OUT/$mode
  IRQSTAT_OUT=$f QEMU_FLAVOR=${QEMU_FLAVOR:-backports} VHOSTD_ARGS="--coalesce $mode" \
    bash "$HERE/qemu-guest.sh" 1 "$MB" > "$OUT/$mode.log" 2>&1
  rc=$?
  grep -E '^(PASS|FAIL|SKIP)' "$OUT/$mode.log"
  [ $rc = 2 ] && { cat "$OUT/$mode.log" >&2; skip "guest test could not run"; }
  [ $rc = 0 ] || fail "guest run with --coalesce $mode failed"
  R[$mode]=$(cat "$f" 2>/dev/null)
done
printf '%-10s %8s %12s %8s %10s %11s %14s\n' coalesce irqs bytes calls coalesced suppressed bytes/irq
for mode in off 200,64 adaptive; do
  eval "${R[$mode]:-irqs=0 bytes=0 calls=0 coalesced=0 suppressed=0}"
  printf '%-10s %8d %12d %8d %10d %11d %14d\n' "$mode" "$irqs" "$bytes" "$calls" "$coalesced" "$suppressed" $(( bytes / (irqs > 0 ? irqs : 1) ))
  [ "$mode" = 200,64 ] && [ "${coalesced:-0}" -eq 0 ] && fail "fixed coalescing folded no call"
done
[ "$FAILED" = 0 ] && { pass "3 guest runs, interrupts measured"; rm -rf "$OUT"; }
exit "$FAILED"
