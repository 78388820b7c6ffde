#!/usr/bin/env bash
# Fetches QEMU 10.x from Debian bookworm-backports into the test cache
# WITHOUT installing it (a private apt configuration, download + unpack),
# so the guest test can run against both Debian 12's QEMU 7.2 and QEMU 10.
# Prints "QEMU_BIN=... QEMU_DATADIRS=..." on stdout. Exit 2: not available.
set -euo pipefail
CACHE=${VHOSTD_E2E_CACHE:-/var/tmp/vhostd-e2e}
D=$CACHE/qemu-bpo
log() { printf '[qemu-backports] %s\n' "$*" >&2; }
if [ ! -f "$D/.done" ]; then
  rm -rf "$D"; mkdir -p "$D"/{lists/partial,cache/archives/partial,debs}
  mirror=$(apt-cache policy | awk '$3 == "bookworm/main" {print $2; exit}')
  [ -n "$mirror" ] || { log "no bookworm mirror in the apt sources"; exit 2; }
  echo "deb $mirror bookworm-backports main" > "$D/sources.list"
  o=(-o Dir::Etc::SourceList="$D/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists="$D/lists" -o Dir::Cache="$D/cache" -o Debug::NoLocking=1)
  apt-get "${o[@]}" update >/dev/null 2>&1 || { log "backports index update failed"; exit 2; }
  pk=()
  for p in qemu-system-x86 qemu-system-common qemu-system-data seabios; do
    v=$(apt-cache "${o[@]}" policy "$p" | awk '/bpo/ && $1 ~ /[0-9]/ {print $1; exit}')
    [ -n "$v" ] || { log "no backports version of $p"; exit 2; }
    pk+=("$p=$v")
  done
  (cd "$D/debs" && apt-get "${o[@]}" download "${pk[@]}" >/dev/null 2>&1) || { log "download failed"; exit 2; }
  for p in "$D"/debs/*.deb; do dpkg-deb -x "$p" "$D/root"; done
  touch "$D/.done"
fi
"$D/root/usr/bin/qemu-system-x86_64" --version >/dev/null 2>&1 || { log "unpacked QEMU does not run (missing libraries?)"; exit 2; }
echo "QEMU_BIN=$D/root/usr/bin/qemu-system-x86_64 QEMU_DATADIRS=$D/root/usr/share/seabios:$D/root/usr/share/qemu"
