import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { strerror } from '../errno.js';

/** What one FIFREEZE on a mount came to. */
export type FreezeResult =
  | { readonly ok: true }
  /** The mount could not be opened. */
  | { readonly ok: false; readonly stage: 'open'; readonly code: string; readonly text: string }
  /** FIFREEZE failed; `code` is the errno name (EBUSY, EOPNOTSUPP, …). */
  | { readonly ok: false; readonly stage: 'ioctl'; readonly code: string; readonly text: string };

/** FIFREEZE/FITHAW on a mountpoint. */
export interface FreezeBackend {
  /** 'addon' (in-process ioctl) or 'fsfreeze(8)' (a process per call). */
  readonly name: 'addon' | 'fsfreeze(8)';
  /** Why the addon is not in use, when it is not. */
  readonly fallbackReason?: string;
  freeze(path: string): FreezeResult;
  /** FITHAW repeated until it fails: how many succeeded, or undefined when the mount could not be opened. */
  thaw(path: string): number | undefined;
}

/** The addon's file names: next to the bundle, or where node-gyp builds it in the source tree. */
export const ADDON_BUNDLED_NAME = 'quiesce-freeze.node';
const ADDON_BUILT = join('native', 'build', 'Release', 'quiesce_freeze.node');

/** An opaque readiness watch made by the addon. */
export type AddonWatch = { readonly __watch: unique symbol };

/** What agent/native/quiesce_freeze.c exports. */
export interface Addon {
  freeze(path: string): number;
  thaw(path: string): number;
  strerror(errno: number): string;
  /** 1 when the kernel flags a change on an open /proc/self/mountinfo `fd` since the last call, 0 if not, -errno. */
  changed(fd: number): number;
  /** read(2) into `buf`: bytes read, or -errno (EAGAIN included: no exception). */
  read(fd: number, buf: Buffer): number;
  /** write(2) of buf[off, off + len): bytes written, or -errno. */
  write(fd: number, buf: Buffer, off: number, len: number): number;
  /** A libuv poll watch on `fd`; each arm() calls `cb` once, when the descriptor is readable (status < 0: error). */
  watch(fd: number, cb: (status: number) => void): AddonWatch;
  arm(watch: AddonWatch): void;
  unwatch(watch: AddonWatch): void;
}

const ERRNO_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(constants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);
// EOPNOTSUPP and ENOTSUP share a number on Linux; the reference tests EOPNOTSUPP.
if (constants.errno.EOPNOTSUPP !== undefined) ERRNO_NAMES.set(constants.errno.EOPNOTSUPP, 'EOPNOTSUPP');

function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `E${n}`;
}

/** Where the addon may be: $QUIESCE_AGENT_ADDON, next to this file (the bundle), the source tree's build. */
export function addonCandidates(from: string = fileURLToPath(import.meta.url)): string[] {
  const here = dirname(from);
  const env = process.env['QUIESCE_AGENT_ADDON'];
  return [
    ...(env ? [env] : []),
    join(here, ADDON_BUNDLED_NAME),
    // agent/src/freeze (tsx) and agent/dist/freeze (tsc) → agent/native/build/Release
    join(here, '..', '..', ADDON_BUILT),
  ];
}

function addonBackend(addon: Addon): FreezeBackend {
  return {
    name: 'addon',
    freeze(path) {
      const rc = addon.freeze(path);
      if (rc === 0) return { ok: true };
      const n = Math.abs(rc);
      return { ok: false, stage: rc < 0 ? 'open' : 'ioctl', code: errnoName(n), text: addon.strerror(n) };
    },
    thaw(path) {
      const n = addon.thaw(path);
      return n < 0 ? undefined : n;
    },
  };
}

/** The errno name whose glibc text fsfreeze(8) printed ("…: Device or resource busy"). */
function codeOfText(text: string): string {
  for (const name of Object.keys(constants.errno)) if (strerror(name) === text) return name;
  return 'EIO';
}

/**
 * The fallback: util-linux fsfreeze(8), one process per FIFREEZE/FITHAW.
 * Slower (a fork and exec per call) but needs nothing built.
 */
export function fsfreezeBackend(reason: string, program = 'fsfreeze'): FreezeBackend {
  const run = (flag: string, path: string): { status: number | null; err: string } => {
    const r = spawnSync(program, [flag, path], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
    return { status: r.error ? null : r.status, err: r.error ? r.error.message : r.stderr.trim() };
  };
  return {
    name: 'fsfreeze(8)',
    fallbackReason: reason,
    freeze(path) {
      const r = run('--freeze', path);
      if (r.status === 0) return { ok: true };
      // "fsfreeze: cannot open /x: No such file or directory" / "fsfreeze: /x: freeze failed: Device or resource busy"
      const text = r.err.split(': ').pop() ?? r.err;
      const code = codeOfText(text);
      const stage = /cannot open/.test(r.err) || r.status === null ? 'open' : 'ioctl';
      return { ok: false, stage, code, text: strerror(code) === text ? text : r.err };
    },
    thaw(path) {
      let n = 0;
      for (;;) {
        const r = run('--unfreeze', path);
        if (r.status !== 0) return n === 0 && /cannot open/.test(r.err) ? undefined : n;
        if (++n >= 1024) return n;
      }
    },
  };
}

/**
 * The addon when it loads (built by node-gyp at install, copied next to the
 * bundle), else fsfreeze(8). QUIESCE_AGENT_NO_ADDON=1 forces the fallback.
 */
export function loadFreezeBackend(candidates?: readonly string[]): FreezeBackend {
  const r = loadAddon(candidates);
  return 'addon' in r ? addonBackend(r.addon) : fsfreezeBackend(r.reason);
}

type Loaded = { addon: Addon } | { reason: string };
/** The default candidates' result: the freeze backend, the mount table and each device open share one load. */
let loadedDefault: Loaded | undefined;

/** The first candidate that loads, or why none did. QUIESCE_AGENT_NO_ADDON=1: none. */
export function loadAddon(candidates?: readonly string[]): Loaded {
  if (candidates) return load(candidates);
  return (loadedDefault ??= load(addonCandidates()));
}

function load(candidates: readonly string[]): Loaded {
  if (process.env['QUIESCE_AGENT_NO_ADDON'] === '1') return { reason: 'QUIESCE_AGENT_NO_ADDON=1' };
  const require = createRequire(import.meta.url);
  const errors: string[] = [];
  for (const path of candidates) {
    if (!existsSync(path)) continue;
    try {
      return { addon: require(path) as Addon };
    } catch (err) {
      errors.push(`${path}: ${(err as Error).message}`);
    }
  }
  return { reason: errors.length > 0 ? errors.join('; ') : `no ${ADDON_BUNDLED_NAME} found` };
}
