import { readFileSync } from 'node:fs';
import { fromBytes, type BytePath } from './glib-file.js';
import { findSystemProgram, runProgram } from './process.js';

/** The fields of a user database entry the ssh commands use. */
export interface PasswdEntry {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  readonly dir: BytePath;
}

/**
 * getpwnam() for a name: the entry, undefined when there is none, or a
 * rejection (an errno-style error) when the lookup itself failed.
 */
export type UserLookup = (name: string) => Promise<PasswdEntry | undefined>;

/**
 * One passwd(5) line as glibc's files backend reads it: six fields up to a
 * colon each, the shell the rest of the line (so a colon in the comment
 * shifts the home directory, as getpwnam() would have it).
 */
export function parsePasswdLine(line: Buffer): PasswdEntry | undefined {
  const fields: Buffer[] = [];
  let from = 0;
  for (let i = line.indexOf(0x3a); i >= 0 && fields.length < 6; i = line.indexOf(0x3a, from)) {
    fields.push(line.subarray(from, i));
    from = i + 1;
  }
  if (fields.length < 6) return undefined;
  const uid = Number(fields[2]!.toString('latin1'));
  const gid = Number(fields[3]!.toString('latin1'));
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) return undefined;
  return { name: fields[0]!.toString('utf8'), uid, gid, dir: fromBytes(fields[5]!) };
}

/** The entry for `name` in a passwd(5) file's contents (NSS "files" only). */
export function findInPasswdFile(contents: Buffer, name: Buffer): PasswdEntry | undefined {
  for (const raw of splitLines(contents)) {
    const colon = raw.indexOf(0x3a);
    if (colon < 0 || !raw.subarray(0, colon).equals(name)) continue;
    const entry = parsePasswdLine(raw);
    if (entry) return entry;
  }
  return undefined;
}

function splitLines(b: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let from = 0;
  for (let i = b.indexOf(0x0a); i >= 0; i = b.indexOf(0x0a, from)) {
    out.push(b.subarray(from, i));
    from = i + 1;
  }
  if (from < b.length) out.push(b.subarray(from));
  return out;
}

/**
 * getpwnam() through NSS, as the reference's g_unix_get_passwd_entry() does
 * it: `getent passwd NAME` (LDAP, sssd and systemd users included). When
 * getent cannot say, /etc/passwd is read instead: getent looks an all-digit
 * key up as a uid (an entry of another name is no match), and it cannot
 * print an entry whose fields hold a colon. Without getent, /etc/passwd alone.
 */
export function nssUserLookup(passwdFile = '/etc/passwd'): UserLookup {
  const fromFile = (name: string): PasswdEntry | undefined => {
    try {
      return findInPasswdFile(readFileSync(passwdFile), Buffer.from(name));
    } catch {
      return undefined;
    }
  };
  return async (name) => {
    // A NUL cannot be passed to a program, and getpwnam() never matches one.
    if (name === '' || name.includes('\0')) return undefined;
    const getent = findSystemProgram('getent');
    if (!getent) return fromFile(name);
    const run = await runProgram(getent, ['passwd', '--', name], { argv0: 'getent', setsid: false, capture: true });
    const numeric = /^\d+$/.test(name);
    if (run.result.kind === 'exited' && run.result.code === 2) return numeric ? fromFile(name) : undefined;
    if (run.result.kind === 'exited' && run.result.code === 0) {
      const nl = run.stdout.indexOf(0x0a);
      const entry = parsePasswdLine(run.stdout.subarray(0, nl < 0 ? undefined : nl));
      if (entry && (!numeric || entry.name === name)) return entry;
    }
    return fromFile(name);
  };
}
