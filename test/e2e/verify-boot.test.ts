// Verify by boot against a real TCG guest: a restore point of an ext4 data disk (a qcow2 chain in a
// repository) is booted with the test kernel and initramfs (its init mounts /dev/vda on /data and runs
// the agent), checked through the agent, and torn down; a guest whose agent never answers fails on
// its timeout and leaves no QEMU and no temporary file behind.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BootVerifyConfig } from '../../src/config/types.js';
import { captureLogger } from '../../src/log/logger.js';
import { findPoint, readCatalog, type RestorePoint } from '../../src/repository/catalog.js';
import { verifyAndRecord, verifyPoint } from '../../src/verify/index.js';
import { makeBackup, makeRepository, qemuToolsMissing } from '../helpers/chain-images.js';
import { ensureBootFiles, type BootFiles } from '../helpers/vm/initramfs.js';
import { guestUnavailable, kernelCmdline } from '../helpers/vm/qemu.js';

const unavailable = guestUnavailable() ?? (qemuToolsMissing() || undefined);
const TIMEOUT = 600_000;
const GUEST = 'web01';
const CONTENT = 'restored and readable\n'.repeat(5000);
const SHA = createHash('sha256').update(CONTENT).digest('hex');

/** QEMU processes whose command line names a folder under `dir` (this suite's temp folder). */
function qemusUnder(dir: string): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .filter((n) => {
      try {
        const cmd = readFileSync(`/proc/${n}/cmdline`, 'latin1');
        return cmd.includes('qemu-system') && cmd.includes(dir);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('verify by boot (src/verify/boot.ts) on a real TCG guest', { skip: unavailable, timeout: TIMEOUT }, () => {
  let repo: string;
  let remove: () => Promise<void>;
  let tmp: string;
  let boot: BootFiles;
  let point: RestorePoint;
  let imageHash: string;
  const log = captureLogger();

  const config = (over: Partial<BootVerifyConfig> = {}): BootVerifyConfig => ({
    kind: 'boot',
    kernel: boot.kernel,
    initrd: boot.initrd,
    append: kernelCmdline({ agent: 'qemu-ga' }),
    memoryMiB: 1024,
    cpus: 1,
    timeoutMs: 240_000,
    checks: { mountpoints: [], files: [], commands: [] },
    ...over,
  });

  before(async () => {
    boot = ensureBootFiles();
    ({ repo, remove } = await makeRepository());
    tmp = mkdtempSync(join(tmpdir(), 'verify-boot-'));
    const src = mkdtempSync(join(tmpdir(), 'verify-src-'));
    const raw = join(tmp, 'data.raw');
    try {
      writeFileSync(join(src, 'hello.txt'), CONTENT);
      execFileSync('truncate', ['-s', '64M', raw]);
      execFileSync('mkfs.ext4', ['-F', '-q', '-d', src, raw], { stdio: ['ignore', 'ignore', 'pipe'] });
      const full = await makeBackup(repo, GUEST, {
        time: new Date('2026-03-01T01:00:00Z'),
        disks: [{ name: 'vda', size: 64 << 20 }],
      });
      const image = join(full.dir, 'vda.qcow2');
      rmSync(image);
      execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, image]);
      // An incremental on top: booting it reads through the chain.
      const inc = await makeBackup(repo, GUEST, { time: new Date('2026-03-02T01:00:00Z'), parent: full });
      point = findPoint(await readCatalog(repo, GUEST), inc.id);
      imageHash = createHash('sha256').update(readFileSync(image)).digest('hex');
    } finally {
      rmSync(src, { recursive: true, force: true });
      rmSync(raw, { force: true });
    }
  });

  after(async () => {
    // Every QEMU the verifies started is gone already; one left would be a failure, and is stopped here by pid.
    for (const pid of qemusUnder(tmp)) process.kill(pid, 'SIGKILL');
    await remove();
    rmSync(tmp, { recursive: true, force: true });
  });

  const leftovers = (): void => {
    assert.deepEqual(qemusUnder(tmp), [], 'a QEMU is still running');
    assert.deepEqual(
      readdirSync(tmp).filter((n) => n.startsWith('quiesce-verify-')),
      [],
      'a temporary folder is left',
    );
  };

  test('a good point boots: the agent answers, /data is mounted, the file matches, a command exits 0', async () => {
    const r = await verifyAndRecord(
      point,
      config({
        checks: {
          mountpoints: ['/data'],
          files: [{ path: '/data/hello.txt', sha256: SHA }],
          commands: [['/bin/sh', '-c', 'test -s /data/hello.txt']],
        },
      }),
      { log, tmpDir: tmp },
    );
    assert.equal(r.ok, true, JSON.stringify(r.checks, null, 2));
    assert.deepEqual(
      r.checks.map((c) => c.name),
      [
        'agent',
        'guest-get-fsinfo',
        'mountpoint /data',
        'file /data/hello.txt',
        'command /bin/sh -c test -s /data/hello.txt',
      ],
    );
    assert.ok(r.bootMs !== undefined && r.bootMs > 0 && r.bootMs < r.durationMs);
    assert.match(r.checks[2]!.detail!, /^ext4 on vda/);
    leftovers();
    // The verdict is in the manifest; the images are as they were (the guest wrote into the overlay).
    const m = findPoint(await readCatalog(repo, GUEST), point.manifest.id).manifest;
    assert.equal(m.verified?.ok, true);
    assert.equal(m.verified?.how, 'boot');
    assert.equal(m.verified?.bootMs, r.bootMs);
    const image = join(point.dir, '..', point.lineage[0]!, 'vda.qcow2');
    assert.equal(createHash('sha256').update(readFileSync(image)).digest('hex'), imageHash);
    console.log(`# boot verify: agent up in ${r.bootMs} ms, all checks in ${r.durationMs} ms`);
  });

  test('checks that do not hold fail the verify, each with what was found', async () => {
    const r = await verifyPoint(
      point,
      config({
        checks: {
          mountpoints: ['/data', '/srv'],
          files: [{ path: '/data/hello.txt', sha256: '0'.repeat(64) }],
          commands: [['/bin/sh', '-c', 'echo broken >&2; exit 3']],
        },
      }),
      { log, tmpDir: tmp },
    );
    assert.equal(r.ok, false);
    const byName = new Map(r.checks.map((c) => [c.name, c]));
    assert.equal(byName.get('agent')?.ok, true);
    assert.equal(byName.get('mountpoint /data')?.ok, true);
    assert.equal(byName.get('mountpoint /srv')?.ok, false);
    assert.match(byName.get('mountpoint /srv')!.detail!, /not mounted \(mounted: .*\/data/);
    assert.equal(byName.get('file /data/hello.txt')?.ok, false);
    assert.match(byName.get('file /data/hello.txt')!.detail!, new RegExp(`sha256 ${SHA}`));
    assert.deepEqual(byName.get('command /bin/sh -c echo broken >&2; exit 3'), {
      name: 'command /bin/sh -c echo broken >&2; exit 3',
      ok: false,
      detail: 'exit 3: broken',
    });
    leftovers();
  });

  test('a guest whose agent never comes up fails on the timeout and leaves no QEMU and no file behind', async () => {
    const t0 = Date.now();
    // The agent exits at once on an unknown option; init restarts it every second, forever.
    const r = await verifyPoint(
      point,
      config({ append: kernelCmdline({ agent: 'qemu-ga', agentArgs: ['--no-such-option'] }), timeoutMs: 20_000 }),
      { log, tmpDir: tmp },
    );
    const took = Date.now() - t0;
    assert.equal(r.ok, false);
    assert.equal(r.bootMs, undefined);
    assert.equal(r.checks.length, 1);
    assert.equal(r.checks[0]!.name, 'agent');
    assert.match(r.checks[0]!.detail!, /did not answer guest-sync and guest-ping in time/);
    assert.ok(took >= 20_000 && took < 40_000, `took ${took} ms`);
    leftovers();
  });

  test('a guest that powers off before its agent starts fails at once', async () => {
    const r = await verifyPoint(point, config({ append: kernelCmdline({ agent: 'none' as 'qemu-ga' }) }), {
      log,
      tmpDir: tmp,
    });
    assert.equal(r.ok, false);
    assert.match(r.checks[0]!.detail!, /QEMU exited \(the guest powered off\) before the agent answered/);
    assert.match(r.checks[0]!.detail!, /FATAL: unknown quiesce.agent=none/);
    leftovers();
  });

  test('an abort while the guest boots stops QEMU by its process group and removes the overlays: INTERRUPTED', async () => {
    const ac = new AbortController();
    const p = verifyPoint(point, config(), { log, tmpDir: tmp, signal: ac.signal });
    setTimeout(() => ac.abort(), 1500);
    await assert.rejects(p, (err: Error & { code?: string }) => err.code === 'INTERRUPTED');
    leftovers();
  });
});
