import type { KeepRules } from '../config/types.js';
import { QuiesceError } from '../errors.js';
import type { Catalog, RestorePoint, Unusable } from './catalog.js';
import { bitmapName } from './layout.js';
import { idTime, type Level } from './manifest.js';

/** How old an unusable folder must be before prune removes it: a run may still be writing a younger one. */
export const UNUSABLE_GRACE_MS = 24 * 3_600_000;

/** A restore point prune keeps, and why. */
export interface KeptPoint {
  readonly id: string;
  readonly chain: string;
  readonly level: Level;
  readonly time: string;
  readonly dir: string;
  /**
   * The rules that selected it ("last 2": the second newest; "daily 2026-12-01";
   * "weekly 2026-W49"; "monthly 2026-12"), or, when none did, "needed by ID":
   * the newest kept point whose restore reads it.
   */
  readonly reasons: readonly string[];
}

/** A restore point prune removes: no rule selects it and no kept point reads it. */
export interface RemovedPoint {
  readonly id: string;
  readonly chain: string;
  readonly level: Level;
  readonly time: string;
  readonly dir: string;
}

/** A folder that is no restore point: removed once older than {@link UNUSABLE_GRACE_MS}, else left alone. */
export interface UnusableVerdict {
  readonly id: string;
  readonly chain: string;
  readonly dir: string;
  /** Why it is no restore point (the catalog's words). */
  readonly why: string;
  readonly time: string;
  readonly remove: boolean;
}

/** What prune does to one guest's backups in a repository. Lists are newest first. */
export interface RetentionDecision {
  readonly keep: readonly KeptPoint[];
  readonly remove: readonly RemovedPoint[];
  readonly unusable: readonly UnusableVerdict[];
  /** Chain folders (ids) removed: nothing in them is kept. */
  readonly chains: readonly string[];
  /** QEMU bitmaps of removed backups that nothing kept reads: for the next backup to remove from QEMU. */
  readonly staleBitmaps: readonly string[];
}

/** The ISO 8601 week of `d` (UTC), as "2026-W49": the week's Thursday names the year. */
export function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  t.setUTCDate(t.getUTCDate() + 4 - (t.getUTCDay() || 7));
  const week = Math.ceil(((t.getTime() - Date.UTC(t.getUTCFullYear(), 0, 1)) / 86_400_000 + 1) / 7);
  return `${t.getUTCFullYear()}-W${String(week).padStart(2, '0')}`;
}

const PERIODS: readonly [keyof KeepRules, string, (d: Date) => string][] = [
  ['keepDaily', 'daily', (d) => d.toISOString().slice(0, 10)],
  ['keepWeekly', 'weekly', isoWeek],
  ['keepMonthly', 'monthly', (d) => d.toISOString().slice(0, 7)],
];

/**
 * Which items the keep rules select, with the reasons, for `times` sorted
 * newest first: keepLast the newest N; keepDaily, keepWeekly and keepMonthly
 * the newest item of each of the last N days, ISO weeks and months (UTC) that
 * have one. Each rule counts on its own, as Proxmox' keep-* rules read
 * literally (Proxmox lets a later rule skip periods an earlier one covered).
 */
export function selectByRules(times: readonly Date[], rules: KeepRules): Map<number, string[]> {
  const selected = new Map<number, string[]>();
  const add = (i: number, reason: string): void => {
    selected.set(i, [...(selected.get(i) ?? []), reason]);
  };
  for (let i = 0; i < Math.min(rules.keepLast, times.length); i++) add(i, `last ${i + 1}`);
  for (const [rule, word, key] of PERIODS) {
    const seen = new Set<string>();
    for (const [i, t] of times.entries()) {
      const k = key(t);
      if (seen.has(k)) continue;
      if (seen.size >= rules[rule]) break;
      seen.add(k);
      add(i, `${word} ${k}`);
    }
  }
  return selected;
}

function keepsSomething(r: KeepRules): boolean {
  return r.keepLast + r.keepDaily + r.keepWeekly + r.keepMonthly > 0;
}

/**
 * Applies the keep rules to a guest's restore points (see {@link selectByRules}),
 * then keeps every ancestor of a kept point: nothing a kept restore point reads
 * is removed, and the newest point is always kept. A chain folder goes when
 * nothing in it stays; unusable folders go once older than {@link UNUSABLE_GRACE_MS}.
 * Pure: the catalog and the time in, the decision out.
 */
