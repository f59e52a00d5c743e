// Libvirt backup chains through faults, on the real libvirtd with a TCG guest per agent (qemu-ga and
// quiesce-agent, both up at once so that libvirtd is restarted once per run): the transient domain
// destroyed and created again from its XML (a new UUID; libvirt drops its checkpoints) — the next run
// redefines the base's checkpoint from the manifest before the freeze and the chain goes on; libvirtd
// restarted between backups — the chain goes on; the agent dead (killed, and killed again each time init
// restarts it) and hung (SIGSTOP) under failurePolicy fail — a failed run within the connect timeout, no
// backup, no checkpoint, nothing frozen — and crash-consistent — a backup without a freeze, recorded as
// consistency crash, and a run that does not pass for a success; the agent hung after the preflight
// (a pre-hook has it stop itself) under crash-consistent — the window fails and is thawed, a backup without
// a freeze follows, and the next command thaws what qemu-ga froze when it resumed. Then a new chain over
// qemu+ssh to an sshd on loopback (quiesce creates the images in the shared repository, as locally). Every point
// is restored and compared with the guest's checksums at its point in time. Last, `quiesce prune` removes
// the first chain and deletes the checkpoint libvirt still held for it, bitmap too, and the base's
// tracking (which the deleted checkpoint's bitmap is merged into) still holds every write.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { libvirtPool } from '../../src/libvirt/pool.js';
import { readCatalog } from '../../src/repository/catalog.js';
import { EXIT } from '../../src/workflow/exit-code.js';
import type { BackupRecord } from '../../src/snapshot/types.js';
import type { RunReport } from '../../src/workflow/results.js';
import { daemonsFile, ensureLibvirtd, LIBVIRT_URI, virsh, type LibvirtGuest } from '../helpers/libvirt.js';
import {
  CHAIN_KINDS,
  ChainRig,
  chainUnavailable,
  cli,
  okBackup,
  type Point,
  type RunWithLog,
} from '../helpers/libvirt-chain.js';
import { sshdUnavailable, startSshd } from '../helpers/sshd.js';
import { guestSh } from '../helpers/vm/guest-ops.js';
import { AGENT_MARKER } from '../helpers/vm/qemu.js';

const unavailable = chainUnavailable();
const LIBVIRTD = '/usr/sbin/libvirtd';
const LIBVIRTD_PID = '/var/run/libvirtd.pid';
/** The connect timeout the agent-fault runs use: a dead or hung agent must fail the run within it (and a margin). */
const CONNECT_S = 10;

async function agentAnswers(g: LibvirtGuest, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await g.agentCommand('guest-ping', undefined, 5);
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await sleep(500);
    }
  }
}

/**
 * Destroys the transient domain (SIGTERM only: QEMU closes the images and
 * stores their bitmaps) and creates it again from its XML, which names no
 * UUID: libvirt gives it a new one. Waits for the agent.
 */
async function recreate(g: LibvirtGuest): Promise<{ before: string; after: string }> {
  const before = (await virsh(['domuuid', g.name])).trim();
  await virsh(['destroy', g.name, '--graceful'], 120_000);
  rmSync(g.consoleLog, { force: true });
  const xml = join(g.dir, 'domain-again.xml');
  writeFileSync(xml, g.xml);
  await virsh(['create', xml]);
  await g.waitForConsole(AGENT_MARKER, 180_000, 0);
  await agentAnswers(g, 180_000);
  return { before, after: (await virsh(['domuuid', g.name])).trim() };
}

function pidAlive(pid: number, name: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'latin1').includes(name);
  } catch {
    return false;
  }
}

/**
 * Restarts the running libvirtd (SIGTERM, wait, `libvirtd -d`, wait until
 * virsh answers). Other tests share it: once per run, quickly. The helper's
 * daemons file gets the new pid if it had the old one.
 */
