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
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveConfig } from '../../src/config/load.js';
import { libvirtPool } from '../../src/libvirt/pool.js';
import { captureLogger } from '../../src/log/logger.js';
import { readCatalog } from '../../src/repository/catalog.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { execute } from '../../src/workflow/executor.js';
import { newRunId, plan } from '../../src/workflow/plan.js';
import type { RunReport } from '../../src/workflow/results.js';
import { SignalGuard } from '../../src/workflow/signals.js';
import { haveQemuGa, type AgentKind } from '../helpers/agents.js';
import {
  defineGuest,
  ensureLibvirtd,
  LIBVIRT_URI,
  libvirtUnavailable,
  virsh,
  type LibvirtGuest,
} from '../helpers/libvirt.js';
import { imageChecksums } from '../helpers/vm/disks.js';
import {
  diffChecksums,
  guestChecksums,
  guestSync,
  pauseWriter,
  resumeWriter,
  guestSh,
  type Checksums,
} from '../helpers/vm/guest-ops.js';
import { GUEST_DATA_MOUNT } from '../helpers/vm/qemu.js';
import { dumpe2fs, WRITER_ARG } from '../helpers/vm/writer.js';

const BIN = fileURLToPath(new URL('../../src/bin.ts', import.meta.url));
const unavailable =
  libvirtUnavailable() ??
  (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)') ??
  (spawnSync('debugfs', ['-V']).status === 0 ? undefined : 'no debugfs (e2fsprogs)');
const KINDS: AgentKind[] = ['qemu-ga', 'quiesce'];

/** `quiesce …` from the source (no build needed). */
function cli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', BIN, ...args], { encoding: 'utf8', timeout: 300_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function checkpoints(domain: string): Promise<string[]> {
  return (await virsh(['checkpoint-list', domain, '--name']))
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .sort();
}

interface Point {
  readonly id: string;
  readonly level: string;
  readonly sums: Checksums;
}

