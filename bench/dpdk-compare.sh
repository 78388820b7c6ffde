#!/usr/bin/env bash
# bench/dpdk-compare.sh — vhostd against DPDK's own vhost-user back-end (net_vhost), side by side.
#
# Front-end, always the same: dpdk-testpmd with net_virtio_user on FRONT_CPU (default 0).
# Back-end, on BACK_CPU (default 1), alternately:
#   dpdk    dpdk-testpmd --vdev net_vhost0,iface=SOCK,queues=1,client=0
#   vhostd  target/release/vhostd --socket-path SOCK --backend B --mode poll   (taskset -c BACK_CPU)
# Every rate is read at the front-end (testpmd "show port stats all", one sample a second), so
# both back-ends are measured the same way. All traffic stays on unix sockets (--no-pci).
#
# Paths (what each side does):
#   g2h   guest->host: front-end txonly;  dpdk rxonly,  vhostd --backend sink.      Rate: front Tx-pps
#   h2g   host->guest: front-end rxonly;  dpdk txonly,  vhostd --backend source:LEN Rate: front Rx-pps
#   loop  front-end mac forwarding seeded by 'start tx_first 32'; dpdk mac forwarding,
#         vhostd --backend loopback. Rate: front Rx-pps
#
# Matrix (environment, space-separated lists):
#   PATHS="g2h h2g loop"  RINGS="split packed"  MRG="1"  INORDER="0"  SIZES="64 1518"
#   PAIRS=5     back-end pairs per cell, run A B A B ... (ORDER=abba: A B B A A B ...)
#   SECS=3      one-second samples per run, after WARMUP=2 seconds of traffic
#   QUICK=1     smoke test: PATHS="loop g2h h2g" RINGS=split SIZES=64 PAIRS=1 SECS=1 WARMUP=1
#               IDLE_WAIT=0 (each still overridable)
# Other knobs:
#   FRONT_CPU=0 BACK_CPU=1    EAL_MEM="--no-huge -m 1024"    VHOSTD=target/release/vhostd
#   VHOSTD_ARGS="--mode poll" (dropped, with a note, if the binary has no --mode)
#   BUILD=1     cargo build --release -p vhostd-daemon first (done anyway if the binary is missing)
#   IDLE_WAIT=60 IDLE_MAX=25  before each pair wait (at most IDLE_WAIT s) until the machine uses at
#                             most IDLE_MAX % of one CPU; FOREIGN_MAX=10: a run during which other
#                             processes took more than this % of one CPU is flagged '*'
#   OUT=bench/results         JSON goes to $OUT/dpdk-compare-<date>.json
#   RTT_FAR=150               machine phase: before and after every run, a cache line is bounced
#                             between FRONT_CPU and BACK_CPU (`vhostd-bench line-rtt`, ns per round
#                             trip). This machine's vCPUs sit on near cores (~50 ns) or far ones
#                             (~400 ns) for minutes at a time, and h2g 64 B runs at ~29 Mpps near and
#                             ~10 far with the same binary. A run above RTT_FAR ns is marked '~'; the
#                             table also gives the median ratio over pairs whose two runs were in the
#                             same phase ("same-phase"), the only pairs that compare back-ends.
#   RTT_SIB=45                a third phase below this: the two vCPUs on one core's hyperthreads
#                             (~30 ns; they share L1/L2: DPDK's loop packed 64 B runs at ~15 Mpps
#                             there, ~8 near at ~65 ns). Same-phase pairs compare s/n/f.
#   KEEP=1                    keep the work directory (logs) even if every cell passed
#   CEILING=1                 a third run per pair: vhostd --backend ceiling:KIND, which does not copy
#                             the frame bytes (headers and rings only; a diagnostic that breaks the
#                             fairness rule on purpose). Its rate is the front-end's with the ring
#                             work alone (a bound on vhostd only where it runs above vhostd; on the
#                             loop path it does not): the note gives it and, over same-phase pairs,
#                             ceiling/DPDK and vhostd/ceiling. JSON: cell.ceiling.
#
# Output: one table row per cell as soon as it is done:
#   path ring mrg ino size | DPDK Mpps, vhostd Mpps (median of the side's runs; a run = mean of its
#   1-s samples) | Gbit/s each (Mpps * size * 8 / 1000: frame bytes, no virtio-net header, no
#   CRC/preamble/IFG) | vhostd/DPDK | note.  A side whose runs all failed prints its reason instead
#   of a rate (0pps, stall, no-socket, front-down, front-exit, unsupported); some failed runs of a
#   side: '!' and the count in the note. The note's "bands": the cell's 1-s samples split where
#   the machine's phase flipped (a gap of >= 1.5x between sorted rates, both sides on each side of
#   it), vhostd/DPDK per band: read these when phases flip within runs, as they do since
#   2026-11-29 (the probes around a run then miss the flip). The JSON has every run: 1-s samples,
#   status, negotiated features, the virtio driver's Rx/Tx paths, foreign CPU and steal during the
#   run; cell.bands.
#
# Exit status 0; 3 when some cell failed (the run goes on past a failing cell); 1 on bad settings.
# The machine's two vCPUs drift (identical runs 2-3x apart across minutes): only the ratio within
# one run of this script means anything. Needs root (EAL, /var/run/dpdk) and dpdk-testpmd (dpdk-dev).
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD

