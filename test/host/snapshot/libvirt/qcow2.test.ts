// The qcow2 images quiesce writes itself (overlays, backup targets), read by the real qemu-img and qemu-io:
// the same metadata as qemu-img create's own image, a clean check, and writes and reads through them.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { qcow2Image, writeQcow2, type Qcow2Spec } from '../../../../src/snapshot/libvirt/qcow2.js';

const haveQemuImg = spawnSync('qemu-img', ['--version']).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'qcow2-'));
after(() => rmSync(dir, { recursive: true, force: true }));

let n = 0;
async function ours(spec: Qcow2Spec): Promise<string> {
  const file = join(dir, `ours-${++n}.qcow2`);
  const fh = await open(file, 'wx', 0o600);
  try {
    await writeQcow2(fh, spec);
  } finally {
    await fh.close();
  }
  return file;
}

function qemuImg(spec: Qcow2Spec): string {
  const file = join(dir, `qemu-img-${++n}.qcow2`);
  const backing = spec.backing ? ['-u', '-b', spec.backing.file, '-F', spec.backing.format] : [];
  const cluster = spec.clusterBits === 14 ? ['-o', 'cluster_size=16k'] : [];
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...cluster, ...backing, file, String(spec.size)]);
  return file;
}

/** qemu-img info's view, without what names or measures the file itself. */
function info(file: string): Record<string, unknown> {
  const i = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })) as Record<
    string,
    unknown
  >;
  delete i['filename'];
  delete i['actual-size'];
  return i;
}

function check(file: string): string {
  return execFileSync('qemu-img', ['check', '--output=json', file], { encoding: 'utf8' });
}

const io = (format: string, file: string, ...commands: string[]): string =>
  execFileSync('qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), file], { encoding: 'utf8' });

const GiB = 1024 ** 3;

describe(
  'against qemu-img',
  { skip: haveQemuImg ? false : 'qemu-img is not installed (apt install qemu-utils)' },
  () => {
    const base = join(dir, 'base.raw');
    writeFileSync(base, '');
    truncateSync(base, 64 * 1024 ** 2);
    // A chain's parent: a full backup's qcow2 image.
    const parent = join(dir, 'parent.qcow2');
    if (haveQemuImg)
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=16k', parent, `${100 * GiB}`]);

    const cases: [string, Qcow2Spec][] = [
      [
        'an overlay over a raw image, 64 KiB clusters',
        { size: 64 * 1024 ** 2, backing: { file: base, format: 'raw' } },
      ],
      [
        "a chain's incremental: 16 KiB clusters, a qcow2 parent, 100 GiB",
        { size: 100 * GiB, clusterBits: 14, backing: { file: parent, format: 'qcow2' } },
      ],
      ['a full backup target without backing, 5 TiB (an L1 table of two clusters)', { size: 5 * 1024 * GiB }],
    ];
    for (const [what, spec] of cases)
      test(`${what}: the metadata of qemu-img create's image, and a clean check`, async () => {
        const mine = await ours(spec);
        assert.deepEqual(info(mine), info(qemuImg(spec)));
        const c = JSON.parse(check(mine)) as { 'check-errors': number; leaks?: number; corruptions?: number };
        assert.equal(c['check-errors'], 0);
        assert.equal(c.leaks ?? 0, 0);
        assert.equal(c.corruptions ?? 0, 0);
      });

    test('reads come from the backing file until written; writes land in the overlay and check clean', async () => {
      const raw = join(dir, 'patterned.raw');
      writeFileSync(raw, '');
      truncateSync(raw, 8 * 1024 ** 2);
      io('raw', raw, 'write -P 0x5a 0 1M');
      const overlay = await ours({ size: 8 * 1024 ** 2, backing: { file: raw, format: 'raw' } });
      assert.match(io('qcow2', overlay, 'read -P 0x5a 0 1M'), /read 1048576\/1048576/);
      io('qcow2', overlay, 'write -P 0xc3 64k 128k', 'write -P 0x11 7M 4k');
      const read = io('qcow2', overlay, 'read -P 0x5a 0 64k', 'read -P 0xc3 64k 128k', 'read -P 0x11 7M 4k');
      assert.doesNotMatch(read, /Pattern verification failed/);
      assert.match(io('raw', raw, 'read -P 0x5a 64k 128k'), /read 131072\/131072/, 'the backing file is untouched');
      assert.equal((JSON.parse(check(overlay)) as { 'check-errors': number })['check-errors'], 0);
    });
  },
);

test('bad input is refused before anything is written', () => {
  assert.throws(() => qcow2Image({ size: 1000 }), /a positive multiple of 512/);
  assert.throws(() => qcow2Image({ size: 0 }), /a positive multiple of 512/);
  assert.throws(() => qcow2Image({ size: 512, clusterBits: 12 }), /14 or 16/);
  assert.throws(() => qcow2Image({ size: 512, backing: { file: 'x'.repeat(1024), format: 'raw' } }), /1 to 1023/);
  assert.throws(() => qcow2Image({ size: 512, backing: { file: '', format: 'raw' } }), /1 to 1023/);
});

test("the header's own fields: magic, version 3, sizes and offsets", () => {
  const image = qcow2Image({ size: 64 * 1024 ** 2, backing: { file: '/b.raw', format: 'raw' } });
  assert.equal(image.readUInt32BE(0), 0x514649fb);
  assert.equal(image.readUInt32BE(4), 3);
  assert.equal(image.readUInt32BE(20), 16, 'cluster bits');
  assert.equal(image.readBigUInt64BE(24), 64n * 1024n ** 2n, 'virtual size');
  assert.equal(image.readUInt32BE(36), 1, 'L1 entries: one L2 table covers 512 MiB');
  const at = Number(image.readBigUInt64BE(8));
  assert.equal(image.subarray(at, at + image.readUInt32BE(16)).toString(), '/b.raw');
  assert.equal(image.length, 3 * 65536 + 8, 'header, refcount table, refcount block, L1 table');
});
