/**
 * guest-exec and guest-exec-status against qemu-ga 7.2 running the same
 * harmless programs in the same working directory: the exec replies (pids
 * aside), the status reply once exited (member order, exit code or signal,
 * output and truncation flags), the status lifetime, the errors for bad
 * arguments, missing programs and unknown pids, and the refusals in frozen
 * mode and under -b — byte for byte.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ExecPair, SKIP_NO_QEMU_GA } from './exec-rig.js';

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');
type Info = { return: { supported_commands: { name: string; enabled: boolean; 'success-response': boolean }[] } };
const EXEC_COMMANDS = ['guest-exec-status', 'guest-exec'];
const flags = (reply: string) =>
  (JSON.parse(reply) as Info).return.supported_commands
    .filter((c) => EXEC_COMMANDS.includes(c.name))
    .map((c) => JSON.stringify(c));

describe('guest-exec against qemu-ga', { skip: SKIP_NO_QEMU_GA }, () => {
  let pair: ExecPair;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'quiesce-exec-diff-'));
    mkdirSync(join(dir, 'bin'));
    writeFileSync(join(dir, 'bin', 'hello'), '#!/bin/sh\necho "hello $*"\n', { mode: 0o755 });
    // No #!: the kernel refuses it (ENOEXEC) and GLib hands it to /bin/sh.
    writeFileSync(join(dir, 'tool'), 'echo "tool $*"; exit 5\n', { mode: 0o755 });
    writeFileSync(join(dir, 'not-executable'), 'echo never\n', { mode: 0o644 });
    pair = await ExecPair.start({ cwd: dir });
  });
  after(async () => {
    await pair?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const cases: [name: string, args: Record<string, unknown>][] = [
    ['/bin/echo, output captured', { path: '/bin/echo', arg: ['hello', 'world'], 'capture-output': true }],
    ['/bin/echo without capture-output', { path: '/bin/echo', arg: ['hello'] }],
    ['capture-output false', { path: '/bin/echo', arg: ['hello'], 'capture-output': false }],
    ['sh -c "exit 3"', { path: 'sh', arg: ['-c', 'exit 3'] }],
    ['exit 255 with output', { path: 'sh', arg: ['-c', 'echo bye; exit 255'], 'capture-output': true }],
    ['killed by SIGTERM', { path: 'sh', arg: ['-c', 'kill -TERM $$'] }],
    [
      'killed by SIGKILL, output captured',
      { path: 'sh', arg: ['-c', 'echo x; kill -KILL $$'], 'capture-output': true },
    ],
    ['cat with input-data', { path: 'cat', 'input-data': b64('some input\n'), 'capture-output': true }],
    ['cat with empty input-data', { path: 'cat', 'input-data': '', 'capture-output': true }],
    ['cat without input-data (stdin is /dev/null)', { path: 'cat', 'capture-output': true }],
    ['input-data nobody reads', { path: 'sh', arg: ['-c', 'exit 0'], 'input-data': b64(Buffer.alloc(300_000, 7)) }],
    ['stdout and stderr', { path: 'sh', arg: ['-c', 'echo out; echo err >&2'], 'capture-output': true }],
    ['stderr only', { path: 'sh', arg: ['-c', 'echo err >&2'], 'capture-output': true }],
    ['binary output', { path: 'printf', arg: ['\\000\\001\\377\\200\\n'], 'capture-output': true }],
    [
      '20 MB of output: 16 MiB kept, truncated',
      { path: 'head', arg: ['-c', '20000000', '/dev/zero'], 'capture-output': true },
    ],
    [
      '16 MiB on stdout, 16 MiB + 1 on stderr',
      { path: 'sh', arg: ['-c', 'head -c 16777216 /dev/zero; head -c 16777217 /dev/zero >&2'], 'capture-output': true },
    ],
    ['one byte under the limit', { path: 'head', arg: ['-c', '16777215', '/dev/zero'], 'capture-output': true }],
    [
      'the stdio the child gets',
      { path: 'sh', arg: ['-c', 'stat -L -c %F /dev/stdin /dev/stdout /dev/stderr'], 'capture-output': true },
    ],
    [
      'stdio with input-data',
      {
        path: 'sh',
        arg: ['-c', 'stat -L -c %F /dev/stdin /dev/stdout'],
        'input-data': b64('x'),
        'capture-output': true,
      },
    ],
    [
      'argv[0] is the path as given',
      { path: 'sh', arg: ['-c', 'tr "\\0" " " < /proc/$$/cmdline'], 'capture-output': true },
    ],
    ['env replaces the environment', { path: '/usr/bin/env', env: ['B=2', 'A=1', 'EMPTY='], 'capture-output': true }],
    ['an empty env', { path: '/usr/bin/env', env: [], 'capture-output': true }],
    [
      'PATH from env is searched',
      { path: 'hello', arg: ['a'], env: [`PATH=/nonexistent:BIN`], 'capture-output': true },
    ],
    ['PATH from env without the program', { path: 'echo', env: ['PATH=/nonexistent'] }],
    ['a relative path with a slash', { path: 'bin/hello', arg: ['rel'], 'capture-output': true }],
    ['./ and a file without #! (run by /bin/sh)', { path: './tool', arg: ['t'], 'capture-output': true }],
    ['a bare name found only in the working directory is not run', { path: 'tool' }],
    ['a file that is not executable', { path: './not-executable' }],
    ['a missing program', { path: 'no-such-program-quiesce' }],
    ['a missing absolute path', { path: '/no/such/program' }],
    ['a directory', { path: '/tmp' }],
    ['an empty path', { path: '' }],
    ['a path through a file', { path: '/bin/sh/x' }],
  ];
  for (const [name, args] of cases) {
    test(`${name}: the same replies`, async () => {
      const fixed = JSON.parse(JSON.stringify(args).replaceAll('BIN', join(dir, 'bin'))) as Record<string, unknown>;
      const { ours, ref } = await pair.run(fixed);
      assert.equal(ours.exec, ref.exec);
      assert.equal(ours.status, ref.status);
      assert.equal(ours.after, ref.after);
      if (ours.status)
        assert.equal(ours.after, `{"error": {"class": "GenericError", "desc": "Invalid parameter 'pid'"}}`);
    });
  }

  test('the status lifetime: exited false while it runs, the status once, then an unknown pid', async () => {
    const { ours, ref } = await pair.run({ path: 'sleep', arg: ['0.5'] });
    assert.ok(ours.running > 0 && ref.running > 0);
    assert.equal(ours.status, '{"return": {"exitcode": 0, "exited": true}}');
    assert.equal(ref.status, ours.status);
    assert.equal(ref.after, ours.after);
  });

  test('a grandchild holding the output pipe: exited false until it lets go', async () => {
    const args = { path: 'sh', arg: ['-c', 'sleep 0.5 & echo started'], 'capture-output': true };
    const { ours, ref } = await pair.run(args);
    assert.ok(ours.running > 0 && ref.running > 0);
    assert.equal(ours.status, ref.status);
    assert.equal(
      ours.status,
      `{"return": {"exitcode": 0, "out-data": "${b64('started\n')}", "out-truncated": false, "exited": true}}`,
    );
  });

  const bad: [string, unknown][] = [
    ['no arguments', {}],
    ['path not a string', { path: 1 }],
    ['arg not a list', { path: 'true', arg: 'x' }],
    ['an arg not a string', { path: 'true', arg: ['x', 2] }],
    ['an env entry not a string', { path: 'true', env: ['A=1', null] }],
    ['input-data not base64', { path: 'true', 'input-data': '@@@' }],
    ['input-data not a string', { path: 'true', 'input-data': 5 }],
    ['capture-output as 7.2 does not know it (the 8.0 enum)', { path: 'true', 'capture-output': 'separated' }],
    ['capture-output a number', { path: 'true', 'capture-output': 1 }],
    ['an unexpected member', { path: 'true', 'capture-output': true, timeout: 5 }],
  ];
  for (const [name, args] of bad) {
    test(`guest-exec, ${name}: the same error`, async () => {
      const { ours, ref } = await pair.ask({ execute: 'guest-exec', arguments: args });
      assert.equal(ours, ref);
      assert.match(ours, /^\{"error": /);
    });
  }

  const badStatus: [string, unknown][] = [
    ['no pid', {}],
    ['pid a string', { pid: '1' }],
    ['pid a fraction', { pid: 1.5 }],
    ['an unknown pid', { pid: 0 }],
    ['a negative pid', { pid: -1 }],
    ['a pid beyond 32 bits', { pid: 2 ** 40 }],
    ["the agent's own pid", 'SELF'],
    ['an unexpected member', { pid: 1, verbose: true }],
  ];
  for (const [name, args] of badStatus) {
    test(`guest-exec-status, ${name}: the same error`, async () => {
      const req = (kind: 'quiesce' | 'qemu-ga') => ({
        execute: 'guest-exec-status',
        arguments: args === 'SELF' ? { pid: pair.pid(kind) } : args,
      });
      const ours = await pair.askOne('quiesce', req('quiesce'));
      const ref = await pair.askOne('qemu-ga', req('qemu-ga'));
      assert.equal(ours, ref);
      assert.match(ours, /^\{"error": /);
    });
  }

  test('guest-info: guest-exec-status and guest-exec in the same places, with the same flags', async () => {
    const { ours, ref } = await pair.ask({ execute: 'guest-info' });
    assert.deepEqual(flags(ours), flags(ref));
    const names = (reply: string) => (JSON.parse(reply) as Info).return.supported_commands.map((c) => c.name);
    const around = (reply: string) => {
      const n = names(reply);
      const i = n.indexOf('guest-exec');
      return n.slice(i - 1, i + 3);
    };
    assert.deepEqual(around(ours), around(ref));
    assert.deepEqual(around(ours), [
      'guest-get-host-name',
      'guest-exec',
      'guest-exec-status',
      'guest-get-memory-block-info',
    ]);
  });
});

describe(
  'guest-exec in frozen mode against qemu-ga (both started over a frozen-state marker)',
  { skip: SKIP_NO_QEMU_GA },
  () => {
    let pair: ExecPair;
    before(async () => {
      pair = await ExecPair.start({ frozen: true });
    });
    after(async () => {
      await pair?.stop();
    });

    test('the agents are frozen', async () => {
      const { ours, ref } = await pair.ask({ execute: 'guest-fsfreeze-status' });
      assert.equal(ours, '{"return": "frozen"}');
      assert.equal(ref, ours);
    });

    for (const [execute, args] of [
      ['guest-exec', { path: '/bin/true' }],
      ['guest-exec-status', { pid: 1 }],
    ] as const) {
      test(`${execute}: the same refusal`, async () => {
        const { ours, ref } = await pair.ask({ execute, arguments: args });
        assert.equal(ours, ref);
        assert.equal(
          ours,
          `{"error": {"class": "CommandNotFound", "desc": "Command ${execute} has been disabled: the agent is in frozen state"}}`,
        );
      });
    }

    test('guest-info: the same flags', async () => {
      const { ours, ref } = await pair.ask({ execute: 'guest-info' });
      assert.deepEqual(flags(ours), flags(ref));
      assert.ok(flags(ours).every((f) => f.includes('"enabled":false')));
    });
  },
);

describe('guest-exec blocked with -b against qemu-ga', { skip: SKIP_NO_QEMU_GA }, () => {
  let pair: ExecPair;
  before(async () => {
    pair = await ExecPair.start({ block: ['guest-exec'] });
  });
  after(async () => {
    await pair?.stop();
  });

  test('guest-exec: the same refusal; guest-exec-status still answers', async () => {
    const exec = await pair.ask({ execute: 'guest-exec', arguments: { path: '/bin/true' } });
    assert.equal(exec.ours, exec.ref);
    assert.equal(exec.ours, '{"error": {"class": "CommandNotFound", "desc": "Command guest-exec has been disabled"}}');
    const status = await pair.ask({ execute: 'guest-exec-status', arguments: { pid: 1 } });
    assert.equal(status.ours, status.ref);
    assert.equal(status.ours, `{"error": {"class": "GenericError", "desc": "Invalid parameter 'pid'"}}`);
  });

  test('guest-info: the same flags', async () => {
    const { ours, ref } = await pair.ask({ execute: 'guest-info' });
    assert.deepEqual(flags(ours), flags(ref));
  });
});
