/**
 * guest-set-time's logic on a recording fake clock: nothing here can set the
 * machine's clock or run hwclock. (Both agents run the real paths in
 * test/agent/commands/admin-differential.test.ts, without CAP_SYS_TIME and
 * with a stub over /sbin/hwclock.)
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ClockError, TimeSetter, timevalError, UNSUPPORTED, type ClockSystem } from '../../../agent/src/admin/clock.js';
import type { ProgramResult } from '../../../agent/src/admin/process.js';

interface FakeClock extends ClockSystem {
  readonly log: string[];
  available: boolean;
  hwclockResult: ProgramResult;
  setError?: unknown;
  year?: (sec: bigint) => number;
}

function fakeClock(): FakeClock {
  const clock: FakeClock = {
    log: [],
    available: true,
    hwclockResult: { kind: 'exited', code: 0 },
    hwclockExecutable: () => {
      clock.log.push('access');
      return clock.available;
    },
    localYear: (sec) => clock.year?.(sec) ?? new Date(Number(sec) * 1000).getUTCFullYear(),
    setTimeOfDay: async (sec, usec) => {
      clock.log.push(`settimeofday ${sec} ${usec}`);
      if (clock.setError) throw clock.setError;
    },
    hwclock: async (flag) => {
      clock.log.push(`hwclock ${flag}`);
      return clock.hwclockResult;
    },
  };
  return clock;
}

describe('TimeSetter', () => {
  test('without a time: the RTC sets the system clock (hwclock -s), settimeofday() is not called', async () => {
    const clock = fakeClock();
    await new TimeSetter(clock).set(undefined);
    assert.deepEqual(clock.log, ['access', 'hwclock -s']);
  });

  test('a time: seconds and microseconds for settimeofday(), then hwclock -w', async () => {
    const clock = fakeClock();
    await new TimeSetter(clock).set(1_700_000_000_123_456_789n);
    assert.deepEqual(clock.log, ['access', 'settimeofday 1700000000 123456', 'hwclock -w']);
  });

  test('C division: a negative time truncates toward zero and keeps the sign of the remainder', async () => {
    const clock = fakeClock();
    clock.year = () => 2000;
    await new TimeSetter(clock).set(-1_500_001_000n);
    assert.deepEqual(clock.log, ['access', 'settimeofday -1 -500001', 'hwclock -w']);
  });

  for (const [year, ok] of [
    [1969, false],
    [1970, true],
    [2069, true],
    [2070, false],
  ] as const) {
    test(`a time whose local year is ${year} is ${ok ? 'set' : 'invalid, and nothing runs'}`, async () => {
      const clock = fakeClock();
      clock.year = () => year;
      const setter = new TimeSetter(clock);
      if (ok) await setter.set(1n);
      else await assert.rejects(setter.set(1n), { message: 'Invalid time' });
      assert.equal(clock.log.includes('settimeofday 0 0'), ok);
      assert.equal(clock.log.includes('hwclock -w'), ok);
    });
  }

  test('the year is that of the seconds (1970-01-01 in UTC is valid, the second before is not)', async () => {
    const clock = fakeClock();
    await new TimeSetter(clock).set(0n);
    await assert.rejects(new TimeSetter(fakeClock()).set(-1_000_000_000n), { message: 'Invalid time' });
    assert.deepEqual(clock.log, ['access', 'settimeofday 0 0', 'hwclock -w']);
  });

  test('settimeofday() failing: its strerror text, and hwclock does not run', async () => {
    const clock = fakeClock();
    clock.setError = new ClockError('EPERM', 'Operation not permitted');
    await assert.rejects(new TimeSetter(clock).set(1_700_000_000_000_000_000n), {
      message: 'Failed to set time to guest: Operation not permitted',
    });
    assert.deepEqual(clock.log, ['access', 'settimeofday 1700000000 0']);
  });

  test('without an executable /sbin/hwclock: unsupported, checked before the time', async () => {
    const clock = fakeClock();
    clock.available = false;
    const setter = new TimeSetter(clock);
    await assert.rejects(setter.set(-5n), { message: UNSUPPORTED });
    await assert.rejects(setter.set(undefined), { message: UNSUPPORTED });
    assert.deepEqual(clock.log, ['access']);
  });

  test('the check is made once, at the first call, like the reference static', async () => {
    const clock = fakeClock();
    const setter = new TimeSetter(clock);
    await setter.set(undefined);
    clock.available = false;
    await setter.set(undefined);
    assert.deepEqual(clock.log, ['access', 'hwclock -s', 'hwclock -s']);
  });

  for (const [title, result, message] of [
    ['exits 1', { kind: 'exited', code: 1 }, 'hwclock failed to set hardware clock to system time'],
    [
      'cannot be executed',
      { kind: 'spawn-failed', code: 'EACCES' },
      'hwclock failed to set hardware clock to system time',
    ],
    ['is killed', { kind: 'signaled', signal: 'SIGKILL' }, 'child process has terminated abnormally'],
  ] as const) {
    test(`hwclock ${title}`, async () => {
      const clock = fakeClock();
      clock.hwclockResult = result;
      await assert.rejects(new TimeSetter(clock).set(undefined), { message });
    });
  }
});

describe('timevalError (what the kernel refuses before touching the clock)', () => {
  for (const [sec, usec, bad] of [
    [0n, 0n, false],
    [1_700_000_000n, 999_999n, false],
    [-1n, 0n, true],
    [0n, -1n, true],
    [0n, 1_000_000n, true],
  ] as const) {
    test(`${sec} s ${usec} µs: ${bad ? 'EINVAL' : 'fine'}`, () => {
      const e = timevalError(sec, usec);
      if (bad) assert.equal(e?.code, 'EINVAL');
      else assert.equal(e, undefined);
    });
  }
});
