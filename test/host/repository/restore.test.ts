import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { QuiesceError } from '../../../src/errors.js';
import { findPoint, readCatalog, type RestorePoint } from '../../../src/repository/catalog.js';
import { MANIFEST } from '../../../src/repository/layout.js';
import { restorePoint, type RestoreOptions } from '../../../src/repository/restore.js';
import type { LogEvent } from '../../../src/log/events.js';
import { makeBackup, makeRepository, qemuIo, qemuToolsMissing, type MadeBackup } from '../../helpers/chain-images.js';

const run = promisify(execFile);
const GUEST = 'web1';
const MiB = 1 << 20;

describe('restorePoint', { skip: qemuToolsMissing() }, () => {
  let repo: string;
  let remove: () => Promise<void>;
  let full: MadeBackup;
  let inc1: MadeBackup;
  let inc2: MadeBackup;
  let inc3: MadeBackup;
  const events: LogEvent[] = [];
  const opts = (to: string, o: Partial<RestoreOptions> = {}): RestoreOptions => ({
    to,
    format: 'raw',
    log: (e) => events.push(e),
    ...o,
  });

  before(async () => {
    ({ repo, remove } = await makeRepository());
    full = await makeBackup(repo, GUEST, {
      time: new Date('2026-03-01T01:00:00Z'),
      disks: [
        { name: 'vda', size: 4 * MiB },
        { name: 'vdb', size: 2 * MiB },
      ],
      writes: [
        { disk: 'vda', pattern: 0x11, offset: 0, length: MiB },
        { disk: 'vdb', pattern: 0x21, offset: 512 * 1024, length: 64 * 1024 },
      ],
    });
    inc1 = await makeBackup(repo, GUEST, {
      time: new Date('2026-03-02T01:00:00Z'),
      parent: full,
      writes: [{ disk: 'vda', pattern: 0x12, offset: 2 * MiB, length: 128 * 1024 }],
    });
    // Changed nothing: restoring it must give inc1's data, never inc3's.
    inc2 = await makeBackup(repo, GUEST, { time: new Date('2026-03-03T01:00:00Z'), parent: inc1 });
    inc3 = await makeBackup(repo, GUEST, {
      time: new Date('2026-03-04T01:00:00Z'),
      parent: inc2,
      writes: [
        { disk: 'vda', pattern: 0x13, offset: 512 * 1024, length: MiB },
        { disk: 'vdb', pattern: 0x23, offset: 0, length: 64 * 1024 },
      ],
    });
  });
  after(async () => {
    await remove?.();
  });

  const pointOf = async (b: MadeBackup): Promise<RestorePoint> => findPoint(await readCatalog(repo, GUEST), b.id);
  const target = (name: string): string => join(repo, '..', `${repo.split('/').pop()}-out`, name);

  test('every point restores (raw) to exactly its own data, nothing of a later backup', async () => {
    for (const b of [full, inc1, inc2, inc3]) {
      const to = target(`raw-${b.id}`);
      const r = await restorePoint(await pointOf(b), opts(to));
      assert.equal(r.id, b.id);
      assert.deepEqual(
        r.disks.map((d) => d.path),
        [join(to, 'vda.raw'), join(to, 'vdb.raw')],
      );
      for (const [disk, bytes] of b.expected) {
        const got = await readFile(join(to, `${disk}.raw`));
        assert.ok(got.equals(bytes), `${b.id} ${disk} differs from the model`);
      }
      assert.deepEqual((await readdir(to)).sort(), ['vda.raw', 'vdb.raw'], 'no temp file left');
    }
  });

  test('an incremental that changed nothing restores to its parent’s data, not the next backup’s', async () => {
    const to = target('empty-inc');
    const r = await restorePoint(await pointOf(inc2), opts(to));
    assert.deepEqual(r.lineage, [full.id, inc1.id, inc2.id]);
    const vda = await readFile(join(to, 'vda.raw'));
    assert.ok(vda.equals(inc1.expected.get('vda')!));
    // inc3 wrote 0x13 at 512 KiB and 0x23 at the start of vdb: neither is here.
    assert.equal(vda[512 * 1024], 0x11);
    assert.equal((await readFile(join(to, 'vdb.raw')))[0], 0);
  });

  test('qcow2 restores are standalone images holding the point’s data (qemu-io read -P)', async () => {
    const to = target('qcow2');
    const r = await restorePoint(await pointOf(inc3), opts(to, { format: 'qcow2' }));
    const vda = join(to, 'vda.qcow2');
    assert.equal(r.disks[0]!.path, vda);
    const info = JSON.parse((await run('qemu-img', ['info', '--output=json', vda])).stdout) as Record<string, unknown>;
    assert.equal(info['format'], 'qcow2');
    assert.equal(info['backing-filename'], undefined, 'no backing file');
    await qemuIo(vda, 'read -P 0x11 0 512k', 'qcow2', true);
    await qemuIo(vda, 'read -P 0x13 512k 1M', 'qcow2', true);
    await qemuIo(vda, 'read -P 0x12 2M 128k', 'qcow2', true);
    await qemuIo(vda, 'read -P 0 3M 1M', 'qcow2', true);
    await qemuIo(join(to, 'vdb.qcow2'), 'read -P 0x23 0 64k', 'qcow2', true);
    // And the model, byte for byte.
    const model = join(to, 'model.raw');
    await writeFile(model, inc3.expected.get('vda')!);
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', model, vda]);
  });

  test('never overwrites: an existing file stops the restore before it writes anything', async () => {
    const to = target('exists');
    await mkdir(to, { recursive: true });
    await writeFile(join(to, 'vdb.raw'), 'keep me');
    await assert.rejects(
      restorePoint(await pointOf(inc1), opts(to)),
      (err: QuiesceError) =>
        err.code === 'REPOSITORY' && err.message.includes(join(to, 'vdb.raw')) && /never overwrites/.test(err.message),
    );
    assert.deepEqual(await readdir(to), ['vdb.raw']);
    assert.equal(await readFile(join(to, 'vdb.raw'), 'utf8'), 'keep me');
  });

  test('a name that appears while restoring is kept; the restore removes all it wrote and fails', async () => {
    const to = target('race');
    let planted = false;
    const p = restorePoint(await pointOf(inc1), {
      ...opts(to),
      // Called while vda is being copied: vdb.raw appears before its link.
      onProgress: () => {
        if (planted) return;
        planted = true;
        void writeFile(join(to, 'vdb.raw'), 'not yours');
      },
    });
    await assert.rejects(p, (err: QuiesceError) => err.code === 'REPOSITORY' && /vdb\.raw appeared/.test(err.message));
    assert.deepEqual(await readdir(to), ['vdb.raw'], 'vda.raw and the temps are gone');
    assert.equal(await readFile(join(to, 'vdb.raw'), 'utf8'), 'not yours');
  });

  test('reports progress and creates a missing folder (and its parents)', async () => {
    const to = target('deep/er/still');
    const seen: string[] = [];
    await restorePoint(await pointOf(full), {
      ...opts(to),
      onProgress: (p) => seen.push(`${p.disk} ${p.index}/${p.count} ${p.percent}`),
    });
    assert.ok(seen.includes('vda 1/2 100'), seen.join(', '));
    assert.ok(seen.includes('vdb 2/2 100'), seen.join(', '));
    assert.deepEqual((await readdir(to)).sort(), ['vda.raw', 'vdb.raw']);
  });

  test('an abort stops qemu-img and removes everything it wrote, folders it made included', async () => {
    const parent = target('aborted');
    const to = join(parent, 'a', 'b');
    const controller = new AbortController();
    await assert.rejects(
      restorePoint(await pointOf(inc3), {
        ...opts(to),
        signal: controller.signal,
        onProgress: () => controller.abort(new QuiesceError('INTERRUPTED', 'received SIGINT')),
      }),
      (err: QuiesceError) => err.code === 'INTERRUPTED',
    );
    await assert.rejects(readdir(parent), { code: 'ENOENT' });
  });

  test('--at a time restores the newest point at or before it', async () => {
    const c = await readCatalog(repo, GUEST);
    assert.equal(findPoint(c, '2026-03-02T12:00:00Z').manifest.id, inc1.id);
    assert.equal(findPoint(c, '2026-03-04T01:00:00Z').manifest.id, inc3.id);
    assert.equal(findPoint(c).manifest.id, inc3.id);
    const to = target('by-time');
    const r = await restorePoint(findPoint(c, '2026-03-03T00:59:59Z'), opts(to));
    assert.equal(r.id, inc1.id);
    assert.ok((await readFile(join(to, 'vda.raw'))).equals(inc1.expected.get('vda')!));
  });

  test('a bad format is a CONFIG error and writes nothing', async () => {
    const to = target('bad-format');
    await assert.rejects(
      restorePoint(await pointOf(full), opts(to, { format: 'vmdk' as 'raw' })),
      (err: QuiesceError) => err.code === 'CONFIG' && /--format "vmdk"/.test(err.message),
    );
    await assert.rejects(readdir(to), { code: 'ENOENT' });
  });

  test('an image whose backing chain skips a backup of the lineage is refused before writing', async () => {
    const { repo: other, remove: removeOther } = await makeRepository();
    try {
      const f = await makeBackup(other, GUEST, { time: new Date('2026-04-01T00:00:00Z') });
      const i1 = await makeBackup(other, GUEST, {
        time: new Date('2026-04-02T00:00:00Z'),
        parent: f,
        writes: [{ disk: 'vda', pattern: 0x31, offset: 0, length: 65536 }],
      });
      const i2 = await makeBackup(other, GUEST, { time: new Date('2026-04-03T00:00:00Z'), parent: i1 });
      // Someone rebased i2 straight onto the full: its manifest still says i1.
      await run('qemu-img', [
        'rebase',
        '-u',
        '-f',
        'qcow2',
        '-b',
        `../${f.id}/vda.qcow2`,
        '-F',
        'qcow2',
        join(i2.dir, 'vda.qcow2'),
      ]);
      const to = join(other, 'out');
      await assert.rejects(
        restorePoint(findPoint(await readCatalog(other, GUEST), i2.id), opts(to)),
        (err: QuiesceError) =>
          err.code === 'REPOSITORY' && err.message.includes(`${f.id}/vda.qcow2 where ${i1.id}/vda.qcow2 belongs`),
      );
      await assert.rejects(readdir(to), { code: 'ENOENT' });
    } finally {
      await removeOther();
    }
  });

  test('a missing manifest in the middle makes every later point unrestorable, naming why', async () => {
    const { repo: other, remove: removeOther } = await makeRepository();
    try {
      const f = await makeBackup(other, GUEST, { time: new Date('2026-05-01T00:00:00Z') });
      const i1 = await makeBackup(other, GUEST, { time: new Date('2026-05-02T00:00:00Z'), parent: f });
      const i2 = await makeBackup(other, GUEST, { time: new Date('2026-05-03T00:00:00Z'), parent: i1 });
      await unlink(join(i1.dir, MANIFEST));
      const c = await readCatalog(other, GUEST);
      assert.deepEqual(
        c.points.map((p) => p.manifest.id),
        [f.id],
      );
      assert.equal(findPoint(c).manifest.id, f.id);
      assert.throws(
        () => findPoint(c, i2.id),
        (err: QuiesceError) =>
          err.code === 'REPOSITORY' && err.message.includes(`its parent ${i1.id} is not a restore point`),
      );
      assert.throws(() => findPoint(c, i1.id), /no manifest/);
    } finally {
      await removeOther();
    }
  });

  after(async () => {
    await rm(target(''), { recursive: true, force: true });
  });
});
