/**
 * Runs quiesce-agent and qemu-ga where the state-changing system commands
 * (guest-set-time, -set-vcpus, -set-memory-blocks, -set-user-password and the
 * ssh key commands) cannot reach this machine. Both agents share one private
 * mount namespace in which:
 *  - /sbin/hwclock and chpasswd are a recording stub (PATH holds only the
 *    stub's directory), /etc/passwd, group, shadow and nsswitch.conf are fake
 *    ("files" only), /root and /home are empty tmpfs;
 *  - /sys/devices/system/cpu and /sys/devices/system/memory are tmpfs trees;
 *  - the fake users' homes are on a tmpfs (one of them read-only);
 * and both agents run without CAP_SYS_TIME, so no clock can be set even by
 * mistake. `verify()` checks all of it from outside before every request.
 * The fake files are reached from outside through /proc/<pid>/root.
 */
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveQemuGa, isRoot, type AgentKind } from '../../helpers/agents.js';
import { DANGEROUS_REFERENCE_COMMANDS } from '../differential/pair.js';
import { launch, Namespace, which, type Side } from './system-rig.js';

/** The commands under test here, the only dangerous ones the reference gets enabled. */
export const ADMIN_COMMANDS = [
  'guest-set-time',
  'guest-set-vcpus',
  'guest-set-user-password',
  'guest-set-memory-blocks',
  'guest-ssh-get-authorized-keys',
  'guest-ssh-add-authorized-keys',
  'guest-ssh-remove-authorized-keys',
] as const;

const SYSTEM_DIRS = ['/sbin', '/usr/sbin', '/bin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin'];
const SETPRIV = '/usr/bin/setpriv';
const CAP_SYS_TIME = 25n;

/** Every system path chpasswd or hwclock could be run from, that exists here (real files, deduplicated). */
function pathsToStub(): string[] {
  const all = SYSTEM_DIRS.flatMap((d) => ['chpasswd', 'hwclock'].map((n) => join(d, n))).filter((p) => existsSync(p));
  return [...new Set(all.map((p) => realpathSync(p)))];
}

/** Why these tests cannot run here, or false. */
export function adminSkipReason(): string | false {
  if (!isRoot()) return 'needs root for a private mount namespace with stubs over hwclock and chpasswd';
  if (!haveQemuGa()) return 'needs the reference agent /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)';
  for (const cmd of ['unshare', 'nsenter', 'mount']) if (!which(cmd)) return `needs ${cmd} (util-linux)`;
  if (!existsSync(SETPRIV)) return `needs ${SETPRIV} (util-linux) to drop CAP_SYS_TIME`;
  if (!existsSync('/sbin/hwclock')) return 'needs /sbin/hwclock to exist, so that a stub can be mounted over it';
  if (!pathsToStub().some((p) => p.endsWith('/chpasswd')))
    return 'needs chpasswd to exist, so that a stub can be mounted over it';
  return false;
}

/** A program the agents ran, as the stub logged it. */
export interface StubCall {
  readonly argv: string[];
  /** "own" when it leads its own session (setsid). */
  readonly session: string;
  /** n for a descriptor on /dev/null, - otherwise (stdin, stdout, stderr). */
  readonly io: string;
  /** What it read on stdin (chpasswd only). */
  readonly stdin?: string;
}

export interface StubConfig {
  HWCLOCK_EXIT?: number;
  HWCLOCK_SIGNAL?: string;
  CHPASSWD_EXIT?: number;
  CHPASSWD_SIGNAL?: string;
  /** What PATH offers as chpasswd: the stub (default), nothing, or a file without x bits. */
  chpasswd?: 'stub' | 'absent' | 'not-executable';
}

function stubScript(dir: string): string {
  return `#!/bin/sh
dir='${dir}'
. "$dir/config"
name=\${0##*/}
line="$0"
for a in "$@"; do line="$line|$a"; done
read -r stat < /proc/$$/stat
rest=\${stat##*) }
set -- $rest
if [ "$4" = "$$" ]; then session=own; else session=inherited; fi
io=
for fd in 0 1 2; do if [ /proc/$$/fd/$fd -ef /dev/null ]; then io="\${io}n"; else io="\${io}-"; fi; done
n=0
while [ -e "$dir/stdin.$n" ]; do n=$((n+1)); done
if [ "$name" = chpasswd ]; then /bin/cat > "$dir/stdin.$n"; else : > "$dir/stdin.$n"; fi
printf '%s|session=%s|io=%s\\n' "$line" "$session" "$io" >> "$dir/log"
sig=
case "$name" in
  hwclock) sig=\${HWCLOCK_SIGNAL-}; code=\${HWCLOCK_EXIT-0};;
  *) sig=\${CHPASSWD_SIGNAL-}; code=\${CHPASSWD_EXIT-0};;
esac
if [ -n "$sig" ]; then kill -s "$sig" $$; fi
exit "$code"
`;
}

