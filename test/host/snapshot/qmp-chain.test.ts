// Backup chains through the QMP provider against a real QEMU (paused, no guest code): the disk is
// written with qemu-io through HMP (as a guest would write: through the device, so the dirty
// bitmaps see it), and every restore point is read back with qemu-io from the repository's images.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BackupLevel } from '../../../src/config/types.js';
import { captureLogger } from '../../../src/log/logger.js';
import { QmpClient } from '../../../src/qmp/client.js';
import { readCatalog } from '../../../src/repository/catalog.js';
import { bitmapName } from '../../../src/repository/layout.js';
import type { Manifest } from '../../../src/repository/manifest.js';
import { snapshotProvider, type BackupRecord, type PlannedQmpSnapshot } from '../../../src/snapshot/index.js';
import { isRoot } from '../../helpers/agents.js';
import { bareQemuUnavailable, startBareQemu, type BareQemu } from '../../helpers/vm/bare-qemu.js';

const MiB = 1 << 20;
const DEVICE_PATH = '/machine/peripheral/vda/virtio-backend';

function planned(socket: string, repo: string, level: BackupLevel = 'auto', fullEvery = {}): PlannedQmpSnapshot {
  return {
    provider: 'qmp',
    socket,
    mode: 'backup',
    disks: ['vda'],
    target: undefined,
    repository: { dir: repo, level, fullEvery },
    format: 'qcow2',
    connectTimeoutMs: 5000,
    commandTimeoutMs: 10_000,
    timeoutMs: 60_000,
  };
}

/** One backup as the engine runs it: prepare, take (the window), complete, dispose. */
async function backup(
  s: PlannedQmpSnapshot,
): Promise<{ record: BackupRecord | undefined; error?: Error; log: ReturnType<typeof captureLogger> }> {
  const log = captureLogger();
  const p = await snapshotProvider(s);
  let record: BackupRecord | undefined;
  try {
    await p.prepare?.({ guest: 'vm', log });
    const taken = await p.take({ guest: 'vm', log, inWindow: true });
    record = taken.backup;
    await taken.complete?.({
      log,
      window: { frozenWindowMs: 12.5, consistency: 'filesystem', agentVersion: '7.2.0' },
    });
    return { record, log };
  } catch (err) {
    return { record, error: err as Error, log };
  } finally {
    await p.dispose?.({ guest: 'vm', log, error: 'failed in the test' });
  }
}

async function qmp<T>(socket: string, cmd: string, args?: Record<string, unknown>): Promise<T> {
  const q = await QmpClient.connect(socket);
  try {
    return await q.execute<T>(cmd, args);
  } finally {
    q.close();
  }
}

/** Writes `len` bytes of `pattern` at `off` through the guest's device (the bitmaps record it). */
async function guestWrite(socket: string, pattern: number, off: number, len: number): Promise<void> {
  const out = await qmp<string>(socket, 'human-monitor-command', {
    'command-line': `qemu-io -d ${DEVICE_PATH} "write -P 0x${pattern.toString(16)} ${off} ${len}"`,
  });
  assert.doesNotMatch(out, /error|fail/i, out);
}

async function bitmaps(socket: string): Promise<string[]> {
  const nodes = await qmp<{ 'node-name': string; 'dirty-bitmaps'?: { name: string }[] }[]>(
    socket,
    'query-named-block-nodes',
    { flat: true },
  );
  return (nodes.find((n) => n['node-name'] === 'data0')?.['dirty-bitmaps'] ?? []).map((b) => b.name).sort();
}

/** True if the image (through its backing chain) reads `pattern` over [off, off+len). */
function reads(image: string, pattern: number, off: number, len: number): boolean {
  // -U: QEMU may have the image open (a parent is a backing file of a running copy).
  const r = spawnSync(
    'qemu-io',
    ['-r', '-f', 'qcow2', '-c', `read -P 0x${pattern.toString(16)} ${off} ${len}`, image],
    {
      encoding: 'utf8',
    },
  );
  return r.status === 0 && !/Pattern verification failed|error/i.test(r.stdout + r.stderr);
}

function manifestOf(repo: string, r: BackupRecord): Manifest {
  return JSON.parse(readFileSync(join(repo, 'vm', r.chain, r.id, 'manifest.json'), 'utf8')) as Manifest;
}

