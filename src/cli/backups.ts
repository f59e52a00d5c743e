import { readdir, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fillPlaceholders, usesPlaceholder } from '../config/placeholders.js';
import { snapshotRepository, type ResolvedConfig } from '../config/types.js';
import { QuiesceError } from '../errors.js';
import { findPoint, readCatalog } from '../repository/catalog.js';
import { backupRows, formatBytes, type BackupRow } from '../repository/list.js';
import { restorePoint, type RestoreFormat, type RestoreResult } from '../repository/restore.js';
import { progressReporter } from '../log/progress.js';
import { EXIT } from '../workflow/exit-code.js';
import { SignalGuard } from '../workflow/signals.js';
import type { CliContext } from './context.js';

/** Where a command finds a guest's repository: the config (with --job for {job}), or --repository. */
export interface RepositoryChoice {
  readonly repository?: string | undefined;
  readonly job?: string | undefined;
}

/**
 * The repository of `guest` as its config names it, placeholders filled:
 * {guest}, {stateDir}, and {job} from `job` or the only job that includes
 * the guest. CONFIG errors name the guest and what to pass.
 */
export function resolveRepository(config: ResolvedConfig, guest: string, job?: string): string {
  const g = config.guests.get(guest);
  if (!g)
    throw new QuiesceError(
      'CONFIG',
      `${config.source}: no guest named '${guest}' (guests: ${[...config.guests.keys()].join(', ') || 'none'})`,
    );
  const s = g.snapshot;
  const repo = snapshotRepository(s);
  if (!repo)
    throw new QuiesceError(
      'CONFIG',
      `${config.source}: guest '${guest}' has no repository (snapshot provider ${s.provider}${s.provider !== 'command' ? `, mode ${s.mode}` : ''}); pass --repository DIR to read one`,
    );
  if (job !== undefined && !config.jobs.has(job))
    throw new QuiesceError(
      'CONFIG',
      `${config.source}: no job named '${job}' (jobs: ${[...config.jobs.keys()].join(', ') || 'none'})`,
    );
  const jobs = [...config.jobs.values()]
    .filter((j) => j.guests.includes(guest) || j.groups.some((grp) => grp.includes(guest)))
    .map((j) => j.name);
  if (job !== undefined && !jobs.includes(job))
    throw new QuiesceError('CONFIG', `${config.source}: job '${job}' does not include guest '${guest}'`);
  let jobName = job ?? '';
  if (usesPlaceholder(repo.dir, 'job') && job === undefined) {
    if (jobs.length !== 1)
      throw new QuiesceError(
        'CONFIG',
        `${config.source}: the repository of guest '${guest}' (${repo.dir}) uses {job}, and ${jobs.length ? `the guest is in jobs ${jobs.join(', ')}` : 'no job includes the guest'}: pass --job JOB`,
      );
    jobName = jobs[0]!;
  }
  return resolve(fillPlaceholders(repo.dir, { guest, job: jobName, stateDir: config.stateDir }));
}

/** Guests with a repository, in config order. */
function guestsWithRepository(config: ResolvedConfig): string[] {
  return [...config.guests.values()].filter((g) => snapshotRepository(g.snapshot) !== undefined).map((g) => g.name);
}

/** The guests a repository folder holds (its guest folders), for an error that asks for one. */
async function guestsIn(repo: string): Promise<string[]> {
  try {
    return (await readdir(repo, { withFileTypes: true }))
      .filter((e) => e.isDirectory())
      .map((e) => {
        try {
          return decodeURIComponent(e.name);
        } catch {
          return e.name;
        }
      });
  } catch {
    return [];
  }
}

/** --repository DIR: a folder that is not there is a typo, not an empty repository. */
export async function givenRepository(dir: string): Promise<string> {
  const repo = resolve(dir);
  const isDir = await stat(repo).then(
    (s) => s.isDirectory(),
    () => false,
  );
  if (!isDir) throw new QuiesceError('REPOSITORY', `--repository ${repo}: no such folder`);
  return repo;
}

async function needGuest(repo: string, command: string): Promise<never> {
  const found = await guestsIn(repo);
  throw new QuiesceError(
    'CONFIG',
    `${command} --repository needs a GUEST${found.length ? ` (${repo} holds ${found.join(', ')})` : ''}`,
  );
}

/** Each guest to list with its repository: from --repository (no config read), or from the config. */
async function targets(
  ctx: CliContext,
  guest: string | undefined,
  o: RepositoryChoice,
): Promise<{ guest: string; repo: string }[]> {
  if (o.repository !== undefined) {
    const repo = await givenRepository(o.repository);
    if (guest === undefined) return needGuest(repo, 'quiesce backups');
    return [{ guest, repo }];
  }
  const config = await ctx.loadConfig();
  if (guest !== undefined) return [{ guest, repo: resolveRepository(config, guest, o.job) }];
  const names = guestsWithRepository(config).filter((g) => o.job === undefined || jobIncludes(config, o.job, g));
  if (o.job !== undefined && !config.jobs.has(o.job))
    throw new QuiesceError('CONFIG', `${config.source}: no job named '${o.job}'`);
  if (names.length === 0)
    throw new QuiesceError(
      'CONFIG',
      `${config.source}: no guest${o.job !== undefined ? ` of job '${o.job}'` : ''} has a repository (snapshot provider qmp or libvirt with repository)`,
    );
  return names.map((g) => ({ guest: g, repo: resolveRepository(config, g, o.job) }));
}

