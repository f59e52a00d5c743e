import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { QuiesceError } from '../errors.js';
import type { RestorePoint } from '../repository/catalog.js';
import { lastLines, tool, withOverlays, type Overlay, type ToolContext } from './temp.js';
import type { VerifyCheck, VerifyOptions, VerifyResult } from './types.js';

/**
 * Read-only checkers by filesystem type (blkid's TYPE), each run on a raw
 * temporary copy: exit 0 means clean.
 */
const CHECKERS: Readonly<Record<string, (file: string) => string[]>> = {
  ext2: (f) => ['e2fsck', '-f', '-n', f],
  ext3: (f) => ['e2fsck', '-f', '-n', f],
  ext4: (f) => ['e2fsck', '-f', '-n', f],
  xfs: (f) => ['xfs_repair', '-n', '-f', f],
  btrfs: (f) => ['btrfs', 'check', '--readonly', f],
};

/** Partition types that hold a Linux filesystem: one without a filesystem signature is broken, not empty. */
const LINUX_DATA = new Set(['0x83', '0fc63daf-8483-4772-8e79-3d69d8477de4']);
/** dos extended partitions: containers, nothing to check in themselves. */
const EXTENDED = new Set(['0x5', '0xf', '0x85']);

/** One check, and whether it ran a checker (a point where nothing could be checked does not pass). */
type Outcome = VerifyCheck & { readonly checked: boolean };

/**
 * `fsck`: each disk of the point is read through a temporary qcow2 overlay
 * into a raw temporary copy (so no root, loop device or nbd is needed, and
 * the repository is never written), then: a whole-disk filesystem is checked
 * read-only (ext2/3/4 `e2fsck -fn`, xfs `xfs_repair -n`, btrfs `btrfs check
 * --readonly`); a partitioned disk (dos or gpt, read with `partx`) has each
 * partition copied out with dd and checked the same way. Swap and other types
 * without a read-only checker are listed as not checked; a disk with neither
 * a filesystem nor a partition table, or a Linux-data partition without a
 * filesystem, fails. The temporary folder needs room for one disk's data plus
 * its largest partition. Everything is removed on every path.
 */
export async function fsckPoint(
  point: RestorePoint,
  opts: VerifyOptions & { readonly timeoutMs: number },
): Promise<VerifyResult> {
  const at = new Date();
  const t0 = performance.now();
  const timeout = AbortSignal.timeout(Math.min(opts.timeoutMs, 2 ** 31 - 1));
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  const ctx: ToolContext & { tmpDir?: string | undefined } = {
    log: opts.log,
    signal,
    guest: point.manifest.guest,
    tmpDir: opts.tmpDir,
  };
  const outcomes: Outcome[] = [];
  try {
    await withOverlays(point, ctx, async (dir, overlays) => {
      for (const [i, o] of overlays.entries()) outcomes.push(...(await fsckDisk(o, join(dir, `disk-${i}`), ctx)));
    });
  } catch (err) {
    if (opts.signal?.aborted) throw interrupted(opts.signal);
    if (!timeout.aborted) throw err;
    outcomes.push({ name: 'timeout', ok: false, checked: false, detail: `not done within ${opts.timeoutMs} ms` });
  }
  if (!outcomes.some((o) => o.checked) && outcomes.every((o) => o.ok))
    outcomes.push({ name: 'filesystems', ok: false, checked: false, detail: 'no filesystem that can be checked' });
  const checks = outcomes.map(({ checked: _, ...c }) => c);
  return {
    guest: point.manifest.guest,
    id: point.manifest.id,
    kind: 'fsck',
    ok: checks.every((c) => c.ok),
    at: at.toISOString(),
    durationMs: Math.round(performance.now() - t0),
    checks,
  };
}

export function interrupted(signal: AbortSignal): QuiesceError {
  const reason: unknown = signal.reason;
  if (reason instanceof QuiesceError) return reason;
  return new QuiesceError('INTERRUPTED', 'verify interrupted; its temporary files are removed');
}

