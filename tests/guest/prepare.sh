#!/usr/bin/env bash
# Builds what the QEMU guest tests boot: a stock Debian cloud kernel
# (unpacked from its .deb, not installed) and a busybox initramfs holding
# the virtio modules and tests/guest/init.sh. Idempotent; output in $CACHE.
#
#   tests/guest/prepare.sh        prints "KERNEL=... INITRD=..." on stdout
set -euo pipefail
CACHE=${VHOSTD_E2E_CACHE:-/var/tmp/vhostd-e2e}
HERE=$(cd "$(dirname "$0")" && pwd)
PKG=${VHOSTD_KERNEL_PKG:-linux-image-cloud-amd64}
mkdir -p "$CACHE"
log() { printf '[prepare] %s\n' "$*" >&2; }

BUSYBOX=""
for b in /bin/busybox /usr/bin/busybox; do
  if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then BUSYBOX=$b; break; fi
done
[ -n "$BUSYBOX" ] || { log "static busybox not found (apt-get install busybox-static)"; exit 2; }

concrete=$(apt-cache depends "$PKG" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$concrete" ] || { log "cannot resolve $PKG (apt-get update?)"; exit 2; }
KDIR=$CACHE/$concrete
if [ ! -f "$KDIR/.done" ]; then
  log "fetching $concrete"
  rm -rf "$KDIR.tmp"; mkdir -p "$KDIR.tmp/deb" "$KDIR.tmp/out/modules"
  (cd "$KDIR.tmp/deb" && apt-get download "$concrete" >/dev/null) || { log "apt-get download $concrete failed"; exit 2; }
  dpkg-deb -x "$KDIR.tmp"/deb/*.deb "$KDIR.tmp/x"
  vmlinuz=$(ls "$KDIR.tmp"/x/boot/vmlinuz-* | head -1)
  kver=${vmlinuz##*/vmlinuz-}
  moddir=$KDIR.tmp/x/lib/modules/$kver
  cp "$vmlinuz" "$KDIR.tmp/out/vmlinuz"
  : > "$KDIR.tmp/out/modules.order"
  declare -A seen=()
  add_mod() { # dependencies first (the .deb has no modules.dep)
    local m=$1 f dep
    [ -n "${seen[$m]:-}" ] && return 0
    seen[$m]=1
    f=$(find "$moddir/kernel" \( -name "$m.ko*" -o -name "${m//_/-}.ko*" \) | head -1)
    if [ -z "$f" ]; then
      grep -qE "/($m|${m//_/-})\.ko$" "$moddir/modules.builtin" 2>/dev/null && return 0
      log "module $m not found"; exit 2
    fi
    for dep in $(modinfo -F depends "$f" | tr ',' ' '); do add_mod "$dep"; done
    case "$f" in
      *.ko) cp "$f" "$KDIR.tmp/out/modules/$m.ko" ;;
      *.ko.xz) xz -dc "$f" > "$KDIR.tmp/out/modules/$m.ko" ;;
      *.ko.zst) zstd -qdc "$f" > "$KDIR.tmp/out/modules/$m.ko" ;;
      *) log "unknown module format $f"; exit 2 ;;
    esac
    echo "$m" >> "$KDIR.tmp/out/modules.order"
  }
  add_mod virtio_pci   # not a dependency of virtio_net: list both
  add_mod virtio_net
  rm -rf "$KDIR"; mv "$KDIR.tmp/out" "$KDIR"; rm -rf "$KDIR.tmp"
  touch "$KDIR/.done"
fi

key=$( { cat "$HERE/init.sh"; sha256sum < "$BUSYBOX"; cat "$KDIR/modules.order"; } | sha256sum | cut -c1-16)
INITRD=$CACHE/initramfs-$concrete-$key.cpio.gz
if [ ! -s "$INITRD" ]; then
  log "building initramfs"
  stage=$(mktemp -d "$CACHE/stage.XXXXXX")
  mkdir -p "$stage"/{bin,sbin,dev,proc,sys,tmp,etc,lib/modules}
  cp "$BUSYBOX" "$stage/bin/busybox"; ln -s busybox "$stage/bin/sh"
  cp "$KDIR"/modules/*.ko "$stage/lib/modules/" 2>/dev/null || true
  cp "$KDIR/modules.order" "$stage/lib/modules/order"
  cp "$HERE/init.sh" "$stage/init"; chmod 755 "$stage/init"
  (cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -n -1) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"; rm -rf "$stage"
fi
echo "KERNEL=$KDIR/vmlinuz INITRD=$INITRD"
