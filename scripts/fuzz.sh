#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for SECS seconds each, seeded
# from fuzz/seeds/<target> (the working corpus in fuzz/corpus/<target> is
# kept between runs and not committed). libFuzzer via cargo-fuzz, with
# debug assertions and overflow checks (-a) and AddressSanitizer (with
# LeakSanitizer) by default: the targets reach unsafe code in vm-memory's
# volatile copies, vhostd-mem's prefetch and the daemon's fd handling.
# -Zsanitizer is an unstable rustc flag; the machine has only the stable
# toolchain, so RUSTC_BOOTSTRAP=1 unlocks it for the fuzz build alone (the
# product is never built that way). SANITIZER=none builds without it.
# A crash leaves its input in fuzz/artifacts/<target>/: turn it into a
# unit test.
#
#   scripts/fuzz.sh            20 s per target (CI smoke)
#   scripts/fuzz.sh 14400      4 h per target
#   TARGETS="split_ring" SANITIZER=none scripts/fuzz.sh 600
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${1:-20}
SANITIZER=${SANITIZER:-address}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet || { echo "FAIL: cannot install cargo-fuzz"; exit 1; }
TARGETS=${TARGETS:-"tx_header split_ring packed_ring mem_table ctrl_queue vhost_user"}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s "$SANITIZER" -O -a || { echo "FAIL: fuzz build"; exit 1; }
passed=0; failed=0
for t in $TARGETS; do
  mkdir -p "corpus/$t"
  out=$(timeout -k 10 $((SECS + 120)) cargo fuzz run -s "$SANITIZER" -O -a "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 2>&1)
  rc=$?
  runs=$(printf '%s\n' "$out" | sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 \2/p' | tail -1)
  if [ $rc = 0 ] && [ -n "$runs" ]; then
    set -- $runs
    echo "PASS: fuzz $t ($SANITIZER): $1 executions in $2 s ($(( $1 / ($2 > 0 ? $2 : 1) ))/s), 0 crashes"
    passed=$((passed + 1))
  else
    printf '%s\n' "$out" | grep -E -A6 "panicked|ERROR: libFuzzer|SUMMARY" | head -40
    printf '%s\n' "$out" | tail -12
    echo "FAIL: fuzz $t (exit $rc): see fuzz/artifacts/$t/"
    failed=$((failed + 1))
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
