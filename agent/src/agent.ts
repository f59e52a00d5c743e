import { readFileSync } from 'node:fs';
import type { AgentConfig } from './config/options.js';
import type { AgentContext } from './context.js';
import { commandFamilies } from './commands/index.js';
import { errorText } from './errno.js';
import { AgentLog, type AgentLogEvent } from './log.js';
import { Dispatcher, type Outcome } from './qapi/dispatcher.js';
import type { CommandFamily } from './qapi/types.js';
import type { MaybePromise } from './maybe-promise.js';
import type { QObject } from './protocol/index.js';
import { SerialQueue } from './serial-queue.js';

/** A request's outcome, and whether its reply gets the leading 0xFF (guest-sync-delimited). */
export interface Executed {
  readonly outcome: Outcome;
  readonly delimited: boolean;
}

/**
 * How long the bookkeeping a reply leaves behind (a thaw's held log lines and
 * its frozen-state marker) waits once the reply is written. Done at once, it
 * ran while the host was still receiving the reply and sending its next
 * request (`quiesce run` proves the thaw with guest-fsfreeze-status at once):
 * in the TCG test guest that made our thaw's round trip 1.19–1.26× qemu-ga's
 * at p75 against 1.05–1.12× with the wait, and the status right after it
 * 1.5–2.6 ms against 0.6–1.3 ms (interleaved, 60 samples each, four runs).
 */
export const AFTER_REPLY_DELAY_MS = 20;

export const VERSION: string = readVersion();

function readVersion(): string {
  // The bundle has it baked in; from sources it is read from package.json.
  if (typeof __QUIESCE_AGENT_VERSION__ === 'string') return __QUIESCE_AGENT_VERSION__;
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}
declare const __QUIESCE_AGENT_VERSION__: string | undefined;

/**
 * The agent without its transport: config, log, commands and the dispatcher.
 * Runs one command at a time, like the reference.
 */
export class Agent {
  readonly dispatcher: Dispatcher;
  readonly context: AgentContext;
  private readonly queue = new SerialQueue();
  private delimit = false;
  private readonly thawWaiters: (() => void)[] = [];
  private readonly afterReplyQueue: (() => void)[] = [];
  private afterReplyTimer: NodeJS.Timeout | undefined;

  private constructor(
    readonly config: AgentConfig,
    readonly logger: AgentLog,
    private readonly families: CommandFamily[],
    context: AgentContext,
  ) {
    this.context = context;
    this.dispatcher = new Dispatcher(
      families.flatMap((f) => f.commands),
      new Set(config.blockRpcs),
      config.allowRpcs ? new Set(config.allowRpcs) : undefined,
    );
  }

  static async create(config: AgentConfig, logger = new AgentLog(config.verbose, config.logfile)): Promise<Agent> {
    // Families need the context before the dispatcher (which needs their commands) exists.
    const self: { agent?: Agent } = {};
    // A family may find the agent frozen while being created (a frozen-state marker), before the dispatcher exists.
    let frozenAtStart = false;
    const ctx: AgentContext = {
      config,
      version: VERSION,
      log: logger.log,
      commandInfo: () => self.agent!.dispatcher.info(),
      isFrozen: () => (self.agent ? self.agent.dispatcher.isFrozen() : frozenAtStart),
      setFrozen: (frozen) => {
        if (self.agent) return self.agent.setFrozen(frozen);
        frozenAtStart = frozen;
        // Nothing may reach the disk from here on, not even the other families' start-up lines.
        if (frozen) logger.hold();
      },
      delimitResponse: () => {
        self.agent!.delimit = true;
      },
      afterReply: (fn) => self.agent!.afterReply(fn),
    };
    const families = await commandFamilies(ctx);
    self.agent = new Agent(config, logger, families, ctx);
    if (frozenAtStart) self.agent.setFrozen(true, true);
    return self.agent;
  }

  readonly log = (event: AgentLogEvent): void => this.logger.log(event);

  private setFrozen(frozen: boolean, atStart = false): void {
    if (frozen) this.logger.hold();
    this.dispatcher.setFrozen(frozen, atStart);
    if (frozen) return;
    // The held lines go out once the thaw's reply is written: under TCG their write cost ~1 ms of
    // the frozen window's tail. A freeze queued right behind the thaw keeps them held.
    this.afterReply(() => {
      if (!this.dispatcher.isFrozen()) this.logger.release();
    });
    for (const fn of this.thawWaiters.splice(0)) fn();
  }

  /** Runs `fn` now, or after the thaw when frozen (pidfile creation waits like the reference's). */
  whenThawed(fn: () => void): void {
    if (this.dispatcher.isFrozen()) this.thawWaiters.push(fn);
    else fn();
  }

  /**
   * Runs one request after every earlier one has finished: at once when none
   * is left, and then a synchronous command's result comes back synchronously.
   */
  execute(request: QObject): MaybePromise<Executed> {
    return this.queue.run(() => {
      this.delimit = false;
      const outcome = this.dispatcher.dispatch(request, (command, args) => {
        this.log({ kind: 'request', command: command.name });
        return command.run(args, this.context);
      });
      return outcome instanceof Promise ? outcome.then((o) => this.executed(o)) : this.executed(outcome);
    });
  }

  private executed(outcome: Outcome): Executed {
    const delimited = this.delimit;
    this.delimit = false;
    return { outcome, delimited };
  }

  /**
   * Runs `fn` AFTER_REPLY_DELAY_MS after the command running now, so after
   * its reply is written (in the command's turn or the microtasks after it)
   * and off the frozen window's tail; close() runs what is still waiting.
   */
  private afterReply(fn: () => void): void {
    if (this.afterReplyQueue.push(fn) > 1) return;
    // The timer itself is made once this turn ends, which for a synchronous command is after its
    // reply was written: setTimeout measured ~0.2 ms of the thaw's tail in the TCG guest.
    // (A promise reaction: queueMicrotask's async-hooks bookkeeping cost as much as what it defers.)
    void Promise.resolve().then(() => {
      if (this.afterReplyQueue.length > 0 && this.afterReplyTimer === undefined)
        this.afterReplyTimer = setTimeout(() => this.runAfterReply(), AFTER_REPLY_DELAY_MS);
    });
  }

  private runAfterReply(): void {
    clearTimeout(this.afterReplyTimer);
    this.afterReplyTimer = undefined;
    for (const f of this.afterReplyQueue.splice(0)) f();
  }

  /**
   * First step of a stop, before the transport closes: families undo what
   * must not outlive the agent (fsfreeze thaws, so nothing after it can block
   * on a frozen filesystem).
   */
  async prepareStop(): Promise<void> {
    for (const f of this.families) await f.prepareStop?.();
  }

  /**
   * After a bug (an uncaught exception), before the process ends: nothing
   * asynchronous can be trusted any more, so the families undo synchronously
   * what must not outlive the agent (fsfreeze thaws), then the error is logged.
   */
  crash(err: unknown): void {
    for (const f of this.families) {
      try {
        f.crash?.();
      } catch (e) {
        this.log({ kind: 'warning', message: `while ending after an internal error: ${errorText(e)}` });
      }
    }
    this.log({ kind: 'internal-error', error: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    // The held lines go out if the thaw ended frozen mode (as after any thaw, even one whose FITHAW failed).
    this.runAfterReply();
    this.logger.close();
  }

  async close(): Promise<void> {
    await this.queue.idle();
    for (const f of this.families) await f.close?.();
    // What waits for a reply runs now, after the families' own thaw: no held line is lost.
    this.runAfterReply();
    this.logger.close();
  }
}
