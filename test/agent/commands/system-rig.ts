import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  AGENT_BUNDLE,
  isRoot,
  QEMU_GA,
  type AgentKind,
  type RunningAgent,
  type StartOptions,
} from '../../helpers/agents.js';
import { DANGEROUS_REFERENCE_COMMANDS } from '../differential/pair.js';
import { LineClient } from './file-rig.js';

export { SKIP_NO_QEMU_GA } from './file-rig.js';

/** The read-only system commands quiesce-agent answers like qemu-ga 7.2. */
export const SYSTEM_COMMANDS = [
  'guest-get-time',
  'guest-get-host-name',
  'guest-get-osinfo',
  'guest-get-timezone',
  'guest-get-users',
  'guest-get-vcpus',
  'guest-get-memory-blocks',
  'guest-get-memory-block-info',
  'guest-get-disks',
  'guest-get-diskstats',
  'guest-get-cpustats',
  'guest-get-devices',
] as const;

export interface PairOptions {
  /** For both agents. */
  readonly wrap?: readonly string[];
  readonly env?: NodeJS.ProcessEnv;
  readonly args?: readonly string[];
  /** Start both over a frozen-state marker (frozen mode without freezing anything). */
  readonly frozen?: boolean;
}

export interface Side {
  readonly agent: RunningAgent;
  readonly client: LineClient;
}

/**
 * startAgent() without its synchronous readiness probe (a python3 process
 * per try, which blocks the event loop: twenty agents started together
 * would wait on each other). The first connection that succeeds is kept.
 */
