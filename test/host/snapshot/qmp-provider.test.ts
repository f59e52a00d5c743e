import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QuiesceError } from '../../../src/errors.js';
import { captureLogger } from '../../../src/log/logger.js';
import { snapshotProvider, type PlannedQmpSnapshot, type SnapshotProvider } from '../../../src/snapshot/index.js';
import { QmpClient } from '../../../src/qmp/client.js';
import { isRoot } from '../../helpers/agents.js';
import { FakeQmp } from '../../helpers/fake-qmp.js';
import { bareQemuUnavailable, startBareQemu, type BareQemu } from '../../helpers/vm/bare-qemu.js';

const planned = (over: Partial<PlannedQmpSnapshot> & { socket: string; target: string }): PlannedQmpSnapshot => ({
  provider: 'qmp',
  mode: 'backup',
  disks: 'all',
  format: 'raw',
  connectTimeoutMs: 5000,
  commandTimeoutMs: 10_000,
  timeoutMs: 60_000,
  ...over,
});

/** take() then complete(), as the engine does (take inside the window, complete after the thaw). */
async function run(p: SnapshotProvider, log = captureLogger()): Promise<readonly string[]> {
  try {
    await p.prepare?.({ guest: 'vm', log });
    const taken = await p.take({ guest: 'vm', log, inWindow: true });
    await taken.complete?.({ log });
    return taken.files ?? [];
  } finally {
    await p.dispose?.({ guest: 'vm', log });
  }
}

async function inspect(socket: string): Promise<{ nodes: string[]; jobs: unknown[]; top: string }> {
  const q = await QmpClient.connect(socket);
  try {
    const nodes = (await q.execute<{ 'node-name': string }[]>('query-named-block-nodes', { flat: true })).map(
      (n) => n['node-name'],
    );
    const jobs = await q.execute<unknown[]>('query-jobs');
    const blocks = await q.execute<{ qdev: string; inserted: { 'node-name': string } }[]>('query-block');
    const top = blocks.find((b) => b.qdev.includes('/vda/'))!.inserted['node-name'];
    return { nodes, jobs, top };
  } finally {
    q.close();
  }
}

const same = (a: string, fmtA: string, b: string, fmtB: string): boolean =>
  spawnSync('qemu-img', ['compare', '-U', '-f', fmtA, '-F', fmtB, a, b], { stdio: 'ignore' }).status === 0;

