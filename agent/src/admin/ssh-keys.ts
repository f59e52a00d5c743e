import { accessSync, chmodSync, chownSync, constants, mkdirSync, statSync } from 'node:fs';
import { errorText } from '../errno.js';
import { cStringToText } from '../protocol/index.js';
import { toModUtf8 } from '../protocol/utf8.js';
import { QgaError } from '../qapi/errors.js';
import { buildFilename, display, getContents, setContents, toBytes, type BytePath } from './glib-file.js';
import type { PasswdEntry, UserLookup } from './passwd.js';

/**
 * guest-ssh-get/add/remove-authorized-keys as qemu-ga 7.2 does them
 * (qga/commands-posix-ssh.c): ~/.ssh/authorized_keys of a user from the user
 * database, lines compared as bytes, the file replaced whole (a temporary
 * file renamed over it), then owned by the user and mode 0600; a missing
 * ~/.ssh is created owned by the user, mode 0700.
 */

/** The reference's only check: a key may not start with '#' nor hold a newline. */
function checkKeys(keys: readonly string[]): void {
  for (const key of keys) {
    if (key.startsWith('#') || key.includes('\n')) throw new QgaError(`invalid OpenSSH public key: '${key}'`);
  }
}

async function passwdEntry(lookup: UserLookup, username: string): Promise<PasswdEntry> {
  let entry: PasswdEntry | undefined;
  try {
    entry = await lookup(username);
  } catch (err) {
    throw new QgaError(`failed to lookup user '${username}': ${errorText(err)}`);
  }
  // GLib reports "no such user" as errno 0.
  if (!entry) throw new QgaError(`failed to lookup user '${username}': Success`);
  return entry;
}

/**
 * The lines of a file as g_strsplit(contents, "\n", -1) gives them: the
 * contents end at a NUL byte (a C string), an empty file has no lines, and a
 * final newline leaves an empty last line.
 */
export function splitLines(contents: Buffer): Buffer[] {
  const nul = contents.indexOf(0);
  const text = nul < 0 ? contents : contents.subarray(0, nul);
  if (text.length === 0) return [];
  const out: Buffer[] = [];
  let from = 0;
  for (let i = text.indexOf(0x0a); i >= 0; i = text.indexOf(0x0a, from)) {
    out.push(text.subarray(from, i));
    from = i + 1;
  }
  out.push(text.subarray(from));
  return out;
}

function readAuthKeys(path: BytePath): Buffer[] {
  try {
    return splitLines(getContents(path));
  } catch (err) {
    throw new QgaError(`failed to read '${display(path)}': ${(err as Error).message}`);
  }
}

function writeAuthKeys(path: BytePath, lines: readonly Buffer[], user: PasswdEntry): void {
  const joined: Buffer[] = [];
  lines.forEach((l, i) => joined.push(...(i > 0 ? [Buffer.from('\n'), l] : [l])));
  try {
    setContents(path, Buffer.concat(joined));
  } catch (err) {
    throw new QgaError(`failed to write to '${display(path)}': ${(err as Error).message}`);
  }
  try {
    chownSync(toBytes(path), user.uid, user.gid);
  } catch (err) {
    // Sic: the reference says "directory" for the file too.
    throw new QgaError(`failed to set ownership of directory '${display(path)}': ${errorText(err)}`);
  }
  try {
    chmodSync(toBytes(path), 0o600);
  } catch (err) {
    throw new QgaError(`failed to set permissions of '${display(path)}': ${errorText(err)}`);
  }
}

function mkdirForUser(path: BytePath, user: PasswdEntry, mode: number): void {
  const steps: [string, () => void][] = [
    ['failed to create directory', () => mkdirSync(toBytes(path), mode)],
    ['failed to set ownership of directory', () => chownSync(toBytes(path), user.uid, user.gid)],
    // The umask may have taken bits off at mkdir().
    ['failed to set permissions of directory', () => chmodSync(toBytes(path), mode)],
  ];
  for (const [what, step] of steps) {
    try {
      step();
    } catch (err) {
      throw new QgaError(`${what} '${display(path)}': ${errorText(err)}`);
    }
  }
}

function isDirectory(path: BytePath): boolean {
  try {
    return statSync(toBytes(path)).isDirectory();
  } catch {
    return false;
  }
}

function exists(path: BytePath): boolean {
  try {
    accessSync(toBytes(path), constants.F_OK);
    return true;
  } catch {
    return false;
  }
}

/** g_strstrip(): ASCII white space off both ends. */
function strip(line: Buffer): Buffer {
  const space = (b: number): boolean => b === 0x20 || (b >= 0x09 && b <= 0x0d);
  let start = 0;
  let end = line.length;
  while (start < end && space(line[start]!)) start++;
  while (end > start && space(line[end - 1]!)) end--;
  return line.subarray(start, end);
}

/** The user's ~/.ssh and ~/.ssh/authorized_keys, joined as g_build_filename() does. */
function paths(user: PasswdEntry): { ssh: BytePath; authKeys: BytePath } {
  const ssh = buildFilename(user.dir, '.ssh');
  return { ssh, authKeys: buildFilename(ssh, 'authorized_keys') };
}

/**
 * The keys: every line stripped of white space, blank and '#' lines left out,
 * last line first (the reference prepends each to its list).
 */
export async function getAuthorizedKeys(lookup: UserLookup, username: string): Promise<{ keys: string[] }> {
  const user = await passwdEntry(lookup, username);
  const keys: string[] = [];
  for (const line of readAuthKeys(paths(user).authKeys)) {
    const key = strip(line);
    if (key.length === 0 || key[0] === 0x23) continue;
    keys.unshift(cStringToText(key));
  }
  return { keys };
}

/**
 * Appends the keys not already there as a line (compared byte for byte with
 * the lines as they are), or with `reset` writes exactly the keys given. An
 * unreadable file counts as none.
 */
export async function addAuthorizedKeys(
  lookup: UserLookup,
  username: string,
  keys: readonly string[],
  reset = false,
): Promise<void> {
  checkKeys(keys);
  const user = await passwdEntry(lookup, username);
  const p = paths(user);
  let lines: Buffer[] | undefined;
  if (!reset) {
    try {
      lines = splitLines(getContents(p.authKeys));
    } catch {
      lines = undefined;
    }
  }
  if (lines === undefined) {
    if (!isDirectory(p.ssh)) mkdirForUser(p.ssh, user, 0o700);
    lines = [];
  }
  for (const key of keys) {
    const bytes = toModUtf8(key);
    if (!lines.some((l) => l.equals(bytes))) lines.push(bytes);
  }
  writeAuthKeys(p.authKeys, lines, user);
}

/** Drops every line equal to one of the keys; nothing to do without the file. */
export async function removeAuthorizedKeys(
  lookup: UserLookup,
  username: string,
  keys: readonly string[],
): Promise<void> {
  checkKeys(keys);
  const user = await passwdEntry(lookup, username);
  const { authKeys } = paths(user);
  if (!exists(authKeys)) return;
  const drop = keys.map((k) => toModUtf8(k));
  const kept = readAuthKeys(authKeys).filter((line) => !drop.some((k) => k.equals(line)));
  writeAuthKeys(authKeys, kept, user);
}
