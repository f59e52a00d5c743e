import { lstat, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../../errors.js';
import { fillPlaceholders } from '../../config/placeholders.js';
import { DomainState } from '../../libvirt/protocol.js';
import { libvirtPool, NativeUnavailable, type LibvirtLease, type LibvirtPool } from '../../libvirt/pool.js';
import type { LibvirtConnection } from '../../libvirt/remote.js';
import type { DomainRef } from '../../libvirt/types.js';
import type { Log } from '../../log/logger.js';
import type { PlannedLibvirtSnapshot } from '../types.js';
import { isCandidate, parseDisks, type DomainDisk, type PickedDisk } from './domain-xml.js';

/**
 * Whether libvirt accepted the window's call: true, false (it refused, or it
 * was never sent), or undefined (no reply within a command timeout).
 */
export type Accepted = boolean | undefined;

/** Picks the disks the config asks for from the domain's, with their targets; every problem names the domain's disks. */
export function pickDisks(
  all: readonly DomainDisk[],
  want: 'all' | readonly string[],
  target: string,
  o: { readonly domain: string; readonly guest: string },
): PickedDisk[] {
  return withTargets(chooseDisks(all, want, o), target, o.guest);
}

/** The disks the config asks for, from the domain's; every problem names the domain's disks. */
export function chooseDisks(
  all: readonly DomainDisk[],
  want: 'all' | readonly string[],
  o: { readonly domain: string; readonly guest: string },
): DomainDisk[] {
  const opt = { guest: o.guest };
  const known = all.map((d) => `${d.name}${isCandidate(d) ? '' : ` (${d.readonly ? 'read-only ' : ''}${d.device})`}`);
  let chosen: DomainDisk[];
  if (want === 'all') {
    chosen = all.filter(isCandidate);
    if (chosen.length === 0)
      throw new QuiesceError(
        'CONFIG_MISMATCH',
        `domain ${o.domain} has no writable disk with an image (disks: ${known.join(', ') || 'none'})`,
        opt,
      );
  } else {
    chosen = want.map((name) => {
      const d = all.find((x) => x.name === name);
      if (!d)
        throw new QuiesceError(
          'CONFIG_MISMATCH',
          `domain ${o.domain} has no disk '${name}' (disks: ${known.join(', ') || 'none'})`,
          opt,
        );
      if (d.source === undefined)
        throw new QuiesceError(
          'CONFIG_MISMATCH',
          `disk ${name} of domain ${o.domain} has no image (empty ${d.device})`,
          opt,
        );
      return d;
    });
  }
  return chosen;
}

/** Each disk with its target (`{disk}` filled); two disks on one file are refused. */
function withTargets(chosen: readonly DomainDisk[], target: string, guest: string): PickedDisk[] {
  const picked = chosen.map((disk) => ({ disk, target: fillPlaceholders(target, { disk: disk.name }) }));
  const targets = picked.map((p) => p.target);
  const twice = targets.find((t, i) => targets.indexOf(t) !== i);
  if (twice)
    throw new QuiesceError('CONFIG', `two disks would be written to ${twice}: put {disk} in the target`, { guest });
  return picked;
}

/** Refuses a target that exists (libvirt would refuse it inside the window) or whose directory does not. */
export async function checkTargetFree(p: PickedDisk, guest: string): Promise<void> {
  const fail = (why: string, cause?: unknown): never => {
    throw new QuiesceError('STEP_FAILED', `cannot write ${p.target} for disk ${p.disk.name}: ${why}`, {
      guest,
      ...(cause !== undefined ? { cause } : {}),
    });
  };
  try {
    await lstat(p.target);
    fail('it exists already (refusing to overwrite)');
  } catch (err) {
    if (err instanceof QuiesceError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') fail((err as Error).message, err);
  }
  try {
    if (!(await stat(dirname(p.target))).isDirectory()) fail(`${dirname(p.target)} is not a directory`);
  } catch (err) {
    if (err instanceof QuiesceError) throw err;
    fail(`its directory ${dirname(p.target)} does not exist`, err);
  }
}

/**
 * What both modes of provider `libvirt` share for one guest run: a lease on
 * the URI's connection (the connector's own, when both are in one process),
 * the domain's handle and disks, the picked disks with their targets, and
 * the call sent inside the window.
 */
export class LibvirtSession {
  /** The window's call, once sent: resolves true if libvirt accepted it. */
  private sent: Promise<boolean> | undefined;

  private constructor(
    readonly s: PlannedLibvirtSnapshot,
    readonly guest: string,
    readonly lease: LibvirtLease,
    readonly conn: LibvirtConnection,
    readonly dom: DomainRef,
    readonly all: readonly DomainDisk[],
    readonly picked: readonly PickedDisk[],
  ) {}

  /**
   * Connects (or joins the connection the connector opened), looks the
   * domain up, reads its disks and picks the configured ones; with a local
   * URI each target must be free. On a failure the lease is given back.
   */
  static async open(
    s: PlannedLibvirtSnapshot,
    guest: string,
    o: {
      readonly pool?: LibvirtPool;
      readonly pick?: (d: PickedDisk) => void;
      /**
       * Chooses the target template once the disks are known (a repository
       * backup decides its level and folder here); default: the config's.
       */
      readonly target?: (found: {
        readonly lease: LibvirtLease;
        readonly conn: LibvirtConnection;
        readonly dom: DomainRef;
        readonly disks: readonly DomainDisk[];
      }) => Promise<string>;
    } = {},
  ): Promise<LibvirtSession> {
    const lease = (o.pool ?? libvirtPool).lease(s.uri, guest);
    try {
      let found: { conn: LibvirtConnection; dom: DomainRef };
      try {
        found = await lease.domain(s.domain, { timeoutMs: s.connectTimeoutMs });
      } catch (err) {
        if (err instanceof NativeUnavailable)
          throw new QuiesceError(
            'CONNECT_FAILED',
            `the libvirt provider speaks libvirt's RPC protocol and has no virsh fallback: ${err.message}`,
            { guest, cause: err },
          );
        throw err;
      }
      const { conn, dom } = found;
      const call = { timeoutMs: s.commandTimeoutMs };
      // Both asked at once (one round trip); the XML is only read once the state is known to be fine.
      const xml = conn.getXmlDesc(dom, 0, call);
      xml.catch(() => undefined);
      const state = await conn.getState(dom, call);
      if (state.state !== DomainState.RUNNING && state.state !== DomainState.PAUSED)
        throw new QuiesceError('STEP_FAILED', `domain ${s.domain} is not running (state ${state.state})`, { guest });
      const all = parseDisks(await xml);
      const chosen = chooseDisks(all, s.disks, { domain: s.domain, guest });
      const target = o.target ? await o.target({ lease, conn, dom, disks: chosen }) : s.target;
      if (target === undefined) throw new QuiesceError('CONFIG', `no target for the libvirt ${s.mode}`, { guest });
      const picked = withTargets(chosen, target, guest);
      for (const p of picked) o.pick?.(p);
      const session = new LibvirtSession(s, guest, lease, conn, dom, all, picked);
      if (session.local) for (const p of picked) await checkTargetFree(p, guest);
      return session;
    } catch (err) {
      lease.release();
      throw err;
    }
  }

  /** The targets are on this machine (a unix-socket URI): they can be checked and removed here. */
  get local(): boolean {
    return this.lease.route.kind === 'unix';
  }

  get targets(): string[] {
    return this.picked.map((p) => p.target);
  }

  /** A short name for messages: `qemu:///system/dom`. */
  get where(): string {
    return `${this.lease.uri}/${this.s.domain}`;
  }

  /**
   * Inside the window: sends the one call and waits for its reply, or for
   * `signal` to abort (the window must end without waiting for libvirt).
   * dispose() learns later whether libvirt accepted it (wasAccepted()).
   */
  async send<T>(call: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
    this.sent = call.then(
      () => true,
      () => false,
    );
    return untilAborted(call, signal, this.guest, what);
  }

  /** Whether the window's call was accepted (waits up to a command timeout for its reply). */
  async wasAccepted(): Promise<Accepted> {
    if (!this.sent) return false;
    return Promise.race([this.sent, sleep(this.s.commandTimeoutMs, undefined, { ref: false })]);
  }

  /** Removes the targets that exist (reachable here only): a partial copy must not pass for a backup. */
  async removeTargets(warn: (message: string) => void, why: string, here = this.local): Promise<void> {
    if (!here) {
      warn(`the targets ${this.targets.join(', ')} on the libvirt host may hold ${why}: remove them there`);
      return;
    }
    for (const t of this.targets) {
      const there = await lstat(t).then(
        () => true,
        () => false,
      );
      if (!there) continue;
      await rm(t, { force: true });
      warn(`removed ${t}: ${why}`);
    }
  }

  /** Gives the connection back to the pool. */
  release(): void {
    this.lease.release();
  }
}

/** A warning function for the guest's log. */
export function warner(ctx: { readonly guest: string; readonly log: Log }): (message: string) => void {
  return (message) => ctx.log({ kind: 'warning', guest: ctx.guest, message });
}

/** Waits for `p`, or rejects (INTERRUPTED) as soon as `signal` aborts. */
export function untilAborted<T>(
  p: Promise<T>,
  signal: AbortSignal | undefined,
  guest: string,
  what: string,
): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void =>
      reject(new QuiesceError('INTERRUPTED', `${what} was cut short`, { guest, cause: signal.reason }));
    if (signal.aborted) {
      p.catch(() => undefined);
      return onAbort();
    }
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
