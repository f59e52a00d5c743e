import { randomInt } from 'node:crypto';
import { constants } from 'node:fs';
import { access, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BootVerifyConfig } from '../config/types.js';
import { QuiesceError } from '../errors.js';
import { guestAgent } from '../guest/connect.js';
import type { GuestAgent } from '../guest/types.js';
import { runProcess, type ProcessResult } from '../process/run.js';
import type { RestorePoint } from '../repository/catalog.js';
import { runBootChecks } from './checks.js';
import { interrupted } from './fsck.js';
import { withOverlays, type Overlay } from './temp.js';
import type { VerifyCheck, VerifyOptions, VerifyResult } from './types.js';

/** The agent's virtio-serial port name, as qemu-ga and libvirt use it. */
export const AGENT_PORT = 'org.qemu.guest_agent.0';
/** How long one guest-sync attempt waits while the guest boots. */
const SYNC_ATTEMPT_MS = 2000;

export interface BootOptions extends VerifyOptions {
  /** The QEMU binary (default qemu-system-x86_64 on PATH). */
  readonly qemu?: string | undefined;
}

/** `,` separates QEMU's option fields: a literal one is doubled. */
const q = (s: string): string => s.replace(/,/g, ',,');

/** KVM when /dev/kvm opens read-write, else TCG. */
export async function pickAccel(): Promise<'kvm' | 'tcg'> {
  try {
    const fh = await open('/dev/kvm', constants.O_RDWR);
    await fh.close();
    return 'kvm';
  } catch {
    return 'tcg';
  }
}

/** QEMU's argv for a verify by boot: no network, no display, disks as overlays, the agent on a private socket. */
export function bootArgv(
  cfg: BootVerifyConfig,
  a: { qemu: string; accel: 'kvm' | 'tcg'; dir: string; overlays: readonly Overlay[] },
): string[] {
  return [
    a.qemu,
    '-accel', a.accel,
    ...(a.accel === 'kvm' ? ['-cpu', 'host'] : []),
    '-m', String(cfg.memoryMiB),
    '-smp', String(cfg.cpus),
    '-nodefaults', '-display', 'none', '-nic', 'none', '-no-reboot',
    '-serial', `file:${join(a.dir, 'console.log')}`,
    '-kernel', cfg.kernel,
    '-initrd', cfg.initrd,
    '-append', cfg.append,
    '-device', 'virtio-serial-pci',
    '-chardev', `socket,path=${q(join(a.dir, 'qga.sock'))},server=on,wait=off,id=qga0`,
    '-device', `virtserialport,chardev=qga0,name=${AGENT_PORT}`,
    ...a.overlays.flatMap((o, i) => [
      '-blockdev', `driver=file,filename=${q(o.overlay)},node-name=file${i}`,
      '-blockdev', `driver=qcow2,file=file${i},node-name=disk${i}`,
      '-device', `virtio-blk-pci,drive=disk${i}`,
    ]),
  ]; // prettier-ignore
}

/**
 * `boot`: starts a throwaway QEMU on temporary overlays of the point's disks
 * (in the point's order: the first is /dev/vda), direct kernel boot, and
 * passes when, within the timeout, the agent answers guest-sync and
 * guest-ping and every configured check holds. QEMU is stopped by its
 * process group and the overlays removed on every path, an abort included.
 * Throws (records nothing) when the verify itself cannot run: a missing
 * kernel, QEMU refusing its command line (exiting non-zero at once).
 */
