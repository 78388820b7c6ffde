#!/usr/bin/env bash
# Installs what vhostd's build, demo and tests need on a fresh Debian 12
# machine (run as root). Safe to run again. Rust (cargo) must already be
# installed: the stable toolchain is the machine's.
set -euo pipefail
PKGS=(qemu-system-x86 dpdk-dev busybox-static cpio kmod iproute2 xz-utils zstd python3 procps valgrind binutils)
log() { printf '[setup] %s\n' "$*" >&2; }
command -v cargo >/dev/null || { log "cargo not found: install the stable Rust toolchain first"; exit 1; }
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "$(id -u)" != 0 ]; then
  [ ${#missing[@]} = 0 ] || { log "missing packages (run as root to install): ${missing[*]}"; exit 1; }
  exit 0
fi
apt_retry() {
  local try out
  for try in $(seq 20); do
    if out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@" 2>&1); then return 0; fi
    if printf '%s' "$out" | grep -q 'Could not get lock\|Unable to acquire\|is held by'; then
      log "apt lock busy, retrying ($try/20)"; sleep 15; continue
    fi
    printf '%s\n' "$out" | tail -20 >&2; return 1
  done
  return 1
}
# apt lists are needed for the installs below and for `apt-get download` of
# the guest kernel (tests/guest/prepare.sh): refresh them if older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
  log "apt-get update"; apt_retry update
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  apt_retry install -y --no-install-recommends "${missing[@]}"
fi
# 2 MiB huge pages: a QEMU guest on hugetlbfs memory (tests/qemu-guest.sh
# HUGEPAGES=1, 256 pages) and the memory crate's hugetlbfs test (2 pages).
# Reserved only if fewer are free; VHOSTD_HUGEPAGES=0 leaves them alone.
want=${VHOSTD_HUGEPAGES:-272}
if [ "$want" -gt 0 ] && [ -w /proc/sys/vm/nr_hugepages ]; then
  free=$(awk '/^HugePages_Free/ {print $2}' /proc/meminfo)
  if [ "${free:-0}" -lt "$want" ]; then
    total=$(cat /proc/sys/vm/nr_hugepages)
    echo $(( total + want - free )) > /proc/sys/vm/nr_hugepages || true
    log "huge pages: $(awk '/^HugePages_Free/ {print $2}' /proc/meminfo) free of $(cat /proc/sys/vm/nr_hugepages) (wanted $want free)"
  fi
fi
log "ok"
