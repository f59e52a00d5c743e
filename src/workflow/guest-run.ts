import pRetry from 'p-retry';
import { AgentError, QuiesceError } from '../errors.js';
import {
  hasWatchdog,
  isEnabled,
  parseCapabilities,
  WATCHDOG_SET_LIMIT,
  type Capabilities,
} from '../guest/capabilities.js';
import { guestAgent } from '../guest/connect.js';
import { acquireGuestLock, type HeldLock } from '../guest/lock.js';
import type { GuestAgent } from '../guest/types.js';
import type { Log } from '../log/logger.js';
import { runCommand } from './command.js';
import { snapshotProvider, type SnapshotProvider, type SnapshotTaken } from '../snapshot/index.js';
import type { GuestPlan, PlannedCommand } from './plan.js';
import type { GuestResult } from './results.js';
import type { SignalGuard } from './signals.js';

/** How a run reaches guests (tests substitute connectors). */
export type AgentFactory = (g: GuestPlan, log: Log) => GuestAgent;

export const defaultAgentFactory: AgentFactory = (g, log) =>
  guestAgent(g.connector, { maxReplyBytes: g.maxReplyBytes, onEvent: log });

/** Seconds the agent's own watchdog waits beyond our budget before thawing by itself. */
export const WATCHDOG_MARGIN_S = 30;

/** One guest's part of a run: its agent, lock and result. */
export class GuestRun {
  readonly result: GuestResult;
  agent: GuestAgent | undefined;
  caps: Capabilities | undefined;
  private lock: HeldLock | undefined;
  private freezeSentAt: number | undefined;
  frozenAt: number | undefined;
  private taken: SnapshotTaken | undefined;
  private thawedAt: number | undefined;
  freezeAttempted = false;
  hooksRan = false;
  /** One per run: a provider keeps state from prepare to dispose (a QMP connection, its block jobs). */
  private readonly provider: SnapshotProvider;

  constructor(
    readonly plan: GuestPlan,
    unit: string,
    private readonly log: Log,
    private readonly factory: AgentFactory,
    private readonly lockWaitMs: number,
  ) {
    this.result = {
      guest: plan.name,
      address: plan.address,
      unit,
      ok: false,
      consistency: 'none',
      steps: [],
      errors: [],
    };
    this.provider = snapshotProvider(plan.snapshot);
  }

