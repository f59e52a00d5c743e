import { setTimeout as sleep } from 'node:timers/promises';
import type { ExecOptions } from '../../src/guest/types.js';
import { ScriptedAgent, type Step } from './scripted-agent.js';

/** One moment of a test: what happened (`a:guest-fsfreeze-thaw`, `journal-write:a`), and when. */
export interface Mark {
  readonly what: string;
  /** performance.now() */
  readonly at: number;
}

/** A shared, ordered record of what happened when, across agents, journals and callbacks. */
export class Timeline {
  readonly marks: Mark[] = [];

  mark(what: string): void {
    this.marks.push({ what, at: performance.now() });
  }

  /** The marks' names in order, optionally only those matching. */
  order(match?: RegExp): string[] {
    return this.marks.map((m) => m.what).filter((w) => !match || match.test(w));
  }

  /** Index of the first mark named `what` (-1 when it never happened). */
  index(what: string): number {
    return this.marks.findIndex((m) => m.what === what);
  }

  /** When `what` first happened; throws when it never did (a test's premise failed). */
  at(what: string): number {
    const m = this.marks.find((x) => x.what === what);
    if (!m) throw new Error(`never happened: ${what} (timeline: ${this.order().join(', ')})`);
    return m.at;
  }

  has(what: string): boolean {
    return this.index(what) >= 0;
  }
}

/** One request as the agent received it. */
export interface RecordedCall {
  readonly command: string;
  readonly args: Record<string, unknown> | undefined;
  readonly timeoutMs: number | undefined;
  readonly startedAt: number;
  endedAt?: number;
  /** 'reply' or the error's code. */
  outcome?: string;
}

export interface RecordingOptions {
  /** Prefix of this agent's timeline marks (the guest's name). */
  readonly name?: string;
  readonly timeline?: Timeline;
  /** Milliseconds before a command answers; a list is used one per call, the last repeating. */
  readonly delays?: Record<string, number | number[]>;
  /** Runs (and is awaited) when a request arrives, before it is answered: observe, trigger, gate. */
  readonly before?: (command: string, args: Record<string, unknown> | undefined) => unknown;
}

/**
 * The scripted agent (test/helpers/scripted-agent.ts) with what workflow tests
 * need on top: arguments and timeouts of every call, per-call delays, a hook
 * that runs when a request arrives, and marks on a shared timeline
 * (`NAME:COMMAND` when sent, `NAME:COMMAND:done` when answered, `NAME:close`).
 */
export class RecordingAgent extends ScriptedAgent {
  readonly received: RecordedCall[] = [];
  private readonly delays: Record<string, number[]>;

  constructor(
    script: Record<string, Step[]>,
    private readonly o: RecordingOptions = {},
  ) {
    super(script);
    this.delays = Object.fromEntries(
      Object.entries(o.delays ?? {}).map(([k, v]) => [k, Array.isArray(v) ? [...v] : [v]]),
    );
  }

  private tag(what: string): string {
    return this.o.name ? `${this.o.name}:${what}` : what;
  }

  /** The commands received, in order (optionally only those matching). */
  commands(match?: RegExp): string[] {
    return this.received.map((c) => c.command).filter((c) => !match || match.test(c));
  }

  /** The first call of `command` (throws when there was none). */
  call(command: string): RecordedCall {
    const c = this.received.find((x) => x.command === command);
    if (!c) throw new Error(`${command} was never sent (sent: ${this.commands().join(', ')})`);
    return c;
  }

  override async execute(command: string, args?: Record<string, unknown>, opts: ExecOptions = {}): Promise<unknown> {
    const call: RecordedCall = { command, args, timeoutMs: opts.timeoutMs, startedAt: performance.now() };
    this.received.push(call);
    this.o.timeline?.mark(this.tag(command));
    try {
      await this.o.before?.(command, args);
      const queue = this.delays[command];
      const ms = queue?.length ? (queue.length > 1 ? queue.shift()! : queue[0]!) : 0;
      if (ms > 0) await sleep(ms);
      const v = await super.execute(command, args, opts);
      call.outcome = 'reply';
      return v;
    } catch (err) {
      call.outcome = (err as { code?: string }).code ?? 'error';
      throw err;
    } finally {
      call.endedAt = performance.now();
      this.o.timeline?.mark(this.tag(`${command}:done`));
    }
  }

  override async close(): Promise<void> {
    this.o.timeline?.mark(this.tag('close'));
    await super.close();
  }
}

/** A guest-info reply: every listed command enabled, the `disabled` ones registered but disabled. */
export function infoReply(enabled: readonly string[], disabled: readonly string[] = [], version = 'scripted'): Step {
  return {
    reply: {
      version,
      supported_commands: [
        ...enabled.map((name) => ({ name, enabled: true, 'success-response': true })),
        ...disabled.map((name) => ({ name, enabled: false, 'success-response': true })),
      ],
    },
  };
}

/** A recording agent that takes concurrent commands, as libvirt's connector does (GuestAgent.concurrent). */
export class ConcurrentRecordingAgent extends RecordingAgent {
  readonly concurrent = true;
}
