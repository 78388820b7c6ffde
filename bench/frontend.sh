# bench/frontend.sh — sourced by bench/profile.sh and bench/dpdk-profile.sh:
# the front-end both profile against (dpdk-testpmd with net_virtio_user on
# CPU 0, driven through a FIFO), and what each path asks of it.

# frontend_path PATH SIZE: sets CMDS (testpmd commands) and RATE (the stat
# the path's rate is read from); returns 1 for an unknown path.
frontend_path() {
    case $1 in
        g2h) CMDS="set fwd txonly\nset txpkts $2\nstart\n"; RATE=Tx-pps ;;
        h2g) CMDS="set fwd rxonly\nstart\n"; RATE=Rx-pps ;;
        loop) CMDS="set fwd mac\nset txpkts $2\nstart tx_first 32\n"; RATE=Rx-pps ;;
        *) return 1 ;;
    esac
}

# frontend_start SOCKET FILE_PREFIX: starts testpmd on SOCKET (VA: extra
# vdev arguments), waits for its prompt, sends CMDS and lets traffic run 2 s.
# Sets TPID; the FIFO is fd 3 and the log $W/tp.log.
frontend_start() {
    mkfifo "$W/in"
    timeout 120 stdbuf -oL dpdk-testpmd --lcores 0@0,1@0 --no-huge -m 1024 --no-pci --file-prefix="$2" \
        --vdev "net_virtio_user0,path=$1,queues=1$VA" -- -i --nb-cores=1 < "$W/in" > "$W/tp.log" 2>&1 &
    TPID=$!
    exec 3> "$W/in"
    for _ in $(seq 300); do grep -q 'testpmd> ' "$W/tp.log" && break; sleep 0.2; done
    printf "$CMDS" >&3
    sleep 2
    printf 'show port stats all\n' >&3
}

# frontend_rate: the front-end's current RATE, e.g. "12.34 Mpps".
frontend_rate() {
    printf 'show port stats all\n' >&3
    sleep 0.5
    grep "$RATE:" "$W/tp.log" | tail -1 | awk '{printf "%.2f Mpps", $2 / 1e6}'
}

# frontend_pid: the front-end testpmd's own pid (TPID is timeout's), for
# sampling the front-end (FRONT=1 in both profile scripts).
frontend_pid() {
    pgrep -n -P "$TPID" dpdk-testpmd || echo "$TPID"
}

# profile_cleanup BACK_PID PREFIX...: stops the front-end and the back-end
# (BACK_PID, may be empty), removes DPDK's runtime directories of the
# PREFIXes and $W (kept with KEEP=1). For `trap ... EXIT`.
profile_cleanup() {
    exec 3>&- 2>/dev/null
    [ -n "${TPID:-}" ] && kill "$TPID" 2>/dev/null
    [ -n "${1:-}" ] && kill "$1" 2>/dev/null
    wait 2>/dev/null
    shift
    for p in "$@"; do rm -rf "/var/run/dpdk/$p"; done
    [ -z "${KEEP:-}" ] && rm -rf "$W"
}
