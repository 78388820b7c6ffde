#!/usr/bin/env bash
# bench/dpdk-syms.py names DPDK's functions in perf reports through the
# static archives (Debian's librte_*.so are stripped). Checked here against
# the installed DPDK:
# - an exported function's address plus an offset comes back as NAME+OFFSET
#   (the shared library's own dynamic symbol is the truth);
# - static functions (no symbol in the .so at all) land where their code is:
#   the first instructions at the mapped address in the .so are those of the
#   function in the archive's object (mnemonics; operands differ by
#   relocation). A wrong distance lands mid-function or elsewhere.
set -uo pipefail
TEST_NAME="dpdk-syms"
source "$(dirname "$0")/lib.sh"
need_bin dpdk-testpmd dpdk-dev
need_bin objdump binutils
LIB=/usr/lib/x86_64-linux-gnu
SO=$(ls "$LIB"/librte_vhost.so.*.* 2>/dev/null | head -1)
[ -n "$SO" ] && [ -f "$LIB/librte_vhost.a" ] || skip "librte_vhost.so / .a not found (apt-get install libdpdk-dev)"
SYMS="$(dirname "$0")/../bench/dpdk-syms.py"
FAILED=0

addr=$(nm -D --defined-only "$SO" | awk '$3 ~ /^rte_vhost_enqueue_burst@/ {print $1; exit}')
[ -n "$addr" ] || { fail "rte_vhost_enqueue_burst not exported by $SO"; exit 1; }
got=$(printf '== head\n    5.00%%  %s  [.] 0x%x\n' "$(basename "$SO")" $((0x$addr + 0x10)) | python3 "$SYMS" | sed -n 2p)
log "exported: $got"
case $got in *" rte_vhost_enqueue_burst+0x10") ;; *) fail "expected rte_vhost_enqueue_burst+0x10, got: $got" ;; esac

W=$(mktemp -d /tmp/vhostd-syms.XXXXXX)
trap 'rm -rf "$W"' EXIT
(cd "$W" && ar x "$LIB/librte_vhost.a")
mnemonics() { grep -E '^ +[0-9a-f]+:' | awk -F'\t' '{split($3, a, " "); print a[1]}' | head -8; }
for fn in virtio_dev_rx_split do_data_copy_enqueue reserve_avail_buf_split.constprop.0; do
  read -r dso at size < <(python3 "$SYMS" --where "$fn" | head -1)
  [ -n "${at:-}" ] || { fail "$fn: not mapped"; continue; }
  obj=$(grep -l "$fn" "$W"/*.o | head -1)
  want=$(objdump -d -j .text "$obj" --disassemble="$fn" | mnemonics | tr '\n' ' ')
  have=$(objdump -d "$dso" --start-address=$((at)) --stop-address=$((at + 64)) | mnemonics | tr '\n' ' ')
  log "$fn at $at ($size bytes): $have"
  [ -n "$want" ] && [ "$want" = "$have" ] || fail "$fn: archive starts [$want], the .so at $at [$have]"
done
[ "$FAILED" = 0 ] && log "PASS: dpdk-syms names exported and static DPDK functions"
exit "$FAILED"