if [ "${QUICK:-0}" = 1 ]; then
    : "${PATHS:=loop g2h h2g}" "${RINGS:=split}" "${SIZES:=64}" "${PAIRS:=1}" "${SECS:=1}"
    : "${WARMUP:=1}" "${IDLE_WAIT:=0}"
fi
PATHS=${PATHS:-g2h h2g loop}
RINGS=${RINGS:-split packed}
MRG=${MRG:-1}
INORDER=${INORDER:-0}
SIZES=${SIZES:-64 1518}
PAIRS=${PAIRS:-5}
SECS=${SECS:-3}
WARMUP=${WARMUP:-2}
ORDER=${ORDER:-abab}
FRONT_CPU=${FRONT_CPU:-0}
BACK_CPU=${BACK_CPU:-1}
EAL_MEM=${EAL_MEM:---no-huge -m 1024}
VHOSTD=${VHOSTD:-$ROOT/target/release/vhostd}
VHOSTD_ARGS=${VHOSTD_ARGS:---mode poll}
CEILING=${CEILING:-0}
IDLE_WAIT=${IDLE_WAIT:-60}
IDLE_MAX=${IDLE_MAX:-25}
FOREIGN_MAX=${FOREIGN_MAX:-10}
RTT_FAR=${RTT_FAR:-150}
BENCH=${BENCH:-$ROOT/target/release/vhostd-bench}
OUT=${OUT:-$ROOT/bench/results}
STAMP=$(date +%Y%m%d-%H%M%S)
JSON=$OUT/dpdk-compare-$STAMP.json
PFX=dc$$                     # EAL --file-prefix stem: ours alone (per run: $PFX-SEQ-u / -v)
NCPU=$(nproc)

log() { echo "$*" >&2; }
die() { log "dpdk-compare: $*"; exit 1; }

# ------------------------------------------------------------------ checks
for p in $PATHS; do case $p in g2h|h2g|loop) ;; *) die "PATHS: unknown path '$p' (g2h h2g loop)" ;; esac; done
for r in $RINGS; do case $r in split|packed) ;; *) die "RINGS: unknown ring '$r' (split packed)" ;; esac; done
for v in $MRG $INORDER; do case $v in 0|1) ;; *) die "MRG/INORDER take 0 and/or 1, not '$v'" ;; esac; done
for s in $SIZES; do
    [[ $s =~ ^[0-9]+$ ]] && [ "$s" -ge 60 ] && [ "$s" -le 9000 ] || die "SIZES: '$s' is not a frame length 60..9000"
done
for v in PAIRS SECS WARMUP IDLE_WAIT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number"
done
[ "$PAIRS" -ge 1 ] && [ "$SECS" -ge 1 ] || die "PAIRS and SECS must be at least 1"
case $ORDER in abab|abba) ;; *) die "ORDER is abab or abba" ;; esac
[ "$(id -u)" = 0 ] || die "must run as root (DPDK EAL)"
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found (apt-get install dpdk-dev)"
command -v python3 >/dev/null || die "python3 not found"
for c in setsid timeout taskset pgrep; do command -v $c >/dev/null || die "$c not found"; done
[ "$NCPU" -gt "$FRONT_CPU" ] && [ "$NCPU" -gt "$BACK_CPU" ] || die "CPU $FRONT_CPU or $BACK_CPU does not exist"

if [ ! -x "$VHOSTD" ] || [ ! -x "$BENCH" ] || [ "${BUILD:-0}" = 1 ]; then
    log "building vhostd: cargo build --release -p vhostd-daemon -p vhostd-bench"
    timeout 1800 cargo build --release -p vhostd-daemon -p vhostd-bench >&2 || die "cargo build failed"
fi
[ -x "$VHOSTD" ] || die "$VHOSTD not found"

W=$(mktemp -d /tmp/dpdk-compare.XXXXXX) || die "mktemp failed"
mkdir -p "$OUT" || die "cannot create $OUT"
RUNS=$W/runs.tsv
: >"$RUNS"

# ------------------------------------------------------------------ processes
BPID="" FPID="" CUR_PFX="" CUR_SOCK=""
trap '' PIPE                 # a front-end that died must not kill us on the next command

