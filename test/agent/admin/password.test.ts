/**
 * guest-set-user-password's logic on a recording fake (nothing here runs
 * chpasswd), and the process helpers on harmless programs in a temporary
 * directory.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setUserPassword, type PasswordSystem } from '../../../agent/src/admin/password.js';
import { findProgramInPath, runProgram, type ProgramRun } from '../../../agent/src/admin/process.js';

const root = mkdtempSync(join(tmpdir(), 'quiesce-password-'));
after(() => rmSync(root, { recursive: true, force: true }));

function fake(run: Partial<ProgramRun> = {}, path: string | null = '/x/chpasswd') {
  const log: { path: string; args: readonly string[]; data: string }[] = [];
  const sys: PasswordSystem = {
    findProgram: () => path ?? undefined,
    chpasswd: async (p, args, data) => {
      log.push({ path: p, args, data: data.toString('latin1') });
      return { result: { kind: 'exited', code: 0 }, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), ...run };
    },
  };
  return { sys, log };
}
const b64 = (s: string | Buffer): string => Buffer.from(s).toString('base64');

describe('setUserPassword', () => {
  test('chpasswd gets "user:password\\n"; crypted adds -e', async () => {
    const { sys, log } = fake();
    await setUserPassword(sys, 'alice', b64('pw'), false);
    await setUserPassword(sys, 'bob', b64('$6$x$y'), true);
    assert.deepEqual(log, [
      { path: '/x/chpasswd', args: [], data: 'alice:pw\n' },
      { path: '/x/chpasswd', args: ['-e'], data: 'bob:$6$x$y\n' },
    ]);
  });
  test('the password is a C string: a NUL ends it, so a newline after it is fine', async () => {
    const { sys, log } = fake();
    await setUserPassword(sys, 'alice', b64(Buffer.from('ab\0\ncd')), false);
    assert.equal(log[0]!.data, 'alice:ab\n');
  });
  test('the user name goes out as modified UTF-8 (U+0000 as C0 80)', async () => {
    const { sys, log } = fake();
    await setUserPassword(sys, 'jö\u0000n', '', false);
    assert.deepEqual(
      Buffer.from(log[0]!.data, 'latin1'),
      Buffer.from([0x6a, 0xc3, 0xb6, 0xc0, 0x80, 0x6e, 0x3a, 0x0a]),
    );
  });
  for (const [title, user, password, message] of [
    ['bad base64', 'alice', 'a!b', 'Base64 data contains invalid characters'],
    ['a newline in the password', 'alice', b64('a\nb'), 'forbidden characters in raw password'],
    ['a colon in the name', 'a:b', b64('x'), 'forbidden characters in username'],
    ['a newline in the name', 'a\nb', b64('x'), 'forbidden characters in username'],
    ['the password before the name', 'a:b', b64('\n'), 'forbidden characters in raw password'],
  ] as const) {
    test(`${title}: refused, nothing runs`, async () => {
      const { sys, log } = fake();
      await assert.rejects(setUserPassword(sys, user, password, false), { message });
      assert.deepEqual(log, []);
    });
  }
  test('no chpasswd: the reference names it passwd', async () => {
    const { sys } = fake({}, null);
    await assert.rejects(setUserPassword(sys, 'alice', '', false), {
      message: "cannot find 'passwd' program in PATH",
    });
  });
  for (const [title, run, message] of [
    ['exits 1', { result: { kind: 'exited', code: 1 } }, 'child process has failed to set user password'],
    [
      'cannot be executed',
      { result: { kind: 'spawn-failed', code: 'EACCES' } },
      'child process has failed to set user password',
    ],
    ['is killed', { result: { kind: 'signaled', signal: 'SIGKILL' } }, 'child process has terminated abnormally'],
    ['did not read stdin', { stdinError: 'EPIPE' }, 'cannot write new account password: Broken pipe'],
  ] as const) {
    test(`chpasswd ${title}`, async () => {
      const { sys } = fake(run as Partial<ProgramRun>);
      await assert.rejects(setUserPassword(sys, 'alice', '', false), { message });
    });
  }
});

describe('findProgramInPath (g_find_program_in_path)', () => {
  const bin1 = join(root, 'bin1');
  const bin2 = join(root, 'bin2');
  mkdirSync(bin1);
  mkdirSync(bin2);
  writeFileSync(join(bin1, 'tool'), '#!/bin/sh\n');
  chmodSync(join(bin1, 'tool'), 0o644);
  mkdirSync(join(bin1, 'dir-tool'));
  writeFileSync(join(bin2, 'tool'), '#!/bin/sh\n');
  chmodSync(join(bin2, 'tool'), 0o755);

  test('the first executable regular file in PATH order; no x bits and directories are skipped', () => {
    assert.equal(findProgramInPath('tool', { PATH: `${bin1}:${bin2}` }), join(bin2, 'tool'));
    assert.equal(findProgramInPath('dir-tool', { PATH: bin1 }), undefined);
    assert.equal(findProgramInPath('tool', { PATH: bin1 }), undefined);
  });
  test('an empty PATH element is the current directory, given as an absolute path', () => {
    const cwd = process.cwd();
    process.chdir(bin2);
    try {
      assert.equal(findProgramInPath('tool', { PATH: `${bin1}::` }), join(bin2, 'tool'));
    } finally {
      process.chdir(cwd);
    }
  });
});

describe('runProgram', () => {
  test('stdin is written and closed; own session when asked; stdout and stderr on /dev/null by default', async () => {
    const out = join(root, 'out');
    const script = `cat > ${out}; read -r s < /proc/$$/stat; set -- \${s##*) }; [ "$4" = "$$" ] && echo own >> ${out}; [ /proc/$$/fd/1 -ef /dev/null ] && echo null >> ${out}`;
    const r = await runProgram('/bin/sh', ['-c', script], {
      argv0: 'sh',
      setsid: true,
      stdin: Buffer.from('user:pw\n'),
    });
    assert.deepEqual(r.result, { kind: 'exited', code: 0 });
    assert.equal(readFileSync(out, 'utf8'), 'user:pw\nown\nnull\n');
  });
  test('exit codes, signals and programs that cannot start', async () => {
    const exit3 = await runProgram('/bin/sh', ['-c', 'exit 3'], { argv0: 'sh', setsid: false });
    assert.deepEqual(exit3.result, { kind: 'exited', code: 3 });
    const killed = await runProgram('/bin/sh', ['-c', 'kill -KILL $$'], { argv0: 'sh', setsid: false });
    assert.deepEqual(killed.result, { kind: 'signaled', signal: 'SIGKILL' });
    const missing = await runProgram(join(root, 'nope'), [], { argv0: 'nope', setsid: false });
    assert.deepEqual(missing.result, { kind: 'spawn-failed', code: 'ENOENT' });
  });
  test('capture keeps stdout', async () => {
    const r = await runProgram('/bin/sh', ['-c', 'printf abc'], { argv0: 'sh', setsid: false, capture: true });
    assert.equal(r.stdout.toString(), 'abc');
  });
});
