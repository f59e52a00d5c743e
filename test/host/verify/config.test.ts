// The verify step's config forms: a command (argv), fsck, boot; what resolveConfig makes of them and refuses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULTS } from '../../../src/config/defaults.js';
import { ConfigError, resolveConfig } from '../../../src/config/load.js';
import type { ResolvedConfig } from '../../../src/config/types.js';
import { verifySpec } from '../../../src/cli/verify.js';
import { formatPlan, plan } from '../../../src/workflow/plan.js';

const QMP_REPO = { provider: 'qmp', socket: '/run/q.sock', repository: '/srv/backups' };

const config = (verify: unknown, snapshot: unknown = QMP_REPO) => ({
  stateDir: '/tmp/q',
  guests: { a: { connector: { type: 'socket', path: '/run/a.sock' }, freeze: 'all', snapshot, verify } },
  jobs: { j: { guests: ['a'] } },
});

function resolve(raw: unknown): ResolvedConfig {
  return resolveConfig(raw, 'f.yaml', {});
}

function problems(raw: unknown): string[] {
  try {
    resolve(raw);
    return [];
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return [...err.problems];
  }
}

test('verify as an argv stays a command step (kind command), with its timeout or the step default', () => {
  assert.deepEqual(resolve(config({ argv: ['check', '{guest}'], timeout: '10m' })).guests.get('a')!.verify, {
    kind: 'command',
    argv: ['check', '{guest}'],
    timeoutMs: 600_000,
  });
  assert.deepEqual(resolve(config({ kind: 'command', argv: ['true'] })).guests.get('a')!.verify, {
    kind: 'command',
    argv: ['true'],
    timeoutMs: DEFAULTS.stepMs,
  });
});

test('verify kind fsck: a timeout, or the step default', () => {
  assert.deepEqual(resolve(config({ kind: 'fsck' })).guests.get('a')!.verify, {
    kind: 'fsck',
    timeoutMs: DEFAULTS.stepMs,
  });
  assert.deepEqual(resolve(config({ kind: 'fsck', timeout: '30m' })).guests.get('a')!.verify, {
    kind: 'fsck',
    timeoutMs: 1_800_000,
  });
});