describe('qmp provider against a real QEMU (paused, no guest code)', { skip: bareQemuUnavailable() }, () => {
  let qemu: BareQemu;
  let out: string;
  before(async () => {
    qemu = await startBareQemu({ extraDisks: 1 });
    out = mkdtempSync(join(tmpdir(), 'qmp-provider-'));
  });
  after(async () => {
    await qemu?.stop();
    if (out) rmSync(out, { recursive: true, force: true });
  });

  test('backup (raw) of one device: a byte-identical copy, mode 0600; nodes and jobs gone afterwards', async () => {
    const before = await inspect(qemu.qmpSocket);
    const files = await run(
      await snapshotProvider(planned({ socket: qemu.qmpSocket, disks: ['vda'], target: join(out, 'raw-{disk}.img') })),
    );
    assert.deepEqual(files, [join(out, 'raw-vda.img')]);
    assert.ok(readFileSync(qemu.dataImage).equals(readFileSync(files[0]!)), 'the copy equals the disk');
    assert.equal(statSync(files[0]!).mode & 0o777, 0o600);
    const afterwards = await inspect(qemu.qmpSocket);
    assert.deepEqual(afterwards.nodes.sort(), before.nodes.sort());
    assert.deepEqual(afterwards.jobs, []);
  });

  test('backup (qcow2) of all disks in one transaction: {disk} names each file by device id', async () => {
    const files = await run(
      await snapshotProvider(
        planned({ socket: qemu.qmpSocket, format: 'qcow2', target: join(out, 'all-{disk}.qcow2') }),
      ),
    );
    assert.deepEqual([...files].sort(), [join(out, 'all-vd1.qcow2'), join(out, 'all-vda.qcow2')]);
    assert.ok(same(qemu.dataImage, 'raw', join(out, 'all-vda.qcow2'), 'qcow2'));
    assert.ok(same(join(qemu.dir, 'extra1.img'), 'raw', join(out, 'all-vd1.qcow2'), 'qcow2'));
    assert.match(
      execFileSync('qemu-img', ['info', '-U', join(out, 'all-vda.qcow2')], { encoding: 'utf8' }),
      /file format: qcow2/,
    );
    assert.deepEqual((await inspect(qemu.qmpSocket)).jobs, []);
  });

  test('a node below a device can be backed up by node name (backup mode)', async () => {
    const files = await run(
      await snapshotProvider(
        planned({ socket: qemu.qmpSocket, disks: ['file0'], target: join(out, 'node-{disk}.img') }),
      ),
    );
    assert.deepEqual(files, [join(out, 'node-file0.img')]);
    assert.ok(readFileSync(qemu.dataImage).equals(readFileSync(files[0]!)));
  });

  test('an existing target is never overwritten: prepare fails before anything is added', async () => {
    const existing = join(out, 'exists-vda.img');
    writeFileSync(existing, 'precious');
    const nodes = (await inspect(qemu.qmpSocket)).nodes;
    const p = await snapshotProvider(
      planned({ socket: qemu.qmpSocket, disks: ['vda'], target: join(out, 'exists-{disk}.img') }),
    );
    await assert.rejects(
      run(p),
      /cannot create .*exists-vda\.img for disk vda: it exists already \(refusing to overwrite\)/,
    );
    assert.equal(readFileSync(existing, 'utf8'), 'precious');
    assert.deepEqual((await inspect(qemu.qmpSocket)).nodes, nodes);
  });

  test('a missing target directory and an unknown disk fail clearly', async () => {
    await assert.rejects(
      run(
        await snapshotProvider(
          planned({ socket: qemu.qmpSocket, disks: ['vda'], target: join(out, 'no/such/{disk}.img') }),
        ),
      ),
      /its directory does not exist/,
    );
    await assert.rejects(
      run(await snapshotProvider(planned({ socket: qemu.qmpSocket, disks: ['vdz'], target: join(out, '{disk}.img') }))),
      (err: unknown) =>
        err instanceof QuiesceError &&
        err.code === 'CONFIG_MISMATCH' &&
        /no device or node 'vdz' \(disks: vda\/data0, vd1\/xdata1\)/.test(err.message),
    );
    assert.ok(!existsSync(join(out, 'vdz.img')));
  });

  test('dispose after a take that never completed (window cut short): jobs cancelled or dismissed, nodes and the partial file removed', async () => {
    const log = captureLogger();
    const p = await snapshotProvider(
      planned({ socket: qemu.qmpSocket, disks: ['vda'], target: join(out, 'cut-{disk}.img') }),
    );
    await p.prepare!({ guest: 'vm', log });
    const ac = new AbortController();
    ac.abort(new Error('budget'));
    await assert.rejects(p.take({ guest: 'vm', log, inWindow: true, signal: ac.signal }), /cut short/);
    await p.dispose!({ guest: 'vm', log });
    assert.ok(!existsSync(join(out, 'cut-vda.img')));
    const s = await inspect(qemu.qmpSocket);
    assert.deepEqual(s.jobs, []);
    assert.ok(!s.nodes.some((n) => n.startsWith('qz')), s.nodes.join(' '));
    assert.ok(log.events.some((e) => e.kind === 'warning' && /removed .*cut-vda\.img/.test(e.message)));
  });

  test(
    "a copy that fails (target filesystem full) fails complete() with QEMU's error; the partial file is removed",
    {
      skip: isRoot() ? false : 'needs root to mount a small tmpfs',
    },
    async () => {
      const small = join(out, 'small');
      mkdirSync(small);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
      try {
        // A few MB of ext4 metadata do not fit in 1 MiB.
        const p = await snapshotProvider(
          planned({ socket: qemu.qmpSocket, disks: ['vda'], target: join(small, '{disk}.img') }),
        );
        await assert.rejects(run(p), (err: unknown) => {
          assert.ok(err instanceof QuiesceError);
          assert.equal(err.code, 'BLOCK_JOB_FAILED');
          assert.match(err.message, /backup failed: vda → .*small\/vda\.img: write error .*: No space left on device/);
          return true;
        });
        assert.ok(!existsSync(join(small, 'vda.img')));
        const s = await inspect(qemu.qmpSocket);
        assert.deepEqual(s.jobs, []);
        assert.ok(!s.nodes.some((n) => n.startsWith('qz')));
      } finally {
        execFileSync('umount', [small]);
      }
    },
  );

  // Last: it changes the device's top node for good.
  test('snapshot mode: one transaction of blockdev-snapshot-sync; the device now writes to the qcow2 overlay', async () => {
    const files = await run(
      await snapshotProvider(
        planned({
          socket: qemu.qmpSocket,
          mode: 'snapshot',
          format: 'qcow2',
          disks: ['vda'],
          target: join(out, 'ovl-{disk}.qcow2'),
        }),
      ),
    );
    assert.deepEqual(files, [join(out, 'ovl-vda.qcow2')]);
    const s = await inspect(qemu.qmpSocket);
    assert.match(s.top, /^qz[0-9a-f]{6}-0-overlay$/);
    const info = execFileSync('qemu-img', ['info', '-U', files[0]!], { encoding: 'utf8' });
    assert.match(info, /file format: qcow2/);
    assert.match(info, new RegExp(`backing file: ${qemu.dataImage}`));
    // The old top node is below the overlay now: snapshot mode refuses it by name.
    await assert.rejects(
      run(
        await snapshotProvider(
          planned({
            socket: qemu.qmpSocket,
            mode: 'snapshot',
            format: 'qcow2',
            disks: ['data0'],
            target: join(out, 'x-{disk}.qcow2'),
          }),
        ),
      ),
      /no device or top node 'data0'/,
    );
    assert.ok(!existsSync(join(out, 'x-data0.qcow2')));
  });
});

