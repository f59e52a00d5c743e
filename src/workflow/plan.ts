import { randomBytes } from 'node:crypto';
import { QuiesceError } from '../errors.js';
import { describeConnector, type ConnectorSpec } from '../config/connector.js';
import { DEFAULTS } from '../config/defaults.js';
import { fillArgv, fillPlaceholders, timeValues, type PlaceholderValues } from '../config/placeholders.js';
import type {
  BootVerifyConfig,
  FailurePolicy,
  FsckVerifyConfig,
  PruneConfig,
  ResolvedConfig,
  ResolvedGuest,
  Timeouts,
  VerifyConfig,
} from '../config/types.js';
import { snapshotRepository } from '../config/types.js';
import { loadConnector } from '../guest/connect.js';
import {
  loadProvider,
  planSnapshot,
  snapshotProvider,
  type PlannedSnapshot,
  type ProviderKind,
} from '../snapshot/index.js';
import type { PlannedPrune } from './prune.js';

/** A process a step runs (hook, backup, verify, notify), its argv resolved for this run. */
export interface PlannedProcess {
  readonly argv: readonly string[];
  readonly timeoutMs: number;
}

/**
 * The verify step as planned: a command (argv resolved), or fsck/boot of the
 * backup this run makes (the repository and id are known once it is taken).
 */
export type PlannedVerify = (PlannedProcess & { readonly kind: 'command' }) | FsckVerifyConfig | BootVerifyConfig;

/** Everything run() will do for one guest. */
export interface GuestPlan {
  readonly name: string;
  readonly address: string;
  readonly connector: ConnectorSpec;
  /** Mountpoints to freeze, or 'all'. */
  readonly freeze: 'all' | readonly string[];
  readonly timeouts: Timeouts;
  readonly maxReplyBytes: number;
  readonly preHooks: readonly PlannedProcess[];
  /** Runs inside the frozen window; its timeout never exceeds the budget. */
  readonly snapshot: PlannedSnapshot;
  readonly backup: PlannedProcess | undefined;
  readonly verify: PlannedVerify | undefined;
  readonly prune: PlannedPrune | undefined;
  readonly postHooks: readonly PlannedProcess[];
}

/** A guest on its own, or a consistency group frozen together. */
export interface UnitPlan {
  readonly kind: 'guest' | 'group';
  /** For groups: "groupN:a+b". */
  readonly name: string;
  readonly guests: readonly GuestPlan[];
}

export interface Plan {
  readonly runId: string;
  readonly job: string;
  readonly createdAt: string;
  readonly configSource: string;
  readonly stateDir: string;
  readonly budgetMs: number;
  readonly concurrency: number;
  readonly failurePolicy: FailurePolicy;
  readonly units: readonly UnitPlan[];
  readonly notify: PlannedProcess | undefined;
}

export function newRunId(now: Date): string {
  return `${timeValues(now).timestamp}-${randomBytes(3).toString('hex')}`;
}

/**
 * The whole run, decided up front: per guest the ordered steps with resolved
 * argv and timeouts. Pure: the same inputs give the same plan; `quiesce plan`
 * prints it and `quiesce run` executes the same object.
 */
export function plan(config: ResolvedConfig, jobName: string, opts: { runId: string; now: Date }): Plan {
  const job = config.jobs.get(jobName);
  if (!job) {
    const known = [...config.jobs.keys()];
    throw new QuiesceError(
      'CONFIG',
      `no job named '${jobName}' in ${config.source}${known.length ? ` (jobs: ${known.join(', ')})` : ''}`,
    );
  }
  const base = { job: job.name, runId: opts.runId, stateDir: config.stateDir, ...timeValues(opts.now) };
  const guestPlan = (name: string): GuestPlan =>
    planGuest(config.guests.get(name)!, { ...base, guest: name }, job.budgetMs);
  const units: UnitPlan[] = [
    ...job.groups.map((members, i) => ({
      kind: 'group' as const,
      name: `group${i + 1}:${members.join('+')}`,
      guests: members.map(guestPlan),
    })),
    ...job.guests.map((g) => ({ kind: 'guest' as const, name: g, guests: [guestPlan(g)] })),
  ];
  return {
    runId: opts.runId,
    job: job.name,
    createdAt: opts.now.toISOString(),
    configSource: config.source,
    stateDir: config.stateDir,
    budgetMs: job.budgetMs,
    concurrency: job.concurrency,
    failurePolicy: job.failurePolicy,
    units,
    notify: job.notify
      ? { argv: fillArgv(job.notify, { ...base, guest: '' }), timeoutMs: DEFAULTS.notifyMs }
      : undefined,
  };
}

