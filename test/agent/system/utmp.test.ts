import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { usersFromUtmp, UTMP_RECORD, USER_PROCESS } from '../../../agent/src/system/utmp.js';

function record(type: number, user: string | Buffer, sec: number, usec = 0, host = ''): Buffer {
  const b = Buffer.alloc(UTMP_RECORD);
  b.writeInt16LE(type, 0);
  (Buffer.isBuffer(user) ? user : Buffer.from(user)).copy(b, 44, 0, 32);
  b.write(host, 76);
  b.writeInt32LE(sec, 340);
  b.writeInt32LE(usec, 344);
  return b;
}

describe('guest-get-users from utmp records', () => {
  test('USER_PROCESS records only, first-seen order, the earliest login of each user', () => {
    const data = Buffer.concat([
      record(USER_PROCESS, 'alice', 100, 500_000),
      record(6, 'LOGIN', 1),
      record(USER_PROCESS, 'bob', 50),
      record(USER_PROCESS, 'alice', 90, 1),
      record(8, 'alice', 1),
    ]);
    assert.deepEqual(usersFromUtmp(data), [
      { user: 'alice', 'login-time': 90.000001 },
      { user: 'bob', 'login-time': 50 },
    ]);
  });

  test('a full 32-byte name runs on into ut_host; a partial record at the end is not read', () => {
    const data = Buffer.concat([record(USER_PROCESS, 'u'.repeat(32), 1, 0, 'host'), Buffer.alloc(10, 7)]);
    assert.deepEqual(usersFromUtmp(data), [{ user: `${'u'.repeat(32)}host`, 'login-time': 1 }]);
  });

  test('invalid UTF-8 in a name becomes U+FFFD', () => {
    assert.deepEqual(usersFromUtmp(record(USER_PROCESS, Buffer.from([0x61, 0xff]), 0)), [
      { user: 'a\ufffd', 'login-time': 0 },
    ]);
  });
});
