#!/usr/bin/env bash
# bench/interleave.sh — two back-ends measured in the same seconds: both are
# ports of ONE front-end (dpdk-testpmd, net_virtio_user x 2, CPU 0) and
# they take turns on CPU 1, the one not measured stopped (SIGSTOP), every
# PERIOD seconds. The front-end's per-port rate is read at every switch, so
# each period of one back-end sits between two of the other, and the ratio
# is taken period by period.
#
#   bench/interleave.sh g2h|h2g|loop [SIZE]
#   e.g. RING=packed bench/interleave.sh loop 64
#
# Why: this machine's vCPUs change places (a cache-line round trip of ~30,
# ~65 or ~320 ns between the two CPUs) every few seconds to minutes, and
# more than the probe sees: two runs a minute apart in the "same" phase
# differ by 2x. Separate runs (bench/dpdk-compare.sh) need many pairs and
# still mix states; interleaving compares the back-ends under the same
# conditions within half a second.
#
# Side A is vhostd (VHOSTD, default target/release/vhostd; port 0), side B
# DPDK net_vhost (port 1); B=vhostd:PATH makes side B another vhostd binary
# (an A/B of two builds). Env: RING=split|packed INORDER=0 MRG=1 PERIOD=0.5
# (s) ROUNDS=20 (A/B pairs after WARM=4 periods) VHOSTD_ARGS="--mode poll".
# CEILING=1 runs side A with --backend ceiling:KIND (rings and headers only,
# no frame bytes copied: never a vhostd figure): A/B is then ceiling/DPDK,
# the front-end's rate with the ring work alone against DPDK's (a bound on
# vhostd/DPDK only where the ceiling runs above vhostd; on the loop path it
# does not); with B=vhostd:PATH, ceiling/vhostd.
# The vhostd sides also report the share of RX frames whose header was
# compared rather than written (the RX header tuner's choice).
#
# Output: per period the active side and its rate; then the median over
# periods of A / (mean of the B periods either side), the 10th-90th
# percentile band, and each side's median rate. The front-end polls the
# stopped port too (cheap: its rings are idle; for g2h it also builds the
# frames it cannot send), so absolute rates run below a single-port run;
# both sides pay the same. Needs root, dpdk-testpmd (dpdk-dev).
set -u
cd "$(dirname "$0")/.." || exit 1
PATH_=${1:-loop}
SIZE=${2:-64}
RING=${RING:-split}
INORDER=${INORDER:-0}
MRG=${MRG:-1}
PERIOD=${PERIOD:-0.5}
ROUNDS=${ROUNDS:-20}
WARM=${WARM:-4}
VHOSTD=${VHOSTD:-target/release/vhostd}
VHOSTD_ARGS=${VHOSTD_ARGS:---mode poll}
B=${B:-dpdk}
case $PATH_ in
    loop) BE=loopback FWD=mac CMDS="set fwd mac\nset txpkts $SIZE\nstart tx_first 32\n" RATE=Rx-pps ;;
    g2h) BE=sink FWD=rxonly CMDS="set fwd txonly\nset txpkts $SIZE\nstart\n" RATE=Tx-pps ;;
    h2g) BE=source:$SIZE FWD=txonly CMDS="set fwd rxonly\nstart\n" RATE=Rx-pps ;;
    *) echo "usage: $0 g2h|h2g|loop [SIZE]"; exit 1 ;;
esac
[ "${CEILING:-0}" = 1 ] && ABE=ceiling:$BE || ABE=$BE
command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd missing (scripts/setup.sh)"; exit 1; }
[ -x "$VHOSTD" ] || cargo build --release -q -p vhostd-daemon || exit 1
W=$(mktemp -d /tmp/vhostd-interleave.XXXXXX)
PFX=vhostd-il-$$
APID="" BPID="" FPID=""
cleanup() {
    exec 3>&- 2>/dev/null
    for p in $APID $BPID; do kill -CONT "$p" 2>/dev/null; done
    for p in $FPID $APID $BPID; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "/var/run/dpdk/$PFX-b" "/var/run/dpdk/$PFX-f"
    [ -z "${KEEP:-}" ] && rm -rf "$W"
}
trap cleanup EXIT
T=$(awk -v r="$ROUNDS" -v w="$WARM" -v p="$PERIOD" 'BEGIN{printf "%d", (2 * r + w + 2) * p + 90}')

