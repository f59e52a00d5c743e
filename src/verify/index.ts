import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { BootVerifyConfig } from '../config/types.js';
import { QuiesceError } from '../errors.js';
import { findPoint, readCatalog, type RestorePoint } from '../repository/catalog.js';
import { MANIFEST } from '../repository/layout.js';
import { lockRepository } from '../repository/lock.js';
import { validateManifest, type Verified } from '../repository/manifest.js';
import { writeManifest } from '../repository/store.js';
import { bootPoint, type BootOptions } from './boot.js';
import { fsckPoint } from './fsck.js';
import type { VerifyKind, VerifyResult } from './types.js';

export type { VerifyCheck, VerifyKind, VerifyOptions, VerifyResult } from './types.js';
export { TEMP_PREFIX } from './temp.js';

/** What to verify a point with: fsck, or boot with its settings. */
export type VerifySpec =
  { readonly kind: 'fsck'; readonly timeoutMs: number } | (BootVerifyConfig & { readonly kind: 'boot' });

/** Runs the spec's kind on `point`. Throws only when the verify could not run (or was aborted); a verdict is returned. */
export function verifyPoint(point: RestorePoint, spec: VerifySpec, opts: BootOptions): Promise<VerifyResult> {
  return spec.kind === 'fsck' ? fsckPoint(point, { ...opts, timeoutMs: spec.timeoutMs }) : bootPoint(point, spec, opts);
}

/** The manifest's record of a verdict. */
export function verifiedOf(r: VerifyResult): Verified {
  return {
    ok: r.ok,
    at: r.at,
    how: r.kind,
    durationMs: r.durationMs,
    ...(r.bootMs !== undefined ? { bootMs: r.bootMs } : {}),
    checks: r.checks.map((c) => ({ name: c.name, ok: c.ok, ...(c.detail !== undefined ? { detail: c.detail } : {}) })),
  };
}

/**
 * Writes the verdict into the point's manifest (re-read first, rewritten
 * atomically and durably): the only write a verify makes in the repository.
 */
export async function recordVerified(point: RestorePoint, r: VerifyResult): Promise<void> {
  const file = join(point.dir, MANIFEST);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new QuiesceError('REPOSITORY', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  const m = validateManifest(JSON.parse(text), file);
  if (m.id !== r.id) throw new QuiesceError('REPOSITORY', `${file} names backup ${m.id}, not ${r.id}`);
  await writeManifest(point.dir, { ...m, verified: verifiedOf(r) });
}

/**
 * Verifies `point` and records the verdict in its manifest, holding the
 * guest's repository lock meanwhile (no prune deletes what is read; shared
 * with a run's own backup lock).
 */
export async function verifyAndRecord(point: RestorePoint, spec: VerifySpec, opts: BootOptions): Promise<VerifyResult> {
  // REPO/GUEST/CHAIN/ID → REPO.
  const lock = await lockRepository(resolve(point.dir, '../../..'), point.manifest.guest, `verify ${spec.kind}`);
  try {
    const r = await verifyPoint(point, spec, opts);
    await recordVerified(point, r);
    return r;
  } finally {
    await lock.release();
  }
}

/** The restore point `id` of `guest` in `repository`, verified and the verdict recorded (what a run's verify step does). */
export async function verifyBackup(
  b: { readonly repository: string; readonly guest: string; readonly id: string },
  spec: VerifySpec,
  opts: BootOptions,
): Promise<VerifyResult> {
  return verifyAndRecord(findPoint(await readCatalog(b.repository, b.guest), b.id), spec, opts);
}

/** One line per check, for a person. */
export function formatVerify(r: VerifyResult, kind: VerifyKind = r.kind): string {
  const lines = [
    `${r.ok ? 'PASSED' : 'FAILED'}: ${kind} of ${r.guest} backup ${r.id} in ${(r.durationMs / 1000).toFixed(1)} s${r.bootMs !== undefined ? ` (agent up ${(r.bootMs / 1000).toFixed(1)} s after QEMU started)` : ''}`,
    ...r.checks.map((c) => `  ${c.ok ? 'ok  ' : 'FAIL'}  ${c.name}${c.detail ? `: ${c.detail}` : ''}`),
  ];
  return `${lines.join('\n')}\n`;
}
