// Backup chains end to end against a real TCG guest with each agent, its qcow2 data disk written by
// the in-guest writer: `quiesce run` takes a full, then incrementals (the writer paused and known
// files written before each, their checksums read inside the guest through the agent), and
// `quiesce restore` brings back every point. Each restored disk must be a clean ext4 (frozen, so no
// journal to replay) whose files match the checksums taken in the guest at that point.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RunReport } from '../../src/workflow/results.js';
import { haveQemuGa, type AgentKind } from '../helpers/agents.js';
import { imageChecksums } from '../helpers/vm/disks.js';
import {
  diffChecksums,
  guestChecksums,
  guestSync,
  pauseWriter,
  resumeWriter,
  writeGuestFile,
  type Checksums,
} from '../helpers/vm/guest-ops.js';
import { bootGuest, DATA_DEVICE, guestUnavailable, type Guest } from '../helpers/vm/qemu.js';
import { Qmp } from '../helpers/vm/qmp.js';
import { dumpe2fs, WRITER_ARG } from '../helpers/vm/writer.js';

const BIN = fileURLToPath(new URL('../../dist/src/bin.js', import.meta.url));
const unavailable =
  guestUnavailable() ??
  (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)') ??
  (existsSync(BIN) ? undefined : `no ${BIN} (npx tsc -b)`) ??
  (spawnSync('debugfs', ['-V']).status === 0 ? undefined : 'no debugfs (e2fsprogs)');
const KINDS: AgentKind[] = ['qemu-ga', 'quiesce'];
const MiB = 1 << 20;

function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