stop_grp() {   # stop_grp PID: TERM, up to 5 s, then KILL its process group (setsid made it ours)
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

run_cleanup() {   # everything the current run started
    exec 3>&-
    stop_grp "$FPID"; FPID=""
    stop_grp "$BPID"; BPID=""
    [ -n "$CUR_SOCK" ] && rm -f "$CUR_SOCK" "$CUR_SOCK.fifo"
    [ -n "$CUR_PFX" ] && rm -rf "/var/run/dpdk/$CUR_PFX-u" "/var/run/dpdk/$CUR_PFX-v"
    CUR_SOCK="" CUR_PFX=""
}

ANY_FAIL=0 DONE=0
on_exit() {
    run_cleanup
    rm -rf "/var/run/dpdk/$PFX"-* 2>/dev/null
    if [ "$DONE" != 1 ] && [ -s "$RUNS" ]; then
        write_json partial && log "partial results: $JSON"
    fi
    if [ "$ANY_FAIL" = 1 ] || [ "${KEEP:-0}" = 1 ] || [ "$DONE" != 1 ]; then
        log "logs kept in $W"
    else
        rm -rf "$W"
    fi
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ------------------------------------------------------------------ CPU accounting
cpu_stat() { awk '/^cpu /{print $2+$3+$4+$7+$8, $9, $2+$3+$4+$5+$6+$7+$8+$9; exit}' /proc/stat; }
grp_jiffies() {   # utime+stime of every process in the given process groups
    local g p v sum=0
    for g in "$@"; do
        [ -n "$g" ] || continue
        for p in $(pgrep -g "$g" 2>/dev/null); do
            v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12+$13}')
            sum=$((sum + ${v:-0}))
        done
    done
    echo "$sum"
}
wait_idle() {   # before a pair: wait until the machine is quiet (IDLE_WAIT=0: do not)
    [ "$IDLE_WAIT" -gt 0 ] || return 0
    local start=$SECONDS b0 s0 t0 b1 s1 t1 pct
    while :; do
        read -r b0 s0 t0 < <(cpu_stat); sleep 1; read -r b1 s1 t1 < <(cpu_stat)
        pct=$(( (b1 - b0) * 100 * NCPU / (t1 - t0 > 0 ? t1 - t0 : 1) ))
        [ "$pct" -le "$IDLE_MAX" ] && return 0
        if [ $((SECONDS - start)) -ge "$IDLE_WAIT" ]; then
            log "  machine still busy (${pct}% of one CPU) after ${IDLE_WAIT}s; measuring anyway"
            return 0
        fi
        sleep 2
    done
}

# ------------------------------------------------------------------ vhostd capabilities
VHOSTD_HELP=$("$VHOSTD" --help 2>&1)
if [ -n "$VHOSTD_ARGS" ] && [[ $VHOSTD_ARGS == *--mode* ]] && ! grep -q -- '--mode' <<<"$VHOSTD_HELP"; then
    log "note: $VHOSTD has no --mode; running it with its default worker mode"
    VHOSTD_ARGS=${VHOSTD_ARGS//--mode poll/}
fi
probe_backend() {   # probe_backend SPEC: does this vhostd start with --backend SPEC?
    local sock=$W/probe.sock pid ok=1 i
    rm -f "$sock"
    setsid timeout -k 2 10 "$VHOSTD" --socket-path "$sock" --backend "$1" $VHOSTD_ARGS \
        </dev/null >"$W/probe-${1%%:*}.log" 2>&1 &
    pid=$!
    for i in $(seq 30); do
        [ -S "$sock" ] && { ok=0; break; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    stop_grp "$pid"; rm -f "$sock"
    return $ok
}
declare -A VHOSTD_HAS
for spec in loopback sink source:64; do
    name=${spec%%:*}
    if [ "$name" = source ] && ! grep -qw source <<<"$VHOSTD_HELP"; then
        VHOSTD_HAS[$name]=0   # the brief of this harness: --help must name it
    elif probe_backend "$spec"; then
        VHOSTD_HAS[$name]=1
    else
        VHOSTD_HAS[$name]=0
    fi
done
[[ " $PATHS " == *" h2g "* ]] && [ "${VHOSTD_HAS[source]}" = 0 ] &&
    log "note: '$VHOSTD --help' does not mention --backend source:LEN: h2g runs DPDK only"
[[ " $PATHS " == *" g2h "* ]] && [ "${VHOSTD_HAS[sink]}" = 0 ] &&
    log "note: $VHOSTD does not accept --backend sink: g2h runs DPDK only"

# ------------------------------------------------------------------ one run
SEQ=0
record() {   # record CELL PATH RING MRG INO SIZE SIDE PAIR STATUS MPPS FOREIGN STEAL FEAT RXP TXP SAMPLES LOG
    local IFS=$'\t'
    echo "$*"$'\t'"${CUR_RTT:--}" >>"$RUNS"   # + the run's line round trip (machine phase)
}

# line_rtt: ns per cache-line round trip between FRONT_CPU and BACK_CPU ('-' if unavailable)
line_rtt() {
    [ -x "$BENCH" ] || { echo -; return; }
    timeout 20 taskset -c "$FRONT_CPU,$BACK_CPU" "$BENCH" line-rtt --iters 100000 2>/dev/null || echo -
}

# the larger of two round trips (a phase change during the run counts as far)
max_rtt() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "-") print b; else if (b == "-" || a+0 >= b+0) print a; else print b }'; }

fe() { printf "$@" >&3 2>/dev/null; }   # a command to the front-end's stdin

# run_side CELL SIDE PATH RING MRG INO SIZE PAIR: one back-end run; appends a line to runs.tsv
run_side() {
    local cell=$1 side=$2 path=$3 ring=$4 mrg=$5 ino=$6 size=$7 pair=$8
    local T=$((WARMUP + SECS + 60)) tag ul bl fwd be i key status=ok
    SEQ=$((SEQ + 1))
    tag=$(printf 'c%02d-%s-p%d' "$cell" "$side" "$pair")
    ul=$W/$tag.front.log bl=$W/$tag.back.log
    CUR_PFX=$PFX-$SEQ CUR_SOCK=$W/vhost-$SEQ.sock
    rm -f "$CUR_SOCK" "$CUR_SOCK.fifo"
    CUR_RTT=$(line_rtt)

    if [ "$side" != dpdk ]; then
        case $path in loop) be=loopback ;; g2h) be=sink ;; h2g) be=source:$size ;; esac
        if [ "${VHOSTD_HAS[${be%%:*}]}" != 1 ]; then
            record "$cell" "$path" "$ring" "$mrg" "$ino" "$size" "$side" "$pair" unsupported 0 - - - - - "" ""
            CUR_SOCK="" CUR_PFX=""
            return
        fi
        [ "$side" = ceiling ] && be=ceiling:$be
        echo "vhostd --backend $be $VHOSTD_ARGS on CPU $BACK_CPU" >"$bl"
        setsid timeout -k 5 "$T" taskset -c "$BACK_CPU" "$VHOSTD" --socket-path "$CUR_SOCK" \
            --backend "$be" --name bench $VHOSTD_ARGS </dev/null >>"$bl" 2>&1 &
    else
        case $path in loop) fwd=mac ;; g2h) fwd=rxonly ;; h2g) fwd=txonly ;; esac
        echo "dpdk net_vhost --forward-mode=$fwd --txpkts=$size on CPU $BACK_CPU" >"$bl"
        # Non-interactive testpmd starts forwarding by itself; --stats-period keeps it running
        # without stdin (otherwise it waits for "enter" and quits at once on EOF).
        setsid timeout -k 5 "$T" taskset -c "$BACK_CPU" dpdk-testpmd \
            --lcores "0@$BACK_CPU,1@$BACK_CPU" --no-pci --file-prefix="$CUR_PFX-v" $EAL_MEM \
            --vdev "net_vhost0,iface=$CUR_SOCK,queues=1,client=0" \
            -- --nb-cores=1 --port-topology=loop --forward-mode="$fwd" --txpkts="$size" \
            --stats-period=3600 </dev/null >>"$bl" 2>&1 &
    fi
    BPID=$!
    for i in $(seq 150); do
        [ -S "$CUR_SOCK" ] && break
        kill -0 "$BPID" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -S "$CUR_SOCK" ]; then
        log "  $tag: back-end did not create its socket (see $bl)"
        run_cleanup
        record "$cell" "$path" "$ring" "$mrg" "$ino" "$size" "$side" "$pair" no-socket 0 - - - - - "" "$bl"
        return
    fi

    # The front-end connects once, at start: the socket exists by now. Its stdin is a FIFO we
    # hold open on fd 3 (interactive testpmd quits at EOF), commands are written with pauses.
    mkfifo "$CUR_SOCK.fifo"
    setsid timeout -k 5 "$T" taskset -c "$FRONT_CPU" dpdk-testpmd \
        --lcores "0@$FRONT_CPU,1@$FRONT_CPU" --no-pci --file-prefix="$CUR_PFX-u" $EAL_MEM \
        --vdev "net_virtio_user0,path=$CUR_SOCK,queues=1,packed_vq=$([ "$ring" = packed ] && echo 1 || echo 0),in_order=$ino,mrg_rxbuf=$mrg" \
        --log-level='pmd.net.virtio.*,info' \
        -- -i --nb-cores=1 --port-topology=loop <"$CUR_SOCK.fifo" >"$ul" 2>&1 &
    FPID=$!
    exec 3>"$CUR_SOCK.fifo"
    for i in $(seq 200); do
        grep -q 'testpmd> ' "$ul" 2>/dev/null && break
        kill -0 "$FPID" 2>/dev/null || break
        sleep 0.1
    done
    if ! grep -q 'testpmd> ' "$ul"; then
        log "  $tag: front-end did not come up (see $ul)"
        run_cleanup
        record "$cell" "$path" "$ring" "$mrg" "$ino" "$size" "$side" "$pair" front-down 0 - - - - - "" "$ul"
        return
    fi

    case $path in
    loop) fe 'set fwd mac\nset txpkts %s\nstart tx_first 32\n' "$size" ;;
    g2h)  fe 'set fwd txonly\nset txpkts %s\nstart\n' "$size" ;;
    h2g)  fe 'set fwd rxonly\nstart\n' ;;
    esac
    sleep "$WARMUP"
    local b0 s0 t0 o0 b1 s1 t1 o1
    read -r b0 s0 t0 < <(cpu_stat); o0=$(grp_jiffies "$BPID" "$FPID")
    fe 'show port stats all\n'                  # baseline of "Throughput (since last show)"
    for i in $(seq "$SECS"); do sleep 1; fe 'show port stats all\n'; done
    read -r b1 s1 t1 < <(cpu_stat); o1=$(grp_jiffies "$BPID" "$FPID")
    fe 'stop\nquit\n'
    exec 3>&-
    for i in $(seq 100); do kill -0 "$FPID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$FPID" 2>/dev/null && log "  $tag: front-end did not quit within 10 s; stopping it"
    run_cleanup

    CUR_RTT=$(max_rtt "$CUR_RTT" "$(line_rtt)")
    local dt=$(( t1 - t0 > 0 ? t1 - t0 : 1 )) foreign steal samples n nz mpps feat rxp txp
    foreign=$(( ((b1 - b0) - (o1 - o0)) * 100 * NCPU / dt )); [ "$foreign" -lt 0 ] && foreign=0
    steal=$(( (s1 - s0) * 100 * NCPU / dt ))
    key=Rx-pps; [ "$path" = g2h ] && key=Tx-pps
    samples=$(awk -v k="$key:" '$1==k{print $2}' "$ul" | tail -n +2 | paste -sd, -)
    n=$(tr , '\n' <<<"$samples" | grep -c .)
    nz=$(tr , '\n' <<<"$samples" | grep -c '^[1-9]')
    mpps=$(tr , '\n' <<<"$samples" | awk '{s+=$1; n++} END{printf "%.4f", n ? s/n/1e6 : 0}')
    if [ "$n" -lt "$SECS" ]; then status=front-exit     # died (or hung) during the measurement
    elif [ "$nz" = 0 ]; then status=0pps               # nothing moved
    elif [ "$nz" -lt "$n" ]; then status=stall         # traffic stopped during the measurement
    fi
    feat=$(grep -o 'set features: 0x[0-9a-f]*' "$ul" | tail -1 | awk '{print $3}')
    rxp=$(sed -n 's/.*using \(.*\) Rx path.*/\1/p' "$ul" | tail -1 | tr ' ' _)
    txp=$(sed -n 's/.*using \(.*\) Tx path.*/\1/p' "$ul" | tail -1 | tr ' ' _)
    [ "$status" = ok ] || log "  $tag: $status (1-s samples: ${samples:-none}; see $ul, $bl)"
    record "$cell" "$path" "$ring" "$mrg" "$ino" "$size" "$side" "$pair" "$status" "$mpps" \
        "$foreign" "$steal" "${feat:--}" "${rxp:--}" "${txp:--}" "$samples" "$ul"
}