/** Fake users: a home per user on the namespace's tmpfs, two on a read-only tmpfs (one with ~/.ssh), one missing. */
export function passwdFile(dir: string): string {
  return [
    `root:x:0:0:root:${dir}/homes/root:/bin/sh`,
    `alice:x:1234:1235:Alice:${dir}/homes/alice:/bin/sh`,
    `bob:x:1300:1301:Bob, with: a colon:${dir}/homes/bob/:/bin/sh`,
    `nohome:x:1400:1400::${dir}/homes/missing/deeper:/bin/sh`,
    `rofs:x:1500:1500::${dir}/ro/rofs:/bin/sh`,
    `rofs2:x:1501:1501::${dir}/ro/rofs2:/bin/sh`,
    `1000:x:1600:1600:numeric name:${dir}/homes/n1000:/bin/sh`,
    `slash:x:1700:1700::/:/bin/sh`,
    '',
  ].join('\n');
}

const FAKE_ETC = ['passwd', 'group', 'shadow', 'gshadow', 'nsswitch.conf'] as const;

function setupScript(dir: string, hwclock: 'stub' | 'not-executable'): string {
  const binds = pathsToStub()
    .map(
      (p) => `mount --bind '${p.endsWith('/hwclock') && hwclock !== 'stub' ? `${dir}/noexec` : `${dir}/stub`}' '${p}'`,
    )
    .join('\n');
  const etc = FAKE_ETC.map((f) => `mount --bind '${dir}/etc/${f}' /etc/${f}`).join('\n');
  return `${binds}
${etc}
mount -t tmpfs -o mode=0755 tmpfs /root
mount -t tmpfs -o mode=0755 tmpfs /home
mount -t tmpfs -o mode=0755 tmpfs /sys/devices/system/cpu
mount -t tmpfs -o mode=0755 tmpfs /sys/devices/system/memory
echo 0-1 > /sys/devices/system/cpu/online
mkdir /sys/devices/system/cpu/cpu7 /sys/devices/system/memory/memory7
echo 1 > /sys/devices/system/cpu/cpu7/online
echo offline > /sys/devices/system/memory/memory7/state
mount --bind /sys/devices/system/cpu/cpu7 /sys/devices/system/cpu/cpu7
mount -o remount,bind,ro /sys/devices/system/cpu/cpu7
mount --bind /sys/devices/system/memory/memory7 /sys/devices/system/memory/memory7
mount -o remount,bind,ro /sys/devices/system/memory/memory7
mount -t tmpfs -o mode=0755 tmpfs '${dir}/homes'
mount -t tmpfs -o mode=0755 tmpfs '${dir}/ro'
mkdir -p '${dir}/ro/rofs' '${dir}/ro/rofs2/.ssh'
mount -o remount,ro '${dir}/ro'`;
}

/** One agent's answer to one request and what it did. */
export interface Outcome {
  /** Reply lines to the request (before the guest-sync that follows it). */
  readonly replies: string[];
  readonly calls: StubCall[];
}

export interface RigOptions {
  /** $TZ for both agents (default UTC). */
  readonly tz?: string;
  /** Start both over a frozen-state marker (frozen mode, nothing frozen). */
  readonly frozen?: boolean;
  /** Also blocked with -b on both. */
  readonly block?: readonly string[];
  /** /sbin/hwclock as the stub, or a file without x bits (set-time unsupported). */
  readonly hwclock?: 'stub' | 'not-executable';
}

export class AdminRig {
  private syncId = 9_200_000_000;

  private constructor(
    readonly dir: string,
    readonly ns: Namespace,
    readonly sides: Record<AgentKind, Side>,
    private readonly frozen: boolean,
  ) {}