for (const kind of KINDS) {
  describe(
    `backup chain of a TCG guest running ${kind}: run, run, run, restore every point`,
    {
      skip: unavailable,
      timeout: 900_000,
    },
    () => {
      let guest: Guest | undefined;
      let dir: string;
      let config: string;
      const points: { id: string; level: string; sums: Checksums; frozenWindowMs: number }[] = [];

      before(async () => {
        dir = mkdtempSync(join(tmpdir(), 'e2e-chain-'));
        guest = await bootGuest({
          agent: kind,
          // quiesce-agent may only ever freeze /data.
          agentArgs: kind === 'quiesce' ? ['--fsfreeze-include=/data'] : [],
          kernelArgs: [WRITER_ARG],
          dataDiskMB: 64,
          dataFormat: 'qcow2',
        });
        config = join(dir, 'quiesce.json');
        writeFileSync(
          config,
          JSON.stringify({
            stateDir: join(dir, 'state'),
            guests: {
              vm: {
                connector: { type: 'socket', path: guest.qgaSocket },
                freeze: ['/data'],
                snapshot: {
                  provider: 'qmp',
                  socket: guest.qmpSocket,
                  disks: [DATA_DEVICE],
                  repository: join(dir, 'repo'),
                },
                timeouts: { freeze: '60s', thaw: '30s', command: '30s' },
              },
            },
            jobs: { nightly: { guests: ['vm'], budget: '60s' } },
          }),
        );
      });
      after(async () => {
        await guest?.stop();
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      test('three runs: a full, then incrementals, each with the files known at its point', async (t: TestContext) => {
        const g = guest!;
        for (let i = 1; i <= 3; i++) {
          // Writer paused: nothing changes /data between the checksums and the freeze.
          await pauseWriter(g);
          await writeGuestFile(g, `/data/known-${i}`, { bytes: 2 * MiB, seed: i });
          await guestSync(g);
          const sums = await guestChecksums(g);
          const plan = cli(['plan', '--config', config]);
          assert.equal(plan.status, 0, plan.stderr);
          assert.match(plan.stdout, new RegExp(`vm: next backup: ${i === 1 ? 'full' : 'incremental'} — `));
          const r = cli(['run', '--config', config, '--json']);
          await resumeWriter(g);
          assert.equal(r.status, 0, `exit ${r.status}\n${r.stderr}\n${r.stdout}`);
          const report = JSON.parse(r.stdout) as RunReport;
          const vm = report.guests[0]!;
          assert.equal(vm.ok, true, vm.errors.map((e) => e.message).join('; '));
          assert.equal(vm.consistency, 'filesystem');
          assert.equal(vm.thawProven, true);
          const b = vm.backup!;
          assert.equal(b.level, i === 1 ? 'full' : 'incremental');
          if (i > 1) assert.equal(b.parent, points[i - 2]!.id);
          assert.ok(b.bytesWritten! > 0);
          t.diagnostic(
            `${kind}: run ${i}: ${b.level} ${b.id}, ${b.bytesWritten} bytes, frozen window ${vm.frozenWindowMs} ms (snapshot step ${vm.snapshotMs} ms): ${b.reason}`,
          );
          points.push({ id: b.id, level: b.level, sums, frozenWindowMs: vm.frozenWindowMs! });
        }
        const list = cli(['backups', 'vm', '--config', config, '--json']);
        assert.equal(list.status, 0, list.stderr);
        const listed = JSON.parse(list.stdout) as { id: string; level: string; consistency: string }[];
        assert.deepEqual(
          listed.map((p) => [p.id, p.level, p.consistency]),
          points.map((p) => [p.id, p.level, 'filesystem']),
        );
      });

      test('the bitmap deleted behind quiesce’s back: the next run takes a full, says why, and restores', async (t: TestContext) => {
        const g = guest!;
        const base = points[points.length - 1]!;
        const qmp = await Qmp.open(g.qmpSocket2);
        try {
          await qmp.execute('block-dirty-bitmap-remove', { node: 'data0', name: `quiesce-${base.id}` });
        } finally {
          qmp.close();
        }
        await pauseWriter(g);
        await writeGuestFile(g, '/data/known-4', { bytes: 2 * MiB, seed: 4 });
        await guestSync(g);
        const sums = await guestChecksums(g);
        const r = cli(['run', '--config', config, '--json']);
        await resumeWriter(g);
        assert.equal(r.status, 0, `exit ${r.status}\n${r.stderr}\n${r.stdout}`);
        const vm = (JSON.parse(r.stdout) as RunReport).guests[0]!;
        assert.equal(vm.ok, true, vm.errors.map((e) => e.message).join('; '));
        const b = vm.backup!;
        assert.equal(b.level, 'full');
        assert.match(b.reason, new RegExp(`bitmap quiesce-${base.id} is missing on disk vda`));
        t.diagnostic(`${kind}: ${b.level} ${b.id}: ${b.reason}`);
        points.push({ id: b.id, level: b.level, sums, frozenWindowMs: vm.frozenWindowMs! });
      });

      test('every point restores to a clean filesystem holding exactly the files of its point', (t: TestContext) => {
        assert.equal(points.length, 4);
        for (const p of points) {
          const to = join(dir, `restore-${p.id}`);
          const r = cli(['restore', 'vm', '--config', config, '--to', to, '--at', p.id, '--format', 'raw']);
          assert.equal(r.status, 0, `exit ${r.status}\n${r.stderr}\n${r.stdout}`);
          const image = join(to, `${DATA_DEVICE}.raw`);
          const fs = dumpe2fs(image);
          assert.equal(fs.state, 'clean', `${p.id}: ${fs.state}`);
          assert.equal(fs.needsRecovery, false, `${p.id}: needs_recovery`);
          // No journal replay: the frozen copy must stand as it is.
          const restored = imageChecksums(image, 'raw', { replayJournal: false });
          assert.deepEqual(diffChecksums(p.sums, restored, ['guest at the point', 'restored']), [], p.id);
          // Later points' known files are not in it.
          for (let j = points.indexOf(p) + 2; j <= points.length; j++) assert.equal(restored.has(`/known-${j}`), false);
          t.diagnostic(`${kind}: ${p.level} ${p.id}: ${restored.size} files match the guest's checksums at that point`);
          // A second restore into the same folder overwrites nothing.
          const again = cli(['restore', 'vm', '--config', config, '--to', to, '--at', p.id, '--format', 'raw']);
          assert.notEqual(again.status, 0);
          assert.match(again.stderr, /exists/);
        }
      });
    },
  );
}
