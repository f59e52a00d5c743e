import {
  DEFAULT_FREEZE_LIMIT,
  DEFAULT_HOOK_PATH,
  DEFAULT_HOOK_TIMEOUT,
  DEFAULT_ISA_PATH,
  DEFAULT_PIDFILE,
  DEFAULT_STATEDIR,
  DEFAULT_VIRTIO_PATH,
} from './options.js';

export function usage(): string {
  return `Usage: quiesce-agent [-m <method> -p <path>] [<options>]
A guest agent speaking the QEMU guest agent (qemu-ga) protocol.

  -m, --method      transport method: one of unix-listen, virtio-serial,
                    isa-serial, vsock-listen or stdio (virtio-serial is the
                    default; vsock-listen is not supported under Node.js)
  -p, --path        device/socket path (the default for virtio-serial is:
                    ${DEFAULT_VIRTIO_PATH},
                    the default for isa-serial is: ${DEFAULT_ISA_PATH})
  -l, --logfile     set logfile path, logs to stderr by default
  -f, --pidfile     specify pidfile (default is ${DEFAULT_PIDFILE})
  -F, --fsfreeze-hook
                    enable fsfreeze hook. Accepts an optional argument that
                    specifies the script (or directory of scripts) to run on
                    freeze/thaw (default is ${DEFAULT_HOOK_PATH}).
                    Attach the argument: -F/path/to/hook
  -t, --statedir    specify dir to store state information (absolute paths
                    only, default is ${DEFAULT_STATEDIR})
  -v, --verbose     log extra debugging information
  -V, --version     print version information and exit
  -d, --daemonize   become a daemon
  -b, --block-rpcs  comma-separated list of RPCs to disable (no spaces,
                    use "help" to list available RPCs)
  -a, --allow-rpcs  comma-separated list of RPCs to enable, all others are
                    disabled (use "help" to list available RPCs)
  -D, --dump-conf   dump a config file based on current config options /
                    command-line parameters to stdout
  -r, --retry-path  attempt re-opening path if it's unavailable or closed
  -h, --help        display this help and exit

Beyond qemu-ga (long options only; config keys of the same name):
  --fsfreeze-include=PATH[,PATH]
                    only these mountpoints can ever be frozen or thawed
                    (default: every device-backed mount, like qemu-ga)
  --fsfreeze-hook-timeout=SECS
                    kill a freeze/thaw hook script after SECS seconds
                    (default ${DEFAULT_HOOK_TIMEOUT}, 0 for no limit)
  --fsfreeze-limit=SECS
                    thaw on its own when frozen longer than SECS seconds
                    (default ${DEFAULT_FREEZE_LIMIT}, 0 for no limit)

Config file: /etc/qemu/qemu-ga.conf, or the path in QGA_CONF ([general] group,
the same keys as qemu-ga). Bad options or config: one line on stderr, exit 2.
`;
}
