#!/usr/bin/env bash
# The guest-memory layer's tests under valgrind memcheck (issue #5: the only
# stable-toolchain way to check its mappings, copies and unmaps for invalid
# accesses and leaks; no Miri here). Fails on any memcheck error or a
# definite leak.
#
#   scripts/valgrind.sh [CRATE...]      (default: vhostd-mem vhostd-virtq)
set -uo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "FAIL: valgrind missing (scripts/setup.sh installs it)"; exit 2; }
CRATES=${*:-vhostd-mem vhostd-virtq}
rc=0
for c in $CRATES; do
  bins=$(cargo test -q -p "$c" --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    try: m = json.loads(l)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')
  [ -n "$bins" ] || { echo "FAIL: no test binary for $c"; rc=1; continue; }
  for b in $bins; do
    out=$(timeout 600 valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
      --show-leak-kinds=definite -q "$b" --test-threads=1 2>&1)
    r=$?
    tests=$(printf '%s\n' "$out" | sed -n 's/^test result: ok. \([0-9]*\) passed.*/\1/p')
    if [ $r = 0 ] && [ -n "$tests" ]; then
      echo "PASS: valgrind memcheck $c: $tests tests, 0 errors, no definite leaks"
    else
      printf '%s\n' "$out" | grep -E "==[0-9]+==|FAILED|panicked" | head -40
      echo "FAIL: valgrind memcheck $c (exit $r)"; rc=1
    fi
  done
done
exit $rc
