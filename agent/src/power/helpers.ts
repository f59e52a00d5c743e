import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

/** How a helper program ended. */
export type HelperResult =
  | { readonly kind: 'exited'; readonly code: number }
  | { readonly kind: 'signaled'; readonly signal: string }
  /** Not found in PATH (GLib's G_SPAWN_ERROR_NOENT), or a missing absolute path. */
  | { readonly kind: 'not-found' }
  /** Found but could not be started (not executable, …): GLib's message for it. */
  | { readonly kind: 'spawn-failed'; readonly message: string };

/** The machine-facing side of the power commands, replaceable in unit tests. */
export interface PowerSystem {
  /** /sbin/shutdown with these arguments, as the reference runs it. */
  shutdown(args: readonly string[]): Promise<HelperResult>;
  /** A helper looked up in PATH (systemctl, pm-is-supported, pm-suspend, …). */
  helper(argv: readonly [string, ...string[]]): Promise<HelperResult>;
  /** The first bytes of /sys/power/state, undefined when unreadable or empty. */
  readPowerState(): Promise<string | undefined>;
  /** Writes the word to /sys/power/state (this is the suspend itself). */
  writePowerState(word: string): Promise<void>;
}

export const SHUTDOWN_PATH = '/sbin/shutdown';
export const POWER_STATE_PATH = '/sys/power/state';

/** glibc strerror() texts for what exec can fail with, as GLib puts them in its message. */
const EXEC_ERRORS: Record<string, string> = {
  EACCES: 'Permission denied',
  ENOEXEC: 'Exec format error',
  ENOTDIR: 'Not a directory',
  ELOOP: 'Too many levels of symbolic links',
  ETXTBSY: 'Text file busy',
  ENOMEM: 'Cannot allocate memory',
  E2BIG: 'Argument list too long',
  ENAMETOOLONG: 'File name too long',
  EMFILE: 'Too many open files',
  EAGAIN: 'Resource temporarily unavailable',
};

/** Runs a program to completion: stdio on /dev/null, environment inherited. */
function run(file: string, args: readonly string[], opts: { argv0: string; setsid: boolean }): Promise<HelperResult> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: HelperResult): void => {
      if (settled) return;
      settled = true;
      resolve(r);
    };
    const child = spawn(file, args, { argv0: opts.argv0, detached: opts.setsid, stdio: 'ignore' });
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return done({ kind: 'not-found' });
      const text = (err.code && EXEC_ERRORS[err.code]) ?? err.message;
      done({ kind: 'spawn-failed', message: `Failed to execute child process “${opts.argv0}” (${text})` });
    });
    child.once('exit', (code, signal) => {
      done(signal ? { kind: 'signaled', signal } : { kind: 'exited', code: code ?? 0 });
    });
  });
}

/** The real machine. Never called by tests outside a mount namespace with stubs over every path it uses. */
export const realPowerSystem: PowerSystem = {
  // The reference forks, calls setsid() and execs /sbin/shutdown with argv[0] "shutdown".
  shutdown: (args) => run(SHUTDOWN_PATH, args, { argv0: 'shutdown', setsid: true }),
  // g_spawn_sync() with G_SPAWN_SEARCH_PATH: a PATH lookup, same session.
  helper: ([cmd, ...args]) => run(cmd, args, { argv0: cmd, setsid: false }),
  readPowerState: async () => {
    try {
      const fh = await open(POWER_STATE_PATH, constants.O_RDONLY);
      try {
        // The reference reads into a 32-byte buffer: only the first 31 bytes count.
        const { bytesRead, buffer } = await fh.read(Buffer.alloc(31), 0, 31, null);
        return bytesRead > 0 ? buffer.subarray(0, bytesRead).toString('latin1') : undefined;
      } finally {
        await fh.close();
      }
    } catch {
      return undefined;
    }
  },
  writePowerState: async (word) => {
    // O_WRONLY without O_TRUNC or O_CREAT, one write of the bare word, as the reference's child does.
    const fh = await open(POWER_STATE_PATH, constants.O_WRONLY);
    try {
      await fh.write(Buffer.from(word, 'latin1'), 0, word.length, null);
    } finally {
      await fh.close();
    }
  },
};
