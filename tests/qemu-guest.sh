#!/usr/bin/env bash
# Real client 2: a stock Debian Linux guest (virtio_net driver) under QEMU,
# attached through vhostd to a TAP inside a network namespace this test
# creates (and removes).
#
#   tests/qemu-guest.sh [QUEUE_PAIRS] [MIB]     (defaults 1, 16)
#   QEMU_FLAVOR=backports tests/qemu-guest.sh ...  (QEMU 10 from bookworm-
#                        backports, unpacked into the cache, not installed)
#
# Boot 1: the guest pings the namespace's address, sends MIB MiB of random
# data over TCP to a peer in the namespace and receives MIB MiB back; both
# sha256 sums must match on the other side. Boot 2: QEMU is started again
# against the same vhostd (the daemon survives the front-end going away)
# and the guest pings again. vhostd's counters must show the traffic and no
# ring error. Needs root (netns, TAP). QEMU runs under TCG (this machine's
# KVM cannot boot a stock kernel); QEMU 7.x gets vectors=0 (it crashes with
# vhost-user + TCG + MSI-X).
set -uo pipefail
Q=${1:-1}
MB=${2:-16}
FLAVOR=${QEMU_FLAVOR:-system}
TEST_NAME="qemu-guest q=$Q ($FLAVOR)${PACKED:+ packed}${HUGEPAGES:+ hugepages}"
source "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || skip "needs root for the network namespace and TAP"
[ -e /dev/net/tun ] || skip "no /dev/net/tun"
QEMU_BIN=qemu-system-x86_64; QEMU_L=()
if [ "$FLAVOR" = backports ]; then
  eval "$(bash "$HERE/guest/qemu-backports.sh")" || skip "QEMU from bookworm-backports not available"
  IFS=: read -ra dirs <<< "$QEMU_DATADIRS"
  for dd in "${dirs[@]}"; do QEMU_L+=(-L "$dd"); done
else
  need_bin qemu-system-x86_64 qemu-system-x86
fi
need_bin ip iproute2
need_bin python3 python3
[ -x "$VHOSTD" ] || skip "$VHOSTD not built (cargo build)"
eval "$(bash "$HERE/guest/prepare.sh")" || skip "kernel/initramfs preparation failed"

W=$(mktemp -d /tmp/vhostd-qemu.XXXXXX)
NS=vhd$$
FAILED=0
cleanup() {
  cleanup_pids
  ip netns del "$NS" 2>/dev/null
  if [ "$FAILED" = 0 ]; then rm -rf "$W"; else log "files kept in $W"; fi
}
trap cleanup EXIT

HOST_IP=169.254.10.1
GUEST_IP=169.254.10.2/16
ip netns add "$NS" || skip "cannot create a network namespace"
ip -n "$NS" link set lo up
ip -n "$NS" tuntap add dev vhd0 mode tap multi_queue vnet_hdr || skip "cannot create a TAP"
ip -n "$NS" addr add "$HOST_IP/16" dev vhd0
ip -n "$NS" link set vhd0 up

# VHOSTD_ARGS: extra vhostd flags (e.g. --coalesce 200,64), word-split on purpose
# shellcheck disable=SC2086
start_bg "$W/vhostd.log" ip netns exec "$NS" env RUST_LOG=${RUST_LOG:-info} "$VHOSTD" --socket-path "$W/v.sock" --backend tap:vhd0 \
  --queues "$Q" --name guest --control-socket "$W/ctl.sock" ${VHOSTD_ARGS:-}
VHOSTD_PID=$LAST_PID
wait_socket "$W/v.sock" 10 || { cat "$W/vhostd.log" >&2; fail "vhostd did not create its socket"; exit 1; }