# side A: vhostd (port 0)
taskset -c 1 timeout -k 3 "$T" "$VHOSTD" --socket-path "$W/a.sock" --backend "$ABE" --name il-a \
    --control-socket "$W/a.ctl" $VHOSTD_ARGS </dev/null >"$W/a.log" 2>&1 &
APID=$!
# side B: DPDK net_vhost, or a second vhostd (port 1)
if [ "$B" = dpdk ]; then
    taskset -c 1 timeout -k 3 "$T" dpdk-testpmd --lcores "0@1,1@1" --no-pci --file-prefix="$PFX-b" \
        --no-huge -m 1024 --vdev "net_vhost0,iface=$W/b.sock,queues=1,client=0" \
        -- --nb-cores=1 --port-topology=loop --forward-mode="$FWD" --txpkts="$SIZE" \
        --stats-period=3600 </dev/null >"$W/b.log" 2>&1 &
else
    taskset -c 1 timeout -k 3 "$T" "${B#vhostd:}" --socket-path "$W/b.sock" --backend "$BE" --name il-b \
        --control-socket "$W/b.ctl" $VHOSTD_ARGS </dev/null >"$W/b.log" 2>&1 &
fi
BPID=$!
for _ in $(seq 150); do [ -S "$W/a.sock" ] && [ -S "$W/b.sock" ] && break; sleep 0.1; done
[ -S "$W/a.sock" ] && [ -S "$W/b.sock" ] || { echo "a back-end did not start"; tail -3 "$W"/[ab].log; exit 1; }
# the processes to stop and continue: the back-ends themselves, not timeout
APID=$(pgrep -P "$APID" | head -1) BPID=$(pgrep -P "$BPID" | head -1)
[ -n "$APID" ] && [ -n "$BPID" ] || { echo "back-end pids not found"; exit 1; }

ring_args="queues=1,packed_vq=$([ "$RING" = packed ] && echo 1 || echo 0),in_order=$INORDER,mrg_rxbuf=$MRG"
mkfifo "$W/in"
taskset -c 0 timeout -k 3 "$T" stdbuf -oL dpdk-testpmd --lcores "0@0,1@0" --no-pci --file-prefix="$PFX-f" \
    --no-huge -m 1024 --vdev "net_virtio_user0,path=$W/a.sock,$ring_args" \
    --vdev "net_virtio_user1,path=$W/b.sock,$ring_args" \
    -- -i --nb-cores=1 --port-topology=loop <"$W/in" >"$W/f.log" 2>&1 &
FPID=$!
exec 3>"$W/in"
for _ in $(seq 300); do grep -q 'testpmd> ' "$W/f.log" && break; sleep 0.1; done
grep -q 'testpmd> ' "$W/f.log" || { echo "front-end did not come up"; tail -5 "$W/f.log"; exit 1; }
BENCH=target/release/vhostd-bench
rtt() { [ -x "$BENCH" ] && timeout 20 taskset -c 0,1 "$BENCH" line-rtt --iters 100000 2>/dev/null | tail -1; }
R0=$(rtt)
printf "$CMDS" >&3
sleep 1
# period i: side A when i is even; its rate is in the show that ends it
N=$((2 * ROUNDS + WARM))
for i in $(seq 0 "$N"); do
    if [ $((i % 2)) = 0 ]; then act=$APID off=$BPID; else act=$BPID off=$APID; fi
    kill -STOP "$off"
    kill -CONT "$act"
    printf 'show port stats all\n' >&3
    sleep "$PERIOD"
done
# the vhostd sides' own counters, taken while they still run
CTL=target/release/vhostctl
for s in a b; do
    kill -CONT "$APID" "$BPID" 2>/dev/null
    [ -x "$CTL" ] && [ -S "$W/$s.ctl" ] &&
        timeout 5 "$CTL" --control-socket "$W/$s.ctl" stats --json >"$W/$s-stats.json" 2>/dev/null
done
printf 'show port stats all\nstop\nquit\n' >&3
exec 3>&-
for _ in $(seq 100); do kill -0 "$FPID" 2>/dev/null || break; sleep 0.1; done
kill -CONT "$APID" "$BPID" 2>/dev/null
R1=$(rtt)

echo "== interleave $PATH_ $SIZE B $RING (in_order=$INORDER mrg=$MRG): A vhostd ($VHOSTD, $ABE), B $B;" \
    "$ROUNDS rounds of ${PERIOD}s; line round trip ${R0:--} / ${R1:--} ns"
