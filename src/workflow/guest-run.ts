import { QuiesceError, type ErrorCode } from '../errors.js';
import { hasWatchdog, WATCHDOG_SET_LIMIT, type Capabilities } from '../guest/capabilities.js';
import { guestAgent } from '../guest/connect.js';
import { acquireGuestLock, type HeldLock } from '../guest/lock.js';
import type { GuestAgent } from '../guest/types.js';
import type { Log } from '../log/logger.js';
import { runProcess } from '../process/run.js';
import { backupDir } from '../repository/layout.js';
import { snapshotProvider, type SnapshotProvider, type SnapshotTaken } from '../snapshot/index.js';
import type { GuestPlan, PlannedProcess, PlannedVerify } from './plan.js';
import type { GuestResult, RunError } from './results.js';
import { askPreflight, preflight, type PreflightQuestions } from './preflight.js';
import { thawAndProve } from './thaw.js';

/** How a run reaches guests (tests substitute connectors). */
export type AgentFactory = (g: GuestPlan, log: Log) => GuestAgent | Promise<GuestAgent>;

export const defaultAgentFactory: AgentFactory = (g, log) =>
  guestAgent(g.connector, { maxReplyBytes: g.maxReplyBytes, onEvent: log });

/** Seconds the agent's own watchdog waits beyond our budget before thawing by itself. */
export const WATCHDOG_MARGIN_S = 30;

/** One guest's part of a run: its agent, lock and result. */
export class GuestRun {
  readonly result: GuestResult;
  private agent: GuestAgent | undefined;
  private caps: Capabilities | undefined;
  private lock: HeldLock | undefined;
  private freezeSentAt: number | undefined;
  private frozenAtMs: number | undefined;
  private taken: SnapshotTaken | undefined;
  private thawedAt: number | undefined;
  private attempted = false;
  /** The freeze request, from sending to its reply or failure. */
  private freezing: Promise<void> | undefined;
  private ranHooks = false;
  /** One per run, made at connect: a provider keeps state from prepare to dispose (a QMP connection, its block jobs). */
  private provider: SnapshotProvider | undefined;

  constructor(
    readonly plan: GuestPlan,
    unit: string,
    private readonly log: Log,
    private readonly factory: AgentFactory,
    private readonly lockWaitMs: number,
    private readonly runId?: string,
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
  }

  /** performance.now() when the freeze's reply came (the guard measures a group's skew). */
  get frozenAt(): number | undefined {
    return this.frozenAtMs;
  }

  /** A freeze was sent: the guard must thaw this guest whatever happens next. */
  get freezeAttempted(): boolean {
    return this.attempted;
  }