QVER=$("$QEMU_BIN" --version | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1)
DEVOPTS="romfile=,mac=52:54:00:12:34:56"
[ "$Q" -gt 1 ] && DEVOPTS+=",mq=on"
if [ "${QVER:-0}" -lt 8 ]; then DEVOPTS+=",vectors=0"
elif [ "$Q" -gt 1 ]; then DEVOPTS+=",vectors=$((2 * Q + 2))"; fi
# PACKED=1: the guest drives packed virtqueues (QEMU packed=on)
[ -n "${PACKED:-}" ] && DEVOPTS+=",packed=on"
SMP=1; [ "$Q" -gt 1 ] && SMP=2
# HUGEPAGES=1: guest memory on 2 MiB huge pages (a hugetlbfs memfd, as NFV
# guests run); needs 256 free ones (scripts/setup.sh reserves them)
MEMOPTS="size=512M,share=on"
if [ -n "${HUGEPAGES:-}" ]; then
  free=$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)
  [ "$(awk '/^Hugepagesize/ {print $2}' /proc/meminfo)" = 2048 ] || skip "huge page size is not 2 MiB"
  [ "${free:-0}" -ge 256 ] || skip "needs 256 free 2 MiB huge pages, $free free (scripts/setup.sh reserves them)"
  MEMOPTS+=",hugetlb=on,hugetlbsize=2M"
fi

boot() { # boot NAME TESTS
  local name=$1 tests=$2
  timeout -k 5 "${QEMU_TIMEOUT:-300}" "$QEMU_BIN" "${QEMU_L[@]}" -accel tcg -smp "$SMP" -m 512M \
    -object "memory-backend-memfd,id=mem,$MEMOPTS" -numa node,memdev=mem \
    -nodefaults -no-user-config -display none -monitor none -no-reboot \
    -serial "file:$W/serial-$name.log" \
    -kernel "$KERNEL" -initrd "$INITRD" \
    -append "console=ttyS0 quiet panic=-1 vhd.ip=$GUEST_IP vhd.peer=$HOST_IP vhd.mb=$MB vhd.tests=$tests" \
    -chardev "socket,id=c0,path=$W/v.sock" \
    -netdev "vhost-user,id=n0,chardev=c0,queues=$Q" \
    -device "virtio-net-pci,netdev=n0,$DEVOPTS" > "$W/qemu-$name.log" 2>&1
  local rc=$?
  tr -d '\r' < "$W/serial-$name.log" > "$W/serial-$name.txt"
  [ $rc = 0 ] || { tail -5 "$W/qemu-$name.log" >&2; fail "$name: qemu exited with $rc"; }
  grep -q '^VHD-PASS' "$W/serial-$name.txt" || fail "$name: guest says $(grep -m1 '^VHD-FAIL' "$W/serial-$name.txt" || echo 'nothing (crash or timeout)')"
  if [ "${SHOW_SERIAL:-0}" = 1 ]; then
    grep -E 'bytes from|packets transmitted|round-trip|^VHD-' "$W/serial-$name.txt" | sed "s/^/[guest $name] /" >&2
  else
    grep -E '^VHD-(INFO|PING|IRQ)' "$W/serial-$name.txt" | sed "s/^/[guest $name] /" >&2
  fi
}

# ---- boot 1: ping + TCP both ways
start_bg "$W/peer.log" ip netns exec "$NS" python3 "$HERE/guest/peer.py" "$HOST_IP" "$MB" "$W"
T0=$(date +%s.%N)
boot first tcp
T1=$(date +%s.%N)
read -r RX_SHA RX_N < "$W/peer-rx" 2>/dev/null || { RX_SHA=none; RX_N=0; }
read -r TX_SHA TX_N < "$W/peer-tx" 2>/dev/null || { TX_SHA=none; TX_N=0; }
G_TX=$(sed -n 's/^VHD-TXSHA //p' "$W/serial-first.txt")
G_RX=$(sed -n 's/^VHD-RXSHA //p' "$W/serial-first.txt")
[ -n "$G_TX" ] && [ "$G_TX" = "$RX_SHA" ] || fail "guest->host data differs (guest $G_TX, host got $RX_SHA, $RX_N bytes)"
[ -n "$G_RX" ] && [ "$G_RX" = "$TX_SHA" ] || fail "host->guest data differs (host sent $TX_SHA, guest got $G_RX)"
[ "$RX_N" = $((MB << 20)) ] || fail "host received $RX_N bytes, expected $((MB << 20))"
if [ "$Q" -gt 1 ]; then
  grep -q "queues=.*rx-$((Q - 1))" "$W/serial-first.txt" || fail "guest did not enable $Q queue pairs"