async function restartLibvirtd(): Promise<{ downMs: number; oldPid: number; newPid: number }> {
  const oldPid = Number(readFileSync(LIBVIRTD_PID, 'utf8').trim());
  assert.ok(pidAlive(oldPid, 'libvirtd'), `${LIBVIRTD_PID} names no running libvirtd`);
  const t0 = Date.now();
  process.kill(oldPid, 'SIGTERM');
  for (let i = 0; i < 300 && pidAlive(oldPid, 'libvirtd'); i++) await sleep(100);
  assert.ok(!pidAlive(oldPid, 'libvirtd'), 'libvirtd did not stop within 30 s');
  execFileSync(LIBVIRTD, ['-d']);
  let newPid = 0;
  for (let i = 0; i < 600; i++) {
    try {
      newPid = Number(readFileSync(LIBVIRTD_PID, 'utf8').trim());
      if (newPid !== oldPid && pidAlive(newPid, 'libvirtd')) {
        await virsh(['version'], 10_000);
        break;
      }
    } catch {
      // not up yet
    }
    await sleep(100);
  }
  await virsh(['version'], 10_000);
  const downMs = Date.now() - t0;
  const file = daemonsFile();
  if (existsSync(file)) {
    const pids = JSON.parse(readFileSync(file, 'utf8')) as Record<string, number>;
    if (pids['libvirtd'] === oldPid) writeFileSync(file, JSON.stringify({ ...pids, libvirtd: newPid }, null, 2) + '\n');
  }
  return { downMs, oldPid, newPid };
}

/** The dirty bitmaps QEMU holds on the guest's block nodes (names, sorted, each once). */
async function bitmaps(g: LibvirtGuest): Promise<string[]> {
  const out = await virsh([
    'qemu-monitor-command',
    g.name,
    '{"execute":"query-named-block-nodes","arguments":{"flat":true}}',
  ]);
  const nodes = (JSON.parse(out) as { return: { 'dirty-bitmaps'?: { name: string }[] }[] }).return;
  return [...new Set(nodes.flatMap((n) => (n['dirty-bitmaps'] ?? []).map((b) => b.name)))].sort();
}

type Fault = 'dead' | 'hung';

/**
 * Breaks the guest's agent for `seconds`, from 1 s after this returns:
 * dead — killed, and killed again whenever init restarts it; hung — stopped
 * (SIGSTOP), then continued. Waits until it has happened.
 */
async function breakAgent(g: LibvirtGuest, fault: Fault, seconds: number): Promise<void> {
  const script =
    fault === 'dead'
      ? 'end=$(( $(cut -d. -f1 /proc/uptime) + 1 + $1 ))\n' +
        '( sleep 1; while [ "$(cut -d. -f1 /proc/uptime)" -lt "$end" ]; do kill -9 "$(cat /run/quiesce-vm/agent.pid)" 2>/dev/null; sleep 0.05; done ) </dev/null >/dev/null 2>&1 &'
      : 'p=$(cat /run/quiesce-vm/agent.pid)\n( sleep 1; kill -STOP "$p"; sleep "$1"; kill -CONT "$p" ) </dev/null >/dev/null 2>&1 &';
  await guestSh(g, script, [String(seconds)]);
  await sleep(3000);
}

/**
 * A pre-hook (run on this host after the preflight, just before the freeze) that has the guest's agent
 * stop itself (SIGSTOP, through guest-exec) for `seconds`, then waits until it has. The request is read
 * from a file: a hook's argv has its {placeholders} filled, and JSON is all braces.
 */
function stopAgentHook(r: ChainRig, seconds: number): string[] {
  const inGuest = `p=$(cat /run/quiesce-vm/agent.pid); ( sleep 0.5; kill -STOP "$p"; sleep ${seconds}; kill -CONT "$p" ) </dev/null >/dev/null 2>&1 &`;
  const request = join(r.dir, 'stop-agent.json');
  writeFileSync(
    request,
    JSON.stringify({ execute: 'guest-exec', arguments: { path: '/bin/sh', arg: ['-c', inGuest] } }),
  );
  return [
    'sh',
    '-c',
    'virsh -c "$1" qemu-agent-command "$2" "$(cat "$3")" >/dev/null && sleep 4',
    'sh',
    LIBVIRT_URI,
    r.guest.name,
    request,
  ];
}