async function fsckDisk(o: Overlay, base: string, ctx: ToolContext): Promise<Outcome[]> {
  const raw = `${base}.raw`;
  const name = o.disk.name;
  try {
    await must(tool(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', o.overlay, raw], ctx), ctx, `reading ${name}`);
    const probe = await blkid(raw, ctx);
    if (probe['TYPE']) return [await checkFilesystem(raw, probe['TYPE'], name, ctx)];
    if (probe['PTTYPE']) return await checkPartitions(raw, base, name, ctx);
    return [{ name, ok: false, checked: false, detail: 'neither a filesystem nor a partition table found (blkid)' }];
  } finally {
    await rm(raw, { force: true });
  }
}

async function checkPartitions(raw: string, base: string, disk: string, ctx: ToolContext): Promise<Outcome[]> {
  const r = await must(tool(['partx', '-g', '-o', 'NR,START,SECTORS,TYPE', '-P', raw], ctx), ctx, 'partx');
  const parts = r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => Object.fromEntries([...l.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!])));
  if (parts.length === 0) return [{ name: disk, ok: false, checked: false, detail: 'an empty partition table' }];
  const out: Outcome[] = [];
  for (const p of parts) {
    const name = `${disk} partition ${p['NR']}`;
    const type = (p['TYPE'] ?? '').toLowerCase();
    if (EXTENDED.has(type)) continue;
    const file = `${base}-p${p['NR']}.raw`;
    try {
      // Sectors of 512 bytes: partx's unit for a file.
      await must(
        tool(
          [
            'dd',
            `if=${raw}`,
            `of=${file}`,
            'bs=1M',
            'iflag=skip_bytes,count_bytes',
            `skip=${Number(p['START']) * 512}`,
            `count=${Number(p['SECTORS']) * 512}`,
            'conv=sparse',
            'status=none',
          ],
          ctx,
        ),
        ctx,
        `copying ${name}`,
      );
      const probe = await blkid(file, ctx);
      if (probe['TYPE']) out.push(await checkFilesystem(file, probe['TYPE'], name, ctx));
      else if (LINUX_DATA.has(type))
        out.push({
          name,
          ok: false,
          checked: false,
          detail: `a Linux filesystem partition (${type}) without a filesystem`,
        });
      else out.push({ name, ok: true, checked: false, detail: `not checked: no filesystem (partition type ${type})` });
    } finally {
      await rm(file, { force: true });
    }
  }
  return out;
}

async function checkFilesystem(file: string, type: string, name: string, ctx: ToolContext): Promise<Outcome> {
  const argv = CHECKERS[type]?.(file);
  if (!argv)
    return {
      name: `${name}: ${type}`,
      ok: true,
      checked: false,
      detail: `not checked: no read-only checker for ${type}`,
    };
  const what = `${name}: ${type} (${argv.slice(0, -1).join(' ')})`;
  const r = await tool(argv, ctx);
  ctx.signal.throwIfAborted();
  if (r.exitCode === undefined)
    throw new QuiesceError('STEP_FAILED', `cannot run ${argv[0]} for ${name}: ${r.error ?? 'not started'}`);
  return r.ok
    ? { name: what, ok: true, checked: true, detail: 'clean' }
    : { name: what, ok: false, checked: true, detail: `${r.error ?? 'failed'}: ${lastLines(r)}` };
}

/** blkid's low-level probe: TYPE for a filesystem, PTTYPE for a partition table; {} when it finds nothing (exit 2). */
async function blkid(file: string, ctx: ToolContext): Promise<Record<string, string>> {
  const r = await tool(['blkid', '-p', '-o', 'export', file], ctx, 60_000);
  ctx.signal.throwIfAborted();
  if (r.exitCode === 2) return {};
  if (!r.ok) throw new QuiesceError('STEP_FAILED', `blkid ${file}: ${r.error ?? 'failed'}: ${lastLines(r)}`);
  return Object.fromEntries(
    r.stdout
      .split('\n')
      .map((l) => /^([A-Z_]+)=(.*)$/.exec(l.trim()))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, m[2]!]),
  );
}

async function must(
  p: Promise<Awaited<ReturnType<typeof tool>>>,
  ctx: ToolContext,
  what: string,
): Promise<Awaited<ReturnType<typeof tool>>> {
  const r = await p;
  ctx.signal.throwIfAborted();
  if (!r.ok) throw new QuiesceError('STEP_FAILED', `${what}: ${r.error ?? 'failed'}: ${lastLines(r)}`);
  return r;
}