fi
J1=$(stats_json "$W/ctl.sock") || fail "vhostctl stats failed"
if [ -n "${PACKED:-}" ]; then
  # the guest acked VIRTIO_F_RING_PACKED (bit 34)
  ACKED=$(sed -n 's/.*features acked \(0x[0-9a-f]*\).*/\1/p' "$W/vhostd.log" | tail -1)
  [ -n "$ACKED" ] && [ $(( (ACKED >> 34) & 1 )) = 1 ] || fail "packed ring not negotiated (features acked ${ACKED:-none})"
  log "packed ring negotiated (features $ACKED)"
fi
# Interrupts the guest took on its virtio queue vectors (config vector
# excluded), against what vhostd moved: bytes per interrupt.
IRQS=$(awk '/^VHD-IRQ/ && !/config/ {for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+$/) n += $i; else break} END {print n+0}' "$W/serial-first.txt")
B1=$(( $(sum_field "$J1" all bytes) ))
C1=$(sum_field "$J1" all calls); K1=$(sum_field "$J1" all calls_coalesced); S1=$(sum_field "$J1" all calls_suppressed)
P1=$(sum_field "$J1" all packets); KI1=$(sum_field "$J1" all kicks)
log "boot 1: guest virtio interrupts $IRQS, vhostd bytes $B1, bytes/interrupt $(( B1 / (IRQS > 0 ? IRQS : 1) )), calls $C1, coalesced $K1, suppressed $S1, kicks $KI1, packets $P1"
[ -n "${IRQSTAT_OUT:-}" ] && echo "irqs=$IRQS bytes=$B1 calls=$C1 coalesced=$K1 suppressed=$S1 kicks=$KI1 packets=$P1" > "$IRQSTAT_OUT"
log "boot 1 took $(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.1f", b-a}') s"
"$VHOSTCTL" --control-socket "$W/ctl.sock" stats >&2

# ---- boot 2: same vhostd, new QEMU
boot second ping
kill -0 "$VHOSTD_PID" 2>/dev/null || fail "vhostd died"
J=$(stats_json "$W/ctl.sock") || { fail "vhostctl stats failed"; exit 1; }
CONNS=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ports"][0]["connections"])' "$J")
[ "$CONNS" = 2 ] || fail "vhostd saw $CONNS connections, expected 2"
RXP=$(sum_field "$J" rx packets); TXP=$(sum_field "$J" tx packets)
RXB=$(sum_field "$J" rx bytes); TXB=$(sum_field "$J" tx bytes)
ERR=$(sum_field "$J" all ring_errors); BAD=$(sum_field "$J" all bad_chains)
CALLS=$(sum_field "$J" all calls); KICKS=$(sum_field "$J" all kicks)
[ "$RXB" -ge $((MB << 20)) ] || fail "vhostd RX bytes $RXB < $MB MiB"
[ "$TXB" -ge $((MB << 20)) ] || fail "vhostd TX bytes $TXB < $MB MiB"
[ "$ERR" = 0 ] && [ "$BAD" = 0 ] || fail "ring errors $ERR, bad chains $BAD"
# TSO both ways: the guest sends GSO frames (HOST_TSO), the TAP hands it GSO
# frames (GUEST_TSO), and vhostd passes them whole through the vnet header.
RXG=$(sum_field "$J" rx gso_packets); TXG=$(sum_field "$J" tx gso_packets)
[ "$RXG" -gt 0 ] && [ "$TXG" -gt 0 ] || fail "no GSO frames (rx $RXG, tx $TXG): offloads not in use"
log "GSO frames: rx $RXG (avg $((RXB / RXP)) B/frame over all rx), tx $TXG"
log "vhostd: rx $RXP pkts $RXB B, tx $TXP pkts $TXB B, kicks $KICKS, calls $CALLS"
log "vhostctl stats after both boots:"
"$VHOSTCTL" --control-socket "$W/ctl.sock" stats >&2
[ "$FAILED" = 0 ] && pass "QEMU $QVER.x, ping + ${MB} MiB TCP each way (sha256 ok), $Q queue pair(s), TSO, QEMU restart ok"
exit "$FAILED"
