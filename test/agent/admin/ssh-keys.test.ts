/**
 * The ssh key commands and their GLib-style file helpers on homes in a
 * temporary directory, with an injected user lookup (never a real user's
 * home). The files are owned by the user running the tests.
 */
import { after, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFilename, getContents, setContents } from '../../../agent/src/admin/glib-file.js';
import { findInPasswdFile, parsePasswdLine, type UserLookup } from '../../../agent/src/admin/passwd.js';
import {
  addAuthorizedKeys,
  getAuthorizedKeys,
  removeAuthorizedKeys,
  splitLines,
} from '../../../agent/src/admin/ssh-keys.js';

const root = mkdtempSync(join(tmpdir(), 'quiesce-ssh-keys-'));
after(() => rmSync(root, { recursive: true, force: true }));
const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;
const home = join(root, 'home');
const lookup: UserLookup = async (name) => (name === 'alice' ? { name, uid, gid, dir: home } : undefined);
const ak = join(home, '.ssh/authorized_keys');
const read = (): string => readFileSync(ak, 'latin1');

describe('buildFilename (g_build_filename)', () => {
  for (const [elements, expected] of [
    [['/home/a', '.ssh'], '/home/a/.ssh'],
    [['/home/a/', '.ssh'], '/home/a/.ssh'],
    [['/home/a//', '/.ssh/', 'authorized_keys'], '/home/a/.ssh/authorized_keys'],
    [['/', '.ssh'], '/.ssh'],
    [['//', '.ssh'], '//.ssh'],
    [['', '.ssh'], '.ssh'],
    [['/', ''], '/'],
    [['a', 'b/'], 'a/b/'],
  ] as const) {
    test(`${JSON.stringify(elements)} → ${expected}`, () => {
      assert.equal(buildFilename(...elements), expected);
    });
  }
});

describe('passwd lines', () => {
  test('six fields up to a colon, the shell the rest: a colon in the comment shifts the home', () => {
    assert.deepEqual(parsePasswdLine(Buffer.from('bob:x:1:2:Bob, with: a colon:/home/bob:/bin/sh')), {
      name: 'bob',
      uid: 1,
      gid: 2,
      dir: ' a colon',
    });
    assert.equal(parsePasswdLine(Buffer.from('short:x:1:2:')), undefined);
  });
  test('found by exact name only', () => {
    const file = Buffer.from('1000x:x:1:1::/a:/bin/sh\n1000:x:2:2::/b:/bin/sh\n');
    assert.equal(findInPasswdFile(file, Buffer.from('1000'))?.dir, '/b');
    assert.equal(findInPasswdFile(file, Buffer.from('100')), undefined);
  });
});

describe('splitLines (g_strsplit on a C string)', () => {
  for (const [input, expected] of [
    ['', []],
    ['a', ['a']],
    ['a\n', ['a', '']],
    ['\n', ['', '']],
    ['a\nb\0\nc', ['a', 'b']],
  ] as const) {
    test(JSON.stringify(input), () => {
      assert.deepEqual(
        splitLines(Buffer.from(input)).map((b) => b.toString()),
        expected,
      );
    });
  }
});

describe('GLib file helpers', () => {
  beforeEach(() => {
    rmSync(home, { recursive: true, force: true });
    mkdirSync(home);
  });
  test('getContents: GLib texts for a missing file and a directory', () => {
    assert.throws(() => getContents(join(home, 'x')), {
      message: `Failed to open file “${join(home, 'x')}”: No such file or directory`,
    });
    assert.throws(() => getContents(home), { message: `Error reading file “${home}”: Is a directory` });
  });
  test('setContents: replaces the file (a new inode) and leaves no temporary file', () => {
    const f = join(home, 'f');
    writeFileSync(f, 'old');
    const before = statSync(f).ino;
    setContents(f, Buffer.from('new'));
    assert.equal(readFileSync(f, 'utf8'), 'new');
    assert.notEqual(statSync(f).ino, before);
    assert.deepEqual(readdirSync(home), ['f']);
  });
  test('setContents over a directory: the rename fails and the temporary file is removed', () => {
    mkdirSync(join(home, 'd'));
    writeFileSync(join(home, 'd/x'), '');
    assert.throws(
      () => setContents(join(home, 'd'), Buffer.from('x')),
      (e: Error) => {
        assert.match(e.message, /^Failed to rename file “.*\/d\.[A-Za-z0-9]{6}” to “.*\/d”: g_rename\(\) failed: /);
        return true;
      },
    );
    assert.deepEqual(readdirSync(home), ['d']);
  });
});

