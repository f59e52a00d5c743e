#!/bin/busybox sh
# PID 1 of the test guest's initramfs (built by test/helpers/vm/initramfs.ts).
# Kernel command line (all optional):
#   quiesce.agent=quiesce|qemu-ga   which agent to run (default quiesce)
#   quiesce.arg=WORD                one extra agent argument; repeat for more (no spaces inside)
#   quiesce.restart_delay=SECONDS   pause between agent restarts (default 1)
# Every line meant for the host starts with "QUIESCE-VM: " on the console (ttyS0).
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /data /bin /sbin /usr/bin /usr/sbin /var
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 0</dev/console 1>/dev/console 2>&1
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
ln -sfn /run /var/run
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm

say() { echo "QUIESCE-VM: $*"; }
fatal() {
  say "FATAL: $*"
  sync
  poweroff -f
}

say "init up=$(cut -d' ' -f1 /proc/uptime)"

while read -r m; do
  [ -n "$m" ] || continue
  insmod "$m" || fatal "insmod $m failed"
done </etc/quiesce-vm/modules

# No udev: wait for the virtio devices, then name the serial ports like udev would.
i=0
until ls /sys/class/virtio-ports/vport*/name >/dev/null 2>&1 || [ $i -ge 300 ]; do
  sleep 0.1
  i=$((i + 1))
done
mkdir -p /dev/virtio-ports
for p in /sys/class/virtio-ports/vport*; do
  [ -e "$p/name" ] || continue
  name=$(cat "$p/name")
  [ -n "$name" ] && ln -sfn "/dev/${p##*/}" "/dev/virtio-ports/$name"
done
[ -e /dev/virtio-ports/org.qemu.guest_agent.0 ] || fatal "no virtio port org.qemu.guest_agent.0 ($(ls /sys/class/virtio-ports 2>&1))"

i=0
until [ -b /dev/vda ] || [ $i -ge 50 ]; do
  sleep 0.1
  i=$((i + 1))
done
if [ -b /dev/vda ]; then
  mount -t ext4 /dev/vda /data || fatal "mount /dev/vda on /data failed"
  say "data mounted"
else
  say "no data disk"
fi

agent=quiesce
delay=1
args=
for w in $(cat /proc/cmdline); do
  case "$w" in
    quiesce.agent=*) agent=${w#*=} ;;
    quiesce.arg=*) args="$args ${w#*=}" ;;
    quiesce.restart_delay=*) delay=${w#*=} ;;
  esac
done
port=/dev/virtio-ports/org.qemu.guest_agent.0
case "$agent" in
  quiesce) set -- /usr/bin/node /agent/dist/quiesce-agent.mjs ;;
  qemu-ga) set -- /usr/sbin/qemu-ga ;;
  *) fatal "unknown quiesce.agent=$agent" ;;
esac
state=/run/$agent
mkdir -p "$state"

n=0
while :; do
  n=$((n + 1))
  # $args is split on purpose: one word per quiesce.arg.
  # shellcheck disable=SC2086
  "$@" -m virtio-serial -p "$port" -t "$state" $args &
  pid=$!
  say "agent started kind=$agent n=$n pid=$pid up=$(cut -d' ' -f1 /proc/uptime)"
  wait $pid
  rc=$?
  say "agent exited kind=$agent n=$n pid=$pid status=$rc"
  sleep "$delay"
done