export function decideRetention(catalog: Catalog, rules: KeepRules, opts: { readonly now: Date }): RetentionDecision {
  if (!keepsSomething(rules))
    throw new QuiesceError(
      'CONFIG',
      'retention rules keep nothing: set keepLast, keepDaily, keepWeekly or keepMonthly',
    );
  const newestFirst = [...catalog.points].reverse();
  const reasons = keptWithReasons(newestFirst, rules);
  // An invariant of keptWithReasons, checked: a prune that removed the newest point would lose the chain's head.
  if (newestFirst.length > 0 && !reasons.has(newestFirst[0]!.manifest.id))
    throw new Error('retention: the newest restore point must be kept');
  const unusable = [...catalog.unusable]
    .sort((a, b) => b.time.getTime() - a.time.getTime() || b.id.localeCompare(a.id))
    .map((u) => unusableVerdict(u, opts.now));
  const keep: KeptPoint[] = [];
  const remove: RemovedPoint[] = [];
  for (const p of newestFirst) {
    const r = reasons.get(p.manifest.id);
    if (r) keep.push({ ...pointFields(p), reasons: r });
    else remove.push(pointFields(p));
  }
  const chains = removableChains(catalog, keep, unusable, opts.now);
  return {
    keep,
    remove,
    unusable,
    chains,
    staleBitmaps: staleBitmaps(newestFirst, reasons, catalog, unusable, chains),
  };
}

/** Kept point ids with their reasons: rules first, then the ancestors they read ("needed by" the newest reader). */
function keptWithReasons(newestFirst: readonly RestorePoint[], rules: KeepRules): Map<string, string[]> {
  const byRule = selectByRules(
    newestFirst.map((p) => new Date(p.manifest.time)),
    rules,
  );
  const reasons = new Map<string, string[]>();
  for (const [i, r] of byRule) reasons.set(newestFirst[i]!.manifest.id, r);
  // Newest first, so the first reader to claim an ancestor is its newest kept reader.
  for (const [i, p] of newestFirst.entries()) {
    if (!byRule.has(i)) continue;
    for (const id of p.lineage) if (!reasons.has(id)) reasons.set(id, [`needed by ${p.manifest.id}`]);
  }
  return reasons;
}

function pointFields(p: RestorePoint): RemovedPoint {
  const m = p.manifest;
  return { id: m.id, chain: m.chain, level: m.level, time: m.time, dir: p.dir };
}

function unusableVerdict(u: Unusable, now: Date): UnusableVerdict {
  return {
    id: u.id,
    chain: u.chain,
    dir: u.dir,
    why: u.why,
    time: u.time.toISOString(),
    remove: now.getTime() - u.time.getTime() > UNUSABLE_GRACE_MS,
  };
}

/**
 * Chains nothing stays in: no kept point, no unusable folder left. An empty
 * chain folder goes once its id is older than the grace time (a run may have
 * just made it, its backup's folder not yet).
 */
function removableChains(
  catalog: Catalog,
  keep: readonly KeptPoint[],
  unusable: readonly UnusableVerdict[],
  now: Date,
): string[] {
  const staying = new Set([...keep.map((k) => k.chain), ...unusable.filter((u) => !u.remove).map((u) => u.chain)]);
  const holding = new Set([...catalog.points.map((p) => p.manifest.chain), ...unusable.map((u) => u.chain)]);
  return catalog.chains.filter(
    (c) => !staying.has(c) && (holding.has(c) || now.getTime() - idTime(c).getTime() > UNUSABLE_GRACE_MS),
  );
}

/**
 * Bitmaps the removed backups may have left in QEMU: each full's and
 * incremental's own, the one a failed run named after its id, and an empty
 * chain's; never one a kept point or a folder left in place may still use.
 */
function staleBitmaps(
  newestFirst: readonly RestorePoint[],
  kept: ReadonlyMap<string, unknown>,
  catalog: Catalog,
  unusable: readonly UnusableVerdict[],
  chains: readonly string[],
): string[] {
  const manifestOf = new Map(catalog.unusable.map((u) => [u.id, u.manifest]));
  // A differential reads its parent's bitmap and owns none.
  const owned = (level: Level | undefined, bitmap: string | undefined): string[] =>
    level !== 'differential' && bitmap !== undefined ? [bitmap] : [];
  const inUse = new Set<string>();
  const candidates = new Set<string>();
  for (const { manifest: m } of newestFirst)
    if (kept.has(m.id)) inUse.add(m.bitmap);
    else for (const n of owned(m.level, m.bitmap)) candidates.add(n);
  for (const u of unusable) {
    const m = manifestOf.get(u.id);
    if (u.remove) for (const n of [bitmapName(u.id), ...owned(m?.level, m?.bitmap)]) candidates.add(n);
    else for (const n of [bitmapName(u.id), ...(m ? [m.bitmap] : [])]) inUse.add(n);
  }
  for (const c of chains) candidates.add(bitmapName(c));
  return [...candidates].filter((n) => !inUse.has(n)).sort();
}