# ------------------------------------------------------------------ report (python3)
cat >"$W/report.py" <<'EOF'
import json, statistics, sys
mode = sys.argv[1]
runs_tsv = sys.argv[2] if len(sys.argv) > 2 else "/dev/null"
FIELDS = "cell path ring mrg ino size side pair status mpps foreign steal features rx_path tx_path samples log rtt".split()
import os
RTT_FAR = float(os.environ.get("RTT_FAR", "150"))
RTT_SIB = float(os.environ.get("RTT_SIB", "45"))
runs = []
for line in open(runs_tsv):
    v = line.rstrip("\n").split("\t")
    if len(v) != len(FIELDS):
        continue
    r = dict(zip(FIELDS, v))
    for k in ("cell", "mrg", "ino", "size", "pair"):
        r[k] = int(r[k])
    r["mpps"] = float(r["mpps"])
    for k in ("foreign", "steal"):
        r[k] = None if r[k] == "-" else int(r[k])
    r["samples"] = [int(x) for x in r["samples"].split(",") if x]
    try:
        r["rtt"] = float(r["rtt"])
    except ValueError:
        r["rtt"] = None
    r["far"] = r["rtt"] is not None and r["rtt"] > RTT_FAR
    # three phases: s(ibling, the two vCPUs on one core's hyperthreads), n(ear), f(ar)
    r["phase"] = None if r["rtt"] is None else ("f" if r["far"] else ("s" if r["rtt"] < RTT_SIB else "n"))
    runs.append(r)