test('verify kind boot: defaults for append, memory, cpus, timeout and checks; sha256 lower-cased', () => {
  assert.deepEqual(
    resolve(config({ kind: 'boot', kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img' })).guests.get('a')!.verify,
    {
      kind: 'boot',
      kernel: '/boot/vmlinuz',
      initrd: '/boot/initrd.img',
      append: DEFAULTS.verifyBootAppend,
      memoryMiB: DEFAULTS.verifyBootMemoryMiB,
      cpus: 1,
      timeoutMs: DEFAULTS.verifyBootMs,
      checks: { mountpoints: [], files: [], commands: [] },
    },
  );
  const full = resolve(
    config({
      kind: 'boot',
      kernel: '/k',
      initrd: '/i',
      append: 'console=ttyS0 root=/dev/vda1',
      memory: 2048,
      cpus: 2,
      timeout: '3m',
      checks: {
        mountpoints: ['/', '/data'],
        files: [{ path: '/etc/hostname', sha256: 'AB'.repeat(32) }],
        commands: [['systemctl', 'is-system-running']],
      },
    }),
  ).guests.get('a')!.verify;
  assert.deepEqual(full, {
    kind: 'boot',
    kernel: '/k',
    initrd: '/i',
    append: 'console=ttyS0 root=/dev/vda1',
    memoryMiB: 2048,
    cpus: 2,
    timeoutMs: 180_000,
    checks: {
      mountpoints: ['/', '/data'],
      files: [{ path: '/etc/hostname', sha256: 'ab'.repeat(32) }],
      commands: [['systemctl', 'is-system-running']],
    },
  });
});

const refused: [string, unknown, RegExp][] = [
  [
    'fsck without a repository',
    config({ kind: 'fsck' }, { provider: 'command', argv: ['true'] }),
    /guests\.a\.verify\.kind: fsck checks a restore point of the guest's repository, but the guest has none: set snapshot\.repository/,
  ],
  [
    'boot on a qmp guest with a target instead of a repository',
    config({ kind: 'boot', kernel: '/k', initrd: '/i' }, { provider: 'qmp', socket: '/q', target: '/b/{disk}' }),
    /guests\.a\.verify\.kind: boot checks a restore point/,
  ],
  ['an unknown kind', config({ kind: 'smoke' }), /guests\.a\.verify\.kind: must be 'fsck' or 'boot' .*got "smoke"/],
  ['boot without a kernel', config({ kind: 'boot', initrd: '/i' }), /guests\.a\.verify\.kernel: Required/],
  ['a relative initrd', config({ kind: 'boot', kernel: '/k', initrd: 'i' }), /verify\.initrd: must be an absolute/],
  ['fsck with an argv', config({ kind: 'fsck', argv: ['x'] }), /verify: unknown key\(s\) 'argv'/],
  [
    'a sha256 that is not 64 hex digits',
    config({ kind: 'boot', kernel: '/k', initrd: '/i', checks: { files: [{ path: '/f', sha256: 'abc' }] } }),
    /verify\.checks\.files\[0\]\.sha256: a sha256: 64 hex digits/,
  ],
  [
    'an empty command',
    config({ kind: 'boot', kernel: '/k', initrd: '/i', checks: { commands: [[]] } }),
    /verify\.checks\.commands\[0\]: an argv list needs at least the program/,
  ],
  ['0 cpus', config({ kind: 'boot', kernel: '/k', initrd: '/i', cpus: 0 }), /verify\.cpus/],
  ['a zero timeout', config({ kind: 'fsck', timeout: 0 }), /verify\.timeout: must be between/],
];

for (const [what, raw, re] of refused)
  test(`refused: ${what}, naming the key`, () => {
    const p = problems(raw);
    assert.ok(
      p.some((x) => re.test(x)),
      p.join('\n'),
    );
  });

test('quiesce plan describes each verify kind', async () => {
  const text = (v: unknown) =>
    formatPlan(plan(resolve(config(v)), 'j', { runId: 'r1', now: new Date('2026-03-01T00:00:00Z') }));
  assert.match(await text({ argv: ['check', '{guest}'] }), /\d+\. verify: check a \(timeout 3600s\)/);
  assert.match(await text({ kind: 'fsck' }), /verify \(fsck\): each filesystem of this run's backup checked read-only/);
  assert.match(
    await text({ kind: 'boot', kernel: '/k', initrd: '/i', checks: { mountpoints: ['/data'], commands: [['true']] } }),
    /verify \(boot\): this run's backup booted in a throwaway QEMU \(\/k, 1024 MiB, 1 CPU, no network\) until its agent answers; then mountpoint \/data, true exits 0 \(timeout 300s\)/,
  );
});

test('quiesce verify picks --kind or the configured kind; boot needs the boot settings', () => {
  const boot = resolve(config({ kind: 'boot', kernel: '/k', initrd: '/i' }));
  assert.equal(verifySpec(boot, 'a', undefined).kind, 'boot');
  assert.deepEqual(verifySpec(boot, 'a', 'fsck'), { kind: 'fsck', timeoutMs: DEFAULTS.stepMs });
  assert.deepEqual(verifySpec(resolve(config({ kind: 'fsck', timeout: '5m' })), 'a', undefined), {
    kind: 'fsck',
    timeoutMs: 300_000,
  });
  assert.deepEqual(verifySpec(undefined, 'a', 'fsck'), { kind: 'fsck', timeoutMs: DEFAULTS.stepMs });
  const command = resolve(config({ argv: ['true'] }));
  assert.throws(
    () => verifySpec(command, 'a', 'boot'),
    /--kind boot needs the boot settings in f\.yaml: guests\.a\.verify/,
  );
  assert.throws(() => verifySpec(command, 'a', undefined), /is a command .*pass --kind fsck/);
  assert.throws(() => verifySpec(command, 'a', 'smoke'), /--kind "smoke": give fsck or boot/);
});
