// Backup chains through libvirt: a TCG guest under a real libvirtd with a qcow2 data disk and each agent,
// the libvirt provider in backup mode with a repository. Runs (in process) take a full, then incrementals,
// each creating the checkpoint quiesce-<id> in the same backup-begin as its copy and deleting the one it
// replaces; the files known at each point are checksummed inside the guest (the writer paused) and every
// point is restored with `quiesce restore` and compared. A run aborted by a signal deletes the checkpoint
// it created and the chain goes on from the old base; a checkpoint whose metadata libvirt lost is
// redefined from the manifest; one deleted with its bitmaps makes the next run a full that says why; a
// differential creates no checkpoint and leaves the base's alone.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { readCatalog } from '../../src/repository/catalog.js';
import {
  CHAIN_KINDS,
  ChainRig,
  chainUnavailable,
  checkpoints,
  cli,
  okBackup as ok,
  type Point,
} from '../helpers/libvirt-chain.js';
import { virsh } from '../helpers/libvirt.js';

const unavailable = chainUnavailable();

for (const kind of CHAIN_KINDS) {
  describe(
    `libvirt backup chain of a TCG guest under libvirtd running ${kind}: checkpoints, levels, restore`,
    { skip: unavailable, timeout: 900_000 },
    () => {
      let rig: ChainRig | undefined;
      const points: Point[] = [];
      const repo = (): string => rig!.repo();

      before(async () => {
        rig = await ChainRig.start(kind, 'e2e-libvirt-chain-');
      });
      after(async () => {
        await rig?.close();
      });

      const backupWithKnownFile: ChainRig['backupWithKnownFile'] = (n, onSnapshot) =>
        rig!.backupWithKnownFile(n, onSnapshot);
      const manifest = (id: string): ReturnType<ChainRig['manifest']> => rig!.manifest(id);

      test('a full, then two incrementals: each creates its checkpoint with its copy and deletes the one it replaces', async (t: TestContext) => {
        const g = rig!.guest;
        for (let i = 1; i <= 3; i++) {
          // quiesce plan asks libvirt (read-only) and says what the run will take.
          const planned = cli(['plan', '--config', rig!.configFile]);
          assert.equal(planned.status, 0, planned.stderr);
          assert.match(planned.stdout, new RegExp(`vm: next backup: ${i === 1 ? 'full' : 'incremental'} — `));
          const { report, sums } = await backupWithKnownFile(i);
          const b = ok(report);
          assert.equal(b.level, i === 1 ? 'full' : 'incremental', b.reason);
          if (i > 1) assert.equal(b.parent, points[i - 2]!.id);
          assert.ok(b.bytesWritten! > 0);
          // Only the new base's checkpoint is left: the one it replaced was deleted after the manifest.
          assert.deepEqual(await checkpoints(g.name), [`quiesce-${b.id}`]);
          const m = await manifest(b.id);
          assert.equal(m.checkpoint?.name, `quiesce-${b.id}`);
          assert.match(m.checkpoint!.xml, /<domaincheckpoint>[\s\S]*<disk name='vda' checkpoint='bitmap'/);
          const vm = report.guests[0]!;
          t.diagnostic(
            `${kind}: run ${i}: ${b.level} ${b.id}, ${b.bytesWritten} bytes, window ${vm.frozenWindowMs} ms (backup-begin ${vm.snapshotMs} ms): ${b.reason}`,
          );
          points.push({ id: b.id, level: b.level, sums });
        }
        // The images chain by relative backing files, as the QMP provider's do.
        const info = spawnSync(
          'qemu-img',
          ['info', '-U', '--output=json', join(repo(), 'vm', points[0]!.id, points[2]!.id, 'vda.qcow2')],
          { encoding: 'utf8' },
        );
        const img = JSON.parse(info.stdout) as { 'backing-filename'?: string; 'cluster-size'?: number };
        assert.equal(img['backing-filename'], `../${points[1]!.id}/vda.qcow2`);
        assert.equal(img['cluster-size'], 16384);
      });

      test('a run aborted by a signal after backup-begin deletes the checkpoint it created; the chain goes on from the old base', async (t: TestContext) => {
        const g = rig!.guest;
        const base = points.at(-1)!;
        const { report } = await backupWithKnownFile(90, (guard) => guard.trigger('SIGTERM'));
        const vm = report.guests[0]!;
        assert.notEqual(report.exitCode, 0);
        const id = vm.backup?.id;
        assert.ok(id, 'the run had decided its backup');
        assert.deepEqual(await checkpoints(g.name), [`quiesce-${base.id}`], 'the new checkpoint was deleted');
        const c = await readCatalog(repo(), 'vm');
        const failed = c.unusable.find((u) => u.id === id);
        assert.ok(failed, 'the failure is recorded');
        assert.equal(failed.manifest?.complete, false);
        assert.deepEqual(
          readdirSync(failed.dir).filter((f) => f.endsWith('.qcow2')),
          [],
          'no image of the failed backup is left',
        );
        t.diagnostic(`${kind}: aborted ${id}: ${failed.why}`);
        // The next run builds on the old base.
        const { report: next, sums } = await backupWithKnownFile(4);
        const b = ok(next);
        assert.equal(b.level, 'incremental', b.reason);
        assert.equal(b.parent, base.id);
        points.push({ id: b.id, level: b.level, sums });
      });

      test('checkpoint metadata lost by libvirt (the bitmap kept): redefined from the manifest, the chain goes on', async (t: TestContext) => {
        const g = rig!.guest;
        const base = points.at(-1)!;
        await virsh(['checkpoint-delete', g.name, `quiesce-${base.id}`, '--metadata']);
        assert.deepEqual(await checkpoints(g.name), []);
        const planned = cli(['plan', '--config', rig!.configFile]);
        assert.equal(planned.status, 0, planned.stderr);
        assert.match(
          planned.stdout,
          /vm: next backup: unknown — checkpoint quiesce-\S+ is missing in libvirt: a run redefines it/,
        );
        assert.deepEqual(await checkpoints(g.name), [], 'plan redefined nothing');
        const { report, sums } = await backupWithKnownFile(5);
        const b = ok(report);
        assert.equal(b.level, 'incremental', b.reason);
        assert.equal(b.parent, base.id);
        t.diagnostic(`${kind}: after the metadata was lost: ${b.level} ${b.id}: ${b.reason}`);
        assert.deepEqual(await checkpoints(g.name), [`quiesce-${b.id}`]);
        points.push({ id: b.id, level: b.level, sums });
      });

      test('the checkpoint deleted with its bitmaps behind quiesce’s back: the next run is a full that says why', async (t: TestContext) => {
        const g = rig!.guest;
        const base = points.at(-1)!;
        await virsh(['checkpoint-delete', g.name, `quiesce-${base.id}`]);
        const { report, sums } = await backupWithKnownFile(6);
        const b = ok(report);
        assert.equal(b.level, 'full');
        assert.match(b.reason, new RegExp(`checkpoint quiesce-${base.id} is missing in libvirt`));
        t.diagnostic(`${kind}: ${b.level} ${b.id}: ${b.reason}`);
        assert.deepEqual(await checkpoints(g.name), [`quiesce-${b.id}`]);
        points.push({ id: b.id, level: b.level, sums });
      });

      test('a differential reads the base’s checkpoint, creates none and leaves the base as it is', async (t: TestContext) => {
        const g = rig!.guest;
        const base = points.at(-1)!;
        const snapshot = rig!.vm.snapshot;
        snapshot['level'] = 'differential';
        try {
          const { report, sums } = await backupWithKnownFile(7);
          const b = ok(report);
          assert.equal(b.level, 'differential');
          assert.equal(b.parent, base.id);
          assert.deepEqual(await checkpoints(g.name), [`quiesce-${base.id}`]);
          const m = await manifest(b.id);
          assert.equal(m.bitmap, `quiesce-${base.id}`);
          assert.equal(m.checkpoint, undefined);
          t.diagnostic(`${kind}: ${b.level} ${b.id}, ${b.bytesWritten} bytes: ${b.reason}`);
          points.push({ id: b.id, level: b.level, sums });
        } finally {
          delete snapshot['level'];
        }
      });

      test('every point restores (quiesce restore) to a clean filesystem holding exactly the files of its point', (t: TestContext) => {
        assert.equal(points.length, 7);
        rig!.restoreAll(points, (s) => t.diagnostic(s));
      });
    },
  );
}