describe('qmp provider: how block jobs end (scripted QMP)', () => {
  let fake: FakeQmp | undefined;
  let out: string;
  before(() => {
    out = mkdtempSync(join(tmpdir(), 'qmp-fake-'));
  });
  after(() => rmSync(out, { recursive: true, force: true }));
  afterEach(async () => {
    await fake?.stop();
    fake = undefined;
  });

  /** A QMP that knows two disks and accepts everything; `onTransaction` scripts the job events. */
  async function scripted(
    onTransaction: (jobs: string[], ev: (e: string, d: Record<string, unknown>) => void) => void,
  ) {
    fake = await FakeQmp.start((req, c) => {
      switch (req.execute) {
        case 'query-block':
          return c.reply(
            req,
            ['vda', 'vdb'].map((id, i) => ({
              device: '',
              qdev: `/machine/peripheral/${id}/virtio-backend`,
              inserted: { 'node-name': `n${i}`, ro: false, image: { 'virtual-size': 4096 } },
            })),
          );
        case 'transaction': {
          c.reply(req, {});
          const actions = req.arguments!['actions'] as { data: { 'job-id': string } }[];
          return onTransaction(
            actions.map((a) => a.data['job-id']),
            (e, d) => c.event(e, d),
          );
        }
        case 'query-jobs':
          return c.reply(req, []);
        case 'qmp_capabilities':
          return;
        default:
          return c.reply(req, {});
      }
    });
    return fake;
  }

  const provider = (socket: string, timeoutMs = 5000) =>
    snapshotProvider(
      planned({ socket, target: join(out, `${Math.random().toString(36).slice(2)}-{disk}.img`), timeoutMs }),
    );

  test('BLOCK_JOB_ERROR then a completed event carrying an error: fails naming the disk and the error, the other job cancelled', async () => {
    const f = await scripted(([a, b], ev) => {
      ev('BLOCK_JOB_ERROR', { device: a, operation: 'write', action: 'report' });
      ev('BLOCK_JOB_COMPLETED', {
        device: a,
        type: 'backup',
        len: 4096,
        offset: 512,
        speed: 0,
        error: 'Input/output error',
      });
      ev('BLOCK_JOB_CANCELLED', { device: b, type: 'backup', len: 4096, offset: 0, speed: 0 });
    });
    await assert.rejects(run(await provider(f.path)), (err: unknown) => {
      assert.ok(err instanceof QuiesceError && err.code === 'BLOCK_JOB_FAILED');
      assert.match(
        err.message,
        /vda → .*-vda\.img: write error \(action report\): Input\/output error; vdb → .*-vdb\.img: cancelled/,
      );
      return true;
    });
    // Both targets gone, jobs dismissed, both nodes of each target deleted.
    const dels = f.requests.filter((r) => r.execute === 'blockdev-del').length;
    assert.equal(dels, 4);
  });

  test('a job cancelled by someone else fails the backup', async () => {
    const f = await scripted(([a, b], ev) => {
      ev('BLOCK_JOB_COMPLETED', { device: a, type: 'backup', len: 4096, offset: 4096, speed: 0 });
      ev('BLOCK_JOB_CANCELLED', { device: b, type: 'backup', len: 4096, offset: 100, speed: 0 });
    });
    await assert.rejects(run(await provider(f.path)), /backup failed: vdb → .*: cancelled/);
  });

  test('completed without error: success, then job-dismiss and blockdev-del for each', async () => {
    const f = await scripted((jobs, ev) => {
      for (const j of jobs) ev('BLOCK_JOB_COMPLETED', { device: j, type: 'backup', len: 4096, offset: 4096, speed: 0 });
    });
    const files = await run(await provider(f.path));
    assert.equal(files.length, 2);
    for (const file of files) assert.ok(existsSync(file));
    const cmds = f.commands();
    assert.deepEqual(cmds.slice(cmds.indexOf('transaction')), [
      'transaction',
      'job-dismiss',
      'job-dismiss',
      'blockdev-del',
      'blockdev-del',
      'blockdev-del',
      'blockdev-del',
    ]);
    const txn = f.requests.find((r) => r.execute === 'transaction')!.arguments!;
    assert.deepEqual(txn['properties'], { 'completion-mode': 'grouped' });
  });

  test('a copy that does not finish in time fails with a timeout naming the disks, and is cancelled', async () => {
    const f = await scripted(() => undefined);
    const t0 = Date.now();
    await assert.rejects(run(await provider(f.path, 300)), /the copy of vda, vdb did not finish within 300ms/);
    assert.ok(Date.now() - t0 < 15_000);
    assert.equal(f.requests.filter((r) => r.execute === 'block-job-cancel').length, 2);
  });

  test('a signal during the copy ends the wait (INTERRUPTED); dispose cancels the jobs and removes the files', async () => {
    const f = await scripted(() => undefined);
    const log = captureLogger();
    const p = await provider(f.path, 60_000);
    await p.prepare!({ guest: 'vm', log });
    const taken = await p.take({ guest: 'vm', log, inWindow: true });
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('received SIGTERM')), 50);
    await assert.rejects(
      taken.complete!({ log, signal: ac.signal }),
      (err: unknown) => err instanceof QuiesceError && err.code === 'INTERRUPTED',
    );
    await p.dispose!({ guest: 'vm', log });
    assert.equal(f.requests.filter((r) => r.execute === 'block-job-cancel').length, 2);
    for (const file of taken.files!) assert.ok(!existsSync(file), file);
  });

  test('QEMU going away during the copy fails it clearly', async () => {
    const f = await scripted(() => {
      setTimeout(() => {
        for (const c of fake!.connections) c.socket.destroy();
      }, 50);
    });
    await assert.rejects(run(await provider(f.path)), /QEMU's monitor went away during the copy/);
  });
});
