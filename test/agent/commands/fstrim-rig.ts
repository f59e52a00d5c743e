/**
 * A root of the test's own for agents that run guest-fstrim: a tmpfs in a
 * private mount namespace holding copies of qemu-ga, node, the agent bundle
 * and their libraries, /proc, and loop mounts this rig made. Agents run
 * chrooted into it, so /proc/self/mountinfo shows them only mounts under that
 * root: the tmpfs and proc (major 0, which both agents skip) and the test's
 * loop devices. Before any request reaches an agent, its mount table is read
 * from outside and checked to hold nothing else: the reference's fstrim walks
 * every mount it sees and must never touch one of this machine's.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { AGENT_BUNDLE, QEMU_GA, haveQemuGa, isRoot, type AgentKind } from '../../helpers/agents.js';
import { runIn, startMountNamespace, type MountNamespace } from '../../helpers/loop-mounts.js';
import { LineClient } from './file-rig.js';

const ADDON = join(dirname(AGENT_BUNDLE), 'quiesce-freeze.node');

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Why the fstrim rig cannot run here, or false. */
export function trimRootSkipReason(): string | false {
  if (!haveQemuGa()) return 'needs the reference agent /usr/sbin/qemu-ga (apt-get install qemu-guest-agent)';
  if (!isRoot()) return 'needs root: a mount namespace, a chroot and loop devices';
  if (!existsSync('/dev/loop-control')) return 'needs loop devices (/dev/loop-control)';
  for (const cmd of ['unshare', 'nsenter', 'chroot', 'losetup', 'mkfs.ext4', 'truncate', 'ldd', 'mknod']) {
    if (!have(cmd)) return `needs ${cmd}`;
  }
  if (!existsSync(AGENT_BUNDLE)) return `needs the agent bundle ${AGENT_BUNDLE} (npm run bundle -w quiesce-agent)`;
  return false;
}

