// quiesce against a TCG guest under a real libvirtd, a writer fsyncing inside, with the libvirt connector
// (RPC, one connection) and the libvirt snapshot provider: backup mode (backup-begin in the window, the copy
// finished after the thaw) gives a clean ext4 holding every completed file; snapshot mode (external
// disk-only overlay in the window, the backup step copies the image below, then commit + pivot) leaves the
// domain on its original image (its overlay made by quiesce before the freeze, removed if the run fails
// before it); a target that exists, or a domain job already running, fails before the freeze; a hung agent
// is bounded by the timeouts. One guest per agent kind, every scenario on it.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { resolveConfig } from '../../src/config/load.js';
import { isEnabled, parseCapabilities } from '../../src/guest/capabilities.js';
import { LibvirtAgent } from '../../src/guest/connectors/libvirt.js';
import { libvirtPool } from '../../src/libvirt/pool.js';
import { captureLogger } from '../../src/log/logger.js';
import { libvirtChecks } from '../../src/snapshot/libvirt/doctor.js';
import { HELD_MIB_S, holdCopies, releaseCopies } from '../../src/snapshot/libvirt/hold.js';
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
import { GUEST_DATA_MOUNT } from '../helpers/vm/qemu.js';
import { checkWriterFiles, dumpe2fs, lastWriterNumber, WRITER_ARG } from '../helpers/vm/writer.js';
import { spawnSync } from 'node:child_process';
import { sshdUnavailable, startSshd } from '../helpers/sshd.js';

const unavailable =
  libvirtUnavailable() ??
  (haveQemuGa() ? undefined : 'no /usr/sbin/qemu-ga (qemu-guest-agent)') ??
  (spawnSync('debugfs', ['-V']).status === 0 ? undefined : 'no debugfs (e2fsprogs)');
const TIMEOUT = 600_000;
const KINDS: AgentKind[] = ['qemu-ga', 'quiesce'];

/** Waits until the writer has announced `count` more files than now (it is not frozen). */
async function writerRuns(g: LibvirtGuest, count = 20, timeoutMs = 120_000): Promise<void> {
  const start = lastWriterNumber(g.console());
  const deadline = Date.now() + timeoutMs;
  while (lastWriterNumber(g.console()) < start + count) {
    if (Date.now() > deadline)
      throw new Error(`the writer did not write ${count} files in ${timeoutMs} ms (from ${start})`);
    await sleep(100);
  }
}

const diskSource = async (name: string): Promise<string> =>
  /<disk type='file' device='disk'>[\s\S]*?<source file='([^']*)'/.exec(await virsh(['dumpxml', name]))?.[1] ?? '?';

