import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QuiesceError } from '../../../../src/errors.js';
import { QmpClient } from '../../../../src/qmp/client.js';
import { nameDisks, reserveTarget, resolveDisks, runName, type Disk } from '../../../../src/snapshot/qmp/disks.js';
import { FakeQmp } from '../../../helpers/fake-qmp.js';

/** query-block of a guest with two writable virtio disks, a read-only cdrom and an empty drive. */
const BLOCKS = [
  {
    device: '',
    qdev: '/machine/peripheral/vda/virtio-backend',
    inserted: { 'node-name': 'data0', ro: false, image: { 'virtual-size': 4096 } },
  },
  {
    device: 'drive1',
    qdev: '/machine/peripheral/vdb/virtio-backend',
    inserted: { 'node-name': 'data1', image: { 'virtual-size': 8192 } },
  },
  { device: 'cd0', qdev: '/machine/peripheral/cd/x', inserted: { 'node-name': 'iso', ro: true, image: {} } },
  { device: 'floppy0', qdev: '' },
];
const NODES = [
  { 'node-name': 'data0', image: { 'virtual-size': 4096 } },
  { 'node-name': 'file0', image: { 'virtual-size': 4096 } },
  { 'node-name': 'sizeless' },
];

describe('qmp disks: resolving the selection against query-block (scripted QMP)', () => {
  let fake: FakeQmp;
  let qmp: QmpClient | undefined;
  before(async () => {
    fake = await FakeQmp.start((req, c) => {
      if (req.execute === 'query-block') c.reply(req, BLOCKS);
      if (req.execute === 'query-named-block-nodes') c.reply(req, NODES);
    });
  });
  after(() => fake.stop());
  afterEach(() => {
    qmp?.close();
    qmp = undefined;
  });
  const client = async (): Promise<QmpClient> => (qmp = await QmpClient.connect(fake.path));

  test('`all`: every writable disk, named by drive, else device id, else node', async () => {
    assert.deepEqual(await resolveDisks(await client(), 'all', { anyNode: true }), [
      { name: 'vda', node: 'data0', size: 4096 },
      { name: 'drive1', node: 'data1', size: 8192 },
    ]);
  });

  test('a list: each name as given, found by node, drive or device id', async () => {
    assert.deepEqual(await resolveDisks(await client(), ['data1', 'vda'], { anyNode: false }), [
      { name: 'data1', node: 'data1', size: 8192 },
      { name: 'vda', node: 'data0', size: 4096 },
    ]);
  });

  test('any named node only with anyNode (backups); otherwise the error lists the disks', async () => {
    assert.deepEqual(await resolveDisks(await client(), ['file0'], { anyNode: true }), [
      { name: 'file0', node: 'file0', size: 4096 },
    ]);
    await assert.rejects(
      resolveDisks(await client(), ['file0'], { anyNode: false, guest: 'vm' }),
      (err: unknown) =>
        err instanceof QuiesceError &&
        err.code === 'CONFIG_MISMATCH' &&
        err.guest === 'vm' &&
        /has no device or top node 'file0' \(disks: vda\/data0, vdb\/data1, cd\/iso\)$/.test(err.message),
    );
    await assert.rejects(resolveDisks(await client(), ['nope'], { anyNode: true }), /has no device or node 'nope'/);
  });

  test('the same node twice, or a disk without a size, is refused', async () => {
    await assert.rejects(
      resolveDisks(await client(), ['vda', 'data0'], { anyNode: true }),
      /two of the listed disks are the same node data0/,
    );
    await assert.rejects(
      resolveDisks(await client(), ['cd0'], { anyNode: true }),
      /QEMU reports no size for disk cd0 \(node iso\)/,
    );
    await assert.rejects(
      resolveDisks(await client(), ['sizeless'], { anyNode: true }),
      /QEMU reports no size for disk sizeless/,
    );
  });

  test('no writable disk at all fails `all`', async () => {
    const bare = await FakeQmp.start((req, c) => {
      if (req.execute === 'query-block') c.reply(req, [BLOCKS[2], BLOCKS[3]]);
    });
    try {
      qmp = await QmpClient.connect(bare.path);
      await assert.rejects(resolveDisks(qmp, 'all', { anyNode: true }), /has no writable disk/);
    } finally {
      qmp?.close();
      qmp = undefined;
      await bare.stop();
    }
  });
});