  /** Times a step into the result; returns its value or rethrows. */
  async step<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const startedAt = new Date().toISOString();
    const t0 = performance.now();
    this.log({ kind: 'step-start', guest: this.plan.name, step: name });
    try {
      const v = await fn();
      const durationMs = Math.round(performance.now() - t0);
      this.result.steps.push({ name, ok: true, startedAt, durationMs });
      this.log({ kind: 'step-end', guest: this.plan.name, step: name, durationMs, ok: true });
      return v;
    } catch (err) {
      const durationMs = Math.round(performance.now() - t0);
      const error = (err as Error).message;
      this.result.steps.push({ name, ok: false, startedAt, durationMs, error });
      this.result.errors.push(`${name}: ${error}`);
      this.log({ kind: 'step-end', guest: this.plan.name, step: name, durationMs, ok: false, error });
      throw err;
    }
  }

  /** A command step outside the frozen window (hooks, backup, verify); a non-zero exit is an error. */
  async command(name: string, c: PlannedCommand, signal?: AbortSignal): Promise<void> {
    await this.step(name, async () => {
      const r = await runCommand(c.argv, {
        timeoutMs: c.timeoutMs,
        guest: this.plan.name,
        step: name,
        log: this.log,
        ...(signal ? { signal } : {}),
      });
      if (!r.ok) throw new QuiesceError('STEP_FAILED', r.error ?? `${name} failed`, { guest: this.plan.name });
    });
  }

  /** Takes the snapshot through the guest's provider; what it leaves running is completed after the thaw. */
  async snapshot(signal: AbortSignal | undefined, inWindow: boolean): Promise<void> {
    await this.step('snapshot', async () => {
      const t0 = performance.now();
      this.taken = await this.provider.take({
        guest: this.plan.name,
        log: this.log,
        inWindow,
        ...(signal ? { signal } : {}),
      });
      this.result.snapshotMs = Math.round((performance.now() - t0) * 100) / 100;
      if (this.taken.files) this.result.snapshotFiles = [...this.taken.files];
    });
  }

  /** Outside the window: waits for what the snapshot left running (a block job copying); a signal ends the wait. */
  async completeSnapshot(signals: SignalGuard): Promise<void> {
    const complete = this.taken?.complete;
    if (!complete) return;
    const abort = new AbortController();
    signals.register(abort);
    try {
      await this.step('snapshot-complete', () => complete({ log: this.log, signal: abort.signal }));
    } finally {
      signals.unregister(abort);
    }
  }

  /** Lock the guest's channel, connect and sync, check the agent can freeze what the plan asks. */
  async connectAndCheck(): Promise<void> {
    const g = this.plan;
    await this.step('connect', async () => {
      this.lock = await acquireGuestLock(g.address, this.lockWaitMs);
      this.agent = this.factory(g, this.log);
      await this.agent.execute('guest-ping', undefined, { timeoutMs: g.timeouts.connectMs });
    });
    await this.step('preflight', async () => {
      const caps = parseCapabilities(await this.exec('guest-info'));
      this.caps = caps;
      // Status first: a frozen agent disables the freeze commands, and "already frozen" is the real news.
      if (isEnabled(caps, 'guest-fsfreeze-status')) {
        const status = await this.exec('guest-fsfreeze-status');
        if (status !== 'thawed') {
          throw new QuiesceError(
            'ALREADY_FROZEN',
            `the guest is already frozen (status ${String(status)}): another tool or a crashed run froze it; see 'quiesce recover'`,
            {
              guest: g.name,
            },
          );
        }
      }
      const freezeCommand = g.freeze === 'all' ? 'guest-fsfreeze-freeze' : 'guest-fsfreeze-freeze-list';
      for (const c of [freezeCommand, 'guest-fsfreeze-thaw', 'guest-fsfreeze-status']) {
        if (!isEnabled(caps, c)) {
          throw new QuiesceError(
            'COMMAND_UNAVAILABLE',
            `the agent (${caps.version}) has ${caps.commands.has(c) ? 'disabled' : 'no'} ${c}`,
            { guest: g.name },
          );
        }
      }
      if (g.freeze !== 'all' && isEnabled(caps, 'guest-get-fsinfo')) {
        // The reference silently ignores a listed path that is not a mount; catch it before freezing.
        const fsinfo = (await this.exec('guest-get-fsinfo')) as { mountpoint?: unknown }[];
        const mounted = new Set(fsinfo.map((f) => f.mountpoint));
        const missing = g.freeze.filter((m) => !mounted.has(m));
        if (missing.length) {
          throw new QuiesceError('CONFIG_MISMATCH', `not mounted in the guest: ${missing.join(', ')}`, {
            guest: g.name,
          });
        }
      }
    });
    // The provider's set-up (a QMP connection, target files) fails here, before hooks or a freeze.
    const prepare = this.provider.prepare?.bind(this.provider);
    if (prepare) await this.step('snapshot-prepare', () => prepare({ guest: g.name, log: this.log }));
    for (const [i, h] of g.preHooks.entries()) await this.command(`pre-hook ${i + 1}`, h);
    this.hooksRan = g.preHooks.length > 0;
  }

  exec(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown> {
    if (!this.agent) throw new QuiesceError('CHANNEL_GONE', 'not connected', { guest: this.plan.name });
    return this.agent.execute(command, args, { timeoutMs: timeoutMs ?? this.plan.timeouts.commandMs });
  }

  /** Arms the agent's own watchdog (quiesce-agent) so the guest thaws even if this process dies. */
  async armWatchdog(budgetMs: number): Promise<void> {
    if (!this.caps || !hasWatchdog(this.caps)) return;
    await this.exec(WATCHDOG_SET_LIMIT, { seconds: Math.ceil(budgetMs / 1000) + WATCHDOG_MARGIN_S });
  }

  /** Sends the freeze; the frozen window starts here. Counts fewer than asked are an error. */
  async freeze(): Promise<void> {
    const g = this.plan;
    await this.step('freeze', async () => {
      this.freezeAttempted = true;
      this.freezeSentAt = performance.now();
      const n = (await (g.freeze === 'all'
        ? this.exec('guest-fsfreeze-freeze', undefined, g.timeouts.freezeMs)
        : this.exec('guest-fsfreeze-freeze-list', { mountpoints: [...g.freeze] }, g.timeouts.freezeMs))) as number;
      this.frozenAt = performance.now();
      this.result.frozenFilesystems = n;
      this.result.freezeMs = Math.round((this.frozenAt - this.freezeSentAt) * 100) / 100;
      this.log({ kind: 'frozen', guest: g.name, filesystems: n, freezeMs: this.result.freezeMs });
      if (g.freeze !== 'all' && n < g.freeze.length) {
        throw new QuiesceError(
          'FREEZE_INCOMPLETE',
          `the agent froze ${n} of the ${g.freeze.length} filesystems asked for`,
          { guest: g.name },
        );
      }
      if (n === 0) throw new QuiesceError('FREEZE_INCOMPLETE', 'the agent froze no filesystem', { guest: g.name });
    });
  }

  /**
   * Thaws (retried: a thaw is always safe to repeat) and proves it: status
   * thawed and the thaw count equal to the freeze count. Never throws.
   */
  async thawAndProve(): Promise<void> {
    const g = this.plan;
    let thawed: number | undefined;
    let lostReply = false;
    try {
      await this.step('thaw', async () => {
        const thawOnce = async (): Promise<void> => {
          const t0 = performance.now();
          const n = (await this.exec('guest-fsfreeze-thaw', undefined, g.timeouts.thawMs)) as number;
          this.thawedAt = performance.now();
          this.result.thawMs = Math.round((this.thawedAt - t0) * 100) / 100;
          thawed = (thawed ?? 0) + n;
        };
        const failed = (error: Error, attemptNumber: number): void => {
          // A lost reply may have thawed: counts can no longer be compared.
          if (!(error instanceof AgentError)) lostReply = true;
          this.log({ kind: 'thaw-retry', guest: g.name, attempt: attemptNumber, error: error.message });
        };
        // First attempt straight away (it ends the frozen window); the retry machinery only after a failure.
        try {
          await thawOnce();
        } catch (err) {
          failed(err as Error, 1);
          await pRetry(thawOnce, {
            retries: 3,
            minTimeout: 250,
            maxTimeout: 2000,
            // Retries end at a deadline: a guest that never answers becomes a clear failure, not a hang.
            maxRetryTime: g.timeouts.thawMs * 3,
            onFailedAttempt: ({ error, attemptNumber }) => failed(error, attemptNumber + 1),
          });
        }
      });
      await this.step('prove-thaw', async () => {
        const status = await pRetry(() => this.exec('guest-fsfreeze-status'), { retries: 2, minTimeout: 200 });
        if (status !== 'thawed')
          throw new QuiesceError('THAW_UNPROVEN', `status is ${String(status)} after the thaw`, { guest: g.name });
        const frozen = this.result.frozenFilesystems;
        if (frozen !== undefined && !lostReply && thawed !== frozen) {
          throw new QuiesceError(
            'THAW_UNPROVEN',
            `thawed ${thawed} filesystem(s) but ${frozen} were frozen: something thawed them earlier, or a thaw failed`,
            {
              guest: g.name,
            },
          );
        }
      });
      this.result.thawProven = true;
    } catch (err) {
      this.result.thawProven = false;
      this.log({ kind: 'thaw-failed', guest: g.name, error: (err as Error).message });
    } finally {
      this.result.thawedFilesystems = thawed;
      // The window ends with the thaw's reply (or now, if no thaw was confirmed).
      if (this.freezeSentAt !== undefined) {
        this.result.frozenWindowMs = Math.round(((this.thawedAt ?? performance.now()) - this.freezeSentAt) * 100) / 100;
      }
      this.log({
        kind: 'thawed',
        guest: g.name,
        filesystems: thawed ?? 0,
        frozenWindowMs: this.result.frozenWindowMs ?? 0,
        proven: this.result.thawProven === true,
      });
    }
  }

  async close(): Promise<void> {
    await this.provider.dispose?.({ guest: this.plan.name, log: this.log }).catch(() => undefined);
    await this.agent?.close().catch(() => undefined);
    this.agent = undefined;
    await this.lock?.release();
    this.lock = undefined;
  }
}
