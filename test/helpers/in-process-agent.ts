import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../agent/src/agent.js';
import type { AgentConfig } from '../../agent/src/config/options.js';
import { AgentLog } from '../../agent/src/log.js';
import { Session, type Peer } from '../../agent/src/session.js';

/** The commands every in-process test may run: nothing here touches the machine. */
export const SAFE_COMMANDS = ['guest-sync-delimited', 'guest-sync', 'guest-ping', 'guest-info'] as const;

/** A resolved config for an agent that never opens a transport, with its own temporary state dir. */
export function testConfig(overrides: Partial<AgentConfig> = {}): AgentConfig {
  const statedir = overrides.statedir ?? mkdtempSync(join(tmpdir(), 'quiesce-inproc-'));
  return {
    method: 'unix-listen',
    path: join(statedir, 'unused.sock'),
    logfile: undefined,
    pidfile: join(statedir, 'pid'),
    fsfreezeHook: undefined,
    statedir,
    verbose: false,
    daemonize: false,
    retryPath: false,
    blockRpcs: [],
    // Only the commands that cannot freeze, shut down or write anything are enabled by default.
    allowRpcs: [...SAFE_COMMANDS],
    ...overrides,
  };
}

/** A Peer that keeps every byte written to it. */
export class CollectingPeer implements Peer {
  private chunks: Buffer[] = [];
  pauses = 0;
  resumes = 0;

  async write(data: Buffer): Promise<void> {
    this.chunks.push(Buffer.from(data));
  }

  pause(): void {
    this.pauses++;
  }

  resume(): void {
    this.resumes++;
  }

  /** Everything written so far, and forgets it. */
  take(): Buffer {
    const all = Buffer.concat(this.chunks);
    this.chunks = [];
    return all;
  }
}

/** An Agent with a Session on a collecting peer: feed bytes, read reply lines. */
export class InProcessAgent {
  private constructor(
    readonly agent: Agent,
    readonly config: AgentConfig,
    private readonly ownStatedir: boolean,
  ) {}

  static async create(overrides: Partial<AgentConfig> = {}): Promise<InProcessAgent> {
    const config = testConfig(overrides);
    const agent = await Agent.create(config, new AgentLog(false, undefined));
    return new InProcessAgent(agent, config, overrides.statedir === undefined);
  }

  /** A new session (a new client), with its own parser. */
  session(): { session: Session; peer: CollectingPeer } {
    const peer = new CollectingPeer();
    return { session: new Session(this.agent, peer), peer };
  }

  /**
   * Feeds the chunks into a fresh session, waits until everything parsed is
   * answered and returns the raw output (latin1, so 0xFF stays one char).
   */
  async run(...chunks: (Buffer | string)[]): Promise<string> {
    const { session, peer } = this.session();
    for (const c of chunks) session.feed(typeof c === 'string' ? Buffer.from(c, 'latin1') : c);
    await session.idle();
    return peer.take().toString('latin1');
  }

  /** Like `run`, split into reply lines (newlines removed). */
  async lines(...chunks: (Buffer | string)[]): Promise<string[]> {
    const out = await this.run(...chunks);
    return out.split('\n').filter((l) => l !== '');
  }

  async close(): Promise<void> {
    await this.agent.close();
    if (this.ownStatedir) rmSync(this.config.statedir, { recursive: true, force: true });
  }
}

/** `{"error": {"class": "GenericError", "desc": D}}` as both agents write it. */
export function genericError(desc: string): string {
  return `{"error": {"class": "GenericError", "desc": ${JSON.stringify(desc)}}}`;
}