def side(rs, foreign_max):
    ok = [r["mpps"] for r in rs if r["status"] == "ok"]
    bad = [r["status"] for r in rs if r["status"] != "ok"]
    med = statistics.median(ok) if ok else None
    return {
        "median_mpps": round(med, 4) if med is not None else None,
        "runs_ok": len(ok), "runs_failed": len(bad),
        "status": "ok" if ok and not bad else ("partial" if ok else (max(set(bad), key=bad.count) if bad else "missing")),
        "disturbed": any(r["foreign"] is not None and r["foreign"] > foreign_max for r in rs if r["status"] == "ok"),
    }

def bands(rs):
    """The cell's 1-s samples of both sides, split at the widest gap (>= 1.5x) between sorted rates
    when each part holds samples of both sides: this machine's phases also flip within a run, and
    the probes around a run then do not classify it. Per band: each side's median and the ratio."""
    smp = [(x, r["side"]) for r in rs if r["status"] == "ok" and r["side"] in ("dpdk", "vhostd")
           for x in r["samples"] if x > 0]
    smp.sort()
    parts = [("all", smp)]
    if len(smp) >= 4:
        gap, at = max((smp[i + 1][0] / smp[i][0], i + 1) for i in range(len(smp) - 1))
        lo, hi = smp[:at], smp[at:]
        if gap >= 1.5 and all({s for _, s in p} == {"dpdk", "vhostd"} for p in (lo, hi)):
            parts = [("slow", lo), ("fast", hi)]
    out = []
    for name, p in parts:
        b = {"band": name}
        for sd in ("dpdk", "vhostd"):
            v = [x for x, s in p if s == sd]
            b[sd] = round(statistics.median(v) / 1e6, 3) if v else None
            b[sd + "_samples"] = len(v)
        b["ratio"] = round(b["vhostd"] / b["dpdk"], 3) if b["dpdk"] and b["vhostd"] else None
        out.append(b)
    return out