  static async start(opts: RigOptions = {}): Promise<AdminRig> {
    const dir = mkdtempSync(join(tmpdir(), 'quiesce-admin-'));
    for (const d of ['bin', 'etc', 'homes', 'ro']) mkdirSync(join(dir, d));
    writeFileSync(join(dir, 'stub'), stubScript(dir));
    chmodSync(join(dir, 'stub'), 0o755);
    writeFileSync(join(dir, 'noexec'), '#!/bin/sh\nexit 0\n');
    chmodSync(join(dir, 'noexec'), 0o644);
    writeFileSync(join(dir, 'config'), '');
    writeFileSync(join(dir, 'log'), '');
    writeFileSync(join(dir, 'etc/passwd'), passwdFile(dir));
    writeFileSync(join(dir, 'etc/group'), 'root:x:0:\nalice:x:1235:\n');
    writeFileSync(join(dir, 'etc/shadow'), '');
    writeFileSync(join(dir, 'etc/gshadow'), '');
    writeFileSync(join(dir, 'etc/nsswitch.conf'), 'passwd: files\ngroup: files\nshadow: files\n');
    symlinkSync('../stub', join(dir, 'bin/chpasswd'));
    let ns: Namespace | undefined;
    const sides: Partial<Record<AgentKind, Side>> = {};
    const statedirs: string[] = [];
    try {
      ns = await Namespace.create(setupScript(dir, opts.hwclock ?? 'stub'));
      const blocked = [
        ...DANGEROUS_REFERENCE_COMMANDS.filter((c) => !(ADMIN_COMMANDS as readonly string[]).includes(c)),
        ...(opts.block ?? []),
      ];
      for (const kind of ['quiesce', 'qemu-ga'] as const) {
        const statedir = join(dir, `state-${kind}`);
        mkdirSync(statedir);
        statedirs.push(statedir);
        if (opts.frozen) writeFileSync(join(statedir, 'qga.state.isfrozen'), '');
        const args = [...(kind === 'quiesce' ? ['--fsfreeze-include='] : []), '-b', blocked.join(',')];
        sides[kind] = await launch(kind, {
          statedir,
          args,
          // CAP_SYS_TIME leaves the bounding set: neither agent nor anything it runs can set a clock.
          wrap: [...ns.wrap, SETPRIV, '--inh-caps=-sys_time', '--bounding-set=-sys_time'],
          env: { PATH: join(dir, 'bin'), TZ: opts.tz ?? 'UTC' },
        });
      }
    } catch (err) {
      for (const side of Object.values(sides)) {
        side.client.close();
        await side.agent.kill();
      }
      await ns?.close();
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    const rig = new AdminRig(dir, ns, sides as Record<AgentKind, Side>, opts.frozen ?? false);
    rig.verify();
    return rig;
  }

  /** The namespace holder's pid (its mounts are the agents'). */
  private get nsPid(): string {
    return this.ns.wrap[2]!;
  }

  /** A path inside the namespace, as reached from outside it. */
  host(path: string): string {
    return `/proc/${this.nsPid}/root${path}`;
  }

  /**
   * Refuses to go on unless, for both agents: they are in the namespace, have
   * no CAP_SYS_TIME, and every hwclock/chpasswd path, the fake /etc files and
   * the fake sysfs trees are in place in their mount namespace.
   */
  verify(): void {
    const own = readNs('self');
    for (const side of Object.values(this.sides)) {
      const pid = String(side.agent.child.pid);
      if (readNs(pid) === own) throw new Error('an agent is not in a mount namespace of its own');
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      for (const field of ['CapBnd', 'CapEff', 'CapPrm']) {
        const hex = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, 'm').exec(status)?.[1];
        if (hex === undefined || (BigInt(`0x${hex}`) >> CAP_SYS_TIME) & 1n) {
          throw new Error(`${side.agent.kind} still has CAP_SYS_TIME (${field}): refusing to go on`);
        }
      }
      const checks = [
        ...pathsToStub().map((p) => [p.endsWith('/hwclock') ? null : join(this.dir, 'stub'), p] as const),
        ...FAKE_ETC.map((f) => [join(this.dir, 'etc', f), `/etc/${f}`] as const),
      ];
      for (const [mine, theirs] of checks) {
        // hwclock is the stub or the non-executable file; either is fine, the real one is not.
        const candidates = mine ? [mine] : [join(this.dir, 'stub'), join(this.dir, 'noexec')];
        const ok = candidates.some(
          (c) => spawnSync('nsenter', ['-t', pid, '--mount', '--', 'cmp', '-s', c, theirs]).status === 0,
        );
        if (!ok) throw new Error(`${theirs} is not the fake in ${side.agent.kind}'s namespace: refusing to go on`);
      }
      const fs = spawnSync('nsenter', [
        '-t',
        pid,
        '--mount',
        '--',
        'sh',
        '-c',
        'stat -f -c %T /sys/devices/system/cpu /sys/devices/system/memory /root /home',
      ]);
      const types = fs.stdout.toString().trim().split('\n');
      if (fs.status !== 0 || types.length !== 4 || types.some((t) => t !== 'tmpfs')) {
        throw new Error(`the fake trees are not in place in ${side.agent.kind}'s namespace: refusing to go on`);
      }
    }
  }

