#!/usr/bin/env bash
# The demo: a stock Linux guest under QEMU whose virtio-net traffic goes
# through vhostd to a TAP in a private network namespace. The guest pings
# the namespace, sends and receives 16 MiB over TCP (sha256 checked), QEMU
# is restarted against the same daemon, and vhostctl shows the per-queue
# counters. Run as root on Debian 12:  scripts/demo.sh [QUEUE_PAIRS]
set -euo pipefail
cd "$(dirname "$0")/.."
Q=${1:-2}
bash scripts/setup.sh
echo "== building vhostd (release)"
cargo build --release -q -p vhostd-daemon -p vhostctl
echo "== guest boots under QEMU (TCG), vhost-user socket -> vhostd -> tap:vhd0 in netns"
VHOSTD=$PWD/target/release/vhostd VHOSTCTL=$PWD/target/release/vhostctl SHOW_SERIAL=1 \
  bash tests/qemu-guest.sh "$Q" 16