def cells(foreign_max):
    out = {}
    for r in runs:
        out.setdefault(r["cell"], []).append(r)
    res = []
    for c, rs in sorted(out.items()):
        r0 = rs[0]
        cell = {k: r0[k] for k in ("cell", "path", "ring", "mrg", "ino", "size")}
        for s in ("dpdk", "vhostd"):
            srs = [r for r in rs if r["side"] == s]
            cell[s] = side(srs, foreign_max)
            m = cell[s]["median_mpps"]
            cell[s]["gbps"] = round(m * r0["size"] * 8 / 1000, 3) if m is not None else None
            cell[s]["runs"] = [{k: r[k] for k in ("pair", "status", "mpps", "samples", "foreign", "steal",
                                                  "features", "rx_path", "tx_path")} for r in srs]
            for run, r in zip(cell[s]["runs"], srs):
                run["line_rtt_ns"] = r["rtt"]
                run["far"] = r["far"]
                run["phase"] = r["phase"]
            cell[s]["far_runs"] = sum(1 for r in srs if r["far"])
            for run in cell[s]["runs"]:
                f = run["features"]
                if f.startswith("0x"):
                    b = int(f, 16)
                    run["negotiated"] = {"mrg_rxbuf": bool(b >> 15 & 1), "event_idx": bool(b >> 29 & 1),
                                         "packed": bool(b >> 34 & 1), "in_order": bool(b >> 35 & 1)}
        d, v = cell["dpdk"]["median_mpps"], cell["vhostd"]["median_mpps"]
        cell["ratio"] = round(v / d, 3) if d and v else None
        # the same ratio pair by pair (the two runs of a pair are seconds apart)
        by_pair, phase = {}, {}
        for r in rs:
            if r["status"] == "ok":
                by_pair.setdefault(r["pair"], {})[r["side"]] = r["mpps"]
                phase.setdefault(r["pair"], {})[r["side"]] = r["phase"]
        pr = [round(x["vhostd"] / x["dpdk"], 3) for _, x in sorted(by_pair.items())
              if "vhostd" in x and x.get("dpdk")]
        cell["pair_ratios"] = pr
        cell["median_pair_ratio"] = round(statistics.median(pr), 3) if pr else None
        # pairs whose two runs saw the same machine phase (both near or both far)
        same = [round(x["vhostd"] / x["dpdk"], 3) for p, x in sorted(by_pair.items())
                if "vhostd" in x and x.get("dpdk") and phase[p]["vhostd"] == phase[p]["dpdk"]]
        cell["same_phase_pair_ratios"] = same
        cell["median_same_phase_ratio"] = round(statistics.median(same), 3) if same else None
        cell["bands"] = bands(rs)
        # CEILING=1: the ceiling runs against each side, pair by pair, same phase only
        crs = [r for r in rs if r["side"] == "ceiling"]
        if crs:
            cell["ceiling"] = side(crs, foreign_max)
            cell["ceiling"]["runs"] = [{"pair": r["pair"], "status": r["status"], "mpps": r["mpps"],
                                        "samples": r["samples"], "line_rtt_ns": r["rtt"], "far": r["far"]} for r in crs]
            for other in ("dpdk", "vhostd"):
                rat = [round(x["ceiling"] / x[other], 3) for p, x in sorted(by_pair.items())
                       if x.get("ceiling") and x.get(other) and phase[p]["ceiling"] == phase[p][other]]
                cell["ceiling"]["same_phase_over_" + other] = rat
        # partial (some runs failed) is flagged, not failed; unsupported = vhostd lacks that back-end
        cell["status"] = "failed" if any(cell[s]["status"] not in ("ok", "partial", "unsupported")
                                         for s in ("dpdk", "vhostd", "ceiling") if s in cell) else "ok"
        res.append(cell)
    return res

