import { execFile } from 'node:child_process';
import { constants } from 'node:os';
import type { AgentContext } from '../context.js';
import { strerror } from '../errno.js';
import { loadAddon } from '../freeze/ioctl.js';
import { readMounts, type FsMount } from '../freeze/mounts.js';
import type { JsonOut } from '../protocol/index.js';
import type { CommandFamily } from '../qapi/types.js';

/** What one FITRIM on a mount came to. */
export type TrimOutcome =
  /** The kernel's figures after the call: bytes trimmed and the minimum extent length it used. */
  | { readonly ok: true; readonly trimmed: bigint; readonly minimum: bigint }
  /** The mount could not be opened, or FITRIM failed; `code` is the errno name, `text` the C library's. */
  | { readonly ok: false; readonly stage: 'open' | 'ioctl'; readonly code: string; readonly text: string };

/** FITRIM over a whole mounted filesystem. */
export interface TrimBackend {
  readonly name: 'addon' | 'fstrim(8)';
  readonly fallbackReason?: string;
  /** `minimum` is the reference's int64, handed to the kernel as its u64. */
  trim(path: string, minimum: bigint): Promise<TrimOutcome>;
}

/** What agent/native/quiesce_freeze.c exports for trimming (an addon built before it existed lacks it). */
interface TrimAddon {
  fitrim(path: string, minlen: bigint): Promise<[rc: number, len: bigint, minlen: bigint]>;
  strerror(errno: number): string;
}

const ERRNO_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(constants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);
// EOPNOTSUPP and ENOTSUP share a number on Linux.
if (constants.errno.EOPNOTSUPP !== undefined) ERRNO_NAMES.set(constants.errno.EOPNOTSUPP, 'EOPNOTSUPP');

/** The in-process FITRIM (on the thread pool, so the loop goes on meanwhile). */
export function addonTrimBackend(addon: TrimAddon): TrimBackend {
  return {
    name: 'addon',
    async trim(path, minimum) {
      const [rc, len, minlen] = await addon.fitrim(path, BigInt.asUintN(64, minimum));
      if (rc === 0) return { ok: true, trimmed: len, minimum: BigInt.asIntN(64, minlen) };
      const n = Math.abs(rc);
      return {
        ok: false,
        stage: rc < 0 ? 'open' : 'ioctl',
        code: ERRNO_NAMES.get(n) ?? `E${n}`,
        text: addon.strerror(n),
      };
    },
  };
}

/** The errno name whose glibc text a util-linux message ends with. */
function codeOfText(text: string): string {
  for (const name of Object.keys(constants.errno)) if (strerror(name) === text) return name;
  return 'EIO';
}

/**
 * The fallback: util-linux fstrim(8), one process per mount. It does not print
 * the minimum the kernel used, so the requested one is reported.
 */
export function fstrimTrimBackend(reason: string, program = 'fstrim'): TrimBackend {
  return {
    name: 'fstrim(8)',
    fallbackReason: reason,
    trim: (path, minimum) =>
      new Promise((resolve) => {
        const args = ['--verbose', '--minimum', BigInt.asUintN(64, minimum).toString(), path];
        execFile(program, args, { encoding: 'utf8' }, (error, stdout, stderr) => {
          // "/mnt: 54.7 MiB (57367552 bytes) trimmed"
          const done = /\((\d+) bytes\) trimmed/.exec(stdout);
          if (!error && done) return resolve({ ok: true, trimmed: BigInt(done[1]!), minimum });
          const message = stderr.trim() || (error?.message ?? 'fstrim failed');
          if (/not supported/.test(message)) {
            return resolve({ ok: false, stage: 'ioctl', code: 'EOPNOTSUPP', text: strerror('EOPNOTSUPP') });
          }
          // "fstrim: cannot open /x: No such file or directory", "fstrim: /x: FITRIM ioctl failed: Read-only file system"
          const text = message.split(': ').pop() ?? message;
          const code = codeOfText(text);
          resolve({ ok: false, stage: /cannot open/.test(message) ? 'open' : 'ioctl', code, text });
        });
      }),
  };
}

/** The addon's fitrim when it loads and has one, else fstrim(8). */
export function loadTrimBackend(): TrimBackend {
  const loaded = loadAddon();
  if ('reason' in loaded) return fstrimTrimBackend(loaded.reason);
  const addon = loaded.addon as unknown as Partial<TrimAddon>;
  if (typeof addon.fitrim !== 'function') return fstrimTrimBackend('the addon has no fitrim (built before it had)');
  return addonTrimBackend(addon as TrimAddon);
}

/** One member of guest-fstrim's reply (QAPI GuestFilesystemTrimResult). */
export function trimResult(path: string, outcome: TrimOutcome): { readonly [key: string]: JsonOut } {
  if (outcome.ok) return { path, trimmed: outcome.trimmed, minimum: outcome.minimum };
  if (outcome.stage === 'open') return { path, error: `failed to open: ${outcome.text}` };
  // The reference's wording for filesystems that cannot trim (EOPNOTSUPP) and devices without FITRIM (ENOTTY).
  if (outcome.code === 'EOPNOTSUPP' || outcome.code === 'ENOTSUP' || outcome.code === 'ENOTTY') {
    return { path, error: 'trim not supported' };
  }
  return { path, error: `failed to trim: ${outcome.text}` };
}

export interface FstrimOptions {
  readonly backend?: TrimBackend;
  /** The mount list (the device-backed mounts guest-fsfreeze-freeze would see). */
  readonly mounts?: () => readonly FsMount[];
}

/**
 * guest-fstrim as qemu-ga 7.2 answers it: FITRIM on every device-backed mount
 * (the fsfreeze mount list), one after another in mount order, the results
 * listed last mount first; a mount that fails gets an error member, the
 * command itself does not fail. Disabled while frozen.
 */
export function fstrimCommands(ctx: AgentContext, opts: FstrimOptions = {}): CommandFamily {
  let backend = opts.backend;
  const mounts = opts.mounts ?? readMounts;
  return {
    commands: [
      {
        name: 'guest-fstrim',
        args: [{ name: 'minimum', type: 'int', optional: true }],
        run: async (args) => {
          ctx.log({ kind: 'info', message: 'guest-fstrim called' });
          if (!backend) {
            backend = loadTrimBackend();
            if (backend.fallbackReason) {
              ctx.log({ kind: 'warning', message: `guest-fstrim: using fstrim(8): ${backend.fallbackReason}` });
            }
          }
          const minimum = (args['minimum'] as bigint | undefined) ?? 0n;
          const paths: JsonOut[] = [];
          for (const m of mounts()) paths.unshift(trimResult(m.dir, await backend.trim(m.dir, minimum)));
          return { paths };
        },
      },
    ],
  };
}