function planGuest(g: ResolvedGuest, values: PlaceholderValues, budgetMs: number): GuestPlan {
  const cmd = (argv: readonly string[], timeoutMs: number): PlannedProcess => ({
    argv: fillArgv(argv, values),
    timeoutMs,
  });
  const snapshot = planSnapshot(g.snapshot, values, { budgetMs, timeouts: g.timeouts });
  return {
    name: g.name,
    address: describeConnector(g.connector),
    connector: g.connector,
    freeze: g.freeze,
    timeouts: g.timeouts,
    maxReplyBytes: g.maxReplyBytes,
    preHooks: g.hooks.pre.map((h) => cmd(h, g.timeouts.commandMs * DEFAULTS.hookTimeoutFactor)),
    snapshot,
    backup: g.backup ? cmd(g.backup.argv, g.backup.timeoutMs) : undefined,
    verify: g.verify ? planVerify(g.verify, cmd) : undefined,
    prune: g.prune ? planPrune(g.name, g.prune, snapshot, values) : undefined,
    postHooks: g.hooks.post.map((h) => cmd(h, g.timeouts.commandMs * DEFAULTS.hookTimeoutFactor)),
  };
}

function planVerify(
  v: VerifyConfig,
  cmd: (argv: readonly string[], timeoutMs: number) => PlannedProcess,
): PlannedVerify {
  return v.kind === 'command' ? { kind: 'command', ...cmd(v.argv, v.timeoutMs) } : v;
}

/** What `quiesce plan` says of a verify step. */
function describeVerify(v: PlannedVerify, argv: (a: readonly string[]) => string, ms: (n: number) => string): string {
  switch (v.kind) {
    case 'command':
      return `verify: ${argv(v.argv)} (timeout ${ms(v.timeoutMs)})`;
    case 'fsck':
      return `verify (fsck): each filesystem of this run's backup checked read-only through a temporary overlay (timeout ${ms(v.timeoutMs)})`;
    case 'boot': {
      const c = v.checks;
      const checks = [
        ...c.mountpoints.map((m) => `mountpoint ${m}`),
        ...c.files.map((f) => `sha256 of ${f.path}`),
        ...c.commands.map((a) => `${argv(a)} exits 0`),
      ];
      return `verify (boot): this run's backup booted in a throwaway QEMU (${v.kernel}, ${v.memoryMiB} MiB, ${v.cpus} CPU${v.cpus === 1 ? '' : 's'}, no network) until its agent answers${checks.length ? `; then ${checks.join(', ')}` : ''} (timeout ${ms(v.timeoutMs)})`;
    }
  }
}

/** Retention over the guest's repository (its dir as the snapshot has it for this run), or over its backup files. */
function planPrune(guest: string, p: PruneConfig, snapshot: PlannedSnapshot, values: PlaceholderValues): PlannedPrune {
  const rules = { keepLast: p.keepLast, keepDaily: p.keepDaily, keepWeekly: p.keepWeekly, keepMonthly: p.keepMonthly };
  const repository = snapshotRepository(snapshot);
  if (repository) {
    // A libvirt backup's checkpoints of pruned backups are deleted from the domain by the prune.
    const checkpoints =
      snapshot.provider === 'libvirt'
        ? {
            uri: snapshot.uri,
            domain: snapshot.domain,
            connectTimeoutMs: snapshot.connectTimeoutMs,
            commandTimeoutMs: snapshot.commandTimeoutMs,
          }
        : undefined;
    return {
      ...rules,
      dir: undefined,
      match: undefined,
      repository: repository.dir,
      ...(checkpoints && { checkpoints }),
    };
  }
  if (p.dir === undefined || p.match === undefined)
    throw new QuiesceError('CONFIG', `guest ${guest}: prune needs dir and match, or a repository`);
  return { ...rules, dir: p.dir, match: fillPlaceholders(p.match, values), repository: undefined };
}