HDR = "%-5s %-6s %3s %3s %5s | %9s %9s | %8s %8s | %6s | %s" % (
    "path", "ring", "mrg", "ino", "size", "DPDK", "vhostd", "DPDK", "vhostd", "vh/DP", "note")
HDR2 = "%-5s %-6s %3s %3s %5s | %9s %9s | %8s %8s | %6s |" % ("", "", "", "", "bytes", "Mpps", "Mpps", "Gbit/s", "Gbit/s", "")

def row(c):
    note, busy = [], []
    def fmt(s, key, w):
        x = c[s]
        if x["median_mpps"] is None:
            return "%*s" % (w, "n/a" if x["status"] == "unsupported" else "FAIL")
        flag = ("!" if x["status"] == "partial" else "") + ("*" if x["disturbed"] else "")
        return "%*s" % (w, (("%.3f" if key == "median_mpps" else "%.2f") % x[key]) + flag)
    cols = (fmt("dpdk", "median_mpps", 9), fmt("vhostd", "median_mpps", 9),
            fmt("dpdk", "gbps", 8), fmt("vhostd", "gbps", 8))
    for s in ("dpdk", "vhostd"):
        x = c[s]
        bad = sorted({r["status"] for r in x["runs"] if r["status"] != "ok"})
        if x["median_mpps"] is None:
            note.append("%s %s" % (s, x["status"]))
        elif bad:
            note.append("%s %d/%d runs %s" % (s, x["runs_failed"], x["runs_ok"] + x["runs_failed"], ",".join(bad)))
        if x["disturbed"]:
            busy.append(s)
    if busy:
        note.append("busy: " + ",".join(busy))
    far = ["%s %d/%d" % (s, c[s]["far_runs"], len(c[s]["runs"])) for s in ("dpdk", "vhostd") if c[s]["far_runs"]]
    if far:
        note.append("~far: " + ", ".join(far))
    sp = c["median_same_phase_ratio"]
    if sp is not None:
        note.append("same-phase %.2f (%d/%d pairs)" % (sp, len(c["same_phase_pair_ratios"]), len(c["pair_ratios"])))
    bs = [b for b in c["bands"] if b["band"] != "all" and b["ratio"] is not None]
    if bs:
        note.append("bands " + ", ".join("%s %.2f (%.1f vs %.1f, %d/%d s)" % (
            b["band"], b["ratio"], b["vhostd"], b["dpdk"], b["vhostd_samples"], b["dpdk_samples"]) for b in bs))
    ce = c.get("ceiling")
    if ce and ce["median_mpps"] is None:
        note.append("ceiling %s" % ce["status"])
    elif ce:
        med = lambda v: "%.2f" % statistics.median(v) if v else "-"
        note.append("ceiling %.1f: /DPDK %s, vhostd/ %s" % (
            ce["median_mpps"], med(ce["same_phase_over_dpdk"]), med([round(1 / x, 3) for x in ce["same_phase_over_vhostd"]])))
    ratio = "%.2f" % c["ratio"] if c["ratio"] is not None else "-"
    status = "FAILED: " if c["status"] != "ok" else ""
    return "%-5s %-6s %3d %3d %5d | %s %s | %s %s | %6s | %s" % (
        c["path"], c["ring"], c["mrg"], c["ino"], c["size"], *cols, ratio, status + "; ".join(note))

if mode == "header":
    print(HDR); print(HDR2); print("-" * len(HDR))
elif mode == "legend":
    print("Mpps: median over runs of each run's mean front-end rate; !: some runs failed (see note);")
    print("*: other processes took > %s%% of one CPU during a run (busy: sides). vh/DP = vhostd/DPDK." % sys.argv[3])
    print("~far: runs in the far phase (line round trip > %.0f ns); same-phase: median vhostd/DPDK over" % RTT_FAR)
    print("pairs whose two runs were in the same phase (the ratio to read when the phases differ;")
    print("phases: far, near, and sibling below %.0f ns). bands: the cell's 1-s samples split at a gap of" % RTT_SIB)
    print(">= 1.5x when both sides have samples on each side of it (phases that flip within a run):")
    print("vhostd/DPDK per band, each side's median Mpps and its seconds in that band.")
    if any(r["side"] == "ceiling" for r in runs):
        print("ceiling: median Mpps of the ceiling:KIND runs (no frame copies, not a vhostd figure); /DPDK and")
        print("vhostd/: same-phase medians of ceiling/DPDK and vhostd/ceiling.")
