// quiesce against a real TCG guest while a writer keeps writing and fsyncing inside it:
// freeze → QMP backup (blockdev-backup, one transaction) → thaw → the copy completes → the copy is a
// clean ext4 with every completed file intact. The same backup without the freeze is the control.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { VERIFY_CLEAN_EXT4 } from '../../src/cli/demo.js';
import { resolveConfig } from '../../src/config/load.js';
import { parseCapabilities, isEnabled } from '../../src/guest/capabilities.js';
import { guestAgent } from '../../src/guest/connect.js';
import { captureLogger } from '../../src/log/logger.js';
import { snapshotProvider } from '../../src/snapshot/index.js';
import { execute } from '../../src/workflow/executor.js';
import { newRunId, plan } from '../../src/workflow/plan.js';
import type { RunReport } from '../../src/workflow/results.js';
import { SignalGuard } from '../../src/workflow/signals.js';
import { haveQemuGa, type AgentKind } from '../helpers/agents.js';
import { bootGuest, DATA_DEVICE, guestUnavailable, type Guest } from '../helpers/vm/qemu.js';
import { checkWriterFiles, dumpe2fs, lastWriterNumber, WRITER_ARG } from '../helpers/vm/writer.js';

const BIN = fileURLToPath(new URL('../../dist/src/bin.js', import.meta.url));
const unavailable =
  guestUnavailable() ??
  (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)') ??
  (existsSync(BIN) ? undefined : `no ${BIN} (npx tsc -b)`) ??
  (spawnSync('debugfs', ['-V']).status === 0 ? undefined : 'no debugfs (e2fsprogs)');
const TIMEOUT = 600_000;
const KINDS: AgentKind[] = ['qemu-ga', 'quiesce'];

/** Agent arguments per kind: quiesce-agent may only ever freeze /data. */
const agentArgs = (kind: AgentKind): string[] => (kind === 'quiesce' ? ['--fsfreeze-include=/data'] : []);

/** Why this guest's agent cannot take part (no freeze-list yet), or undefined. */
async function freezeUnsupported(g: Guest): Promise<string | undefined> {
  const agent = await guestAgent({ kind: 'socket', path: g.qgaSocket });
  try {
    const caps = parseCapabilities(await agent.execute('guest-info'));
    const missing = ['guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw', 'guest-fsfreeze-status'].filter(
      (c) => !isEnabled(caps, c),
    );
    return missing.length
      ? `${g.agent} ${caps.version} lacks ${missing.join(', ')} (waits on the fsfreeze work)`
      : undefined;
  } finally {
    await agent.close();
  }
}

/** Waits until the writer has announced at least `count` more files than now (it is not frozen). */
async function writerRuns(g: Guest, count = 20, timeoutMs = 120_000): Promise<void> {
  const start = lastWriterNumber(g.console());
  const deadline = Date.now() + timeoutMs;
  while (lastWriterNumber(g.console()) < start + count) {
    if (Date.now() > deadline)
      throw new Error(`the writer did not write ${count} files in ${timeoutMs} ms (from ${start})`);
    await sleep(100);
  }
}

