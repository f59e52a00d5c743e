/**
 * Backup chains through the QMP provider against a real QEMU (paused, no
 * guest code; the disk is written through the device with qemu-io, so the
 * dirty bitmaps see every write), side by side with qemu-img on the same
 * machine in the same run:
 *
 * - full copy rate: quiesce's full (take → copy complete) against
 *   `qemu-img convert -O qcow2` of the same disk (target ≥ 0.8×);
 * - incremental after N MiB changed: bytes written against the changed data
 *   rounded to the 64 KiB cluster (target ≤ 1.1×);
 * - an empty incremental: bytes (≤ 1 MiB) and quiesce's own time, prepare to
 *   manifest (≤ 0.5 s);
 * - the window's part that depends on the level: take() (the transaction) of
 *   an incremental against a full, interleaved (target ≤ 1.1×);
 * - restore rate: `restorePoint` (convert, then qemu-img check/compare) of
 *   the chain's newest point against `qemu-img convert` of the same chain,
 *   interleaved (target ≥ 0.8×; the copy alone and with its proof).
 *
 *   node --import tsx bench/chain.ts     (BENCH_DISK_MB, default 1024; BENCH_DATA_MB, default 512; BENCH_N, default 15)
 */
import { spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { captureLogger } from '../src/log/logger.js';
import { QmpClient } from '../src/qmp/client.js';
import { snapshotProvider, type BackupRecord, type PlannedQmpSnapshot } from '../src/snapshot/index.js';
import type { BackupLevel } from '../src/config/types.js';
import { readCatalog } from '../src/repository/catalog.js';
import { restorePoint } from '../src/repository/restore.js';
import { startBareQemu, type BareQemu } from '../test/helpers/vm/bare-qemu.js';

const MiB = 1 << 20;
const DISK_MB = Number(process.env['BENCH_DISK_MB'] ?? 1024);
const DATA_MB = Number(process.env['BENCH_DATA_MB'] ?? 512);
const N = Number(process.env['BENCH_N'] ?? 15);
const DEVICE = '/machine/peripheral/vda/virtio-backend';

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const f = (n: number, d = 2): string => n.toFixed(d);

function planned(socket: string, repo: string, level: BackupLevel): PlannedQmpSnapshot {
  return {
    provider: 'qmp',
    socket,
    mode: 'backup',
    disks: ['vda'],
    target: undefined,
    repository: { dir: repo, level, fullEvery: {} },
    format: 'qcow2',
    connectTimeoutMs: 5000,
    commandTimeoutMs: 30_000,
    timeoutMs: 600_000,
  };
}

interface Timed {
  readonly record: BackupRecord;
  /** prepare() → manifest written: all of quiesce's own time. */
  readonly totalMs: number;
  /** take(): the transaction, the part of the frozen window the provider owns. */
  readonly takeMs: number;
  /** take() → the copy complete (BLOCK_JOB_COMPLETED, nodes closed, manifest). */
  readonly copyMs: number;
}

async function backup(s: PlannedQmpSnapshot): Promise<Timed> {
  const log = captureLogger();
  const p = await snapshotProvider(s);
  const t0 = performance.now();
  try {
    await p.prepare?.({ guest: 'vm', log });
    const t1 = performance.now();
    const taken = await p.take({ guest: 'vm', log, inWindow: true });
    const t2 = performance.now();
    await taken.complete?.({ log, window: { frozenWindowMs: 0, consistency: 'crash', agentVersion: undefined } });
    const t3 = performance.now();
    return { record: taken.backup!, totalMs: t3 - t0, takeMs: t2 - t1, copyMs: t3 - t1 };
  } finally {
    await p.dispose?.({ guest: 'vm', log });
  }
}

/** Writes 1 MiB slots (a distinct non-zero pattern each) through the device; `flush` at the end. */
async function write(q: QmpClient, slots: readonly number[], seed: number): Promise<void> {
  for (const [i, slot] of slots.entries()) {
    const pattern = ((seed + i) % 255) + 1;
    const out = await q.execute<string>('human-monitor-command', {
      'command-line': `qemu-io -d ${DEVICE} "write -P 0x${pattern.toString(16)} ${slot * MiB} ${MiB}"`,
    });
    if (out.trim()) throw new Error(`qemu-io: ${out}`);
  }
  await q.execute('human-monitor-command', { 'command-line': `qemu-io -d ${DEVICE} "flush"` });
}

/**
 * qemu-img convert of the disk, then an fsync of the copy: a backup is only
 * done once it is on disk (quiesce's copy ends with the target's flush and
 * the manifest's fsync). Both times are returned.
 */
function qemuImgConvert(src: string, out: string): { plain: number; durable: number } {
  const t0 = performance.now();
  const r = spawnSync('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'qcow2', src, out]);
  if (r.status !== 0) throw new Error(`qemu-img convert: ${r.stderr.toString()}`);
  const plain = performance.now() - t0;
  const fd = openSync(out, 'r');
  fsyncSync(fd);
  closeSync(fd);
  const durable = performance.now() - t0;
  rmSync(out);
  return { plain, durable };
}

function pickSlots(count: number, seed: number): number[] {
  // Spread over the data area, no repeats (the changed data is count MiB exactly).
  const all = Array.from({ length: DATA_MB }, (_, i) => i);
  let x = seed * 2654435761;
  for (let i = all.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) >>> 0;
    const j = x % (i + 1);
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all.slice(0, count).sort((a, b) => a - b);
}

async function main(): Promise<void> {
  const work = mkdtempSync(join('/var/tmp', 'quiesce-bench-chain-'));
  let qemu: BareQemu | undefined;
  let q: QmpClient | undefined;
  try {
    qemu = await startBareQemu({ dataFormat: 'qcow2', dataDiskMB: DISK_MB, dataImage: join(work, 'disk.qcow2') });
    q = await QmpClient.connect(qemu.qmpSocket2, { commandTimeoutMs: 60_000 });
    console.log(
      `disk ${DISK_MB} MiB qcow2 (ext4 + ${DATA_MB} MiB written), under ${work} (${tmpdir() === '/tmp' ? '' : ''}on disk)`,
    );
    await write(
      q,
      Array.from({ length: DATA_MB }, (_, i) => i),
      7,
    );

    // 1. Full copy rate, interleaved with qemu-img convert of the same disk.
    const ours: number[] = [];
    const theirs: number[] = [];
    const theirsPlain: number[] = [];
    const rounds = 5;
    for (let r = 0; r < rounds; r++) {
      const c = qemuImgConvert(qemu.dataImage, join(work, 'convert.qcow2'));
      theirs.push(c.durable);
      theirsPlain.push(c.plain);
      const full = await backup(planned(qemu.qmpSocket, join(work, `repo-full-${r}`), 'full'));
      ours.push(full.copyMs);
      rmSync(join(work, `repo-full-${r}`), { recursive: true, force: true });
    }
    const allocated = statSync(qemu.dataImage).blocks * 512;
    const rateOurs = allocated / MiB / (median(ours) / 1000);
    const rateTheirs = allocated / MiB / (median(theirs) / 1000);
    console.log(
      `full copy: quiesce ${f(median(ours), 0)} ms [${ours.map((x) => f(x, 0)).join(' ')}], qemu-img convert + fsync ${f(median(theirs), 0)} ms [${theirs.map((x) => f(x, 0)).join(' ')}] (median of ${rounds}; ${f(allocated / MiB, 0)} MiB allocated) → rate ${f(rateOurs, 0)} vs ${f(rateTheirs, 0)} MiB/s = ${f(rateOurs / rateTheirs)}× (target ≥ 0.8×); against convert without fsync (${f(median(theirsPlain), 0)} ms) ${f(median(theirsPlain) / median(ours))}×`,
    );

    // 2. Incrementals after N MiB changed, in one chain.
    const repo = join(work, 'repo');
    await backup(planned(qemu.qmpSocket, repo, 'auto'));
    for (const [i, mb] of [1, 16, 64, 256].entries()) {
      await write(q, pickSlots(mb, 100 + i), 50 + i);
      const inc = await backup(planned(qemu.qmpSocket, repo, 'auto'));
      if (inc.record.level !== 'incremental') throw new Error(`expected an incremental, got ${inc.record.level}`);
      const changed = mb * MiB; // 1 MiB slots: already cluster-aligned
      console.log(
        `incremental after ${mb} MiB changed: ${f(inc.record.bytesWritten! / MiB, 2)} MiB written = ${f(inc.record.bytesWritten! / changed, 3)}× (target ≤ 1.1×); quiesce's time ${f(inc.totalMs, 0)} ms`,
      );
    }

    // 3. Empty incrementals.
    const empty: Timed[] = [];
    for (let i = 0; i < 5; i++) empty.push(await backup(planned(qemu.qmpSocket, repo, 'auto')));
    console.log(
      `empty incremental: ${f(Math.max(...empty.map((e) => e.record.bytesWritten!)) / 1024, 0)} KiB at most (target ≤ 1024 KiB); quiesce's own time median ${f(median(empty.map((e) => e.totalMs)), 0)} ms, max ${f(Math.max(...empty.map((e) => e.totalMs)), 0)} ms (target ≤ 500 ms)`,
    );

    // 4. The transaction inside the window: incremental vs full, interleaved, same data changed before each.
    const takeFull: number[] = [];
    const takeInc: number[] = [];
    const fullRepo = join(work, 'repo-take-full');
    for (let i = 0; i < N; i++) {
      await write(q, pickSlots(8, 200 + i), 90 + i);
      const a = await backup(planned(qemu.qmpSocket, fullRepo, 'full'));
      takeFull.push(a.takeMs);
      rmSync(join(fullRepo), { recursive: true, force: true });
      await write(q, pickSlots(8, 300 + i), 120 + i);
      const b = await backup(planned(qemu.qmpSocket, repo, 'incremental'));
      takeInc.push(b.takeMs);
    }
    console.log(
      `take() (the transaction, inside the window): incremental ${f(median(takeInc))} ms vs full ${f(median(takeFull))} ms (medians of ${N}) = ${f(median(takeInc) / median(takeFull))}× (target ≤ 1.1×)`,
    );

    // 5. Restore of the newest point (its chain: the full and every incremental above) against qemu-img convert of it.
    const catalog = await readCatalog(repo, 'vm');
    const newest = catalog.points.at(-1)!;
    const top = join(newest.dir, 'vda.qcow2');
    const restoreAll: number[] = [];
    const restoreCopy: number[] = [];
    const convertChain: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const r = spawnSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', top, join(work, 'chain.raw')]);
      if (r.status !== 0) throw new Error(`qemu-img convert: ${r.stderr.toString()}`);
      convertChain.push(performance.now() - t0);
      rmSync(join(work, 'chain.raw'));
      const to = join(work, `restored-${i}`);
      const res = await restorePoint(newest, { to, format: 'raw', log: captureLogger() });
      restoreAll.push(res.durationMs);
      restoreCopy.push(res.convertMs);
      rmSync(to, { recursive: true, force: true });
    }
    const chainLen = newest.lineage.length;
    console.log(
      `restore of a point ${chainLen} backups deep (raw): quiesce ${f(median(restoreCopy), 0)} ms copy, ${f(median(restoreAll), 0)} ms with check+compare; qemu-img convert of the chain ${f(median(convertChain), 0)} ms (medians of 5) → rate ${f(median(convertChain) / median(restoreCopy))}× copy, ${f(median(convertChain) / median(restoreAll))}× with its proof (target ≥ 0.8×)`,
    );
  } finally {
    q?.close();
    await qemu?.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