elif mode == "row":
    fm = int(sys.argv[4])
    for c in cells(fm):
        if c["cell"] == int(sys.argv[3]):
            print(row(c))
            sys.exit(0 if c["status"] == "ok" else 3)
elif mode == "json":
    out, meta = sys.argv[3], json.loads(sys.argv[4])
    doc = dict(meta, cells=cells(meta["settings"]["foreign_max_pct"]))
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
EOF

write_json() {   # write_json complete|partial
    local meta
    meta=$(python3 - "$1" <<EOF
import json, sys
print(json.dumps({
  "tool": "bench/dpdk-compare.sh", "complete": sys.argv[1] == "complete",
  "date": "$(date -Iseconds)", "host": {"nproc": $NCPU, "kernel": "$(uname -r)",
  "dpdk": "$(dpkg-query -W -f='${Version}' dpdk-dev 2>/dev/null)",
  "vhostd": "$("$VHOSTD" --version 2>/dev/null)", "vhostd_binary": "$VHOSTD",
  "vhostd_mtime": "$(date -r "$VHOSTD" -Iseconds)",
  "git": "$(git -C "$ROOT" describe --always --dirty 2>/dev/null)"},
  "settings": {"paths": "$PATHS".split(), "rings": "$RINGS".split(), "mrg": [int(x) for x in "$MRG".split()],
    "in_order": [int(x) for x in "$INORDER".split()], "sizes": [int(x) for x in "$SIZES".split()], "pairs": $PAIRS, "secs": $SECS,
    "warmup": $WARMUP, "order": "$ORDER", "front_cpu": $FRONT_CPU, "back_cpu": $BACK_CPU,
    "eal_mem": "$EAL_MEM", "vhostd_args": "$VHOSTD_ARGS", "ceiling_runs": $([ "$CEILING" = 1 ] && echo True || echo False), "foreign_max_pct": $FOREIGN_MAX, "rtt_far_ns": $RTT_FAR,
    "rate": "mean of the run's 1-s front-end samples (g2h Tx-pps, else Rx-pps); median over runs"},
}))
EOF
)
    python3 "$W/report.py" json "$RUNS" "$JSON" "$meta"
}

# ------------------------------------------------------------------ main
NCELLS=0
for path in $PATHS; do for ring in $RINGS; do for mrg in $MRG; do for ino in $INORDER; do
    for size in $SIZES; do NCELLS=$((NCELLS + 1)); done
done; done; done; done
log "dpdk-compare: dpdk $(dpkg-query -W -f='${Version}' dpdk-dev 2>/dev/null), $("$VHOSTD" --version 2>/dev/null);" \
    "$NCELLS cells x $PAIRS pairs, ${WARMUP}s warm-up + ${SECS}x1s samples per run;" \
    "front-end CPU $FRONT_CPU, back-end CPU $BACK_CPU, EAL $EAL_MEM; vhostd $VHOSTD_ARGS; logs in $W"
[ "$CEILING" = 1 ] && log "CEILING=1: a third run per pair, --backend ceiling:KIND (frame bytes not copied):" \
    "the front-end's rate with the ring work alone (not vhostd's; a bound only where it runs above vhostd)"
python3 "$W/report.py" header

CELL=0
for path in $PATHS; do for ring in $RINGS; do for mrg in $MRG; do for ino in $INORDER; do
for size in $SIZES; do
    CELL=$((CELL + 1))
    for pair in $(seq "$PAIRS"); do
        wait_idle
        order="dpdk vhostd"
        [ "$CEILING" = 1 ] && order="dpdk vhostd ceiling"
        [ "$ORDER" = abba ] && [ $((pair % 2)) = 0 ] && order=$(tr ' ' '\n' <<<"$order" | tac | paste -sd' ')
        for side in $order; do
            run_side "$CELL" "$side" "$path" "$ring" "$mrg" "$ino" "$size" "$pair"
        done
    done
    python3 "$W/report.py" row "$RUNS" "$CELL" "$FOREIGN_MAX" || ANY_FAIL=1
done
done; done; done; done

python3 "$W/report.py" legend "$RUNS" "$FOREIGN_MAX"
write_json complete || die "writing $JSON failed"
DONE=1
echo "JSON: $JSON"
[ "$ANY_FAIL" = 0 ] || { log "some cells FAILED (logs in $W)"; exit 3; }
