#!/bin/busybox sh
# PID 1 of the test guest's initramfs (built by test/helpers/vm/initramfs.ts).
# Kernel command line (all optional):
#   quiesce.agent=quiesce|qemu-ga   which agent to run (default quiesce)
#   quiesce.arg=WORD                one extra agent argument; repeat for more (no spaces inside)
#   quiesce.node_opt=WORD           one extra node option for quiesce-agent (e.g. --jitless); repeatable
#   quiesce.restart_delay=SECONDS   pause between agent restarts (default 1)
#   quiesce.writer=1                run the data writer (below) while the agent runs
#   quiesce.crash_hook=1            install /run/quiesce-vm/crash-hook, an fsfreeze hook (agent flag
#                                   --fsfreeze-hook=PATH) that kills the agent 2 s after its first freeze
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
node_opts=
writer=0
crash_hook=0
for w in $(cat /proc/cmdline); do
  case "$w" in
    quiesce.agent=*) agent=${w#*=} ;;
    quiesce.arg=*) args="$args ${w#*=}" ;;
    quiesce.node_opt=*) node_opts="$node_opts ${w#*=}" ;;
    quiesce.restart_delay=*) delay=${w#*=} ;;
    quiesce.writer=*) writer=${w#*=} ;;
    quiesce.crash_hook=*) crash_hook=${w#*=} ;;
  esac
done
mkdir -p /run/quiesce-vm

# The end-to-end tests' writer: file N (65536 bytes of "quiesce-writer N" lines) is written to
# /data/w/tmp with dd conv=fsync, renamed to /data/w/<N mod 64>, then N is appended to /data/w/log
# and announced on the console. A freeze of /data stalls it; a thaw lets it go on.
# While /run/quiesce-vm/writer-pause exists it writes nothing: before each file it looks, and if the
# file is there it says "writer paused N" (N: the last file it wrote) once, waits until the file is
# gone, then says "writer resumed" and goes on with N+1.
write_loop() {
  mkdir -p /data/w
  n=0
  while :; do
    if [ -e /run/quiesce-vm/writer-pause ]; then
      say "writer paused $n"
      while [ -e /run/quiesce-vm/writer-pause ]; do sleep 0.1; done
      say "writer resumed"
    fi
    n=$((n + 1))
    yes "quiesce-writer $n" | head -c 65536 | dd of=/data/w/tmp conv=fsync 2>/dev/null || {
      sleep 1
      continue
    }
    mv /data/w/tmp "/data/w/$((n % 64))"
    echo "$n" >>/data/w/log
    say "writer $n"
  done
}
if [ "$writer" = 1 ]; then
  write_loop </dev/null &
  say "writer started pid=$!"
fi

# Crash tests: an agent with no guest-exec cannot be asked to kill itself, but it runs this hook
# before its first freeze; the kill lands 2 s later, while frozen. It fires once per boot.
if [ "$crash_hook" = 1 ]; then
  cat >/run/quiesce-vm/crash-hook <<'HOOK'
#!/bin/sh
[ "$1" = freeze ] || exit 0
[ -e /run/quiesce-vm/crashed ] && exit 0
: >/run/quiesce-vm/crashed
pid=$(cat /run/quiesce-vm/agent.pid)
(sleep 2; echo "QUIESCE-VM: crash hook kills agent pid=$pid" >/dev/console; kill -9 "$pid") </dev/null >/dev/null 2>&1 &
exit 0
HOOK
  chmod 755 /run/quiesce-vm/crash-hook
fi
port=/dev/virtio-ports/org.qemu.guest_agent.0
case "$agent" in
  # shellcheck disable=SC2086
  quiesce) set -- /usr/bin/node $node_opts /agent/dist/quiesce-agent.mjs ;;
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
  echo "$pid" >/run/quiesce-vm/agent.pid
  say "agent started kind=$agent n=$n pid=$pid up=$(cut -d' ' -f1 /proc/uptime)"
  wait $pid
  rc=$?
  say "agent exited kind=$agent n=$n pid=$pid status=$rc"
  sleep "$delay"
done