describe('qmp disks: naming and target files', () => {
  let out: string;
  before(() => {
    out = mkdtempSync(join(tmpdir(), 'qmp-disks-'));
  });
  after(() => rmSync(out, { recursive: true, force: true }));

  const found = [
    { name: 'vda', node: 'data0', size: 4096 },
    { name: 'vdb', node: 'data1', size: 8192 },
  ];

  test('each disk gets its target and names of this run: a letter first, at most 31 characters', () => {
    const disks = nameDisks(found, '/b/{disk}.img', 'vm');
    assert.deepEqual(
      disks.map((d) => d.target),
      ['/b/vda.img', '/b/vdb.img'],
    );
    const names = disks.flatMap((d) =>
      (['file', 'fmt', 'backup', 'create', 'overlay'] as const).map((r) => runName(d, r)),
    );
    for (const n of names) assert.match(n, /^[a-z][\w-]{0,30}$/);
    assert.equal(new Set(names).size, names.length);
    assert.match(runName(disks[1]!, 'overlay'), /^qz[0-9a-f]{6}-1-overlay$/);
    assert.notEqual(nameDisks(found, '/b/{disk}.img', 'vm')[0]!.base, disks[0]!.base, 'each run has its own tag');
  });

  test('two disks written to one file are refused', () => {
    assert.throws(
      () => nameDisks(found, '/b/backup.img', 'vm'),
      (err: unknown) =>
        err instanceof QuiesceError &&
        err.code === 'CONFIG' &&
        err.message === 'two disks would be written to /b/backup.img: put {disk} in the target',
    );
  });

  const disk = (target: string): Disk => ({ name: 'vda', node: 'data0', size: 4096, target, base: 'qz000000-0' });

  test('a target is created exclusively with mode 0600, sized when asked, and reported as created', async () => {
    const created: string[] = [];
    await reserveTarget(disk(join(out, 'sized.img')), { size: 4096, guest: 'vm', onCreated: (f) => created.push(f) });
    await reserveTarget(disk(join(out, 'empty.img')), { guest: 'vm', onCreated: (f) => created.push(f) });
    assert.deepEqual(created, [join(out, 'sized.img'), join(out, 'empty.img')]);
    assert.equal(statSync(join(out, 'sized.img')).size, 4096);
    assert.equal(statSync(join(out, 'empty.img')).size, 0);
    assert.equal(statSync(join(out, 'sized.img')).mode & 0o777, 0o600);
  });

  test('an existing file is never overwritten, a missing directory is named; neither counts as created', async () => {
    const existing = join(out, 'precious.img');
    writeFileSync(existing, 'precious');
    const created: string[] = [];
    await assert.rejects(
      reserveTarget(disk(existing), { size: 4096, guest: 'vm', onCreated: (f) => created.push(f) }),
      (err: unknown) =>
        err instanceof QuiesceError &&
        err.code === 'STEP_FAILED' &&
        err.message === `cannot create ${existing} for disk vda: it exists already (refusing to overwrite)`,
    );
    assert.equal(readFileSync(existing, 'utf8'), 'precious');
    await assert.rejects(
      reserveTarget(disk(join(out, 'no/such/vda.img')), { guest: 'vm', onCreated: (f) => created.push(f) }),
      /cannot create .*no\/such\/vda\.img for disk vda: its directory does not exist$/,
    );
    assert.ok(!existsSync(join(out, 'no')));
    assert.deepEqual(created, []);
  });
});
