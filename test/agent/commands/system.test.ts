// The system commands in an agent in this process: where guest-info lists them, how -a, -b and
// frozen mode treat them, and replies whose shape needs no reference to check.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../../agent/src/agent.js';
import { parseOptions } from '../../../agent/src/config/options.js';
import { AgentLog } from '../../../agent/src/log.js';
import { MARKER_NAME } from '../../../agent/src/freeze/marker.js';
import type { JsonOut, QObject } from '../../../agent/src/protocol/index.js';
import { wallClockNs } from '../../../agent/src/commands/system.js';

/** qemu-ga 7.2's guest-info order (newest registration first), as it lists it on Linux. */
const REFERENCE_ORDER = [
  'guest-get-cpustats',
  'guest-get-diskstats',
  'guest-ssh-remove-authorized-keys',
  'guest-ssh-add-authorized-keys',
  'guest-ssh-get-authorized-keys',
  'guest-get-devices',
  'guest-get-osinfo',
  'guest-get-timezone',
  'guest-get-users',
  'guest-get-host-name',
  'guest-exec',
  'guest-exec-status',
  'guest-get-memory-block-info',
  'guest-set-memory-blocks',
  'guest-get-memory-blocks',
  'guest-set-user-password',
  'guest-get-fsinfo',
  'guest-get-disks',
  'guest-set-vcpus',
  'guest-get-vcpus',
  'guest-network-get-interfaces',
  'guest-suspend-hybrid',
  'guest-suspend-ram',
  'guest-suspend-disk',
  'guest-fstrim',
  'guest-fsfreeze-thaw',
  'guest-fsfreeze-freeze-list',
  'guest-fsfreeze-freeze',
  'guest-fsfreeze-status',
  'guest-file-flush',
  'guest-file-seek',
  'guest-file-write',
  'guest-file-read',
  'guest-file-close',
  'guest-file-open',
  'guest-shutdown',
  'guest-info',
  'guest-set-time',
  'guest-get-time',
  'guest-ping',
  'guest-sync',
  'guest-sync-delimited',
];

const SYSTEM = [
  'guest-get-time',
  'guest-get-host-name',
  'guest-get-osinfo',
  'guest-get-timezone',
  'guest-get-users',
  'guest-get-vcpus',
  'guest-get-memory-blocks',
  'guest-get-memory-block-info',
  'guest-get-disks',
  'guest-get-diskstats',
  'guest-get-cpustats',
  'guest-get-devices',
];

let statedir: string;
let agent: Agent | undefined;
beforeEach(() => (statedir = mkdtempSync(join(tmpdir(), 'quiesce-system-'))));
afterEach(async () => {
  await agent?.close();
  agent = undefined;
  rmSync(statedir, { recursive: true, force: true });
});

async function create(extra: string[] = []): Promise<Agent> {
  const { config } = parseOptions(
    ['-m', 'unix-listen', '-p', join(statedir, 's'), '-t', statedir, '--fsfreeze-include=', ...extra],
    { QGA_CONF: join(statedir, 'none.conf') },
  );
  agent = await Agent.create(config, new AgentLog(false, undefined));
  return agent;
}

async function call(a: Agent, execute: string, args?: Record<string, QObject>): Promise<JsonOut | undefined> {
  const request = new Map<string, QObject>([['execute', execute]]);
  if (args) request.set('arguments', new Map(Object.entries(args)));
  const { outcome } = await a.execute(request);
  return outcome ? ('return' in outcome.reply ? outcome.reply.return : { error: outcome.reply.error }) : undefined;
}

describe('system commands in the agent', () => {
  test('guest-info lists them where qemu-ga 7.2 does, between the same neighbours', async () => {
    const a = await create();
    const ours = a.dispatcher.info().map((c) => c.name);
    for (const name of SYSTEM) assert.ok(ours.includes(name), name);
    const known = new Set(REFERENCE_ORDER);
    const have = new Set(ours);
    assert.deepEqual(
      ours.filter((n) => known.has(n)),
      REFERENCE_ORDER.filter((n) => have.has(n)),
    );
  });

  test('guest-get-devices is always disabled, all others enabled', async () => {
    const a = await create();
    const info = new Map(a.dispatcher.info().map((c) => [c.name, c]));
    for (const name of SYSTEM) {
      assert.deepEqual(info.get(name), { name, enabled: name !== 'guest-get-devices', successResponse: true });
    }
  });

  test('-a cannot enable guest-get-devices; it limits the rest as for any command', async () => {
    const a = await create(['-a', 'guest-get-devices,guest-get-osinfo,guest-info']);
    const enabled = (n: string) => a.dispatcher.info().find((c) => c.name === n)!.enabled;
    assert.equal(enabled('guest-get-devices'), false);
    assert.equal(enabled('guest-get-osinfo'), true);
    assert.equal(enabled('guest-get-time'), false);
    assert.deepEqual(await call(a, 'guest-get-devices'), {
      error: { class: 'CommandNotFound', desc: 'Command guest-get-devices has been disabled' },
    });
  });

  test('started frozen: every one refused, guest-get-devices without the frozen reason', async () => {
    writeFileSync(join(statedir, MARKER_NAME), '');
    const a = await create();
    for (const name of SYSTEM) {
      const reason = name === 'guest-get-devices' ? '' : ': the agent is in frozen state';
      assert.deepEqual(await call(a, name), {
        error: { class: 'CommandNotFound', desc: `Command ${name} has been disabled${reason}` },
      });
    }
  });

  test('a live freeze and thaw treat guest-get-devices as a -b command: it keeps the frozen reason', async () => {
    const a = await create(['-b', 'guest-get-osinfo']);
    const desc = async (n: string) => ((await call(a, n)) as { error: { desc: string } }).error.desc;
    a.context.setFrozen(true);
    assert.equal(
      await desc('guest-get-devices'),
      'Command guest-get-devices has been disabled: the agent is in frozen state',
    );
    a.context.setFrozen(false);
    assert.equal(
      await desc('guest-get-devices'),
      'Command guest-get-devices has been disabled: the agent is in frozen state',
    );
    assert.equal(
      await desc('guest-get-osinfo'),
      'Command guest-get-osinfo has been disabled: the agent is in frozen state',
    );
  });

  test('guest-get-time: whole microseconds of the wall clock', async () => {
    const a = await create();
    const before = BigInt(Date.now()) * 1_000_000n;
    const t = (await call(a, 'guest-get-time')) as bigint;
    const after = BigInt(Date.now()) * 1_000_000n;
    assert.equal(t % 1000n, 0n);
    assert.ok(t >= before - 1_000_000n && t <= after + 1_000_000n);
    assert.ok(wallClockNs() >= t);
  });

  test('an unexpected argument is refused by name', async () => {
    const a = await create();
    for (const name of SYSTEM.filter((n) => n !== 'guest-get-devices')) {
      assert.deepEqual(await call(a, name, { x: 'y' }), {
        error: { class: 'GenericError', desc: "Parameter 'x' is unexpected" },
      });
    }
  });
});