for (const kind of KINDS) {
  describe(
    `QMP backup of a TCG guest running ${kind}, a writer fsyncing inside`,
    { skip: unavailable, timeout: TIMEOUT },
    () => {
      let guest: Guest | undefined;
      let dir: string;
      let skip: string | undefined;

      before(async () => {
        dir = mkdtempSync(join(tmpdir(), 'e2e-qmp-'));
        guest = await bootGuest({ agent: kind, agentArgs: agentArgs(kind), kernelArgs: [WRITER_ARG], dataDiskMB: 64 });
        skip = await freezeUnsupported(guest);
        await writerRuns(guest, 50);
      });
      after(async () => {
        await guest?.stop();
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      function writeConfig(
        name: string,
        snapshot: Record<string, unknown>,
        extra: Record<string, unknown> = {},
      ): string {
        const g = guest!;
        const file = join(dir, `${name}.json`);
        writeFileSync(
          file,
          JSON.stringify({
            stateDir: join(dir, `${name}-state`),
            guests: {
              vm: {
                connector: { type: 'socket', path: g.qgaSocket },
                freeze: ['/data'],
                snapshot: { provider: 'qmp', socket: g.qmpSocket, ...snapshot },
                timeouts: { freeze: '60s', thaw: '30s', command: '30s' },
                ...extra,
              },
            },
            // TCG on a busy machine is slow; the window is measured, not squeezed.
            jobs: { e2e: { guests: ['vm'], budget: '60s' } },
          }),
        );
        return file;
      }

      test('quiesce run (CLI): freeze → blockdev-backup → thaw; the copy completes, is clean, and holds every completed file', async (t: TestContext) => {
        if (skip) return t.skip(skip);
        const g = guest!;
        const target = join(dir, '{guest}-{disk}-{timestamp}.img');
        const config = writeConfig(
          'run',
          { disks: [DATA_DEVICE], target },
          { verify: { argv: [...VERIFY_CLEAN_EXT4, join(dir, `{guest}-${DATA_DEVICE}-{timestamp}.img`)] } },
        );
        const plain = spawnSync(process.execPath, [BIN, 'plan', '--config', config], { encoding: 'utf8' });
        assert.equal(plain.status, 0, plain.stderr);
        assert.match(
          plain.stdout,
          /snapshot \(qmp\): QMP unix:.*qmp\.sock: one transaction of blockdev-backup \(sync full\) of vda → .*\/vm-\{disk\}-\d{8}T\d{6}Z\.img \(raw\)/,
        );
        assert.match(
          plain.stdout,
          /3\. snapshot set-up: connect to QMP, resolve the disks, create each target .*\n.*4\. freeze \/data/,
        );
        assert.match(plain.stdout, /prove: status thawed .*\n.*7\. wait for BLOCK_JOB_COMPLETED of every copy/);

        // Everything announced before the run was complete before the freeze.
        const before = lastWriterNumber(g.console());
        const r = spawnSync(process.execPath, [BIN, 'run', '--config', config, '--json'], {
          encoding: 'utf8',
          timeout: 300_000,
        });
        assert.equal(r.status, 0, `exit ${r.status}\n${r.stderr}\n${r.stdout}`);
        const report = JSON.parse(r.stdout) as RunReport;
        const vm = report.guests[0]!;
        assert.equal(vm.ok, true, vm.errors.map((e) => e.message).join('; '));
        assert.equal(vm.consistency, 'filesystem');
        assert.equal(vm.thawProven, true);
        assert.equal(vm.frozenFilesystems, 1);
        assert.deepEqual(
          vm.steps.map((s) => s.name),
          [
            'connect',
            'preflight',
            'snapshot-prepare',
            'freeze',
            'snapshot',
            'thaw',
            'prove-thaw',
            'snapshot-complete',
            'verify',
          ],
        );
        const copy = vm.snapshotFiles![0]!;
        assert.match(copy, /vm-vda-\d{8}T\d{6}Z\.img$/);

        const fs = dumpe2fs(copy);
        t.diagnostic(
          `${kind}: frozen window ${vm.frozenWindowMs} ms (freeze ${vm.freezeMs} ms, snapshot step ${vm.steps.find((s) => s.name === 'snapshot')!.durationMs} ms), copy done ${vm.steps.find((s) => s.name === 'snapshot-complete')!.durationMs} ms after the thaw; dumpe2fs -h on the frozen copy: state "${fs.state}", needs_recovery ${fs.needsRecovery ? 'yes' : 'no'}`,
        );
        assert.equal(fs.state, 'clean');
        assert.equal(fs.needsRecovery, false, fs.features.join(' '));

        const files = checkWriterFiles(copy);
        t.diagnostic(
          `${kind}: the copy holds writer files 1..${files.maxLogged}; ${files.intact} slots checked intact`,
        );
        assert.deepEqual(files.problems, []);
        assert.ok(
          files.maxLogged >= before,
          `announced before the run: up to ${before}, logged in the copy: ${files.maxLogged}`,
        );
        assert.ok(files.intact > 0);
        // Thawed for real: the writer goes on.
        await writerRuns(g, 5);
      });

      test('control: the same QMP backup without a freeze (what dumpe2fs says is recorded, not asserted)', async (t: TestContext) => {
        const g = guest!;
        const results: string[] = [];
        for (let i = 1; i <= 3; i++) {
          await writerRuns(g, 10);
          const log = captureLogger();
          const p = await snapshotProvider({
            provider: 'qmp',
            socket: g.qmpSocket,
            mode: 'backup',
            disks: [DATA_DEVICE],
            target: join(dir, `control${i}-{disk}.img`),
            format: 'raw',
            connectTimeoutMs: 10_000,
            commandTimeoutMs: 30_000,
            timeoutMs: 120_000,
          });
          let files: readonly string[];
          try {
            await p.prepare!({ guest: 'vm', log });
            const taken = await p.take({ guest: 'vm', log, inWindow: false });
            await taken.complete!({ log });
            files = taken.files!;
          } finally {
            await p.dispose!({ guest: 'vm', log });
          }
          const fs = dumpe2fs(files[0]!);
          const w = checkWriterFiles(files[0]!);
          // What it takes to use it: replay the journal (e2fsck) on a scratch copy, then look again.
          const scratch = `${files[0]!}.fsck`;
          copyFileSync(files[0]!, scratch);
          const fsck = spawnSync('e2fsck', ['-fy', scratch], { encoding: 'utf8' });
          const w2 = checkWriterFiles(scratch);
          const problems = (c: typeof w) =>
            `${c.problems.length} problem(s)${c.problems.length ? ` (${c.problems.slice(0, 2).join('; ')})` : ''}`;
          results.push(
            `run ${i}: state "${fs.state}", needs_recovery ${fs.needsRecovery ? 'yes' : 'no'}; as copied: writer log up to ${w.maxLogged}, ${w.intact} slots intact, ${problems(w)}; after e2fsck -fy (exit ${fsck.status}): log up to ${w2.maxLogged}, ${w2.intact} intact, ${problems(w2)}`,
          );
        }
        for (const line of results) t.diagnostic(`${kind} control without freeze: ${line}`);
      });

      test('quiesce run (engine) in snapshot mode: atomic qcow2 overlay; the image below is the clean point in time', async (t: TestContext) => {
        if (skip) return t.skip(skip);
        const g = guest!;
        const config = resolveConfig(
          {
            stateDir: join(dir, 'snap-state'),
            guests: {
              vm: {
                connector: { type: 'socket', path: g.qgaSocket },
                freeze: ['/data'],
                snapshot: {
                  provider: 'qmp',
                  socket: g.qmpSocket,
                  mode: 'snapshot',
                  disks: [DATA_DEVICE],
                  target: join(dir, 'overlay-{guest}-{disk}.qcow2'),
                },
                timeouts: { freeze: '60s', thaw: '30s', command: '30s' },
              },
            },
            jobs: { e2e: { guests: ['vm'], budget: '60s' } },
          },
          'e2e',
        );
        const now = new Date();
        const p = plan(config, 'e2e', { runId: newRunId(now), now });
        const log = captureLogger();
        let announcedBeforeFreezeReply = 0;
        const wrapped = Object.assign(
          (e: Parameters<typeof log>[0]) => {
            log(e);
            // Files announced by the time the freeze is confirmed were complete before it.
            if (e.kind === 'frozen') announcedBeforeFreezeReply = lastWriterNumber(g.console());
          },
          { events: log.events },
        );
        const report = await execute(p, { log: wrapped, signals: new SignalGuard(wrapped) });
        const vm = report.guests[0]!;
        assert.equal(report.exitCode, 0, vm.errors.map((e) => e.message).join('; '));
        assert.deepEqual(vm.snapshotFiles, [join(dir, 'overlay-vm-vda.qcow2')]);
        // The base image is no longer written: it is the frozen point in time.
        const base = g.dataImage;
        const fs = dumpe2fs(base);
        t.diagnostic(
          `${kind}: snapshot mode window ${vm.frozenWindowMs} ms; base image: state "${fs.state}", needs_recovery ${fs.needsRecovery ? 'yes' : 'no'}`,
        );
        assert.equal(fs.clean, true, fs.raw.slice(0, 400));
        const files = checkWriterFiles(base);
        assert.deepEqual(files.problems, []);
        const lastAnnounced = announcedBeforeFreezeReply;
        assert.ok(
          files.maxLogged >= lastAnnounced,
          `announced before the freeze reply: ${lastAnnounced}, logged in the base: ${files.maxLogged}`,
        );
        await writerRuns(g, 5); // writing goes on, into the overlay
        assert.ok(readdirSync(dir).includes('overlay-vm-vda.qcow2'));
      });
    },
  );
}
