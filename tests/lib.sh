# Shared helpers for the real-client tests (sourced, not run).
# Every test prints "PASS: ..." / "FAIL: ..." / "SKIP: <why>" lines and exits
# 0 (pass), 1 (fail) or 2 (cannot run here: the reason is printed).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VHOSTD=${VHOSTD:-$ROOT/target/debug/vhostd}
VHOSTCTL=${VHOSTCTL:-$ROOT/target/debug/vhostctl}
PIDS=()

log() { printf '[%s] %s\n' "${TEST_NAME:-test}" "$*" >&2; }
skip() { echo "SKIP: ${TEST_NAME:-test}: $*"; exit 2; }
fail() { echo "FAIL: ${TEST_NAME:-test}: $*"; FAILED=1; }
pass() { echo "PASS: ${TEST_NAME:-test}: $*"; }

need_bin() { # need_bin cmd package
  command -v "$1" >/dev/null 2>&1 || skip "$1 not found (apt-get install $2; .ci/run installs it)"
}

# start_bg LOGFILE CMD...: start a process in its own process group; remember its pid
start_bg() {
  local logf=$1; shift
  setsid "$@" > "$logf" 2>&1 < /dev/null &
  PIDS+=($!)
  LAST_PID=$!
}

# stop_pid PID: TERM, then KILL after 5 s (only processes we started)
stop_pid() {
  local p=$1
  kill -TERM "$p" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null; return 0; }; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null || true
}

cleanup_pids() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  PIDS=()
}

wait_socket() { # wait_socket PATH [seconds]
  local n=$(( ${2:-10} * 10 ))
  for _ in $(seq "$n"); do [ -S "$1" ] && return 0; sleep 0.1; done
  return 1
}

# stats_json CTLSOCK: vhostctl stats --json
stats_json() { "$VHOSTCTL" --control-socket "$1" stats --json; }

# jq-like field sum with python: sum_field JSON DIR FIELD (DIR = rx|tx|all)
sum_field() {
  python3 -c '
import json,sys
d=json.loads(sys.argv[1]); dirn=sys.argv[2]; f=sys.argv[3]
print(sum(q[f] for p in d["ports"] for q in p["queues"] if dirn=="all" or q["name"].startswith(dirn)))
' "$1" "$2" "$3"
}

# wait_prompt LOG SECS: until an interactive dpdk-testpmd writing to LOG shows
# its prompt (it is ready for commands), or SECS pass.
wait_prompt() {
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    grep -q 'testpmd> ' "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}