export async function bootPoint(point: RestorePoint, cfg: BootVerifyConfig, opts: BootOptions): Promise<VerifyResult> {
  for (const [key, path] of [
    ['kernel', cfg.kernel],
    ['initrd', cfg.initrd],
  ] as const)
    await access(path, constants.R_OK).catch(() => {
      throw new QuiesceError('CONFIG', `verify.${key}: cannot read ${path}`);
    });
  const at = new Date();
  const t0 = performance.now();
  const deadline = t0 + cfg.timeoutMs;
  const outer = opts.signal ?? new AbortController().signal;
  const guest = point.manifest.guest;
  const checks: VerifyCheck[] = [];
  let bootMs: number | undefined;
  await withOverlays(point, { log: opts.log, signal: outer, guest, tmpDir: opts.tmpDir }, async (dir, overlays) => {
    const argv = bootArgv(cfg, { qemu: opts.qemu ?? 'qemu-system-x86_64', accel: await pickAccel(), dir, overlays });
    const stop = new AbortController();
    const started = performance.now();
    let exited: ProcessResult | undefined;
    const qemu = runProcess(argv, {
      timeoutMs: Infinity,
      signal: AbortSignal.any([outer, stop.signal]),
      graceMs: 2000,
      guest,
      step: 'verify',
      log: opts.log,
    }).then((r) => (exited = r));
    const agent = await guestAgent({ kind: 'socket', path: join(dir, 'qga.sock') });
    const consoleTail = async (): Promise<string> => {
      const text = await readFile(join(dir, 'console.log'), 'latin1').catch(() => '');
      const lines = text.trim().split('\n').slice(-3).join(' | ');
      return lines ? `; console: ${lines}` : '';
    };
    try {
      const answered = await waitForAgent(agent, { deadline, signal: outer, exited: () => exited });
      outer.throwIfAborted();
      if (answered !== true) {
        if (exited && exited.exitCode !== 0 && performance.now() - started < 5000 && !exited.cancelled)
          throw new QuiesceError(
            'STEP_FAILED',
            `QEMU did not start: ${exited.stderr.trim().split('\n').at(-1) ?? exited.error ?? 'failed'}`,
          );
        checks.push({ name: 'agent', ok: false, detail: `${answered}${await consoleTail()}` });
        return;
      }
      bootMs = Math.round(performance.now() - started);
      checks.push({
        name: 'agent',
        ok: true,
        detail: `guest-sync and guest-ping answered ${(bootMs / 1000).toFixed(1)} s after QEMU started`,
      });
      checks.push(...(await runBootChecks(agent, cfg.checks, { deadline, signal: outer })));
    } finally {
      await agent.close().catch(() => undefined);
      stop.abort();
      await qemu;
    }
  }).catch((err: unknown) => {
    if (outer.aborted) throw interrupted(outer);
    throw err;
  });
  return {
    guest,
    id: point.manifest.id,
    kind: 'boot',
    ok: checks.length > 0 && checks.every((c) => c.ok),
    at: at.toISOString(),
    durationMs: Math.round(performance.now() - t0),
    ...(bootMs !== undefined ? { bootMs } : {}),
    checks,
  };
}

/**
 * Asks guest-sync (random id, echoed) then guest-ping until both answer:
 * true, or why not (the deadline passed, QEMU exited). Bytes sent before the
 * guest opens its port wait in QEMU; a late echo of an earlier attempt is
 * discarded by the client's own sync.
 */
async function waitForAgent(
  agent: GuestAgent,
  o: { deadline: number; signal: AbortSignal; exited: () => ProcessResult | undefined },
): Promise<true | string> {
  let last = 'no answer';
  for (;;) {
    o.signal.throwIfAborted();
    const gone = o.exited();
    if (gone)
      return `QEMU exited (${gone.exitCode === 0 ? 'the guest powered off' : (gone.error ?? 'failed')}) before the agent answered`;
    const left = o.deadline - performance.now();
    if (left <= 0) return `the agent did not answer guest-sync and guest-ping in time (last: ${last})`;
    try {
      const id = randomInt(1, 2 ** 31);
      const timeoutMs = Math.max(1, Math.min(SYNC_ATTEMPT_MS, left));
      const echo = await within(agent.execute('guest-sync', { id }, { timeoutMs, signal: o.signal }), timeoutMs + 500);
      if (echo === id) {
        await within(agent.execute('guest-ping', undefined, { timeoutMs, signal: o.signal }), timeoutMs + 500);
        return true;
      }
      last = `guest-sync echoed ${JSON.stringify(echo)}, not ${id}`;
    } catch (err) {
      last = (err as Error).message;
      await sleep(Math.min(250, Math.max(0, o.deadline - performance.now())));
    }
  }
}

/** `p`, or a rejection after `ms` (the client retries a connect inside one call). */
function within<T>(p: Promise<T>, ms: number): Promise<T> {
  p.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