describe('backup chains through QMP against a real QEMU (qcow2 disk, paused)', { skip: bareQemuUnavailable() }, () => {
  let qemu: BareQemu;
  let repo: string;
  before(async () => {
    qemu = await startBareQemu({ dataFormat: 'qcow2', dataDiskMB: 64 });
    repo = mkdtempSync(join(tmpdir(), 'quiesce-repo-'));
  });
  after(async () => {
    await qemu?.stop();
    if (repo) rmSync(repo, { recursive: true, force: true });
  });

  // Each point's expected contents: pattern per MiB slot written so far.
  const points: { record: BackupRecord; writes: [number, number][] }[] = [];
  const writes: [number, number][] = [];
  const write = async (pattern: number, slot: number): Promise<void> => {
    await guestWrite(qemu.qmpSocket, pattern, slot * MiB, MiB);
    writes.push([pattern, slot]);
  };

  test('auto: the first backup is a full that starts its bitmap in the same transaction', async () => {
    await write(0x11, 8);
    const r = await backup(planned(qemu.qmpSocket, repo));
    assert.equal(r.error, undefined, r.error?.message);
    const rec = r.record!;
    assert.equal(rec.level, 'full');
    assert.equal(rec.reason, 'no chain to continue yet');
    assert.equal(rec.chain, rec.id);
    const m = manifestOf(repo, rec);
    assert.equal(m.complete, true);
    assert.equal(m.parent, null);
    assert.equal(m.bitmap, bitmapName(rec.id));
    assert.equal(m.frozenWindowMs, 12.5);
    assert.equal(m.agentVersion, '7.2.0');
    assert.equal(m.disks[0]!.virtualSize, 64 * MiB);
    assert.deepEqual(await bitmaps(qemu.qmpSocket), [bitmapName(rec.id)]);
    points.push({ record: rec, writes: [...writes] });
  });

  test('auto: then incrementals, each copying only what changed, with the parent as backing file', async () => {
    await write(0x22, 16);
    await write(0x23, 17);
    const r = await backup(planned(qemu.qmpSocket, repo));
    assert.equal(r.error, undefined, r.error?.message);
    const rec = r.record!;
    assert.equal(rec.level, 'incremental');
    assert.equal(rec.parent, points[0]!.record.id);
    assert.match(rec.reason, /continues chain .* bytes changed/);
    const img = join(repo, 'vm', rec.chain, rec.id, 'vda.qcow2');
    const info = JSON.parse(
      spawnSync('qemu-img', ['info', '--output=json', '-U', img], { encoding: 'utf8' }).stdout,
    ) as { 'backing-filename': string };
    assert.equal(info['backing-filename'], `../${points[0]!.record.id}/vda.qcow2`);
    // 2 MiB changed: the image holds them plus qcow2 metadata, and nothing else.
    assert.ok(rec.bytesWritten! >= 2 * MiB && rec.bytesWritten! <= 2.5 * MiB, `${rec.bytesWritten} bytes`);
    // The full's bitmap is replaced by this one's.
    assert.deepEqual(await bitmaps(qemu.qmpSocket), [bitmapName(rec.id)]);
    points.push({ record: rec, writes: [...writes] });
  });

  test('differential: reads the base bitmap and leaves it; the next incremental still sees everything', async () => {
    await write(0x33, 24);
    const d = await backup(planned(qemu.qmpSocket, repo, 'differential'));
    assert.equal(d.error, undefined, d.error?.message);
    assert.equal(d.record!.level, 'differential');
    assert.equal(d.record!.parent, points[1]!.record.id);
    assert.deepEqual(await bitmaps(qemu.qmpSocket), [bitmapName(points[1]!.record.id)]);
    points.push({ record: d.record!, writes: [...writes] });

    await write(0x44, 32);
    const i = await backup(planned(qemu.qmpSocket, repo));
    assert.equal(i.error, undefined, i.error?.message);
    assert.equal(i.record!.level, 'incremental');
    // Its parent is the last incremental, not the differential: slot 24 must be in it too.
    assert.equal(i.record!.parent, points[1]!.record.id);
    points.push({ record: i.record!, writes: [...writes] });
  });

  test('an incremental after no change writes almost nothing', async () => {
    const r = await backup(planned(qemu.qmpSocket, repo));
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.record!.level, 'incremental');
    assert.ok(r.record!.bytesWritten! <= MiB, `${r.record!.bytesWritten} bytes`);
    points.push({ record: r.record!, writes: [...writes] });
  });

  test('every restore point reads exactly its own data, never a later write', () => {
    const raw = (p: { record: BackupRecord }): Buffer => {
      const img = join(repo, 'vm', p.record.chain, p.record.id, 'vda.qcow2');
      assert.equal(spawnSync('qemu-img', ['check', '-U', img]).status, 0, `qemu-img check ${img}`);
      const out = join(repo, `${p.record.id}.raw`);
      assert.equal(spawnSync('qemu-img', ['convert', '-U', '-O', 'raw', img, out]).status, 0);
      try {
        return readFileSync(out);
      } finally {
        rmSync(out);
      }
    };
    const full = raw(points[0]!);
    const slot = (b: Buffer, n: number): Buffer => b.subarray(n * MiB, (n + 1) * MiB);
    for (const p of points) {
      const data = raw(p);
      const last = new Map<number, number>();
      for (const [pattern, n] of p.writes) last.set(n, pattern);
      for (const [n, pattern] of last)
        assert.ok(
          slot(data, n).equals(Buffer.alloc(MiB, pattern)),
          `${p.record.id}: slot ${n} holds 0x${pattern.toString(16)}`,
        );
      // A slot written after this point reads as in the full: the later write is not in it.
      for (const [, n] of writes)
        if (!last.has(n)) assert.ok(slot(data, n).equals(slot(full, n)), `${p.record.id}: slot ${n} holds later data`);
      // And nothing else differs from the full but the slots written since.
      for (let n = 0; n < 64; n++)
        if (!last.has(n) || n === 8)
          assert.ok(n === 8 || slot(data, n).equals(slot(full, n)), `${p.record.id}: slot ${n}`);
    }
  });

  test('the catalog lists them all as restore points, with their lineage', async () => {
    const c = await readCatalog(repo, 'vm');
    assert.deepEqual(
      c.points.map((p) => p.manifest.id),
      points.map((p) => p.record.id),
    );
    assert.deepEqual(c.unusable, []);
    assert.deepEqual(c.points[3]!.lineage, [points[0]!.record.id, points[1]!.record.id, points[3]!.record.id]);
  });

  test('the bitmap removed behind quiesce’s back: auto takes a full and says why', async () => {
    const base = points[points.length - 1]!.record;
    await qmp(qemu.qmpSocket, 'block-dirty-bitmap-remove', { node: 'data0', name: bitmapName(base.id) });
    const r = await backup(planned(qemu.qmpSocket, repo));
    assert.equal(r.error, undefined, r.error?.message);
    assert.equal(r.record!.level, 'full');
    assert.match(r.record!.reason, new RegExp(`bitmap ${bitmapName(base.id)} is missing on disk vda`));
    points.push({ record: r.record!, writes: [...writes] });
  });

  test('level incremental with a broken chain fails before anything is created', async () => {
    const last = points[points.length - 1]!.record;
    await qmp(qemu.qmpSocket, 'block-dirty-bitmap-remove', { node: 'data0', name: bitmapName(last.id) });
    const before = readdirSync(join(repo, 'vm', last.chain));
    const r = await backup(planned(qemu.qmpSocket, repo, 'incremental'));
    assert.match(r.error?.message ?? '', /cannot take an incremental: bitmap .* is missing .*level auto takes a full/);
    assert.equal(r.record, undefined);
    assert.deepEqual(readdirSync(join(repo, 'vm', last.chain)), before);
    const nodes = await qmp<{ 'node-name': string }[]>(qemu.qmpSocket, 'query-named-block-nodes', { flat: true });
    assert.deepEqual(nodes.map((n) => n['node-name']).sort(), ['data0', 'file0']);
  });

  test('fullEvery.backups starts a new chain', async () => {
    const first = await backup(planned(qemu.qmpSocket, repo));
    assert.equal(first.record!.level, 'full');
    const second = await backup(planned(qemu.qmpSocket, repo, 'auto', { backups: 2 }));
    assert.equal(second.record!.level, 'incremental');
    const third = await backup(planned(qemu.qmpSocket, repo, 'auto', { backups: 2 }));
    assert.equal(third.record!.level, 'full');
    assert.match(third.record!.reason, /has 2 backups \(fullEvery.backups 2\)/);
    assert.deepEqual(await bitmaps(qemu.qmpSocket), [bitmapName(third.record!.id)]);
  });

  test(
    'the repository runs out of space mid-copy: no restore point, its bitmap gone, the next incremental whole',
    {
      skip: isRoot() ? undefined : 'mounts a small tmpfs (needs root)',
    },
    async () => {
      const small = mkdtempSync(join(tmpdir(), 'quiesce-small-repo-'));
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', small]);
      try {
        const full = await backup(planned(qemu.qmpSocket, small, 'full'));
        assert.equal(full.error, undefined, full.error?.message);
        const base = manifestOf(small, full.record!);
        // More than the space left: the copy fails with ENOSPC on the target.
        for (let n = 44; n < 60; n++) await guestWrite(qemu.qmpSocket, 0x66, n * MiB, MiB);
        const failed = await backup(planned(qemu.qmpSocket, small));
        assert.match(failed.error?.message ?? '', /backup failed: vda → .*vda\.qcow2: .*(No space|write error)/i);
        const rec = failed.record!;
        assert.equal(rec.level, 'incremental');
        const folder = join(small, 'vm', rec.chain, rec.id);
        // The images are gone; the failure is on record, or (no space even for that) the folder is gone.
        const left = existsSync(folder) ? readdirSync(folder) : [];
        assert.ok(left.length === 0 || (left.length === 1 && left[0] === 'manifest.json'), left.join(' '));
        if (left.length) assert.equal(manifestOf(small, rec).complete, false);
        // QEMU's bitmaps: the base's, as it was; the failed backup's new one removed.
        assert.ok((await bitmaps(qemu.qmpSocket)).includes(base.bitmap));
        assert.ok(!(await bitmaps(qemu.qmpSocket)).includes(bitmapName(rec.id)));
        const c = await readCatalog(small, 'vm');
        assert.deepEqual(
          c.points.map((p) => p.manifest.id),
          [base.id],
        );

        // Room again (the slots rewritten as zeros take no space): the next incremental holds every write since the full.
        execFileSync('mount', ['-o', 'remount,size=64m', small]);
        const next = await backup(planned(qemu.qmpSocket, small));
        assert.equal(next.error, undefined, next.error?.message);
        assert.equal(next.record!.parent, base.id);
        const img = join(small, 'vm', next.record!.chain, next.record!.id, 'vda.qcow2');
        for (let n = 44; n < 60; n++) assert.ok(reads(img, 0x66, n * MiB, MiB), `slot ${n}`);
      } finally {
        spawnSync('umount', [small]);
        rmSync(small, { recursive: true, force: true });
      }
    },
  );
});