/**
 * Loads the modules of the connectors and snapshot providers these guests use,
 * and only those. A command with a frozen window calls it before the first
 * window opens (through cli/load-command.ts's compiledEagerly): nothing loads
 * or compiles inside a window.
 */
export async function loadGuestKinds(
  guests: readonly {
    readonly connector: ConnectorSpec;
    readonly snapshot: ProviderKind;
  }[],
): Promise<void> {
  // A module imported again is the one already loaded.
  await Promise.all([
    ...guests.map((g) => loadConnector(g.connector.kind)),
    ...guests.map((g) => loadProvider(g.snapshot)),
  ]);
}

/**
 * The rules a planned prune applies, in words (for `quiesce plan`). Here, not
 * in prune.ts: a command that only plans or freezes loads none of the
 * repository's modules.
 */
function describePrune(p: PlannedPrune): string {
  const monthly = p.keepMonthly > 0 ? `, monthly ${p.keepMonthly}` : '';
  const rules = `keep last ${p.keepLast}, daily ${p.keepDaily}, weekly ${p.keepWeekly}${monthly}`;
  return p.repository === undefined
    ? `prune ${p.dir}/${p.match}: ${rules}`
    : `prune restore points in ${p.repository}: ${rules}; a kept point keeps its parents`;
}

/** The plan as readable lines (for `quiesce plan`). */
export async function formatPlan(p: Plan): Promise<string> {
  const ms = (n: number) => (n % 1000 === 0 ? `${n / 1000}s` : `${n}ms`);
  const argv = (a: readonly string[]) =>
    a.map((x) => (/^[\w@%+=:,./-]+$/.test(x) ? x : `'${x.replace(/'/g, `'\\''`)}'`)).join(' ');
  const out: string[] = [
    `job ${p.job} (run ${p.runId}) from ${p.configSource}`,
    `budget ${ms(p.budgetMs)} frozen per unit, concurrency ${p.concurrency}, on failure: ${p.failurePolicy}, state in ${p.stateDir}`,
  ];
  for (const u of p.units) {
    out.push(
      '',
      u.kind === 'group'
        ? `consistency group ${u.name}: freeze all, snapshot all, thaw all in reverse order`
        : `guest ${u.name}`,
    );
    for (const g of u.guests) {
      const pre = u.kind === 'group' ? `  [${g.name}] ` : '  ';
      let n = 1;
      const line = (s: string) => out.push(`${pre}${n++}. ${s}`);
      line(`connect ${g.address} and sync (timeout ${ms(g.timeouts.connectMs)})`);
      line('preflight: freeze commands enabled, status thawed, mountpoints exist');
      const provider = await snapshotProvider(g.snapshot);
      const around = provider.planSteps?.() ?? {};
      if (around.beforeFreeze) line(around.beforeFreeze);
      for (const h of g.preHooks) line(`pre-hook: ${argv(h.argv)} (timeout ${ms(h.timeoutMs)})`);
      line(
        `freeze ${g.freeze === 'all' ? 'all filesystems' : g.freeze.join(', ')} (timeout ${ms(g.timeouts.freezeMs)}) — budget ${ms(p.budgetMs)} starts`,
      );
      line(`snapshot (${g.snapshot.provider}): ${provider.describe()}`);
      line(`thaw (timeout ${ms(g.timeouts.thawMs)}, retried), prove: status thawed and thaw count = freeze count`);
      if (around.afterThaw) line(around.afterThaw);
      if (g.backup) line(`backup: ${argv(g.backup.argv)} (timeout ${ms(g.backup.timeoutMs)})`);
      if (g.verify) line(describeVerify(g.verify, argv, ms));
      if (g.prune) line(describePrune(g.prune));
      for (const h of g.postHooks) line(`post-hook: ${argv(h.argv)} (timeout ${ms(h.timeoutMs)})`);
    }
  }
  if (p.notify) out.push('', `notify: ${argv(p.notify.argv)}`);
  return `${out.join('\n')}\n`;
}
