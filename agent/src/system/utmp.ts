import { readFileSync } from 'node:fs';
import { cStringToText, type JsonOut } from '../protocol/index.js';

/** glibc's _PATH_UTMP, which getutxent() reads. */
export const UTMP_PATH = '/var/run/utmp';

/**
 * struct utmp of glibc on 64-bit Linux (the layout shared with 32-bit
 * programs): 384-byte records, ut_tv as two int32 fields.
 */
export const UTMP_RECORD = 384;
const UT_TYPE = 0;
const UT_USER = 44;
const UT_TV_SEC = 340;
const UT_TV_USEC = 344;
export const USER_PROCESS = 7;

/**
 * guest-get-users: one entry per user with a USER_PROCESS record, in
 * first-seen order, with the earliest login time (seconds, microseconds as
 * the fraction). A missing or unreadable file is an empty list, as
 * getutxent() makes it. The name is read as the reference's g_strdup of
 * ut_user reads it: up to a NUL, even past the 32 bytes of a full name.
 */
export function usersFromUtmp(data: Buffer): JsonOut[] {
  const users = new Map<string, { user: string; 'login-time': number }>();
  const out: JsonOut[] = [];
  // A trailing partial record is not read, as glibc does.
  for (let at = 0; at + UTMP_RECORD <= data.length; at += UTMP_RECORD) {
    const record = data.subarray(at, at + UTMP_RECORD);
    if (record.readInt16LE(UT_TYPE) !== USER_PROCESS) continue;
    let end = record.indexOf(0, UT_USER);
    if (end < 0) end = record.length;
    const key = record.toString('latin1', UT_USER, end);
    const loginTime = record.readInt32LE(UT_TV_SEC) + record.readInt32LE(UT_TV_USEC) / 1_000_000;
    const seen = users.get(key);
    if (seen) {
      if (loginTime < seen['login-time']) seen['login-time'] = loginTime;
      continue;
    }
    const entry = { user: cStringToText(record.subarray(UT_USER, end)), 'login-time': loginTime };
    users.set(key, entry);
    out.push(entry);
  }
  return out;
}

export function getUsers(path = UTMP_PATH): JsonOut[] {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch {
    return [];
  }
  return usersFromUtmp(data);
}