describe('backup chains through QMP: crashes, added disks, broken chains', { skip: bareQemuUnavailable() }, () => {
  let dir: string;
  let qemu: BareQemu | undefined;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'quiesce-chain-faults-'));
  });
  after(async () => {
    await qemu?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('QEMU killed mid-copy and restarted: the copy is no restore point, the bitmap comes back inconsistent, auto takes a full', async () => {
    const image = join(dir, 'kill.qcow2');
    const repo = join(dir, 'kill-repo');
    qemu = await startBareQemu({ dataFormat: 'qcow2', dataImage: image, dataDiskMB: 128 });
    const full = await backup(planned(qemu.qmpSocket, repo));
    assert.equal(full.error, undefined, full.error?.message);
    // A clean stop stores the persistent bitmap in the image; the next QEMU marks it in use.
    await qemu.stop();
    qemu = await startBareQemu({ dataFormat: 'qcow2', dataImage: image });
    assert.deepEqual(await bitmaps(qemu.qmpSocket), [bitmapName(full.record!.id)]);
    for (let n = 8; n < 72; n++) await guestWrite(qemu.qmpSocket, 0x77, n * MiB, MiB);
    // As a guest's fsync would: the writes survive the kill below.
    await qmp(qemu.qmpSocket, 'human-monitor-command', { 'command-line': `qemu-io -d ${DEVICE_PATH} "flush"` });

    const log = captureLogger();
    const p = await snapshotProvider(planned(qemu.qmpSocket, repo));
    await p.prepare?.({ guest: 'vm', log });
    const taken = await p.take({ guest: 'vm', log, inWindow: true });
    process.kill(qemu.pid, 'SIGKILL');
    await assert.rejects(taken.complete!({ log }), /monitor went away|did not finish|failed/);
    await p.dispose?.({ guest: 'vm', log, error: 'QEMU was killed' });
    await qemu.stop();
    const killed = taken.backup!;
    assert.equal(existsSync(join(repo, 'vm', killed.chain, killed.id, 'vda.qcow2')), false);

    qemu = await startBareQemu({ dataFormat: 'qcow2', dataImage: image });
    const states = await qmp<{ 'node-name': string; 'dirty-bitmaps'?: { name: string; inconsistent?: boolean }[] }[]>(
      qemu.qmpSocket,
      'query-named-block-nodes',
      { flat: true },
    );
    const fullBitmap = (states.find((n) => n['node-name'] === 'data0')!['dirty-bitmaps'] ?? []).find(
      (b) => b.name === bitmapName(full.record!.id),
    );
    assert.equal(fullBitmap?.inconsistent, true);

    const next = await backup(planned(qemu.qmpSocket, repo));
    assert.equal(next.error, undefined, next.error?.message);
    assert.equal(next.record!.level, 'full');
    assert.match(next.record!.reason, /is inconsistent \(QEMU did not close cleanly\)/);
    assert.deepEqual(await bitmaps(qemu.qmpSocket), [bitmapName(next.record!.id)]);
    const c = await readCatalog(repo, 'vm');
    assert.deepEqual(
      c.points.map((x) => x.manifest.id),
      [full.record!.id, next.record!.id],
    );
    assert.match(c.unusable.find((u) => u.id === killed.id)?.why ?? '', /incomplete: QEMU was killed/);
    const img = join(repo, 'vm', next.record!.chain, next.record!.id, 'vda.qcow2');
    assert.ok(reads(img, 0x77, 8 * MiB, 64 * MiB));
    await qemu.stop();
    qemu = undefined;
  });

  test('a disk added: auto takes a full of every disk (raw ones with a transient bitmap)', async () => {
    const repo = join(dir, 'added-repo');
    const image = join(dir, 'added.qcow2');
    qemu = await startBareQemu({ dataFormat: 'qcow2', dataImage: image });
    const first = await backup({ ...planned(qemu.qmpSocket, repo), disks: 'all' });
    assert.equal(first.error, undefined, first.error?.message);
    await qemu.stop();
    qemu = await startBareQemu({ dataFormat: 'qcow2', dataImage: image, extraDisks: 1 });
    const second = await backup({ ...planned(qemu.qmpSocket, repo), disks: 'all' });
    assert.equal(second.error, undefined, second.error?.message);
    assert.equal(second.record!.level, 'full');
    assert.match(second.record!.reason, /disk vd1 was added since/);
    assert.match(second.record!.reason, /bitmap transient on vd1/);
    const m = manifestOf(repo, second.record!);
    assert.deepEqual(
      m.disks.map((d) => d.name),
      ['vda', 'vd1'],
    );
    // While this QEMU runs, the chain goes on over both disks.
    const third = await backup({ ...planned(qemu.qmpSocket, repo), disks: 'all' });
    assert.equal(third.error, undefined, third.error?.message);
    assert.equal(third.record!.level, 'incremental');
    await qemu.stop();
    qemu = undefined;
  });

  test('a middle manifest missing: later points are not restorable, and auto takes a full', async () => {
    const repo = join(dir, 'middle-repo');
    qemu = await startBareQemu({ dataFormat: 'qcow2' });
    const ids: BackupRecord[] = [];
    for (let i = 0; i < 3; i++) {
      await guestWrite(qemu.qmpSocket, 0x10 + i, (8 + i) * MiB, MiB);
      const r = await backup(planned(qemu.qmpSocket, repo));
      assert.equal(r.error, undefined, r.error?.message);
      ids.push(r.record!);
    }
    rmSync(join(repo, 'vm', ids[1]!.chain, ids[1]!.id, 'manifest.json'));
    const c = await readCatalog(repo, 'vm');
    assert.deepEqual(
      c.points.map((p) => p.manifest.id),
      [ids[0]!.id],
    );
    assert.match(c.unusable.find((u) => u.id === ids[2]!.id)?.why ?? '', /its parent .* is not a restore point/);
    const next = await backup(planned(qemu.qmpSocket, repo));
    assert.equal(next.error, undefined, next.error?.message);
    assert.equal(next.record!.level, 'full');
    assert.match(next.record!.reason, /bitmap .* is missing/);
  });
});