function jobIncludes(config: ResolvedConfig, job: string, guest: string): boolean {
  const j = config.jobs.get(job);
  return j !== undefined && (j.guests.includes(guest) || j.groups.some((g) => g.includes(guest)));
}

/** `quiesce backups [GUEST] [--all]`: restore points per guest, newest last. */
export async function listBackups(
  ctx: CliContext,
  guest: string | undefined,
  o: RepositoryChoice & { readonly all?: boolean },
): Promise<number> {
  const rows: (BackupRow & { repository: string })[] = [];
  const empty: string[] = [];
  for (const t of await targets(ctx, guest, o)) {
    const found = backupRows(await readCatalog(t.repo, t.guest), o.all === true);
    if (found.length === 0) empty.push(`${t.guest}: no ${o.all ? 'backups' : 'restore points'} in ${t.repo}`);
    rows.push(...found.map((r) => ({ ...r, repository: t.repo })));
  }
  ctx.print(rows, formatRows(rows, o.all === true) + empty.map((l) => `${l}\n`).join(''));
  return EXIT.OK;
}

/** An aligned table, one row per backup. */
export function formatRows(rows: readonly BackupRow[], all: boolean): string {
  if (rows.length === 0) return '';
  const header = ['GUEST', 'ID', 'TIME', 'LEVEL', 'CHAIN', 'DISKS', 'BYTES', 'CONSISTENCY', 'VERIFIED'];
  if (all) header.push('STATUS');
  const cells = rows.map((r) => {
    const c = [
      r.guest,
      r.id,
      r.time.replace(/\.\d+Z$/, 'Z'),
      r.level ?? '-',
      r.chain,
      r.disks.map((d) => `${d.name} ${formatBytes(d.virtualSize)}`).join(', ') || '-',
      r.usable || r.bytes > 0 ? formatBytes(r.bytes) : '-',
      r.consistency ?? '-',
      r.verified ?? '-',
    ];
    if (all) c.push(r.usable ? 'restorable' : `UNUSABLE: ${r.why ?? ''}`);
    return c;
  });
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: readonly string[]): string =>
    c
      .map((s, i) => (i === c.length - 1 ? s : s.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [header, ...cells].map((c) => `${line(c)}\n`).join('');
}

export interface RestoreCliOptions extends RepositoryChoice {
  readonly to: string;
  readonly at?: string | undefined;
  readonly format: RestoreFormat;
}

/**
 * `quiesce restore GUEST --to DIR`: the point (newest, or --at) into DIR.
 * SIGINT/SIGTERM/SIGHUP stop qemu-img, remove what was written, and exit 128+n.
 */
export async function restoreGuest(ctx: CliContext, guest: string, o: RestoreCliOptions): Promise<number> {
  if (o.format !== 'raw' && o.format !== 'qcow2')
    throw new QuiesceError('CONFIG', `--format ${JSON.stringify(o.format)}: give raw or qcow2`);
  const repo =
    o.repository !== undefined
      ? await givenRepository(o.repository)
      : resolveRepository(await ctx.loadConfig(), guest, o.job);
  const point = findPoint(await readCatalog(repo, guest), o.at);
  // A signal stops the work and its clean-up runs; the exit is 128+n.
  const signals = new SignalGuard(ctx.log, 'stopping the restore and removing what it wrote').install();
  const controller = new AbortController();
  signals.register(controller);
  // The copy's progress goes to the display or the log as `progress` events (--quiet: nowhere).
  const report = ctx.progress.mode === 'off' ? undefined : progressReporter(ctx.log, guest, 'restore');
  try {
    const result = await restorePoint(point, {
      to: o.to,
      format: o.format,
      signal: controller.signal,
      onProgress: report && ((p) => report(p.done, p.total, `restore ${p.disk} (${p.index}/${p.count})`)),
      log: ctx.log,
    });
    ctx.print(result, formatRestore(result));
    return EXIT.OK;
  } catch (err) {
    ctx.progress.end();
    const code = signals.exitCode();
    if (code === undefined) throw err;
    process.stderr.write(`quiesce: ${(err as Error).message}\n`);
    return code;
  } finally {
    signals.uninstall();
  }
}

/** What a restore wrote, for a person. */
export function formatRestore(r: RestoreResult): string {
  const width = Math.max(...r.disks.map((d) => d.path.length));
  const lines = [
    `restored ${r.guest} backup ${r.id} (${r.level}, ${r.time}; ${r.lineage.length} backup${r.lineage.length === 1 ? '' : 's'} read from chain ${r.chain}) into ${r.to}:`,
    ...r.disks.map(
      (d) =>
        `  ${d.path.padEnd(width)}  ${d.format.padEnd(5)}  ${formatBytes(d.virtualSize)} (${formatBytes(d.allocated)} on disk)`,
    ),
    `in ${seconds(r.durationMs)}: copy ${seconds(r.convertMs)} at ${formatBytes(r.bytesPerSecond)}/s, read back and compared in ${seconds(r.verifyMs)}: equal to the backup`,
  ];
  if (r.verified && !r.verified.ok)
    lines.push(`warning: this backup FAILED its verify step (${r.verified.how}, ${r.verified.at})`);
  return `${lines.join('\n')}\n`;
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