python3 - "$W/f.log" "$RATE" "$WARM" <<'PY'
import re, statistics as st, sys
log, key, warm = sys.argv[1], sys.argv[2], int(sys.argv[3])
shows, cur = [], None
for line in open(log):
    if "NIC statistics for port" in line:
        port = int(re.search(r"port (\d+)", line).group(1))
        if port == 0:
            cur = {}
            shows.append(cur)
    m = re.match(r"\s*%s:\s+(\d+)" % re.escape(key), line)
    if m and cur is not None:
        cur[port] = int(m.group(1))
# show k (k >= 1) ends period k-1: side A on even periods (port 0), B on odd (port 1)
per = []
for k in range(1, len(shows)):
    i = k - 1
    side = i % 2
    if side in shows[k]:
        per.append((i, "AB"[side], shows[k][side] / 1e6))
per = [p for p in per if p[0] >= warm]
if len(per) < 3:
    sys.exit("too few periods parsed (%d): see the front-end log" % len(per))
print("periods (Mpps): " + " ".join("%s%.2f" % (s, r) for _, s, r in per))
ratios = []
for j in range(1, len(per) - 1):
    i, s, r = per[j]
    if s == "A" and per[j - 1][1] == "B" and per[j + 1][1] == "B":
        b = (per[j - 1][2] + per[j + 1][2]) / 2
        if b > 0:
            ratios.append(r / b)
a = [r for _, s, r in per if s == "A"]
b = [r for _, s, r in per if s == "B"]
if not ratios:
    sys.exit("no A period between two B periods")
q = st.quantiles(ratios, n=10) if len(ratios) > 1 else [ratios[0]] * 9
print("A/B median %.3f (10-90 %%: %.3f-%.3f, %d periods); A median %.2f Mpps, B median %.2f Mpps"
      % (st.median(ratios), q[0], q[-1], len(ratios), st.median(a), st.median(b)))
PY
RC=$?
# loop: how many frames each port's loop carries. `start tx_first 32` sends
# 1024 per port; what the rings cannot hold is dropped, at the front-end's
# TX (vhostd takes frames at its pace) or in DPDK's back-end (it takes all
# and drops what the RX ring cannot take, ~768, in its own counters). Both
# loops then run with about a ring's worth (~256 frames) in flight, which
# bounds the rate once neither core is saturated.
if [ "$PATH_" = loop ]; then
    if [ "$B" = dpdk ]; then
        # DPDK's back-end prints its own counters when it exits
        kill -TERM "$BPID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.1; done
    fi
    python3 - "$W/f.log" "$W/b.log" "$B" <<'PY'
import re, sys

def fwd_stats(path):
    port, st = None, {}
    for line in open(path, errors="replace"):
        m = re.search(r"Forward statistics for port (\d+)", line)
        if m or "Accumulated" in line:
            port = int(m.group(1)) if m else None
            continue
        for k in ("RX-packets", "TX-packets", "TX-dropped"):
            m = re.search(r"%s:\s+(\d+)" % k, line)
            if m and port is not None:
                st.setdefault(port, {})[k] = int(m.group(1))
    return st

st = fwd_stats(sys.argv[1])
be = fwd_stats(sys.argv[2]).get(0, {}) if sys.argv[3] == "dpdk" else {}
for p in sorted(st):
    v = st[p]
    if all(k in v for k in ("RX-packets", "TX-packets", "TX-dropped")):
        extra = ""
        if p == 1 and "TX-dropped" in be:
            extra = "; DPDK's back-end dropped %d" % be["TX-dropped"]
        print("%s loop: front-end sent %d, got back %d (%d not back: in flight or dropped by the"
              " back-end), %d dropped at its TX%s" % ("AB"[p] if p < 2 else p, v["TX-packets"],
              v["RX-packets"], v["TX-packets"] - v["RX-packets"], v["TX-dropped"], extra))
PY
fi
# how each vhostd side wrote the RX headers (the tuner's choice, RX_HEADER):
# the share of RX frames whose header was compared, not written
for s in a b; do
    [ -s "$W/$s-stats.json" ] || continue
    python3 - "$W/$s-stats.json" "$s" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
rx = [q for p in v["ports"] for q in p["queues"] if q.get("name", "").startswith("rx")]
pk = sum(q.get("packets", 0) for q in rx)
hc = sum(q.get("header_compared", 0) for q in rx)
if pk:
    print("%s: %d RX frames, header compared for %.1f %%" % (sys.argv[2].upper(), pk, 100.0 * hc / pk))
PY
done
exit $RC