function must(r: ReturnType<typeof runIn>, what: string): string {
  if (r.status !== 0) throw new Error(`${what} failed (${r.status ?? r.signal}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** The shared libraries a program loads (ldd), the dynamic loader included. */
function libraries(program: string): string[] {
  const out = must(runIn([], 'ldd', [program]), `ldd ${program}`);
  return [...out.matchAll(/(\/\S+) \(0x/g)].map((m) => m[1]!);
}

/** "major:minor" of a block device node. */
function deviceNumber(path: string): string {
  const out = must(runIn([], 'stat', ['-L', '-c', '%t:%T', path]), `stat ${path}`).trim();
  const [maj, min] = out.split(':').map((h) => parseInt(h, 16));
  return `${maj}:${min}`;
}

/** The mounts a process sees that are neither major 0 (skipped by both agents) nor one of `allowed`. */
export function foreignMounts(pid: number, allowed: ReadonlySet<string>): string[] {
  const text = readFileSync(`/proc/${pid}/mountinfo`, 'utf8');
  const bad: string[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const dev = fields[2]!;
    const type = line.slice(line.indexOf(' - ') + 3).split(' ')[0];
    if (dev.startsWith('0:') && type !== 'btrfs') continue;
    if (allowed.has(dev)) continue;
    bad.push(line);
  }
  return bad;
}

export interface ChrootAgent {
  readonly kind: AgentKind;
  readonly pid: number;
  readonly statedir: string;
  readonly client: LineClient;
  /** Throws unless the agent sees only this rig's mounts (and major-0 ones). */
  assertSafe(): void;
  /** Sends a request after assertSafe(); the reply line. */
  ask(request: object | string): Promise<string>;
  /** SIGKILL and wait (a frozen reference must never thaw on its way out). */
  kill(): Promise<void>;
  /** SIGTERM (SIGKILL after 3 s) and wait. */
  stop(): Promise<void>;
}

export interface StartInRoot {
  readonly args?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  /** Start over a frozen-state marker (frozen mode without freezing anything). */
  readonly frozen?: boolean;
}

/** Mountpoints inside the root (as the agents see them). */
export const MOUNTS = {
  /** ext4 on a loop device over a file on the host's disk: FITRIM works. */
  discard: '/mnt/discard',
  /** ext4 on a loop device over a ramfs file (no fallocate, so no discard): EOPNOTSUPP. */
  noDiscard: '/mnt/no-discard',
  /** ext4 mounted ro,noload: FITRIM fails with EROFS. */
  readOnly: '/mnt/read-only',
  /** ext4 mounted under a tmpfs mounted over its parent later: opening it fails. */
  shadowed: '/mnt/shadow/inner',
  /** A tmpfs: not device-backed, so not in either agent's list. */
  tmpfs: '/mnt/tmpfs',
} as const;

export class TrimRoot {
  private readonly agents: ChrootAgent[] = [];
  private seq = 0;

  private constructor(
    private readonly ns: MountNamespace,
    /** Host directory holding the images and the root's mountpoint. */
    private readonly dir: string,
    /** Where the tmpfs root is mounted (in the namespace). */
    readonly root: string,
    private readonly loops: string[],
    /** major:minor of every loop device this rig made. */
    readonly devices: ReadonlySet<string>,
    private readonly discardDevice: string,
  ) {}

  static create(): TrimRoot {
    const dir = mkdtempSync(join(tmpdir(), 'quiesce-fstrim-'));
    const root = join(dir, 'root');
    mkdirSync(root);
    let ns: MountNamespace | undefined;
    const loops: string[] = [];
    try {
      ns = startMountNamespace();
      const files = [QEMU_GA, process.execPath, AGENT_BUNDLE, ...(existsSync(ADDON) ? [ADDON] : [])];
      const libs = new Set([...libraries(QEMU_GA), ...libraries(process.execPath)]);
      must(
        runIn(ns.wrap, 'sh', [
          '-c',
          `set -e
R="$1"; shift
mount -t tmpfs -o size=1g,mode=755 quiesce-fstrim-root "$R"
for f in "$@"; do cp -L --parents "$f" "$R"; done
mkdir -p "$R/proc" "$R/dev" "$R/tmp" "$R/mnt"
mount -t proc proc "$R/proc"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/urandom" c 1 9`,
          'sh',
          root,
          ...files,
          ...libs,
        ]),
        'building the root',
      );
      const image = (name: string): string => {
        const path = join(dir, `${name}.img`);
        must(runIn([], 'truncate', ['-s', '64M', path]), 'truncate');
        must(runIn([], 'mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', path]), 'mkfs.ext4');
        const dev = must(runIn([], 'losetup', ['--find', '--show', path]), 'losetup').trim();
        loops.push(dev);
        return dev;
      };
      const discard = image('discard');
      const readOnly = image('read-only');
      const shadowed = image('shadowed');
      // The ramfs (and its image) live only in the namespace; the loop device over it is made there.
      const ramDev = must(
        runIn(ns.wrap, 'sh', [
          '-c',
          `set -e
mkdir -p "$1"; mount -t ramfs quiesce-fstrim-ram "$1"
truncate -s 64M "$1/img"; mkfs.ext4 -q -F -E nodiscard "$1/img"
losetup --find --show "$1/img"`,
          'sh',
          join(dir, 'ram'),
        ]),
        'the ramfs-backed loop device',
      ).trim();
      loops.push(ramDev);
      const r = (p: string) => join(root, p);
      must(
        runIn(ns.wrap, 'sh', [
          '-c',
          `set -e
mkdir -p "$1" "$3" "$5" "$7" "$9"
mount "$2" "$1"
mount "$4" "$3"
mount -o ro,noload "$6" "$5"
mount "$8" "$7"
mount -t tmpfs quiesce-fstrim-shadow "$(dirname "$7")"
mount -t tmpfs quiesce-fstrim-tmpfs "$9"`,
          'sh',
          r(MOUNTS.discard),
          discard,
          r(MOUNTS.noDiscard),
          ramDev,
          r(MOUNTS.readOnly),
          readOnly,
          r(MOUNTS.shadowed),
          shadowed,
          r(MOUNTS.tmpfs),
        ]),
        'mounting the test filesystems',
      );
      return new TrimRoot(ns, dir, root, loops, new Set(loops.map(deviceNumber)), discard);
    } catch (err) {
      ns?.stop();
      for (const dev of loops) spawnSync('losetup', ['-d', dev], { stdio: 'ignore' });
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Mounts the discard filesystem again: ext4 forgets which groups it trimmed, so the next FITRIM trims them again. */
  remountDiscard(): void {
    const mnt = join(this.root, MOUNTS.discard);
    must(runIn(this.ns.wrap, 'sh', ['-c', 'umount "$1" && mount "$2" "$1"', 'sh', mnt, this.discardDevice]), 'remount');
  }

  /** An agent chrooted into the root, with a state dir of its own there, and a connection to it. */
  async start(kind: AgentKind, opts: StartInRoot = {}): Promise<ChrootAgent> {
    const statedir = `/state-${kind}-${++this.seq}`;
    const hostState = join(this.root, statedir);
    must(
      runIn(this.ns.wrap, 'sh', [
        '-c',
        `mkdir -m 700 "$1"${opts.frozen ? ' && : > "$1/qga.state.isfrozen"' : ''}`,
        'sh',
        hostState,
      ]),
      'state dir',
    );
    const socket = `${statedir}/qga.sock`;
    const common = ['-m', 'unix-listen', '-p', socket, '-t', statedir, '-f', `${statedir}/pid`, ...(opts.args ?? [])];
    const argv = kind === 'quiesce' ? [process.execPath, AGENT_BUNDLE, ...common] : [QEMU_GA, ...common];
    const child: ChildProcess = spawn(this.ns.wrap[0]!, [...this.ns.wrap.slice(1), 'chroot', this.root, ...argv], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { QGA_CONF: '/no-such.conf', PATH: process.env['PATH'], ...opts.env },
    });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exited = once(child, 'exit');
    const running = () => child.exitCode === null && child.signalCode === null;
    const kill = async () => {
      if (running()) {
        child.kill('SIGKILL');
        await exited;
      }
    };
    const pid = child.pid!;
    // nsenter and chroot exec in place: the pid is the agent's, and its root is the rig's.
    const outside = `/proc/${pid}/root${socket}`;
    let client: LineClient | undefined;
    for (let i = 0; i < 400 && running() && !client; i++) {
      try {
        client = await LineClient.open(outside);
      } catch {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    if (!client) {
      await kill();
      throw new Error(`${kind} did not listen in the fstrim root: ${err}`);
    }
    const c = client;
    const agent: ChrootAgent = {
      kind,
      pid,
      statedir,
      client: c,
      assertSafe: () => {
        const bad = foreignMounts(pid, this.devices);
        if (bad.length > 0) throw new Error(`${kind} sees mounts that are not the test's:\n${bad.join('\n')}`);
      },
      ask: (request) => {
        agent.assertSafe();
        return c.request(request);
      },
      kill: async () => {
        c.close();
        await kill();
      },
      stop: async () => {
        c.close();
        if (running()) {
          child.kill('SIGTERM');
          const t = setTimeout(() => child.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(t);
        }
      },
    };
    this.agents.push(agent);
    return agent;
  }

  /** Kills every agent, ends the namespace (its mounts go with it), detaches the loop devices, deletes the files. */
  async close(): Promise<void> {
    await Promise.all(this.agents.splice(0).map((a) => a.kill()));
    this.ns.stop();
    // The namespace's mounts are released once its last process is gone.
    for (let i = 0; i < 100 && existsSync(`/proc/${this.ns.pid}`); i++) await new Promise((r) => setTimeout(r, 20));
    for (const dev of this.loops) spawnSync('losetup', ['-d', dev], { stdio: 'ignore' });
    rmSync(this.dir, { recursive: true, force: true });
  }
}
