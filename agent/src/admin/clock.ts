import { accessSync, constants } from 'node:fs';
import { errorText } from '../errno.js';
import { QgaError } from '../qapi/errors.js';
import { findSystemProgram, runProgram, type ProgramResult } from './process.js';

export const HWCLOCK_PATH = '/sbin/hwclock';
export const UNSUPPORTED = 'this feature or command is not currently supported';

/** The machine-facing side of guest-set-time, replaceable in tests (nothing here may touch the real clock in a test). */
export interface ClockSystem {
  /** access(/sbin/hwclock, X_OK). */
  hwclockExecutable(): boolean;
  /** The calendar year of a time_t in local time, as localtime_r() gives it. */
  localYear(sec: bigint): number;
  /** settimeofday(): resolves, or rejects with an error whose `code` is the errno name. */
  setTimeOfDay(sec: bigint, usec: bigint): Promise<void>;
  /** /sbin/hwclock -s|-w, run as the reference forks it: own session, stdio on /dev/null. */
  hwclock(flag: '-s' | '-w'): Promise<ProgramResult>;
}

/** An error carrying an errno name, the way settimeofday() fails. */
export class ClockError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ClockError';
  }
}

const NS_PER_SEC = 1_000_000_000n;

/** What settimeofday() refuses before touching the clock: a negative time or microseconds out of 0..999999. */
export function timevalError(sec: bigint, usec: bigint): ClockError | undefined {
  return sec < 0n || usec < 0n || usec >= 1_000_000n ? new ClockError('EINVAL', 'Invalid argument') : undefined;
}

/**
 * settimeofday() through date(1) (Node has no binding for it): the same
 * argument checks as the kernel's (EINVAL), then `date --set=@SEC` (or
 * @SEC.USEC when there is a fraction, which GNU date takes and busybox's does
 * not), whose "cannot set date: <strerror>" is the error.
 */
async function setWithDate(sec: bigint, usec: bigint): Promise<void> {
  const invalid = timevalError(sec, usec);
  if (invalid) throw invalid;
  const date = findSystemProgram('date');
  if (!date) throw new ClockError('ENOENT', 'No such file or directory');
  const set = (at: string) =>
    runProgram(date, ['-u', `--set=${at}`], {
      argv0: 'date',
      setsid: false,
      capture: true,
      env: { ...process.env, LC_ALL: 'C' },
    });
  const whole = `@${sec}`;
  let run = await set(usec === 0n ? whole : `${whole}.${usec.toString().padStart(6, '0')}`);
  // busybox's date (small guests) takes @SECONDS without a fraction: the nearest whole second below it is the best it can do.
  if (
    usec !== 0n &&
    run.result.kind === 'exited' &&
    run.result.code !== 0 &&
    /invalid date/.test(run.stderr.toString('utf8'))
  )
    run = await set(whole);
  if (run.result.kind === 'exited' && run.result.code === 0) return;
  const said = /cannot set date: (.*)/.exec(run.stderr.toString('utf8'))?.[1]?.trim();
  throw new ClockError('EIO', said ?? 'Input/output error');
}

/** The real machine. Tests never call it outside a namespace where /sbin/hwclock is a stub and CAP_SYS_TIME is gone. */
export const realClockSystem: ClockSystem = {
  hwclockExecutable: () => {
    try {
      accessSync(HWCLOCK_PATH, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  },
  localYear: (sec) => new Date(Number(sec) * 1000).getFullYear(),
  setTimeOfDay: setWithDate,
  hwclock: async (flag) => (await runProgram(HWCLOCK_PATH, [flag], { argv0: 'hwclock', setsid: true })).result,
};

/**
 * guest-set-time as qemu-ga 7.2 does it: without /sbin/hwclock (checked
 * once, at the first call) the command is unsupported; a time is checked
 * (its local year must be 1970..2069), set with settimeofday() at microsecond
 * precision and then written to the RTC (`hwclock -w`); without a time the
 * system clock is set from the RTC (`hwclock -s`).
 */
export class TimeSetter {
  private hwclockAvailable: boolean | undefined;

  constructor(private readonly sys: ClockSystem = realClockSystem) {}

  async set(timeNs: bigint | undefined): Promise<void> {
    this.hwclockAvailable ??= this.sys.hwclockExecutable();
    if (!this.hwclockAvailable) throw new QgaError(UNSUPPORTED);
    if (timeNs !== undefined) {
      // C division: both truncate toward zero, the remainder keeps the sign of the time.
      const sec = timeNs / NS_PER_SEC;
      const usec = (timeNs % NS_PER_SEC) / 1000n;
      const year = this.sys.localYear(sec);
      if (year < 1970 || year >= 2070) throw new QgaError('Invalid time');
      try {
        await this.sys.setTimeOfDay(sec, usec);
      } catch (err) {
        throw new QgaError(`Failed to set time to guest: ${err instanceof ClockError ? err.message : errorText(err)}`);
      }
    }
    const r = await this.sys.hwclock(timeNs === undefined ? '-s' : '-w');
    if (r.kind === 'signaled') throw new QgaError('child process has terminated abnormally');
    // A program that cannot be executed makes the reference's forked child exit 1.
    if (r.kind !== 'exited' || r.code !== 0) throw new QgaError('hwclock failed to set hardware clock to system time');
  }
}
