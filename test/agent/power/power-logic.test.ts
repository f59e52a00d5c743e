/**
 * The decision logic of guest-shutdown and guest-suspend-* on a fake machine,
 * and the process runner on harmless programs. (The real paths are exercised
 * in test/agent/commands/power.test.ts, inside a mount namespace with stubs.)
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { realPowerSystem, type HelperResult, type PowerSystem } from '../../../agent/src/power/helpers.js';
import { shutdown } from '../../../agent/src/power/shutdown.js';
import { NOT_SUPPORTED, suspend } from '../../../agent/src/power/suspend.js';

const root = mkdtempSync(join(tmpdir(), 'quiesce-power-logic-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** A machine whose programs answer from a table; records what was run and written. */
function fake(results: Record<string, HelperResult>, powerState?: string): PowerSystem & { log: string[] } {
  const log: string[] = [];
  const answer = (argv: readonly string[]): HelperResult => {
    log.push(argv.join(' '));
    return results[argv.join(' ')] ?? results[argv[0]!] ?? { kind: 'not-found' };
  };
  return {
    log,
    shutdown: async (args) => answer(['shutdown', ...args]),
    helper: async (argv) => answer(argv),
    readPowerState: async () => powerState,
    writePowerState: async (word) => {
      log.push(`write ${word}`);
      if (word === 'fail') throw new Error('EIO');
    },
  };
}

const exited = (code: number): HelperResult => ({ kind: 'exited', code });
const cannotStart: HelperResult = {
  kind: 'spawn-failed',
  message: 'Failed to execute child process “systemctl” (Permission denied)',
};

test('shutdown: a program that cannot be started is the reference forked child exiting 1', async () => {
  for (const r of [{ kind: 'not-found' } as const, cannotStart]) {
    const sys = fake({ shutdown: r });
    await assert.rejects(shutdown(sys, 'halt'), { message: 'child process has failed to shutdown' });
    assert.deepEqual(sys.log, ['shutdown -h -H +0 hypervisor initiated shutdown']);
  }
});

test('shutdown: only the three modes; names of Object.prototype are no modes', async () => {
  for (const mode of ['', 'HALT', 'poweroff', 'constructor', '__proto__', 'hasOwnProperty']) {
    const sys = fake({ shutdown: exited(0) });
    await assert.rejects(shutdown(sys, mode), { message: 'mode is invalid (valid values are: halt|powerdown|reboot' });
    assert.deepEqual(sys.log, []);
  }
});

test('suspend: a systemctl that cannot be started counts as no systemd; pm-utils is tried next', async () => {
  const sys = fake({ systemctl: cannotStart, 'pm-is-supported --suspend': exited(0), 'pm-suspend': exited(0) });
  await suspend(sys, 'ram');
  assert.deepEqual(sys.log, ['systemctl status systemd-suspend', 'pm-is-supported --suspend', 'pm-suspend']);
});

test('suspend: systemctl status 1, 2 and 3 mean supported; 0 and 4+ do not', async () => {
  for (const [status, supported] of [
    [0, false],
    [1, true],
    [2, true],
    [3, true],
    [4, false],
    [5, false],
  ] as const) {
    const sys = fake({ 'systemctl status systemd-hibernate': exited(status), 'systemctl hibernate': exited(0) });
    if (supported) await suspend(sys, 'disk');
    else await assert.rejects(suspend(sys, 'disk'), { message: NOT_SUPPORTED });
    assert.equal(sys.log.includes('systemctl hibernate'), supported, `status ${status}`);
  }
});

test('suspend: the last supported method that failed is what gets reported', async () => {
  const sys = fake(
    {
      'systemctl status systemd-suspend': exited(3),
      'systemctl suspend': cannotStart,
      'pm-is-supported --suspend': exited(0),
      'pm-suspend': { kind: 'not-found' },
    },
    'freeze',
  );
  await assert.rejects(suspend(sys, 'ram'), { message: "the helper program 'pm-suspend' was not found" });
  const sys2 = fake({ 'systemctl status systemd-suspend': exited(3), 'systemctl suspend': cannotStart });
  await assert.rejects(suspend(sys2, 'ram'), {
    message: "failed to create child process, error 'Failed to execute child process “systemctl” (Permission denied)'",
  });
});

test('suspend: sysfs is used when it lists the word in its first 31 bytes; a failed write is the child failing', async () => {
  const ok = fake({}, 'freeze mem disk');
  await suspend(ok, 'disk');
  assert.deepEqual(ok.log.at(-1), 'write disk');
  const none = fake({}, undefined);
  await assert.rejects(suspend(none, 'ram'), { message: NOT_SUPPORTED });
  const failing: PowerSystem = { ...fake({}, 'mem'), writePowerState: async () => Promise.reject(new Error('EIO')) };
  await assert.rejects(suspend(failing, 'ram'), { message: 'child process has failed to suspend' });
});

test('the process runner: exit codes, signals, missing and non-executable programs', async () => {
  const script = join(root, 'not-executable');
  writeFileSync(script, '#!/bin/sh\nexit 0\n');
  chmodSync(script, 0o644);
  assert.deepEqual(await realPowerSystem.helper(['sh', '-c', 'exit 3']), { kind: 'exited', code: 3 });
  assert.deepEqual(await realPowerSystem.helper(['sh', '-c', 'kill -s TERM $$']), {
    kind: 'signaled',
    signal: 'SIGTERM',
  });
  assert.deepEqual(await realPowerSystem.helper([join(root, 'missing')]), { kind: 'not-found' });
  assert.deepEqual(await realPowerSystem.helper(['quiesce-no-such-program-in-path']), { kind: 'not-found' });
  assert.deepEqual(await realPowerSystem.helper([script]), {
    kind: 'spawn-failed',
    message: `Failed to execute child process “${script}” (Permission denied)`,
  });
});
