/**
 * The read-only system commands (time, host name, OS, time zone, users,
 * vCPUs, memory blocks, disks, disk and CPU statistics, devices) against
 * qemu-ga 7.2 on this machine: replies byte-identical where the value holds
 * still, same members and order with close values where it moves; the same
 * errors for unexpected arguments, in frozen mode and under -b; and the same
 * places and flags in guest-info. Nothing here changes the machine.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SKIP_NO_QEMU_GA, SYSTEM_COMMANDS, SystemPair, withoutNumbers } from './system-rig.js';

type Info = { return: { supported_commands: { name: string; enabled: boolean; 'success-response': boolean }[] } };

const STABLE = [
  'guest-get-host-name',
  'guest-get-osinfo',
  'guest-get-timezone',
  'guest-get-users',
  'guest-get-vcpus',
  'guest-get-memory-blocks',
  'guest-get-memory-block-info',
  'guest-get-disks',
  'guest-get-devices',
] as const;

/** Every number in a reply, in order. */
const numbers = (reply: string): bigint[] => [...reply.matchAll(/(?<=: )\d+/g)].map((m) => BigInt(m[0]));

describe('system commands against qemu-ga on this machine', { skip: SKIP_NO_QEMU_GA }, () => {
  let pair: SystemPair;
  before(async () => {
    pair = await SystemPair.start();
  });
  after(async () => {
    await pair?.stop();
  });

  for (const execute of STABLE) {
    test(`${execute}: byte-identical replies`, async () => {
      const { ours, ref } = await pair.askStable({ execute });
      assert.equal(ours, ref);
    });
  }

  test('guest-get-devices is disabled, as qemu-ga 7.2 has it on Linux', async () => {
    const { ours } = await pair.ask({ execute: 'guest-get-devices' });
    assert.equal(
      ours,
      '{"error": {"class": "CommandNotFound", "desc": "Command guest-get-devices has been disabled"}}',
    );
  });

  test('guest-get-time: nanoseconds, whole microseconds, between two readings of the reference', async () => {
    const before = await pair.askOne('qemu-ga', { execute: 'guest-get-time' });
    const ours = await pair.askOne('quiesce', { execute: 'guest-get-time' });
    const later = await pair.askOne('qemu-ga', { execute: 'guest-get-time' });
    const [t0, t, t1] = [before, ours, later].map((r) => BigInt(/^\{"return": (\d+)\}$/.exec(r)![1]!));
    assert.equal(t! % 1000n, 0n);
    // Ours has microseconds while the monotonic and wall clocks agree, else milliseconds: 1 ms of slack.
    assert.ok(t! >= t0! - 1_000_000n && t! <= t1! + 1_000_000n, `${t0} <= ${t} <= ${t1}`);
    assert.ok(t1! - t0! < 1_000_000_000n);
  });

  test('guest-get-cpustats: same members in the same order, counters between two readings of the reference', async () => {
    const first = await pair.askOne('qemu-ga', { execute: 'guest-get-cpustats' });
    const ours = await pair.askOne('quiesce', { execute: 'guest-get-cpustats' });
    const last = await pair.askOne('qemu-ga', { execute: 'guest-get-cpustats' });
    assert.match(ours, /^\{"return": \[\{"cpu": 0, /);
    assert.equal(withoutNumbers(ours), withoutNumbers(first));
    const keys = [...first.matchAll(/"([a-z]+)": \d+/g)].map((m) => m[1]);
    const [a, b, c] = [first, ours, last].map(numbers) as [bigint[], bigint[], bigint[]];
    for (const [i, key] of keys.entries()) {
      if (key === 'cpu') {
        assert.equal(b[i], a[i]);
        continue;
      }
      // The kernel may move idle and iowait back a little (NO_HZ accounting).
      const slack = key === 'idle' || key === 'iowait' ? 1000n : 0n;
      assert.ok(b[i]! >= a[i]! - slack && b[i]! <= c[i]! + slack, `${key}: ${a[i]} <= ${b[i]} <= ${c[i]}`);
    }
  });

  test('guest-get-diskstats: same devices, members and order, counters between two readings of the reference', async () => {
    let first = '';
    let ours = '';
    let last = '';
    // A loop device another test sets up may come or go between the readings: read again.
    for (let i = 0; i < 5; i++) {
      first = await pair.askOne('qemu-ga', { execute: 'guest-get-diskstats' });
      ours = await pair.askOne('quiesce', { execute: 'guest-get-diskstats' });
      last = await pair.askOne('qemu-ga', { execute: 'guest-get-diskstats' });
      if (withoutNumbers(first) === withoutNumbers(ours) && withoutNumbers(last) === withoutNumbers(ours)) break;
    }
    assert.equal(withoutNumbers(ours), withoutNumbers(first));
    assert.equal(withoutNumbers(ours), withoutNumbers(last));
    const keys = [...first.matchAll(/"([a-z-]+)": \d+/g)].map((m) => m[1]);
    const [a, b, c] = [first, ours, last].map(numbers) as [bigint[], bigint[], bigint[]];
    for (const [i, key] of keys.entries()) {
      if (key === 'major' || key === 'minor') assert.equal(b[i], a[i]);
      // I/Os in progress go up and down.
      else if (key !== 'ios-pgr') assert.ok(b[i]! >= a[i]! && b[i]! <= c[i]!, `${key}: ${a[i]} <= ${b[i]} <= ${c[i]}`);
    }
  });

  for (const execute of SYSTEM_COMMANDS) {
    test(`${execute} with an unexpected argument: the same error`, async () => {
      const { ours, ref } = await pair.ask({ execute, arguments: { verbose: true } });
      assert.equal(ours, ref);
      assert.match(ours, /"error"/);
    });
  }

  test('guest-info: every system command where the reference lists it, with the same flags', async () => {
    const { ours, ref } = await pair.ask({ execute: 'guest-info' });
    const list = (reply: string) => (JSON.parse(reply) as Info).return.supported_commands;
    const refList = list(ref);
    const oursList = list(ours);
    const refNames = new Set(refList.map((c) => c.name));
    const oursNames = new Set(oursList.map((c) => c.name));
    for (const name of SYSTEM_COMMANDS) assert.ok(oursNames.has(name) && refNames.has(name), name);
    // The order of everything both list (so each system command sits between the same neighbours).
    const shared = (l: typeof refList, other: Set<string>) => l.filter((c) => other.has(c.name)).map((c) => c.name);
    assert.deepEqual(shared(oursList, refNames), shared(refList, oursNames));
    const flags = (l: typeof refList) =>
      l.filter((c) => (SYSTEM_COMMANDS as readonly string[]).includes(c.name)).map((c) => JSON.stringify(c));
    assert.deepEqual(flags(oursList), flags(refList));
  });
});

describe(
  'system commands in frozen mode against qemu-ga (both started over a frozen-state marker)',
  {
    skip: SKIP_NO_QEMU_GA,
  },
  () => {
    let pair: SystemPair;
    before(async () => {
      pair = await SystemPair.start({ frozen: true });
    });
    after(async () => {
      await pair?.stop();
    });

    test('the agents are frozen', async () => {
      const { ours, ref } = await pair.ask({ execute: 'guest-fsfreeze-status' });
      assert.equal(ours, '{"return": "frozen"}');
      assert.equal(ref, ours);
    });

    for (const execute of SYSTEM_COMMANDS) {
      test(`${execute}: the same refusal`, async () => {
        const { ours, ref } = await pair.ask({ execute });
        assert.equal(ours, ref);
        assert.match(ours, /"class": "CommandNotFound"/);
      });
    }

    test('guest-info: the same enabled flags', async () => {
      const { ours, ref } = await pair.ask({ execute: 'guest-info' });
      const flags = (reply: string) =>
        (JSON.parse(reply) as Info).return.supported_commands
          .filter((c) => (SYSTEM_COMMANDS as readonly string[]).includes(c.name))
          .map((c) => JSON.stringify(c));
      assert.deepEqual(flags(ours), flags(ref));
    });
  },
);

describe('system commands blocked with -b against qemu-ga', { skip: SKIP_NO_QEMU_GA }, () => {
  let pair: SystemPair;
  before(async () => {
    pair = await SystemPair.start({
      args: ['-b', 'guest-get-osinfo,guest-get-time,guest-get-devices,guest-get-cpustats'],
    });
  });
  after(async () => {
    await pair?.stop();
  });

  for (const execute of SYSTEM_COMMANDS) {
    test(`${execute}: the same reply`, async () => {
      const { ours, ref } = await pair.askStable({ execute });
      if (
        ['guest-get-time', 'guest-get-cpustats', 'guest-get-diskstats'].includes(execute) &&
        ours.startsWith('{"return"')
      ) {
        assert.equal(withoutNumbers(ours), withoutNumbers(ref));
      } else {
        assert.equal(ours, ref);
      }
    });
  }

  test('guest-info: the same enabled flags', async () => {
    const { ours, ref } = await pair.ask({ execute: 'guest-info' });
    const flags = (reply: string) =>
      (JSON.parse(reply) as Info).return.supported_commands
        .filter((c) => (SYSTEM_COMMANDS as readonly string[]).includes(c.name))
        .map((c) => JSON.stringify(c));
    assert.deepEqual(flags(ours), flags(ref));
  });
});
