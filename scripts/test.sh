#!/usr/bin/env bash
# Runs every test: formatting, lints, unit + in-process integration tests
# (cargo test), then the real clients: DPDK testpmd (virtio-user) with 1 and
# 2 queue pairs, a Linux guest under QEMU 7.2 (1 and 2 pairs; packed rings
# with guest memory on 2 MiB huge pages) and QEMU 10 (MSI-X, 2 pairs, packed,
# and the interrupt measurement with coalescing), then a fuzz smoke (every
# target 20 s) and the benchmarks briefly (figures only).
# A real-client test that cannot run is a failure here, not a pass.
#
#   scripts/test.sh            (as root on Debian 12; installs what it needs)
#   QUICK=1 scripts/test.sh    (skip the real clients)
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - T0 ))"; }

step "setup"
bash scripts/setup.sh || exit 1

# setup.sh reserved huge pages: a test that finds none fails instead of skipping
export VHOSTD_REQUIRE_HUGEPAGES=1

step "cargo fmt --check"
cargo fmt --all -- --check || { echo "FAIL: cargo fmt"; exit 1; }
step "cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings || { echo "FAIL: clippy"; exit 1; }
step "cargo build"
cargo build --workspace -q || exit 1
step "cargo test"
timeout 900 cargo test --workspace 2>&1 | tee /tmp/vhostd-cargo-test.log | grep -E '^(test result|running|failures|---- )|panicked|FAILED' 
rc=${PIPESTATUS[0]}
[ "$rc" = 0 ] || { echo "FAIL: cargo test (rc=$rc)"; tail -50 /tmp/vhostd-cargo-test.log; exit 1; }

[ "${QUICK:-0}" = 1 ] && { echo "QUICK=1: real-client tests not run"; exit 0; }

passed=0; failed=0
run() { # run NAME CMD...
  step "$1"
  timeout -k 10 "${REAL_TIMEOUT:-600}" "${@:2}"
  local rc=$?
  if [ $rc = 0 ]; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL: $1 (exit $rc; 2 = could not run here)"; fi
}
run "dpdk-testpmd 1 queue pair" bash tests/dpdk-testpmd.sh 1
run "dpdk-testpmd 2 queue pairs" bash tests/dpdk-testpmd.sh 2
run "dpdk-testpmd packed ring, in-order" env VDEV_ARGS=",packed_vq=1,in_order=1" bash tests/dpdk-testpmd.sh 1
run "dpdk-testpmd packed ring, 2 queue pairs, no in-order, no mergeable" env VDEV_ARGS=",packed_vq=1,in_order=0,mrg_rxbuf=0" bash tests/dpdk-testpmd.sh 2
run "qemu guest 1 queue pair" bash tests/qemu-guest.sh 1 16
run "qemu guest 2 queue pairs" bash tests/qemu-guest.sh 2 16
run "qemu 10 guest 2 queue pairs, MSI-X" env QEMU_FLAVOR=backports bash tests/qemu-guest.sh 2 16
run "qemu guest packed ring, guest memory on 2 MiB huge pages" env PACKED=1 HUGEPAGES=1 bash tests/qemu-guest.sh 1 16
run "qemu 10 guest packed ring, 2 queue pairs, MSI-X" env QEMU_FLAVOR=backports PACKED=1 bash tests/qemu-guest.sh 2 16
run "qemu 10 guest interrupts with and without coalescing" bash tests/qemu-coalesce.sh 16
run "fuzz smoke (20 s per target)" bash scripts/fuzz.sh 20
run "valgrind memcheck of the memory and ring crates' tests" bash scripts/valgrind.sh
run "benchmark smoke (figures only, never pass/fail on numbers)" bash -c \
  "target/debug/vhostd-bench exits --secs 0.2 --pings 200 && target/debug/vhostd-bench priority --pings 200 && target/debug/vhostd-bench isolation --secs 0.3 --rounds 1 --pings 200 && target/debug/vhostd-bench isolation --secs 0.3 --rounds 1 --pings 200 --pin"
# The side-by-side harness and the mode comparison run end to end (every
# path moves traffic on both back-ends and on the ceiling diagnostic; a
# failed cell exits 3), the ring micro-benchmarks once each (criterion
# --test). Figures only.
run "vhostd vs DPDK harness smoke (bench/dpdk-compare.sh, QUICK, with the ceiling runs)" env QUICK=1 CEILING=1 BUILD=1 OUT=/tmp/vhostd-ci-bench bash bench/dpdk-compare.sh
run "ceiling table of that run (bench/ceiling-table.py)" bash -c \
  'python3 bench/ceiling-table.py "$(ls -t /tmp/vhostd-ci-bench/dpdk-compare-*.json | head -1)"'
run "interleaved comparison smoke (bench/interleave.sh: both back-ends ports of one front-end, taking turns)" env ROUNDS=3 PERIOD=0.5 bash bench/interleave.sh loop 64
run "worker modes smoke (bench/modes.sh)" env PAIRS=1 SECS=1 WARMUP=1 IDLE_SECS=2 bash bench/modes.sh
run "DPDK symbol names for profiles (bench/dpdk-syms.py)" bash tests/dpdk-syms.sh
run "ring micro-benchmarks (criterion --test)" cargo bench -q -p vhostd-bench --bench ring -- --test
step "done"
echo "real clients: $passed passed, $failed failed"
[ "$failed" = 0 ]
