import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { QuiesceError } from '../errors.js';
import type { Log } from '../log/logger.js';
import { runProcess, type ProcessResult } from '../process/run.js';
import type { RestorePoint } from '../repository/catalog.js';
import type { ManifestDisk } from '../repository/manifest.js';

/** Prefix of the temporary folders a verify makes (one per verify, removed on every path). */
export const TEMP_PREFIX = 'quiesce-verify-';

/** One disk of the point behind a temporary overlay: writes (and QEMU's locks) land in the overlay only. */
export interface Overlay {
  readonly disk: ManifestDisk;
  /** The point's own image (never opened for writing). */
  readonly image: string;
  readonly overlay: string;
}

export interface ToolContext {
  readonly log: Log;
  readonly signal: AbortSignal;
  readonly guest: string;
}

/** Runs one tool (argv, own process group); output goes to the debug log. */
export function tool(argv: readonly string[], ctx: ToolContext, timeoutMs = Infinity): Promise<ProcessResult> {
  return runProcess(argv, { timeoutMs, signal: ctx.signal, guest: ctx.guest, step: 'verify', log: ctx.log });
}

/** The last lines of a tool's output, for a check's detail. */
export function lastLines(r: ProcessResult, n = 4): string {
  return `${r.stdout}\n${r.stderr}`
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .slice(-n)
    .join(' | ');
}

/**
 * Runs `fn` with a fresh temporary folder holding a qcow2 overlay per disk of
 * `point` (backing file: the point's image, absolute), and removes the folder
 * afterwards whatever happened, an abort included. Nothing is ever written
 * into the repository.
 */
export async function withOverlays<T>(
  point: RestorePoint,
  ctx: ToolContext & { readonly tmpDir?: string | undefined },
  fn: (dir: string, overlays: readonly Overlay[]) => Promise<T>,
): Promise<T> {
  ctx.signal.throwIfAborted();
  const dir = await mkdtemp(join(ctx.tmpDir ?? tmpdir(), TEMP_PREFIX));
  try {
    const overlays: Overlay[] = [];
    for (const [i, disk] of point.manifest.disks.entries()) {
      const image = resolve(point.dir, disk.file);
      const overlay = join(dir, `overlay-${i}.qcow2`);
      const r = await tool(
        ['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', image, '-F', 'qcow2', overlay],
        ctx,
        60_000,
      );
      ctx.signal.throwIfAborted();
      if (!r.ok)
        throw new QuiesceError('STEP_FAILED', `cannot make an overlay over ${image}: ${r.error ?? 'qemu-img failed'}`);
      overlays.push({ disk, image, overlay });
    }
    return await fn(dir, overlays);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
