import { QgaError } from '../qapi/errors.js';
import type { HelperResult, PowerSystem } from './helpers.js';

export type SuspendMode = 'disk' | 'ram' | 'hybrid';

const SYSTEMD_UNIT: Record<SuspendMode, string> = {
  disk: 'systemd-hibernate',
  ram: 'systemd-suspend',
  hybrid: 'systemd-hybrid-sleep',
};
const SYSTEMCTL_VERB: Record<SuspendMode, string> = { disk: 'hibernate', ram: 'suspend', hybrid: 'hybrid-sleep' };
const PM_IS_SUPPORTED_ARG: Record<SuspendMode, string> = {
  disk: '--hibernate',
  ram: '--suspend',
  hybrid: '--suspend-hybrid',
};
const PM_PROGRAM: Record<SuspendMode, string> = {
  disk: 'pm-hibernate',
  ram: 'pm-suspend',
  hybrid: 'pm-suspend-hybrid',
};
/** What /sys/power/state must list and is written; hybrid has no sysfs path. */
const SYSFS_WORD: Record<SuspendMode, string | undefined> = { disk: 'disk', ram: 'mem', hybrid: undefined };

export const NOT_SUPPORTED = 'the requested suspend mode is not supported by the guest';

/** One way to suspend: a support probe (false or a throw mean "not this way") and the action. */
interface Method {
  supports(mode: SuspendMode): Promise<boolean>;
  suspend(mode: SuspendMode): Promise<void>;
}

/** The reference's run_process_child(): exit status, -1 when not found, an error when it could not start. */
function status(r: HelperResult, what: string): number {
  switch (r.kind) {
    case 'exited':
      return r.code;
    case 'not-found':
      return -1;
    case 'spawn-failed':
      throw new QgaError(`failed to create child process, error '${r.message}'`);
    case 'signaled':
      // GLib reports a crashed helper as exit status 0 (success); a crash is not a suspend.
      throw new QgaError(`child process has terminated abnormally (${what}, ${r.signal})`);
  }
}

function actionFailed(program: string, code: number): QgaError {
  if (code === -1) return new QgaError(`the helper program '${program}' was not found`);
  return new QgaError(`the helper program '${program}' returned an unexpected exit status code (${code})`);
}

function methods(sys: PowerSystem): Method[] {
  return [
    {
      // `systemctl status` answers with LSB codes: 1–3 mean the unit exists (3: not running), 4 that it does not.
      supports: async (mode) => {
        const code = status(await sys.helper(['systemctl', 'status', SYSTEMD_UNIT[mode]]), 'systemctl status');
        return code > 0 && code < 4;
      },
      suspend: async (mode) => {
        const program = `systemctl ${SYSTEMCTL_VERB[mode]}`;
        const code = status(await sys.helper(['systemctl', SYSTEMCTL_VERB[mode]]), program);
        if (code !== 0) throw actionFailed(program, code);
      },
    },
    {
      supports: async (mode) =>
        status(await sys.helper(['pm-is-supported', PM_IS_SUPPORTED_ARG[mode]]), 'pm-is-supported') === 0,
      suspend: async (mode) => {
        const code = status(await sys.helper([PM_PROGRAM[mode]]), PM_PROGRAM[mode]);
        if (code !== 0) throw actionFailed(PM_PROGRAM[mode], code);
      },
    },
    {
      supports: async (mode) => {
        const word = SYSFS_WORD[mode];
        if (word === undefined) return false;
        return (await sys.readPowerState())?.includes(word) ?? false;
      },
      suspend: async (mode) => {
        try {
          await sys.writePowerState(SYSFS_WORD[mode]!);
        } catch {
          throw new QgaError('child process has failed to suspend');
        }
      },
    },
  ];
}

/**
 * guest-suspend-disk/ram/hybrid: systemd, then pm-utils, then /sys/power/state,
 * each tried when its probe says the mode is supported, until one succeeds
 * (no reply then). As qemu-ga 7.2.22 does (its code has the fix that stops
 * 7.2.0 from giving up when systemctl is missing or does not know the unit;
 * without it a guest without systemd would answer nothing and never suspend).
 * Unlike the reference, when a supported method fails and no later one is
 * supported, the failure is reported: the reference sends nothing then, and a
 * host waiting for the guest to suspend would wait forever.
 */
export async function suspend(sys: PowerSystem, mode: SuspendMode): Promise<void> {
  let failure: unknown;
  let supported = false;
  for (const method of methods(sys)) {
    let ok: boolean;
    try {
      ok = await method.supports(mode);
    } catch {
      ok = false;
    }
    if (!ok) continue;
    supported = true;
    try {
      await method.suspend(mode);
      return;
    } catch (err) {
      failure = err;
    }
  }
  if (!supported) throw new QgaError(NOT_SUPPORTED);
  throw failure;
}