/**
 * A crash-consistent run's backup: an incremental on `parent` in the chain, its manifest complete with
 * consistency crash and no frozen window, its checkpoint libvirt's only one, and the guest thawed.
 */
async function crashIncrement(r: ChainRig, vm: RunReport['guests'][number], parent: Point): Promise<BackupRecord> {
  const b = vm.backup!;
  assert.equal(b.level, 'incremental', b.reason);
  assert.equal(b.parent, parent.id);
  const m = await r.manifest(b.id);
  assert.equal(m.complete, true);
  assert.equal(m.consistency, 'crash');
  assert.equal(m.frozenWindowMs, null);
  assert.deepEqual(await r.checkpoints(), [`quiesce-${b.id}`]);
  assert.deepEqual(await r.guest.agentCommand('guest-fsfreeze-status'), { return: 'thawed' });
  return b;
}

describe(
  'libvirt backup chains through faults: a TCG guest per agent under the real libvirtd',
  { skip: unavailable, timeout: 1_800_000 },
  () => {
    const rigs: ChainRig[] = [];
    const points = new Map<ChainRig, Point[]>();

    before(async () => {
      await ensureLibvirtd();
      const started = await Promise.allSettled(CHAIN_KINDS.map((k) => ChainRig.start(k, `e2e-libvirt-faults-${k}-`)));
      for (const s of started) if (s.status === 'fulfilled') rigs.push(s.value);
      const failed = started.find((s) => s.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      for (const r of rigs) points.set(r, []);
    });
    after(async () => {
      for (const r of rigs) await r.close().catch(() => undefined);
      await libvirtPool.closeAll();
    });

    const base = (r: ChainRig): Point => points.get(r)!.at(-1)!;
    const add = (r: ChainRig, p: Point): void => void points.get(r)!.push(p);

    /** The level was decided (backup-level) before the freeze was sent. */
    function decidedBeforeFreeze(report: RunWithLog): void {
      const decided = report.events.findIndex((e) => e.kind === 'backup-level');
      const freeze = report.events.findIndex((e) => e.kind === 'step-start' && e.step === 'freeze');
      assert.ok(decided >= 0 && freeze > decided, `backup-level at ${decided}, the freeze at ${freeze}`);
    }

    test('a full starts each chain', async () => {
      for (const r of rigs) {
        const { report, sums } = await r.backupWithKnownFile(1);
        const b = okBackup(report);
        assert.equal(b.level, 'full', b.reason);
        assert.deepEqual(await r.checkpoints(), [`quiesce-${b.id}`]);
        add(r, { id: b.id, level: b.level, sums });
      }
    });

    test('the transient domain created again with a new UUID: the base’s checkpoint is redefined before the freeze, the chain goes on', async (t: TestContext) => {
      for (const r of rigs) {
        const old = base(r);
        const uuid = await recreate(r.guest);
        assert.notEqual(uuid.after, uuid.before, 'a new UUID');
        assert.deepEqual(await r.checkpoints(), [], 'libvirt dropped the transient domain’s checkpoints');
        const { report, sums } = await r.backupWithKnownFile(2);
        const b = okBackup(report);
        decidedBeforeFreeze(report);
        assert.equal(b.level, 'incremental', b.reason);
        assert.equal(b.parent, old.id);
        const warned = report.events.some(
          (e) => e.kind === 'warning' && e.message.includes(`redefined it from ${old.id}'s manifest`),
        );
        assert.ok(warned, 'the redefine is reported');
        assert.deepEqual(await r.checkpoints(), [`quiesce-${b.id}`]);
        const m = await r.manifest(b.id);
        assert.match(m.checkpoint!.xml, new RegExp(`<uuid>${uuid.after}</uuid>`));
        t.diagnostic(`${r.kind}: UUID ${uuid.before} → ${uuid.after}; ${b.level} ${b.id}: ${b.reason}`);
        add(r, { id: b.id, level: b.level, sums });
      }
    });

    test('libvirtd restarted between backups (once for both guests): the chain goes on', async (t: TestContext) => {
      const before = new Map<ChainRig, string[]>();
      for (const r of rigs) before.set(r, await r.checkpoints());
      const restart = await restartLibvirtd();
      t.diagnostic(`libvirtd ${restart.oldPid} → ${restart.newPid}, answering again after ${restart.downMs} ms`);
      for (const r of rigs) {
        assert.ok(r.guest.running(), 'the domain survived the restart');
        assert.deepEqual(await r.checkpoints(), before.get(r), 'libvirtd read its checkpoints back');
        await agentAnswers(r.guest, 120_000);
        const old = base(r);
        const { report, sums } = await r.backupWithKnownFile(3);
        const b = okBackup(report);
        assert.equal(b.level, 'incremental', b.reason);
        assert.equal(b.parent, old.id);
        assert.deepEqual(await r.checkpoints(), [`quiesce-${b.id}`]);
        t.diagnostic(`${r.kind}: after the restart: ${b.level} ${b.id}: ${b.reason}`);
        add(r, { id: b.id, level: b.level, sums });
      }
    });

    for (const fault of ['dead', 'hung'] as const)
      test(`the agent ${fault}, failurePolicy fail: the run fails within the connect timeout; no backup, no checkpoint, nothing frozen`, async (t: TestContext) => {
        for (const r of rigs) {
          r.vm['timeouts'] = { ...(r.vm['timeouts'] as object), connect: `${CONNECT_S}s` };
          r.job['failurePolicy'] = 'fail';
          const cps = await r.checkpoints();
          const catalog = await readCatalog(r.repo(), 'vm');
          await breakAgent(r.guest, fault, 30);
          const report = await r.run();
          const vm = report.guests[0]!;
          assert.equal(report.exitCode, EXIT.FAILED);
          assert.equal(vm.ok, false);
          assert.equal(vm.consistency, 'none');
          assert.equal(vm.backup, undefined);
          assert.ok(vm.errors.length > 0);
          assert.equal(vm.frozenFilesystems, undefined, 'no freeze was sent');
          assert.ok(
            report.durationMs < (CONNECT_S + 20) * 1000,
            `${report.durationMs} ms: bounded by the connect timeout`,
          );
          assert.deepEqual(await r.checkpoints(), cps, 'no checkpoint created or left');
          const now = await readCatalog(r.repo(), 'vm');
          assert.deepEqual(
            now.points.map((p) => p.manifest.id),
            catalog.points.map((p) => p.manifest.id),
          );
          assert.equal(now.unusable.length, catalog.unusable.length, 'nothing was started in the repository');
          await agentAnswers(r.guest, 180_000);
          assert.deepEqual(await r.guest.agentCommand('guest-fsfreeze-status'), { return: 'thawed' });
          t.diagnostic(
            `${r.kind}: agent ${fault}: exit ${report.exitCode} after ${report.durationMs} ms: ${vm.errors[0]!.message}`,
          );
        }
      });

    for (const fault of ['dead', 'hung'] as const)
      test(`the agent ${fault}, failurePolicy crash-consistent: a backup without a freeze, recorded as crash, and the run says it failed`, async (t: TestContext) => {
        for (const r of rigs) {
          r.vm['timeouts'] = { ...(r.vm['timeouts'] as object), connect: `${CONNECT_S}s` };
          r.job['failurePolicy'] = 'crash-consistent';
          const old = base(r);
          try {
            const { result: report, sums } = await r.withKnownFile(fault === 'dead' ? 4 : 5, async () => {
              await breakAgent(r.guest, fault, 30);
              try {
                return await r.run();
              } finally {
                await agentAnswers(r.guest, 180_000);
              }
            });
            const vm = report.guests[0]!;
            // Not a silent success: the guest's result fails (the connect error stays), the exit code is FAILED.
            assert.equal(report.exitCode, EXIT.FAILED);
            assert.equal(vm.ok, false);
            assert.equal(vm.consistency, 'crash');
            assert.equal(vm.frozenFilesystems, undefined, 'no freeze was sent');
            assert.ok(vm.errors.some((e) => e.step === 'connect'));
            const fallback = report.events.find((e) => e.kind === 'fallback-crash-consistent');
            assert.ok(fallback, 'the fallback is logged');
            const b = await crashIncrement(r, vm, old);
            t.diagnostic(
              `${r.kind}: agent ${fault}: exit ${report.exitCode}, ${b.level} ${b.id} (crash) after ${report.durationMs} ms`,
            );
            add(r, { id: b.id, level: b.level, sums, crash: true });
          } finally {
            r.job['failurePolicy'] = 'fail';
          }
        }
      });

    test('the agent hung after the preflight, failurePolicy crash-consistent: a backup without a freeze, recorded as crash; the next command thaws what the agent froze late', async (t: TestContext) => {
      for (const r of rigs) {
        const saved = { timeouts: r.vm['timeouts'], hooks: r.vm['hooks'] };
        // Short enough that the run ends while the agent is still stopped (60 s).
        r.vm['timeouts'] = { freeze: '8s', thaw: '4s', command: '8s' };
        r.vm['hooks'] = { pre: [stopAgentHook(r, 60)] };
        r.job['failurePolicy'] = 'crash-consistent';
        r.writeConfig();
        const old = base(r);
        try {
          // A quiesce process of its own (the CLI): once it has exited, the next command may recover its journal.
          let recovery: ReturnType<typeof cli> | undefined;
          const { result: run, sums } = await r.withKnownFile(9, async () => {
            try {
              return cli(['run', 'nightly', '--config', r.configFile, '--json']);
            } finally {
              // Continued, the agent runs what waited for it: qemu-ga the freeze (its thaw never got past
              // libvirt's resync), quiesce-agent its watchdog's arming. The next command's recovery thaws.
              await agentAnswers(r.guest, 180_000);
              recovery = cli(['status', '--config', r.configFile, '--json']);
            }
          });
          const report = JSON.parse(run.stdout) as RunReport;
          const events = run.stderr
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .map((l) => JSON.parse(l) as { kind: string; step?: string });
          const vm = report.guests[0]!;
          assert.equal(run.status, report.exitCode);
          assert.notEqual(report.exitCode, EXIT.OK);
          assert.equal(vm.ok, false);
          assert.equal(vm.consistency, 'crash');
          assert.ok(
            vm.errors.some((e) => e.step === 'freeze' || /freeze/.test(e.message)),
            JSON.stringify(vm.errors),
          );
          const hook = events.findIndex((e) => e.kind === 'step-end' && e.step === 'pre-hook 1');
          const fallback = events.findIndex((e) => e.kind === 'fallback-crash-consistent');
          assert.ok(hook >= 0 && fallback > hook, `the pre-hook at ${hook}, the fallback at ${fallback}`);
          const b = await crashIncrement(r, vm, old);
          assert.deepEqual(readdirSync(join(r.dir, 'state', 'journal')), [], 'no journal record left');
          t.diagnostic(
            `${r.kind}: exit ${report.exitCode}, ${b.level} ${b.id} (crash) after ${report.durationMs} ms; ${vm.errors[0]!.message}; then status exited ${recovery?.status}: ${recovery?.stderr.trim().slice(0, 300)}`,
          );
          add(r, { id: b.id, level: b.level, sums, crash: true });
        } finally {
          r.vm['timeouts'] = saved.timeouts;
          if (saved.hooks === undefined) delete r.vm['hooks'];
          else r.vm['hooks'] = saved.hooks;
          r.job['failurePolicy'] = 'fail';
          r.writeConfig();
        }
      }
    });

    test('over qemu+ssh (a loopback sshd): a new chain, libvirt creating the images in the repository both sides share', async (t: TestContext) => {
      const why = sshdUnavailable();
      if (why) return t.skip(why);
      const sshDir = mkdtempSync(join(tmpdir(), 'e2e-faults-sshd-'));
      const sshd = await startSshd(sshDir, 7);
      try {
        for (const r of rigs) {
          const connector = r.vm['connector'] as Record<string, unknown>;
          r.vm['connector'] = { ...connector, uri: sshd.uri() };
          try {
            for (const level of ['full', 'auto'] as const) {
              r.vm.snapshot['level'] = level;
              const before = base(r);
              const { report, sums } = await r.backupWithKnownFile(level === 'full' ? 6 : 7);
              const b = okBackup(report);
              assert.equal(b.level, level === 'full' ? 'full' : 'incremental', b.reason);
              if (level === 'auto') assert.equal(b.parent, before.id);
              assert.deepEqual(await r.checkpoints(), [`quiesce-${b.id}`]);
              const m = await r.manifest(b.id);
              const info = JSON.parse(
                execFileSync(
                  'qemu-img',
                  ['info', '-U', '--output=json', join(r.repo(), 'vm', m.chain, b.id, 'vda.qcow2')],
                  {
                    encoding: 'utf8',
                  },
                ),
              ) as { 'backing-filename'?: string };
              // quiesce made the image before the freeze, with its parent as backing file.
              assert.equal(info['backing-filename'], level === 'full' ? undefined : `../${before.id}/vda.qcow2`);
              t.diagnostic(
                `${r.kind}: over ssh: ${b.level} ${b.id}, ${b.bytesWritten} bytes, window ${report.guests[0]!.frozenWindowMs} ms`,
              );
              add(r, { id: b.id, level: b.level, sums });
            }
          } finally {
            r.vm['connector'] = connector;
            delete r.vm.snapshot['level'];
          }
        }
      } finally {
        await libvirtPool.closeAll();
        await sshd.stop();
        rmSync(sshDir, { recursive: true, force: true });
      }
    });

    test('every point restores to exactly the files the guest had at its point', (t: TestContext) => {
      for (const r of rigs) {
        assert.equal(points.get(r)!.length, sshdUnavailable() ? 6 : 8);
        r.writeConfig();
        r.restoreAll(points.get(r)!, (s) => t.diagnostic(s));
      }
    });

    test('quiesce prune deletes the checkpoints of pruned backups from libvirt, bitmaps too; the base keeps tracking every write', async (t: TestContext) => {
      if (sshdUnavailable()) return t.skip('needs the second chain of the qemu+ssh test');
      for (const r of rigs) {
        const chain1 = points.get(r)!.slice(0, 6);
        const kept = points.get(r)!.slice(6);
        const baseId = base(r).id;
        const leftover = `quiesce-${chain1[0]!.id}`;
        // A checkpoint of chain 1 that libvirt still holds (as a delete that failed back then leaves one): a real
        // one, whose bitmap now records instead of the base's (libvirt disables a parent's bitmap).
        await virsh(['checkpoint-create-as', r.guest.name, '--name', leftover, '--diskspec', 'vda,checkpoint=bitmap']);
        assert.deepEqual(await r.checkpoints(), [`quiesce-${baseId}`, leftover].sort());
        assert.deepEqual(await bitmaps(r.guest), [`quiesce-${baseId}`, leftover].sort());
        r.vm['prune'] = { keepLast: 2 };
        r.writeConfig();
        try {
          const out = cli(['prune', 'nightly', '--config', r.configFile]);
          assert.equal(out.status, 0, `${out.stderr}\n${out.stdout}`);
          for (const p of chain1) assert.match(out.stdout, new RegExp(`removed ${p.id}`));
          assert.match(
            out.stdout,
            new RegExp(`deleted checkpoints from libvirt \\(with their bitmaps\\): ${leftover}\n`),
          );
          t.diagnostic(`${r.kind}: ${out.stdout.trim().split('\n').slice(-2).join(' / ')}`);
        } finally {
          delete r.vm['prune'];
          r.writeConfig();
        }
        assert.deepEqual(await r.checkpoints(), [`quiesce-${baseId}`]);
        assert.deepEqual(await bitmaps(r.guest), [`quiesce-${baseId}`], 'the bitmap went with its checkpoint');
        // The leftover's bitmap was merged into the base's: the next incremental holds every write since the base.
        const { report, sums } = await r.backupWithKnownFile(8);
        const b = okBackup(report);
        assert.equal(b.level, 'incremental', b.reason);
        assert.equal(b.parent, baseId);
        r.restoreAll([...kept, { id: b.id, level: b.level, sums }], (s) => t.diagnostic(s));
      }
    });
  },
);
