#!/bin/sh
# Guest side of tests/qemu-guest.sh. Settings come from vhd.* on the kernel
# command line; results are lines on the serial console:
#   VHD-INFO ..., VHD-PING ok|fail, VHD-TXSHA <sha>, VHD-RXSHA <sha>,
#   VHD-PASS / VHD-FAIL <why>
/bin/busybox --install -s /bin 2>/dev/null
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
exec 2>&1
arg() { for a in $(cat /proc/cmdline); do case "$a" in "vhd.$1="*) echo "${a#*=}"; return;; esac; done; echo "$2"; }
IP=$(arg ip 169.254.10.2/16); PEER=$(arg peer 169.254.10.1); MB=$(arg mb 16); TESTS=$(arg tests ping)
finish() {
  echo "VHD-INFO rx_packets=$(cat /sys/class/net/eth0/statistics/rx_packets) tx_packets=$(cat /sys/class/net/eth0/statistics/tx_packets) rx_errors=$(cat /sys/class/net/eth0/statistics/rx_errors)"
  grep -E 'virtio' /proc/interrupts | sed 's/^/VHD-IRQ /'
  if [ "$1" = 0 ]; then echo "VHD-PASS"; else echo "VHD-FAIL $2"; fi
  sync; poweroff -f; sleep 5
}
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko || { echo "insmod $m failed"; finish 1 insmod; }; done
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -e /sys/class/net/eth0 ] || finish 1 no-eth0
echo "VHD-INFO features=$(cat /sys/class/net/eth0/device/features)"
echo "VHD-INFO queues=$(ls /sys/class/net/eth0/queues | tr '\n' ' ')"
ip link set lo up; ip link set eth0 up; ip addr add "$IP" dev eth0
rc=0; why=""
# the link needs a moment; retry the first ping
ok=0; for i in 1 2 3 4 5 6 7 8 9 10; do ping -c 1 -W 1 "$PEER" >/dev/null 2>&1 && { ok=1; break; }; done
if [ $ok = 1 ] && ping -c 5 -i 0.2 -W 2 "$PEER"; then echo "VHD-PING ok"; else echo "VHD-PING fail"; rc=1; why=ping; fi
case " $TESTS " in *" tcp "*)
  if [ $rc = 0 ]; then
    # guest -> host: MB MiB of random data, sha256 printed for the host to compare
    dd if=/dev/urandom of=/tmp/tx bs=1048576 count="$MB" 2>/dev/null
    echo "VHD-TXSHA $(sha256sum /tmp/tx | cut -d' ' -f1)"
    t0=$(cut -d' ' -f1 /proc/uptime)
    nc -w 5 "$PEER" 5001 < /tmp/tx || { rc=1; why="$why tcp-tx"; }
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "VHD-INFO tx-seconds=$(echo "$t0 $t1" | awk '{print $2-$1}')"
    rm -f /tmp/tx
    # host -> guest
    t0=$(cut -d' ' -f1 /proc/uptime)
    nc -w 10 "$PEER" 5002 > /tmp/rx || true
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "VHD-INFO rx-seconds=$(echo "$t0 $t1" | awk '{print $2-$1}') rx-bytes=$(wc -c < /tmp/rx)"
    echo "VHD-RXSHA $(sha256sum /tmp/rx | cut -d' ' -f1)"
  fi
;; esac
finish $rc "$why"