for (const kind of KINDS) {
  describe(
    `libvirt backup chain of a TCG guest under libvirtd running ${kind}: checkpoints, levels, restore`,
    { skip: unavailable, timeout: 900_000 },
    () => {
      let guest: LibvirtGuest | undefined;
      let dir: string;
      let configFile: string;
      let configObject: Record<string, unknown>;
      const points: Point[] = [];
      const repo = (): string => join(dir, 'repo');

      before(async () => {
        dir = mkdtempSync(join(tmpdir(), 'e2e-libvirt-chain-'));
        await ensureLibvirtd();
        guest = await defineGuest({
          agent: kind,
          // quiesce-agent may only ever freeze /data.
          agentArgs: kind === 'quiesce' ? ['--fsfreeze-include=/data'] : [],
          kernelArgs: [WRITER_ARG],
          dataDiskMB: 64,
          dataFormat: 'qcow2',
        });
        configObject = {
          stateDir: join(dir, 'state'),
          guests: {
            vm: {
              connector: { type: 'libvirt', domain: guest.name, uri: LIBVIRT_URI },
              freeze: [GUEST_DATA_MOUNT],
              snapshot: { provider: 'libvirt', disks: ['vda'], repository: join(dir, 'repo') },
              timeouts: { freeze: '60s', thaw: '30s', command: '30s' },
            },
          },
          jobs: { nightly: { guests: ['vm'], budget: '60s' } },
        };
        configFile = join(dir, 'quiesce.json');
        writeFileSync(configFile, JSON.stringify(configObject));
      });
      after(async () => {
        await libvirtPool.closeAll();
        const name = guest?.name;
        if (name)
          for (const c of await checkpoints(name).catch(() => []))
            await virsh(['checkpoint-delete', name, c, '--metadata']).catch(() => undefined);
        await guest?.destroy();
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      /** One run of job nightly in this process; `onSnapshot` runs once backup-begin was answered. */
      async function run(onSnapshot?: (guard: SignalGuard) => void): Promise<RunReport> {
        const c = resolveConfig(configObject, configFile);
        const now = new Date();
        const p = plan(c, 'nightly', { runId: newRunId(now), now });
        const log = captureLogger();
        let guard: SignalGuard | undefined = undefined;
        const wrapped = Object.assign(
          (e: Parameters<typeof log>[0]) => {
            log(e);
            if (e.kind === 'step-end' && e.step === 'snapshot' && e.ok) onSnapshot?.(guard!);
          },
          { events: log.events },
        );
        guard = new SignalGuard(wrapped);
        return execute(p, { log: wrapped, signals: guard });
      }

      /** Writer paused, a known file written and synced, the checksums read in the guest; then a run. */
      async function backupWithKnownFile(
        n: number,
        onSnapshot?: (guard: SignalGuard) => void,
      ): Promise<{ report: RunReport; sums: Checksums }> {
        const g = guest!;
        await pauseWriter(g);
        // Through guest-exec: guest-file-write's 1 MiB chunks are more than libvirt's agent channel takes in time here.
        await guestSh(g, 'dd if=/dev/urandom of="$1" bs=1M count=2 2>/dev/null', [`/data/known-${n}`]);
        await guestSync(g);
        const sums = await guestChecksums(g);
        try {
          return { report: await run(onSnapshot), sums };
        } finally {
          await resumeWriter(g);
        }
      }

      function ok(report: RunReport): NonNullable<RunReport['guests'][number]['backup']> {
        const vm = report.guests[0]!;
        assert.equal(report.exitCode, 0, vm.errors.map((e) => e.message).join('; '));
        assert.equal(vm.consistency, 'filesystem');
        assert.equal(vm.thawProven, true);
        return vm.backup!;
      }

      const manifest = async (id: string): Promise<Manifest> =>
        (await readCatalog(repo(), 'vm')).points.find((p) => p.manifest.id === id)!.manifest;

      test('a full, then two incrementals: each creates its checkpoint with its copy and deletes the one it replaces', async (t: TestContext) => {
        const g = guest!;
        for (let i = 1; i <= 3; i++) {
          // quiesce plan asks libvirt (read-only) and says what the run will take.
          const planned = cli(['plan', '--config', configFile]);
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
        const g = guest!;
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
        const g = guest!;
        const base = points.at(-1)!;
        await virsh(['checkpoint-delete', g.name, `quiesce-${base.id}`, '--metadata']);
        assert.deepEqual(await checkpoints(g.name), []);
        const planned = cli(['plan', '--config', configFile]);
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
        const g = guest!;
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
        const g = guest!;
        const base = points.at(-1)!;
        const snapshot = (configObject['guests'] as { vm: { snapshot: Record<string, unknown> } }).vm.snapshot;
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
        const list = cli(['backups', 'vm', '--config', configFile, '--json']);
        assert.equal(list.status, 0, list.stderr);
        const listed = JSON.parse(list.stdout) as { id: string; level: string }[];
        assert.deepEqual(
          listed.map((p) => [p.id, p.level]),
          points.map((p) => [p.id, p.level]),
        );
        for (const p of points) {
          const to = join(dir, `restore-${p.id}`);
          const r = cli(['restore', 'vm', '--config', configFile, '--to', to, '--at', p.id, '--format', 'raw']);
          assert.equal(r.status, 0, `exit ${r.status}\n${r.stderr}\n${r.stdout}`);
          const image = join(to, 'vda.raw');
          const fs = dumpe2fs(image);
          assert.equal(fs.state, 'clean', `${p.id}: ${fs.state}`);
          assert.equal(fs.needsRecovery, false, `${p.id}: needs_recovery`);
          const restored = imageChecksums(image, 'raw', { replayJournal: false });
          assert.deepEqual(diffChecksums(p.sums, restored, ['guest at the point', 'restored']), [], p.id);
          t.diagnostic(`${kind}: ${p.level} ${p.id}: ${restored.size} files match the guest's checksums at that point`);
          rmSync(to, { recursive: true, force: true });
        }
      });
    },
  );
}
