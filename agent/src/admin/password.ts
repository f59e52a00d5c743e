import { strerror } from '../errno.js';
import { decodeBase64 } from '../file/base64.js';
import { toModUtf8 } from '../protocol/utf8.js';
import { QgaError } from '../qapi/errors.js';
import { findProgramInPath, runProgram, type ProgramRun } from './process.js';

/** The machine-facing side of guest-set-user-password, replaceable in tests. */
export interface PasswordSystem {
  /** g_find_program_in_path(). */
  findProgram(name: string): string | undefined;
  /** Runs chpasswd as the reference forks it: own session, `data` on stdin, stdout and stderr on /dev/null. */
  chpasswd(path: string, args: readonly string[], data: Buffer): Promise<ProgramRun>;
}

export const realPasswordSystem: PasswordSystem = {
  findProgram: (name) => findProgramInPath(name),
  chpasswd: (path, args, data) => runProgram(path, args, { argv0: 'chpasswd', setsid: true, stdin: data }),
};

/**
 * guest-set-user-password as qemu-ga 7.2 does it on Linux: the password is
 * base64, taken as a C string (up to a NUL), and may hold no newline; the
 * user name may hold no newline or colon; `chpasswd` (`-e` when crypted),
 * found in $PATH, reads "user:password\n".
 */
export async function setUserPassword(
  sys: PasswordSystem,
  username: string,
  password: string,
  crypted: boolean,
): Promise<void> {
  let raw = decodeBase64(password);
  const nul = raw.indexOf(0);
  if (nul >= 0) raw = raw.subarray(0, nul);
  if (raw.includes(0x0a)) throw new QgaError('forbidden characters in raw password');
  const user = toModUtf8(username);
  if (user.includes(0x0a) || user.includes(0x3a)) throw new QgaError('forbidden characters in username');
  const path = sys.findProgram('chpasswd');
  // Sic: the reference names 'passwd' although it looks for chpasswd.
  if (!path) throw new QgaError("cannot find 'passwd' program in PATH");
  const run = await sys.chpasswd(
    path,
    crypted ? ['-e'] : [],
    Buffer.concat([user, Buffer.from(':'), raw, Buffer.from('\n')]),
  );
  if (run.stdinError !== undefined) {
    throw new QgaError(`cannot write new account password: ${strerror(run.stdinError)}`);
  }
  if (run.result.kind === 'signaled') throw new QgaError('child process has terminated abnormally');
  // Not executable after all: the reference's forked child exits 1.
  if (run.result.kind !== 'exited' || run.result.code !== 0) {
    throw new QgaError('child process has failed to set user password');
  }
}
