import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AgentKind, StartOptions } from '../../helpers/agents.js';
import { DANGEROUS_REFERENCE_COMMANDS } from '../differential/pair.js';
import { launch, withoutNumbers, type Side } from './system-rig.js';

export { SKIP_NO_QEMU_GA } from './file-rig.js';

/** What the reference keeps blocked while its guest-exec runs harmless programs. */
export const REF_BLOCKED = DANGEROUS_REFERENCE_COMMANDS.filter((c) => c !== 'guest-exec');

export interface ExecPairOptions {
  /** Working directory of both agents (relative program paths resolve there). */
  readonly cwd?: string;
  /** Blocked on both (-b). */
  readonly block?: readonly string[];
  /** Start both over a frozen-state marker; they are killed, never stopped. */
  readonly frozen?: boolean;
  readonly env?: NodeJS.ProcessEnv;
}

/** One agent's answers to a guest-exec and the status calls after it. */
export interface ExecRun {
  /** guest-exec's reply with the pid as 0. */
  readonly exec: string;
  /** The first status that said exited (or the error), then the status call after it. */
  readonly status?: string;
  readonly after?: string;
  /** Status replies before that one (all `{"exited": false}`). */
  readonly running: number;
}

/**
 * quiesce-agent and qemu-ga with guest-exec enabled (the reference's other
 * dangerous commands blocked), unix-listen, state dirs of their own, the same
 * working directory.
 */
export class ExecPair {
  private constructor(
    private readonly sides: Record<AgentKind, Side>,
    private readonly statedirs: string[],
    private readonly frozen: boolean,
  ) {}

  static async start(opts: ExecPairOptions = {}): Promise<ExecPair> {
    const sides: Partial<Record<AgentKind, Side>> = {};
    const statedirs: string[] = [];
    const block = opts.block ?? [];
    try {
      for (const kind of ['quiesce', 'qemu-ga'] as const) {
        const blocked = kind === 'quiesce' ? block : [...REF_BLOCKED, ...block];
        const args = [
          ...(kind === 'quiesce' ? ['--fsfreeze-include='] : []),
          ...(blocked.length > 0 ? ['-b', blocked.join(',')] : []),
        ];
        const start: StartOptions = {
          args,
          ...(opts.env ? { env: opts.env } : {}),
          ...(opts.cwd ? { wrap: ['sh', '-c', 'cd "$0" && exec "$@"', opts.cwd] } : {}),
        };
        if (opts.frozen) {
          start.statedir = mkdtempSync(join(tmpdir(), `${kind}-exec-frozen-`));
          statedirs.push(start.statedir);
          writeFileSync(join(start.statedir, 'qga.state.isfrozen'), '');
        }
        sides[kind] = await launch(kind, start);
      }
    } catch (err) {
      await stop(sides, opts.frozen ?? false);
      for (const d of statedirs) rmSync(d, { recursive: true, force: true });
      throw err;
    }
    return new ExecPair(sides as Record<AgentKind, Side>, statedirs, opts.frozen ?? false);
  }

  pid(kind: AgentKind): number {
    return this.sides[kind].agent.child.pid!;
  }

  async askOne(kind: AgentKind, request: object | string): Promise<string> {
    return this.sides[kind].client.request(request);
  }

  /** The same request to both (ours first). */
  async ask(request: object | string): Promise<{ ours: string; ref: string }> {
    return { ours: await this.askOne('quiesce', request), ref: await this.askOne('qemu-ga', request) };
  }

  /**
   * guest-exec on one agent, then guest-exec-status every 10 ms until it says
   * exited, then once more (the pid is forgotten by then).
   */
  async runOn(kind: AgentKind, args: unknown, timeoutMs = 20_000): Promise<ExecRun> {
    const exec = await this.askOne(kind, { execute: 'guest-exec', arguments: args });
    const m = /^\{"return": \{"pid": (\d+)\}\}$/.exec(exec);
    if (!m) return { exec, running: 0 };
    const status = { execute: 'guest-exec-status', arguments: { pid: Number(m[1]) } };
    const deadline = Date.now() + timeoutMs;
    let running = 0;
    for (;;) {
      const reply = await this.askOne(kind, status);
      if (reply !== '{"return": {"exited": false}}') {
        return { exec: withoutNumbers(exec), status: reply, after: await this.askOne(kind, status), running };
      }
      if (Date.now() > deadline) throw new Error(`${kind}: ${JSON.stringify(args)} did not exit`);
      running++;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /** runOn() for both. */
  async run(args: unknown): Promise<{ ours: ExecRun; ref: ExecRun }> {
    return { ours: await this.runOn('quiesce', args), ref: await this.runOn('qemu-ga', args) };
  }

  async stop(): Promise<void> {
    await stop(this.sides, this.frozen);
    for (const d of this.statedirs) rmSync(d, { recursive: true, force: true });
  }
}

async function stop(sides: Partial<Record<AgentKind, Side>>, frozen: boolean): Promise<void> {
  for (const side of Object.values(sides)) side.client.close();
  await Promise.all([
    sides.quiesce?.agent.stop(),
    // A frozen reference thaws every mount of this machine when it stops cleanly: never let it.
    frozen ? sides['qemu-ga']?.agent.kill() : sides['qemu-ga']?.agent.stop(),
  ]);
}
