import { QgaError } from '../qapi/errors.js';
import type { PowerSystem } from './helpers.js';

const FLAGS: Record<string, string> = { powerdown: '-P', halt: '-H', reboot: '-r' };

/**
 * guest-shutdown: `/sbin/shutdown -h -P|-H|-r +0 "hypervisor initiated shutdown"`,
 * waited for. Success has no reply (the dispatcher drops it); every failure
 * is the reference's text.
 */
export async function shutdown(sys: PowerSystem, mode: string | undefined): Promise<void> {
  const key = mode ?? 'powerdown';
  // Sic: the reference's text has no closing parenthesis.
  if (!Object.hasOwn(FLAGS, key)) throw new QgaError('mode is invalid (valid values are: halt|powerdown|reboot');
  const flag = FLAGS[key]!;
  const r = await sys.shutdown(['-h', flag, '+0', 'hypervisor initiated shutdown']);
  if (r.kind === 'signaled') throw new QgaError('child process has terminated abnormally');
  // A program that cannot be executed makes the reference's forked child exit 1.
  if (r.kind !== 'exited' || r.code !== 0) throw new QgaError('child process has failed to shutdown');
}