  /** Pre-hooks ran before the freeze: the backup is application-consistent. */
  get hooksRan(): boolean {
    return this.ranHooks;
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
      this.recordStep(name, startedAt, performance.now() - t0, err);
      throw err;
    }
  }

  private recordStep(name: string, startedAt: string, ms: number, err: unknown): void {
    const durationMs = Math.round(ms);
    const error = (err as Error).message;
    this.result.steps.push({ name, ok: false, startedAt, durationMs, error });
    this.addError(errorCode(err), `${name}: ${error}`, name);
    this.log({ kind: 'step-end', guest: this.plan.name, step: name, durationMs, ok: false, error });
  }

  /** Records a failure once (a group's shared failure reaches every member). */
  addError(code: ErrorCode, message: string, step?: string): void {
    if (this.result.errors.some((e) => e.message === message || e.message.endsWith(`: ${message}`))) return;
    const e: RunError = step ? { code, message, step } : { code, message };
    this.result.errors.push(e);
  }

  /** A step that runs a process outside the frozen window (hooks, backup, verify); a non-zero exit fails it. */
  async processStep(name: string, c: PlannedProcess, signal?: AbortSignal): Promise<void> {
    await this.step(name, async () => {
      const env = this.snapshotEnv();
      const r = await runProcess(c.argv, {
        timeoutMs: c.timeoutMs,
        guest: this.plan.name,
        step: name,
        log: this.log,
        ...(env ? { env } : {}),
        ...(signal ? { signal } : {}),
      });
      if (!r.ok)
        throw new QuiesceError(r.cancelled ? 'INTERRUPTED' : 'STEP_FAILED', r.error ?? `${name} failed`, {
          guest: this.plan.name,
        });
    });
  }

  /**
   * The verify step: a command, or fsck/boot of the backup this run made
   * (its manifest gets the verdict). A failed check fails the step; the
   * outcome goes into the result either way.
   */
  async verify(v: PlannedVerify, signal: AbortSignal): Promise<void> {
    const t0 = performance.now();
    if (v.kind === 'command') {
      try {
        await this.processStep('verify', v, signal);
        this.result.verify = { kind: 'command', ok: true, durationMs: Math.round(performance.now() - t0) };
      } catch (err) {
        if (!signal.aborted)
          this.result.verify = { kind: 'command', ok: false, durationMs: Math.round(performance.now() - t0) };
        throw err;
      }
      return;
    }
    await this.step('verify', async () => {
      const b = this.result.backup;
      if (!b)
        throw new QuiesceError(
          'STEP_FAILED',
          `verify ${v.kind} needs a backup in a repository, and this run made none`,
          {
            guest: this.plan.name,
          },
        );
      // Loaded when a verify runs (after the thaw): fsck and boot are no part of a freeze's start-up.
      const { verifyBackup } = await import('../verify/index.js');
      const r = await verifyBackup({ repository: b.repository, guest: this.plan.name, id: b.id }, v, {
        log: this.log,
        signal,
      }).catch((err: unknown) => {
        // It could not even run (a checker missing, QEMU refused): that is a failed verify too, for the alert.
        if (!signal.aborted)
          this.result.verify = {
            kind: v.kind,
            ok: false,
            durationMs: Math.round(performance.now() - t0),
            backup: b.id,
          };
        throw err;
      });
      this.result.verify = {
        kind: r.kind,
        ok: r.ok,
        durationMs: r.durationMs,
        backup: r.id,
        ...(r.bootMs !== undefined ? { bootMs: r.bootMs } : {}),
        checks: r.checks,
      };
      if (!r.ok) {
        const failed = r.checks.filter((c) => !c.ok);
        throw new QuiesceError(
          'STEP_FAILED',
          `${v.kind} of backup ${r.id} failed: ${failed.map((c) => `${c.name}${c.detail ? ` (${c.detail})` : ''}`).join('; ')}`,
          { guest: this.plan.name },
        );
      }
    });
  }

  /**
   * What a step after the snapshot learns of it, in its environment: the
   * files it wrote (QUIESCE_SNAPSHOT_FILES, one per line) and, for a backup
   * into a repository, QUIESCE_BACKUP_ID, _LEVEL and _DIR (its folder).
   * Undefined before the snapshot (hooks before the freeze get ours as is).
   */
  private snapshotEnv(): NodeJS.ProcessEnv | undefined {
    const files = this.result.snapshotFiles;
    const b = this.result.backup;
    if (!files && !b) return undefined;
    return {
      ...process.env,
      ...(files ? { QUIESCE_SNAPSHOT_FILES: files.join('\n') } : {}),
      ...(b
        ? {
            QUIESCE_BACKUP_ID: b.id,
            QUIESCE_BACKUP_LEVEL: b.level,
            QUIESCE_BACKUP_DIR: backupDir(b.repository, this.plan.name, b.chain, b.id),
          }
        : {}),
    };
  }

  /** Takes the snapshot through the guest's provider; what it leaves running is completed after the thaw. */
  async snapshot(signal: AbortSignal | undefined, inWindow: boolean): Promise<void> {
    await this.step('snapshot', async () => {
      // Made at connect; a crash-consistent fallback after a failed connect makes it here, outside any window.
      const provider = (this.provider ??= await snapshotProvider(this.plan.snapshot));
      const t0 = performance.now();
      this.taken = await provider.take({
        guest: this.plan.name,
        log: this.log,
        inWindow,
        ...(signal ? { signal } : {}),
      });
      this.result.snapshotMs = Math.round((performance.now() - t0) * 100) / 100;
      if (this.taken.files) this.result.snapshotFiles = [...this.taken.files];
      if (this.taken.backup) this.result.backup = this.taken.backup;
    });
  }

  /** Outside the window: waits for what the snapshot left running (a block job copying); a signal ends the wait. */
  async completeSnapshot(signal: AbortSignal): Promise<void> {
    const complete = this.taken?.complete;
    if (!complete) return;
    const window = {
      // A crash-consistent snapshot was taken outside any window (a failed freeze's window is not its own).
      frozenWindowMs: this.result.consistency === 'crash' ? undefined : this.result.frozenWindowMs,
      consistency: this.result.consistency,
      agentVersion: this.caps?.version,
    };
    await this.step('snapshot-complete', () => complete({ log: this.log, signal, window }));
  }

  /** After the backup step, failed or not: undo what the snapshot held for it (libvirt merges its overlay back). */
  async releaseSnapshot(signal: AbortSignal): Promise<void> {
    const release = this.taken?.release;
    if (!release) return;
    await this.step('snapshot-release', () => release({ log: this.log, signal }));
  }

  /** Lock the guest's channel, connect and sync, check the agent can freeze what the plan asks. */
  async connectAndCheck(signal?: AbortSignal): Promise<void> {
    const g = this.plan;
    let asked: PreflightQuestions | undefined;
    await this.step('connect', async () => {
      this.lock = await acquireGuestLock(g.address, this.lockWaitMs, this.runId);
      this.agent = await this.factory(g, this.log);
      // guest-info, not a ping: it proves the agent answers, under the connect timeout, and it is the
      // preflight's first answer, so a run costs one round trip fewer (each is several ms through libvirt).
      // The preflight's other questions go out with it (askPreflight).
      asked = askPreflight(this.agent, { timeoutMs: g.timeouts.commandMs, infoTimeoutMs: g.timeouts.connectMs });
      await asked.info;
    });
    await this.step('preflight', async () => {
      const o = { guest: g.name, freeze: g.freeze, timeoutMs: g.timeouts.commandMs };
      const found = await preflight(this.agent!, o, asked);
      this.caps = found.caps;
      if (found.problems[0]) throw found.problems[0];
    });
    // The provider's set-up (a QMP connection, target files) fails here, before hooks or a freeze.
    const provider = (this.provider = await snapshotProvider(g.snapshot));
    const prepare = provider.prepare?.bind(provider);
    if (prepare) await this.step('snapshot-prepare', () => prepare({ guest: g.name, log: this.log }));
    for (const [i, h] of g.preHooks.entries()) await this.processStep(`pre-hook ${i + 1}`, h, signal);
    this.ranHooks = g.preHooks.length > 0;
  }

  async exec(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<unknown> {
    if (!this.agent) throw new QuiesceError('CHANNEL_GONE', 'not connected', { guest: this.plan.name });
    return this.agent.execute(command, args, { timeoutMs: timeoutMs ?? this.plan.timeouts.commandMs });
  }

  /** Arms the agent's own watchdog (quiesce-agent) so the guest thaws even if this process dies. */
  async armWatchdog(budgetMs: number): Promise<void> {
    if (!this.caps || !hasWatchdog(this.caps)) return;
    await this.exec(WATCHDOG_SET_LIMIT, { seconds: Math.ceil(budgetMs / 1000) + WATCHDOG_MARGIN_S });
  }

  /** Sends the freeze; the frozen window starts here. Counts fewer than asked are an error. */
  freeze(): Promise<void> {
    this.freezing = this.doFreeze();
    return this.freezing;
  }

  private async doFreeze(): Promise<void> {
    const g = this.plan;
    await this.step('freeze', async () => {
      this.attempted = true;
      this.freezeSentAt = performance.now();
      const n = (await (g.freeze === 'all'
        ? this.exec('guest-fsfreeze-freeze', undefined, g.timeouts.freezeMs)
        : this.exec('guest-fsfreeze-freeze-list', { mountpoints: [...g.freeze] }, g.timeouts.freezeMs))) as number;
      this.frozenAtMs = performance.now();
      this.result.frozenFilesystems = n;
      this.result.freezeMs = Math.round((this.frozenAtMs - this.freezeSentAt) * 100) / 100;
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
   * Thaws and proves it (workflow/thaw.ts: retried, status thawed, the thaw
   * count covers the freeze count). Never throws; the result says.
   */
  async thawAndProve(): Promise<void> {
    const g = this.plan;
    // A freeze still waiting for its reply (the guard gave up on it) holds the channel: its reply, or its
    // timeout, comes first; then the thaw knows the count. The other members are thawed meanwhile.
    await this.freezing?.catch(() => undefined);
    const startedAt = new Date().toISOString();
    const t0 = performance.now();
    this.log({ kind: 'step-start', guest: g.name, step: 'thaw' });
    const agent = this.agent;
    const outcome = agent
      ? await thawAndProve(agent, {
          guest: g.name,
          log: this.log,
          thawTimeoutMs: g.timeouts.thawMs,
          statusTimeoutMs: g.timeouts.commandMs,
          ...(this.result.frozenFilesystems !== undefined ? { frozen: this.result.frozenFilesystems } : {}),
        })
      : undefined;
    const end = performance.now();
    if (outcome?.thawedAt !== undefined) {
      this.thawedAt = outcome.thawedAt;
      const thawDone = outcome.thawedAt - t0;
      this.result.steps.push({ name: 'thaw', ok: true, startedAt, durationMs: Math.round(thawDone) });
      this.log({ kind: 'step-end', guest: g.name, step: 'thaw', durationMs: Math.round(thawDone), ok: true });
      if (outcome.proven) {
        const proveMs = Math.round(end - outcome.thawedAt);
        const at = new Date(Date.now() - proveMs).toISOString();
        this.result.steps.push({ name: 'prove-thaw', ok: true, startedAt: at, durationMs: proveMs });
      } else this.recordStep('prove-thaw', startedAt, end - outcome.thawedAt, outcome.error);
    } else {
      this.recordStep(
        'thaw',
        startedAt,
        end - t0,
        outcome?.error ?? new QuiesceError('THAW_UNPROVEN', 'not connected to the agent', { guest: g.name }),
      );
    }
    this.result.thawProven = outcome?.proven === true;
    if (outcome?.thawed !== undefined) this.result.thawedFilesystems = outcome.thawed;
    if (outcome?.thawMs !== undefined) this.result.thawMs = outcome.thawMs;
    // The window ends with the thaw's reply (or now, if no thaw was confirmed).
    if (this.freezeSentAt !== undefined) {
      this.result.frozenWindowMs = Math.round(((this.thawedAt ?? performance.now()) - this.freezeSentAt) * 100) / 100;
    }
    this.log({
      kind: 'thawed',
      guest: g.name,
      filesystems: outcome?.thawed ?? 0,
      frozenWindowMs: this.result.frozenWindowMs ?? 0,
      proven: this.result.thawProven,
    });
  }

  async close(): Promise<void> {
    const error = this.result.errors[0]?.message;
    await this.provider
      ?.dispose?.({ guest: this.plan.name, log: this.log, ...(error !== undefined ? { error } : {}) })
      .catch(() => undefined);
    await this.agent?.close().catch(() => undefined);
    this.agent = undefined;
    await this.lock?.release();
    this.lock = undefined;
  }
}

function errorCode(err: unknown): ErrorCode {
  return err instanceof QuiesceError ? err.code : 'STEP_FAILED';
}