export async function launch(kind: AgentKind, opts: StartOptions = {}): Promise<Side> {
  const statedir = opts.statedir ?? mkdtempSync(join(tmpdir(), `${kind}-`));
  const socket = join(statedir, 'qga.sock');
  const common = ['-m', 'unix-listen', '-p', socket, '-t', statedir, '-f', join(statedir, 'pid'), ...(opts.args ?? [])];
  const [agentCmd, agentArgs] = kind === 'quiesce' ? [process.execPath, [AGENT_BUNDLE, ...common]] : [QEMU_GA, common];
  const [cmd, ...args] = [...(opts.wrap ?? []), agentCmd, ...agentArgs];
  const child = spawn(cmd!, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { QGA_CONF: join(statedir, 'no-such.conf'), PATH: process.env['PATH'], ...opts.env },
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const running = (): boolean => child.exitCode === null && child.signalCode === null;
  const agent: RunningAgent = {
    kind,
    socket,
    statedir,
    child,
    stderr: () => err,
    stop: async () => {
      if (running()) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      if (!opts.statedir) rmSync(statedir, { recursive: true, force: true });
    },
    kill: async () => {
      if (running()) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
  for (let i = 0; i < 400 && running(); i++) {
    try {
      return { agent, client: await LineClient.open(socket) };
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  const why = running() ? 'did not listen' : 'exited at start';
  await agent.kill();
  if (!opts.statedir) rmSync(statedir, { recursive: true, force: true });
  throw new Error(`${kind} ${why} on ${socket}: ${err}`);
}

/**
 * quiesce-agent and qemu-ga started the same way (unix-listen, state dirs of
 * their own), one connection to each. The reference has its dangerous
 * commands blocked, and so has ours, which also freezes nothing (empty include list).
 */
export class SystemPair {
  private constructor(
    private readonly sides: Record<AgentKind, Side>,
    private readonly statedirs: string[],
    private readonly frozen: boolean,
  ) {}

  static async start(opts: PairOptions = {}): Promise<SystemPair> {
    const statedirs: string[] = [];
    const sides: Partial<Record<AgentKind, Side>> = {};
    try {
      for (const kind of ['quiesce', 'qemu-ga'] as const) {
        const args =
          kind === 'quiesce'
            ? [...(opts.args ?? []), '--fsfreeze-include=', '-b', DANGEROUS_REFERENCE_COMMANDS.join(',')]
            : [...(opts.args ?? []), '-b', DANGEROUS_REFERENCE_COMMANDS.join(',')];
        const start: StartOptions = { wrap: opts.wrap, env: opts.env, args };
        if (opts.frozen) {
          start.statedir = mkdtempSync(join(tmpdir(), `${kind}-frozen-`));
          statedirs.push(start.statedir);
          writeFileSync(join(start.statedir, 'qga.state.isfrozen'), '');
        }
        sides[kind] = await launch(kind, start);
      }
    } catch (err) {
      await stopSides(sides, opts.frozen ?? false);
      for (const d of statedirs) rmSync(d, { recursive: true, force: true });
      throw err;
    }
    return new SystemPair(sides as Record<AgentKind, Side>, statedirs, opts.frozen ?? false);
  }

  /** One request to one agent; the reply line. */
  async askOne(kind: AgentKind, request: object | string): Promise<string> {
    return this.sides[kind].client.request(request);
  }

  /** The same request to both (ours first). */
  async ask(request: object | string): Promise<{ ours: string; ref: string }> {
    const ours = await this.askOne('quiesce', request);
    const ref = await this.askOne('qemu-ga', request);
    return { ours, ref };
  }

  /**
   * The same request to both until the replies agree (at most `tries`
   * rounds): for values that are stable but can change under the test
   * (a loop device another test sets up, a CPU going offline).
   */
  async askStable(request: object | string, tries = 3): Promise<{ ours: string; ref: string }> {
    let r = await this.ask(request);
    for (let i = 1; i < tries && r.ours !== r.ref; i++) r = await this.ask(request);
    return r;
  }

  async stop(): Promise<void> {
    await stopSides(this.sides, this.frozen);
    for (const d of this.statedirs) rmSync(d, { recursive: true, force: true });
  }
}

async function stopSides(sides: Partial<Record<AgentKind, Side>>, frozen: boolean): Promise<void> {
  for (const side of Object.values(sides)) side.client.close();
  await Promise.all([
    sides.quiesce?.agent.stop(),
    // A frozen reference thaws every mount of this machine when it stops cleanly: never let it.
    frozen ? sides['qemu-ga']?.agent.kill() : sides['qemu-ga']?.agent.stop(),
  ]);
}

export function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`]);
  return r.status === 0 ? r.stdout.toString().trim() : undefined;
}

/** The reply with every number replaced by 0: members, their order and the shape stay. */
export function withoutNumbers(reply: string): string {
  return reply.replace(/(?<=: |\[|, )-?\d+(\.\d+)?(e[+-]?\d+)?/g, '0');
}

/**
 * A mount and UTS namespace held open by a sleeping process, for agents to
 * enter (`wrap`). `setup` runs in it first (sh, set -e); `run` runs more
 * later. Nothing done in it is seen outside.
 */
export class Namespace {
  private constructor(
    private readonly holder: ChildProcess,
    readonly wrap: readonly string[],
  ) {}

  static skipReason(): string | false {
    if (!isRoot()) return 'needs root for a mount namespace';
    for (const cmd of ['unshare', 'nsenter', 'mount']) if (!which(cmd)) return `needs ${cmd} (util-linux)`;
    return false;
  }

  static async create(setup: string): Promise<Namespace> {
    const holder = spawn(
      'unshare',
      ['--mount', '--uts', '--propagation', 'private', 'sh', '-c', `set -e\n${setup}\necho ready\nexec sleep 100000`],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    holder.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    holder.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exited = once(holder, 'exit');
    for (let i = 0; i < 200 && !out.includes('ready'); i++) {
      await Promise.race([new Promise((r) => setTimeout(r, 25)), exited]);
      if (holder.exitCode !== null) break;
    }
    if (!out.includes('ready')) {
      holder.kill('SIGKILL');
      throw new Error(`namespace set-up failed: ${err.trim()}`);
    }
    return new Namespace(holder, [which('nsenter')!, '-t', String(holder.pid), '--mount', '--uts', '--']);
  }

  /** Runs a shell script inside the namespace; throws with its stderr when it fails. */
  run(script: string, ...args: string[]): void {
    const r = spawnSync(this.wrap[0]!, [...this.wrap.slice(1), 'sh', '-c', `set -e\n${script}`, 'sh', ...args]);
    if (r.status !== 0) throw new Error(`in namespace: ${script}: ${r.stderr.toString().trim()}`);
  }

  /** Sets the namespace's host name to any bytes (hostname(1) refuses most), through /proc. */
  setHostname(name: Buffer, scratch: string): void {
    writeFileSync(scratch, name);
    this.run('cat "$1" > /proc/sys/kernel/hostname', scratch);
  }

  async close(): Promise<void> {
    if (this.holder.exitCode === null && this.holder.signalCode === null) {
      this.holder.kill('SIGKILL');
      await once(this.holder, 'exit');
    }
  }
}

/** A temporary directory removed by `remove()`. */
export function tempDir(prefix: string): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