  configure(config: StubConfig): void {
    const { chpasswd = 'stub', ...vars } = config;
    writeFileSync(
      join(this.dir, 'config'),
      Object.entries(vars)
        .map(([k, v]) => `${k}=${String(v)}\n`)
        .join(''),
    );
    const link = join(this.dir, 'bin/chpasswd');
    if (existsSync(link) || isSymlink(link)) unlinkSync(link);
    if (chpasswd === 'stub') symlinkSync('../stub', link);
    if (chpasswd === 'not-executable') symlinkSync('../noexec', link);
  }

  /** Sends the request to one agent, then guest-sync; the replies before the sync's and what the stubs logged. */
  async send(kind: AgentKind, request: object | string): Promise<Outcome> {
    this.verify();
    for (const f of readdirSync(this.dir)) if (f.startsWith('stdin.')) rmSync(join(this.dir, f));
    writeFileSync(join(this.dir, 'log'), '');
    const id = this.syncId++;
    const client = this.sides[kind].client;
    client.send(typeof request === 'string' ? request : JSON.stringify(request));
    client.send(JSON.stringify({ execute: 'guest-sync', arguments: { id } }));
    const replies: string[] = [];
    for (let line = await client.line(); line !== `{"return": ${id}}`; line = await client.line()) replies.push(line);
    const calls = readFileSync(join(this.dir, 'log'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l, i): StubCall => {
        const parts = l.split('|');
        const field = (k: string): string => parts.find((p) => p.startsWith(`${k}=`))!.slice(k.length + 1);
        const stdin = readFileSync(join(this.dir, `stdin.${i}`), 'latin1');
        return {
          argv: parts.filter((p) => !/^(session|io)=/.test(p)).map((p) => p.replace(this.dir, '$DIR')),
          session: field('session'),
          io: field('io'),
          ...(stdin === '' ? {} : { stdin }),
        };
      });
    return { replies: replies.map((r) => r.replaceAll(this.dir, '$DIR')), calls };
  }

  async stop(): Promise<void> {
    for (const side of Object.values(this.sides)) side.client.close();
    await Promise.all([
      this.sides.quiesce.agent.stop(),
      // A frozen reference thaws every mount of this machine when it stops cleanly: never let it.
      this.frozen ? this.sides['qemu-ga'].agent.kill() : this.sides['qemu-ga'].agent.stop(),
    ]);
    await this.ns.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function isSymlink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

function readNs(pid: string): string {
  return readlinkSync(`/proc/${pid}/ns/mnt`);
}

/** One entry of a tree snapshot: type, mode, owner and contents (or link target). */
export interface Entry {
  readonly path: string;
  readonly type: 'dir' | 'file' | 'link';
  readonly mode: string;
  readonly owner: string;
  readonly content?: string;
}

/** Everything under `root` (a host path), sorted, for comparing what two agents left behind. */
export function snapshot(root: string): Entry[] {
  const out: Entry[] = [];
  const walk = (rel: string): void => {
    const p = join(root, rel);
    const st = lstatSync(p);
    const base = { path: rel || '.', mode: (st.mode & 0o7777).toString(8), owner: `${st.uid}:${st.gid}` };
    if (st.isSymbolicLink()) out.push({ ...base, type: 'link', content: readlinkSync(p) });
    else if (st.isDirectory()) {
      out.push({ ...base, type: 'dir' });
      for (const name of readdirSync(p).sort()) walk(rel ? `${rel}/${name}` : name);
    } else out.push({ ...base, type: 'file', content: readFileSync(p).toString('latin1') });
  };
  if (existsSync(root)) walk('');
  return out;
}