describe('ssh key commands', () => {
  beforeEach(() => {
    rmSync(home, { recursive: true, force: true });
    mkdirSync(home);
  });

  test('add creates ~/.ssh 0700 and the file 0600, keys joined by newlines, no final newline', async () => {
    await addAuthorizedKeys(lookup, 'alice', ['k1', 'k2']);
    assert.equal(statSync(join(home, '.ssh')).mode & 0o777, 0o700);
    assert.equal(statSync(ak).mode & 0o777, 0o600);
    assert.equal(read(), 'k1\nk2');
  });
  test('add keeps the lines as they are and appends keys not there yet, each once', async () => {
    mkdirSync(join(home, '.ssh'));
    writeFileSync(ak, 'k1\n k2\n');
    await addAuthorizedKeys(lookup, 'alice', ['k2', 'k1', 'k3', 'k3']);
    assert.equal(read(), 'k1\n k2\n\nk2\nk3');
  });
  test('add with reset writes the keys alone; an empty list empties the file', async () => {
    mkdirSync(join(home, '.ssh'));
    writeFileSync(ak, 'k1\nk2\n');
    await addAuthorizedKeys(lookup, 'alice', ['k3'], true);
    assert.equal(read(), 'k3');
    await addAuthorizedKeys(lookup, 'alice', [], true);
    assert.equal(read(), '');
  });
  test('keys are checked first: # at the start or a newline anywhere', async () => {
    for (const bad of ['#k', 'a\nb']) {
      await assert.rejects(addAuthorizedKeys(lookup, 'nobody', ['ok', bad]), {
        message: `invalid OpenSSH public key: '${bad}'`,
      });
      await assert.rejects(removeAuthorizedKeys(lookup, 'nobody', [bad]), { message: /invalid OpenSSH public key/ });
    }
  });
  test('an unknown user: GLib says Success', async () => {
    await assert.rejects(getAuthorizedKeys(lookup, 'bob'), { message: "failed to lookup user 'bob': Success" });
  });
  test('a lookup that fails: its errno text', async () => {
    const failing: UserLookup = async () => {
      throw Object.assign(new Error('x'), { code: 'EIO' });
    };
    await assert.rejects(getAuthorizedKeys(failing, 'alice'), {
      message: "failed to lookup user 'alice': Input/output error",
    });
  });
  test('get: stripped, blank and # lines left out, last line first', async () => {
    mkdirSync(join(home, '.ssh'));
    writeFileSync(ak, 'k1\n# c\n\n  k2 \t\r\n\t#x\nk3');
    assert.deepEqual(await getAuthorizedKeys(lookup, 'alice'), { keys: ['k3', 'k2', 'k1'] });
  });
  test('get: no file is the read error', async () => {
    await assert.rejects(getAuthorizedKeys(lookup, 'alice'), {
      message: `failed to read '${ak}': Failed to open file “${ak}”: No such file or directory`,
    });
  });
  test('remove drops every equal line and rewrites the file 0600; no file is a success', async () => {
    await removeAuthorizedKeys(lookup, 'alice', ['k1']);
    assert.throws(() => statSync(join(home, '.ssh')));
    mkdirSync(join(home, '.ssh'));
    writeFileSync(ak, 'k1\nk2\nk1\n k1\n');
    chmodSync(ak, 0o644);
    await removeAuthorizedKeys(lookup, 'alice', ['k1']);
    assert.equal(read(), 'k2\n k1\n');
    assert.equal(statSync(ak).mode & 0o777, 0o600);
  });
  test('add through a symlinked authorized_keys replaces the link, not its target', async () => {
    mkdirSync(join(home, '.ssh'));
    writeFileSync(join(home, 'target'), 'k0\n');
    symlinkSync('../target', ak);
    await addAuthorizedKeys(lookup, 'alice', ['k1']);
    assert.equal(readFileSync(join(home, 'target'), 'utf8'), 'k0\n');
    assert.equal(read(), 'k0\n\nk1');
  });
  test('~/.ssh that is a file: the mkdir error', async () => {
    writeFileSync(join(home, '.ssh'), '');
    await assert.rejects(addAuthorizedKeys(lookup, 'alice', ['k1']), {
      message: `failed to create directory '${join(home, '.ssh')}': File exists`,
    });
  });
});
