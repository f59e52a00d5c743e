#!/bin/sh
# /sbin/shutdown for the test guest: busybox has none, and qemu-ga/quiesce-agent run
# `shutdown -P|-H|-r +0 "msg"` for guest-shutdown. PID 1 is a plain shell, so act at once.
mode=poweroff
for a in "$@"; do
  case "$a" in
    -r) mode=reboot ;;
    -H) mode=halt ;;
    -P | -h) mode=poweroff ;;
  esac
done
echo "QUIESCE-VM: shutdown $mode" >/dev/console
sync
exec "$mode" -f