for (const kind of KINDS) {
  describe(
    `libvirt connector + provider, a TCG guest under libvirtd running ${kind}, a writer inside`,
    { skip: unavailable, timeout: TIMEOUT },
    () => {
      let guest: LibvirtGuest | undefined;
      let dir: string;
      let skip: string | undefined;

      before(async () => {
        dir = mkdtempSync(join(tmpdir(), 'e2e-libvirt-'));
        await ensureLibvirtd();
        guest = await defineGuest({
          agent: kind,
          agentArgs: kind === 'quiesce' ? ['--fsfreeze-include=/data'] : [],
          kernelArgs: [WRITER_ARG],
          dataDiskMB: 64,
        });
        const agent = new LibvirtAgent({ uri: LIBVIRT_URI, domain: guest.name });
        try {
          const caps = parseCapabilities(await agent.execute('guest-info'));
          const missing = ['guest-fsfreeze-freeze-list', 'guest-fsfreeze-thaw', 'guest-fsfreeze-status'].filter(
            (c) => !isEnabled(caps, c),
          );
          skip = missing.length ? `${kind} ${caps.version} lacks ${missing.join(', ')}` : undefined;
        } finally {
          await agent.close();
        }
        await writerRuns(guest, 30);
      });
      after(async () => {
        await libvirtPool.closeAll();
        const name = guest?.name;
        await guest?.destroy();
        if (name)
          assert.ok(!(await virsh(['list', '--all', '--name'])).split('\n').includes(name), `domain ${name} is gone`);
        if (dir) rmSync(dir, { recursive: true, force: true });
      });

      function config(
        name: string,
        snapshot: Record<string, unknown>,
        extra: Record<string, unknown> = {},
        uri = LIBVIRT_URI,
      ) {
        const g = guest!;
        return resolveConfig(
          {
            stateDir: join(dir, `${name}-state`),
            guests: {
              vm: {
                connector: { type: 'libvirt', domain: g.name, uri },
                freeze: [GUEST_DATA_MOUNT],
                snapshot: { provider: 'libvirt', ...snapshot },
                timeouts: { freeze: '60s', thaw: '30s', command: '30s' },
                ...extra,
              },
            },
            // TCG on a busy machine is slow; the window is measured, not squeezed.
            jobs: { e2e: { guests: ['vm'], budget: '60s' } },
          },
          'e2e',
        );
      }

      async function run(
        c: ReturnType<typeof config>,
        onFrozen?: () => void,
      ): Promise<{ report: RunReport; log: ReturnType<typeof captureLogger> }> {
        const now = new Date();
        const p = plan(c, 'e2e', { runId: newRunId(now), now });
        const log = captureLogger();
        const wrapped = Object.assign(
          (e: Parameters<typeof log>[0]) => {
            log(e);
            if (e.kind === 'frozen') onFrozen?.();
          },
          { events: log.events },
        );
        const report = await execute(p, { log: wrapped, signals: new SignalGuard(wrapped) });
        return { report, log };
      }

      test('backup mode: backup-begin in the window, the copy completes after the thaw, is clean and holds every completed file', async (t: TestContext) => {
        if (skip) return t.skip(skip);
        const g = guest!;
        let announced = 0;
        const { report, log } = await run(
          config('backup', { mode: 'backup', disks: ['vda'], target: join(dir, '{guest}-{disk}-{timestamp}.img') }),
          () => {
            announced = lastWriterNumber(g.console());
          },
        );
        const vm = report.guests[0]!;
        assert.equal(report.exitCode, 0, vm.errors.map((e) => e.message).join('; '));
        assert.equal(vm.consistency, 'filesystem');
        assert.equal(vm.thawProven, true);
        assert.deepEqual(
          vm.steps.map((s) => s.name),
          ['connect', 'preflight', 'snapshot-prepare', 'freeze', 'snapshot', 'thaw', 'prove-thaw', 'snapshot-complete'],
        );
        assert.ok(!log.events.some((e) => e.kind === 'warning'), 'no virsh fallback, no warning');
        // A copy still running at backup-begin's reply is held until the thaw returned, then let go (hold.ts;
        // this disk's copy may end first: the hold itself is checked on a pull job below).
        const held = log.events.find((e) => e.kind === 'copy-held');
        if (held?.kind === 'copy-held') {
          assert.deepEqual(held.disks, ['vda']);
          assert.ok(
            log.events.indexOf(held) > log.events.findIndex((e) => e.kind === 'thawed'),
            'let go after the thaw',
          );
        }
        const copy = vm.snapshotFiles![0]!;
        assert.match(copy, /vm-vda-\d{8}T\d{6}Z\.img$/);
        const fs = dumpe2fs(copy);
        const step = (n: string) => vm.steps.find((s) => s.name === n)!.durationMs;
        t.diagnostic(
          `${kind}: window ${vm.frozenWindowMs} ms (freeze ${vm.freezeMs} ms, backup-begin ${vm.snapshotMs} ms, thaw ${vm.thawMs} ms); connect ${step('connect')} ms, preflight ${step('preflight')} ms, prepare ${step('snapshot-prepare')} ms, copy done ${step('snapshot-complete')} ms after the thaw; dumpe2fs: "${fs.state}", needs_recovery ${fs.needsRecovery ? 'yes' : 'no'}`,
        );
        assert.equal(fs.state, 'clean');
        assert.equal(fs.needsRecovery, false, fs.features.join(' '));
        const files = checkWriterFiles(copy);
        assert.deepEqual(files.problems, []);
        assert.ok(
          files.maxLogged >= announced,
          `announced by the freeze reply: ${announced}, in the copy: ${files.maxLogged}`,
        );
        await writerRuns(g, 5); // thawed for real
        assert.equal(await diskSource(g.name), g.dataImage);
      });

      test('snapshot mode with commit: overlay in the window, the backup step copies the image below, then commit + pivot back onto the original image', async (t: TestContext) => {
        if (skip) return t.skip(skip);
        const g = guest!;
        const overlay = join(dir, 'overlay-{guest}-{disk}.qcow2');
        const copy = join(dir, `snap-copy-${kind}.img`);
        let sourceWhileBackup = '';
        const probe = join(dir, 'probe.sh');
        // The backup step: records which image the domain runs on, then copies the (now frozen-in-time) original.
        writeFileSync(
          probe,
          `#!/bin/sh\nvirsh -c ${LIBVIRT_URI} domblklist "$1" --details > "$2.source"\nexec cp --sparse=always "$3" "$2"\n`,
          { mode: 0o755 },
        );
        const { report, log } = await run(
          config(
            'snap',
            { mode: 'snapshot', disks: ['vda'], target: overlay },
            { backup: { argv: [probe, g.name, copy, g.dataImage] } },
          ),
        );
        const vm = report.guests[0]!;
        assert.equal(report.exitCode, 0, vm.errors.map((e) => e.message).join('; '));
        assert.deepEqual(vm.snapshotFiles, [join(dir, 'overlay-vm-vda.qcow2')]);
        sourceWhileBackup = spawnSync('cat', [`${copy}.source`], { encoding: 'utf8' }).stdout;
        assert.match(sourceWhileBackup, /overlay-vm-vda\.qcow2/, 'the backup step ran while the overlay was active');
        // Merged back: the domain XML names the original file again; the overlay is gone; no warning.
        assert.equal(await diskSource(g.name), g.dataImage);
        assert.ok(!existsSync(join(dir, 'overlay-vm-vda.qcow2')), 'the overlay file was deleted');
        assert.deepEqual(
          log.events.filter((e) => e.kind === 'warning'),
          [],
        );
        const fs = dumpe2fs(copy);
        t.diagnostic(
          `${kind}: snapshot-mode window ${vm.frozenWindowMs} ms (snapshot-create ${vm.snapshotMs} ms); the copy of the image below: "${fs.state}"`,
        );
        assert.equal(fs.clean, true, fs.raw.slice(0, 300));
        assert.deepEqual(checkWriterFiles(copy).problems, []);
        assert.equal((await virsh(['snapshot-list', g.name, '--name'])).trim(), '', 'no snapshot metadata left');
        await writerRuns(g, 5);
      });

      test('a target that exists fails before the freeze (snapshot-prepare), nothing is frozen or overwritten', async (t: TestContext) => {
        if (skip) return t.skip(skip);
        const taken = join(dir, 'taken-vda.img');
        writeFileSync(taken, 'precious');
        const { report } = await run(config('taken', { target: join(dir, 'taken-{disk}.img') }));
        const vm = report.guests[0]!;
        assert.notEqual(report.exitCode, 0);
        assert.equal(vm.steps.at(-1)!.name, 'snapshot-prepare');
        assert.ok(!vm.steps.some((s) => s.name === 'freeze'));
        assert.match(vm.errors[0]!.message, /exists already \(refusing to overwrite\)/);
        assert.equal(spawnSync('cat', [taken], { encoding: 'utf8' }).stdout, 'precious');
      });

      test('snapshot mode: the overlay is made before the freeze, and removed when the run fails before it (a pre hook)', async (t: TestContext) => {
        if (skip) return t.skip(skip);
        const g = guest!;
        const overlay = join(dir, 'prehook-vda.qcow2');
        const seen = join(dir, 'seen-by-hook.txt');
        const { report } = await run(
          config(
            'prehook',
            { mode: 'snapshot', target: join(dir, 'prehook-{disk}.qcow2') },
            { hooks: { pre: [['/bin/sh', '-c', `qemu-img info -U "$0" > "$1"; exit 1`, overlay, seen]] } },
          ),
        );
        const vm = report.guests[0]!;
        assert.notEqual(report.exitCode, 0);
        assert.ok(!vm.steps.some((s) => s.name === 'freeze'), 'never frozen');
        assert.match(readFileSync(seen, 'utf8'), new RegExp(`backing file: ${g.dataImage}`));
        assert.ok(!existsSync(overlay), 'the overlay is removed');
        assert.equal(await diskSource(g.name), g.dataImage);
        await writerRuns(g, 5);
      });

      test('a domain job already running (a pull backup nobody reads): held and let go (hold.ts); the run fails before the freeze', async (t: TestContext) => {
        if (skip) return t.skip(skip);
        const g = guest!;
        const xml = join(dir, 'pull.xml');
        writeFileSync(
          xml,
          `<domainbackup mode='pull'><server transport='unix' socket='${join(dir, 'pull.sock')}'/><disks><disk name='vda' type='file'><scratch file='${join(dir, 'pull-scratch.qcow2')}'/></disk></disks></domainbackup>`,
        );
        await virsh(['backup-begin', g.name, xml]);
        try {
          // The hold of hold.ts on a real job (a pull job copies nothing and runs until aborted).
          const lease = libvirtPool.lease(LIBVIRT_URI);
          try {
            const { conn, dom } = await lease.domain(g.name);
            const t10 = { timeoutMs: 10_000 };
            assert.deepEqual(await holdCopies(conn, dom, ['vda'], t10), ['vda']);
            assert.equal((await conn.getBlockJobInfo(dom, 'vda', 0, t10)).bandwidth, HELD_MIB_S);
            await releaseCopies(conn, dom, ['vda'], 'vm', t10);
            assert.equal((await conn.getBlockJobInfo(dom, 'vda', 0, t10)).bandwidth, 0n);
          } finally {
            lease.release();
          }
          const { report } = await run(
            config('busy', { mode: 'backup', disks: ['vda'], target: join(dir, 'busy-{disk}.img') }),
          );
          const vm = report.guests[0]!;
          assert.notEqual(report.exitCode, 0);
          assert.equal(vm.steps.at(-1)!.name, 'snapshot-prepare');
          assert.ok(!vm.steps.some((s) => s.name === 'freeze'));
          assert.match(
            vm.errors[0]!.message,
            new RegExp(`domain ${g.name} already runs a job .*virsh domjobabort ${g.name}`),
          );
          assert.ok(!existsSync(join(dir, 'busy-vda.img')), 'no target created');
        } finally {
          await virsh(['domjobabort', g.name]);
          for (let i = 0; i < 100 && !/Job type:\s+None/.test(await virsh(['domjobinfo', g.name])); i++)
            await sleep(100);
        }
        await writerRuns(g, 5); // never frozen
      });

      test('doctor checks: native transport, domain running, agent channel connected, disks and target directory', async () => {
        const c = config('doctor', { mode: 'snapshot', target: join(dir, 'x-{disk}.qcow2') });
        const checks = await libvirtChecks(c.guests.get('vm')!);
        const bad = checks.filter((x) => !x.ok);
        assert.deepEqual(bad, [], JSON.stringify(checks));
        assert.deepEqual(
          checks.map((x) => x.name),
          [
            'libvirt transport',
            'libvirt connection',
            'domain',
            'agent channel',
            'snapshot disks',
            'snapshot target directory',
            'block jobs',
            'domain job',
          ],
        );
      });

      if (kind === 'qemu-ga') {
        test('snapshot mode with commit: false keeps the overlay (the chain grows by one), with snapshot metadata', async (t: TestContext) => {
          if (skip) return t.skip(skip);
          const g = guest!;
          const { report } = await run(
            config('keep', { mode: 'snapshot', commit: false, target: join(dir, 'kept-{disk}.qcow2') }),
          );
          assert.equal(report.exitCode, 0, JSON.stringify(report.guests[0]!.errors));
          const kept = join(dir, 'kept-vda.qcow2');
          assert.equal(await diskSource(g.name), kept);
          // quiesce made the overlay before the freeze (libvirt reused it): the original image as backing file.
          const info = JSON.parse(
            spawnSync('qemu-img', ['info', '-U', '--output=json', kept], { encoding: 'utf8' }).stdout,
          ) as Record<string, unknown>;
          assert.equal(info['backing-filename'], g.dataImage);
          assert.equal(info['backing-filename-format'], g.dataFormat);
          assert.match(await virsh(['snapshot-list', g.name, '--name']), /quiesce-/);
          // Undo by hand, as the docs tell: merge it back, drop the metadata. Stopped at the active commit's
          // synchronized phase (no --pivot yet), doctor names the overlay and the block job.
          await virsh(['blockcommit', g.name, 'vda', '--active', '--shallow', '--wait']);
          const checks = await libvirtChecks(
            config('keep', { mode: 'snapshot', target: join(dir, 'y-{disk}.qcow2') }).guests.get('vm')!,
          );
          const failed = Object.fromEntries(checks.filter((x) => !x.ok).map((x) => [x.name, x.detail]));
          assert.deepEqual(Object.keys(failed).sort(), ['block jobs', 'overlays'], JSON.stringify(checks));
          assert.match(failed['block jobs']!, /^vda: an active block commit( at \d+%)?: libvirt refuses/);
          assert.match(failed['overlays']!, /vda runs on .*kept-vda\.qcow2, which has a backing file/);
          await virsh(['blockjob', g.name, 'vda', '--pivot']);
          const name = (await virsh(['snapshot-list', g.name, '--name'])).trim();
          await virsh(['snapshot-delete', g.name, name, '--metadata']);
          assert.equal(await diskSource(g.name), g.dataImage);
        });

        test('qemu+ssh through an sshd on loopback: doctor asks the far side; the connector and the backup provider over ssh + virt-ssh-helper', async (t: TestContext) => {
          if (skip) return t.skip(skip);
          const noSshd = sshdUnavailable();
          if (noSshd) return t.skip(noSshd);
          const g = guest!;
          const sshDir = mkdtempSync(join(tmpdir(), 'e2e-sshd-'));
          const sshd = await startSshd(sshDir);
          try {
            const uri = sshd.uri();
            const a = new LibvirtAgent({ uri, domain: g.name });
            try {
              assert.deepEqual(await a.execute('guest-ping'), {});
              assert.equal(a.via, 'rpc');
            } finally {
              await a.close();
            }
            const sshConfig = (snapshot: Record<string, unknown>, connectorUri = uri) =>
              config('ssh', snapshot, {}, connectorUri);
            // doctor over ssh asks the far side for the proxy and the directories libvirt writes into.
            const doctor = async (snapshot: Record<string, unknown>, connectorUri = uri) =>
              Object.fromEntries(
                (await libvirtChecks(sshConfig(snapshot, connectorUri).guests.get('vm')!)).map((x) => [
                  x.name,
                  [x.ok, x.detail] as const,
                ]),
              );
            const host = new URL(uri).hostname;
            let checks = await doctor({ target: join(dir, 'ssh-{disk}.img') });
            assert.deepEqual(checks['ssh proxy'], [true, `virt-ssh-helper on ${host}`]);
            assert.deepEqual(checks['snapshot target directory'], [true, `${dir} (on ${host})`]);
            checks = await doctor({ target: join(dir, 'nowhere', '{disk}.img') });
            assert.deepEqual(checks['snapshot target directory'], [
              false,
              `${join(dir, 'nowhere')} does not exist on ${host}`,
            ]);
            checks = await doctor({ repository: dir });
            assert.deepEqual(checks['repository directory'], [true, `${dir} (on ${host} and here)`]);
            const viaNetcat = `${uri}${uri.includes('?') ? '&' : '?'}proxy=netcat&netcat=no-such-netcat`;
            checks = await doctor({ target: join(dir, 'ssh-{disk}.img') }, viaNetcat);
            assert.deepEqual(checks['ssh proxy'], [false, `proxy=netcat: no-such-netcat not found on ${host}`]);
            const { report, log } = await run(sshConfig({ target: join(dir, 'ssh-{disk}.img') }));
            const vm = report.guests[0]!;
            assert.equal(report.exitCode, 0, vm.errors.map((e) => e.message).join('; '));
            assert.deepEqual(
              log.events.filter((e) => e.kind === 'warning'),
              [],
            );
            const fs = dumpe2fs(join(dir, 'ssh-vda.img'));
            t.diagnostic(
              `over ssh: window ${vm.frozenWindowMs} ms, connect ${vm.steps[0]!.durationMs} ms; the copy: "${fs.state}"`,
            );
            assert.equal(fs.clean, true);
          } finally {
            await libvirtPool.closeAll();
            await sshd.stop();
            rmSync(sshDir, { recursive: true, force: true });
          }
        });

        test('a hung agent (SIGSTOP for 15 s): the run fails with TIMEOUT within the timeouts, nothing stays frozen', async (t: TestContext) => {
          if (skip) return t.skip(skip);
          const g = guest!;
          // guest-exec (qemu-ga) stops the agent, and lets it go on after 15 s.
          await g.agentCommand('guest-exec', {
            path: '/bin/sh',
            arg: [
              '-c',
              'p=$(cat /run/quiesce-vm/agent.pid); (sleep 0.5; kill -STOP $p; sleep 15; kill -CONT $p) </dev/null >/dev/null 2>&1 &',
            ],
          });
          await sleep(1500);
          const t0 = Date.now();
          const { report } = await run(
            config(
              'hung',
              { target: join(dir, 'hung-{disk}.img') },
              { timeouts: { connect: '3s', freeze: '3s', thaw: '3s', command: '3s' } },
            ),
          );
          const took = Date.now() - t0;
          const vm = report.guests[0]!;
          t.diagnostic(
            `hung agent: run ended after ${took} ms: ${vm.errors.map((e) => `${e.code} ${e.message}`).join('; ')}`,
          );
          assert.notEqual(report.exitCode, 0);
          assert.equal(vm.errors[0]!.code, 'TIMEOUT');
          assert.ok(!vm.steps.some((s) => s.name === 'freeze'), 'never frozen');
          assert.ok(took < 15_000, `bounded by the timeouts (${took} ms)`);
          assert.deepEqual(
            readdirSync(dir).filter((f) => f.startsWith('hung-')),
            [],
          );
          // The agent comes back; libvirt's channel recovers and the guest is thawed.
          const agent = new LibvirtAgent({ uri: LIBVIRT_URI, domain: g.name });
          try {
            for (let i = 0; ; i++) {
              try {
                assert.equal(await agent.execute('guest-fsfreeze-status', undefined, { timeoutMs: 3000 }), 'thawed');
                break;
              } catch (err) {
                if (i > 30) throw err;
                await sleep(1000);
              }
            }
          } finally {
            await agent.close();
          }
          await writerRuns(g, 3);
        });
      }
    },
  );
}
