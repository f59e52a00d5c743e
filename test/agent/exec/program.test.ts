/**
 * Starting guest-exec's programs as GLib's g_spawn_async_with_pipes() does in
 * the reference: the PATH search (the child's PATH first), which exec errors
 * move on to the next entry, /bin/sh for a file without #!, the error texts,
 * and real pipes for the child's stdio.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import {
  candidates,
  DEFAULT_SEARCH_PATH,
  environGet,
  environObject,
  spawnErrorText,
  startProgram,
  type ProgramSpec,
  type StartedProgram,
} from '../../../agent/src/exec/program.js';
import { QgaError } from '../../../agent/src/qapi/errors.js';

const spec = (path: string, over: Partial<ProgramSpec> = {}): ProgramSpec => ({
  path,
  args: [],
  stdin: 'ignore',
  output: 'pipe',
  ...over,
});

async function readAll(stream: Readable | undefined): Promise<string> {
  if (!stream) return '';
  let text = '';
  stream.on('data', (d: Buffer) => (text += d.toString()));
  await once(stream, 'close');
  return text;
}

/** Runs to the end: exit code (or signal) and both outputs. */
async function run(started: StartedProgram): Promise<{ code: number | null; out: string; err: string }> {
  const exit = once(started.child, 'exit');
  const [out, err] = await Promise.all([readAll(started.stdout), readAll(started.stderr)]);
  const [code] = (await exit) as [number | null];
  return { code, out, err };
}

async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof QgaError);
    return err.message;
  }
  assert.fail('expected the start to fail');
}

const failed = (path: string, why: string) =>
  `Guest agent command failed, error was 'Failed to execute child process \u201c${path}\u201d (${why})'`;

describe('the program search', () => {
  test('a name with a slash is the only candidate', () => {
    assert.deepEqual(candidates('./x', ['PATH=/a'], '/b'), ['./x']);
    assert.deepEqual(candidates('/bin/sh', undefined, '/b'), ['/bin/sh']);
  });

  test("the child's PATH comes first, then the agent's, then GLib's default", () => {
    assert.deepEqual(candidates('x', ['A=1', 'PATH=/a:/b', 'PATH=/c'], '/z'), ['/a/x', '/b/x']);
    assert.deepEqual(candidates('x', ['A=1'], '/z:/y'), ['/z/x', '/y/x']);
    assert.deepEqual(
      candidates('x', undefined, undefined),
      DEFAULT_SEARCH_PATH.split(':').map((d) => `${d}/x`),
    );
  });

  test('an empty PATH entry is the working directory', () => {
    assert.deepEqual(candidates('x', ['PATH=:/a:'], undefined), ['./x', '/a/x', './x']);
    assert.deepEqual(candidates('x', ['PATH='], '/z'), ['./x']);
  });

  test('g_environ_getenv: the first NAME= entry, not a NAME without =', () => {
    assert.equal(environGet(['PATHX=1', 'PATH', 'PATH=/a', 'PATH=/b'], 'PATH'), '/a');
    assert.equal(environGet(['X=1'], 'PATH'), undefined);
  });

  test('the environment object keeps the first of a name, drops entries without =', () => {
    assert.deepEqual(
      { ...environObject(['B=2', 'A=1', 'B=3', 'NOEQ', '=x', 'C=a=b', 'E=']) },
      {
        B: '2',
        A: '1',
        C: 'a=b',
        E: '',
      },
    );
  });

  test("the reference's texts for spawn failures", () => {
    assert.equal(
      spawnErrorText('x', 'ENOENT'),
      'Failed to execute child process \u201cx\u201d (No such file or directory)',
    );
    assert.equal(spawnErrorText('x', 'EAGAIN'), 'Failed to fork (Resource temporarily unavailable)');
    assert.equal(
      spawnErrorText('x', 'EMFILE'),
      'Failed to create pipe for communicating with child process (Too many open files)',
    );
  });
});

describe('starting programs', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'quiesce-exec-program-'));
    mkdirSync(join(dir, 'bin'));
    mkdirSync(join(dir, 'denied'));
    writeFileSync(join(dir, 'bin', 'hello'), '#!/bin/sh\necho "hello $0 $*"\n', { mode: 0o755 });
    writeFileSync(join(dir, 'bin', 'plain'), 'echo "plain $0 $*"\n', { mode: 0o755 });
    writeFileSync(join(dir, 'denied', 'hello'), 'not executable\n', { mode: 0o644 });
    writeFileSync(join(dir, 'denied', 'only-here'), 'not executable\n', { mode: 0o644 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('the file is found in PATH; argv[0] is the name as given', async () => {
    const r = await run(await startProgram(spec('hello', { args: ['a', 'b'], env: [`PATH=${dir}/bin`] })));
    // A #! script sees the file the kernel ran as $0.
    assert.deepEqual(r, { code: 0, out: `hello ${dir}/bin/hello a b\n`, err: '' });
    const sh = await run(
      await startProgram(spec('sh', { args: ['-c', 'tr "\\0" " " < /proc/$$/cmdline'], env: ['PATH=/usr/bin:/bin'] })),
    );
    assert.equal(sh.out, 'sh -c tr "\\0" " " < /proc/$$/cmdline ');
  });

  test('a file without #! that the kernel refuses (ENOEXEC) runs under /bin/sh', async () => {
    const r = await run(await startProgram(spec(join(dir, 'bin', 'plain'), { args: ['x'] })));
    assert.deepEqual(r, { code: 0, out: `plain ${join(dir, 'bin', 'plain')} x\n`, err: '' });
  });

  test('a candidate that is not executable is skipped; a later one runs', async () => {
    const r = await run(await startProgram(spec('hello', { env: [`PATH=${dir}/denied:${dir}/bin`] })));
    assert.equal(r.out, `hello ${dir}/bin/hello \n`);
  });

  test('not found anywhere: ENOENT; found only unexecutable: EACCES', async () => {
    assert.equal(
      await failure(startProgram(spec('nope', { env: [`PATH=${dir}/bin`] }))),
      failed('nope', 'No such file or directory'),
    );
    assert.equal(
      await failure(startProgram(spec('only-here', { env: [`PATH=${dir}/denied:${dir}/bin`] }))),
      failed('only-here', 'Permission denied'),
    );
    assert.equal(await failure(startProgram(spec(dir))), failed(dir, 'Permission denied'));
    assert.equal(await failure(startProgram(spec(''))), failed('', 'No such file or directory'));
    assert.equal(
      await failure(startProgram(spec(join(dir, 'bin', 'hello', 'x')))),
      failed(join(dir, 'bin', 'hello', 'x'), 'Not a directory'),
    );
  });

  test('a NUL in an argument or the environment is refused (Node cannot pass the C0 80 bytes the reference does)', async () => {
    assert.match(await failure(startProgram(spec('/bin/true', { args: ['a\u0000b'] }))), /argument 1 holds a NUL/);
    assert.match(await failure(startProgram(spec('/bin/true', { env: ['A=\u0000'] }))), /environment holds a NUL/);
    // A path with a NUL names a file that is not there, as with the reference.
    assert.equal(await failure(startProgram(spec('sh\u0000x'))), failed('sh\u0000x', 'No such file or directory'));
  });

  test("the child's stdio are real pipes (FIFOs), as GLib makes them; stdin without input is /dev/null", async () => {
    const started = await startProgram(spec('/bin/sh', { args: ['-c', 'sleep 0.3'] }));
    const pid = started.child.pid!;
    assert.equal(readlinkSync(`/proc/${pid}/fd/0`), '/dev/null');
    assert.match(readlinkSync(`/proc/${pid}/fd/1`), /^pipe:/);
    assert.match(readlinkSync(`/proc/${pid}/fd/2`), /^pipe:/);
    assert.equal((await run(started)).code, 0);
  });

  test('input goes in through a pipe too', async () => {
    const started = await startProgram(spec('cat', { stdin: 'pipe' }));
    assert.match(readlinkSync(`/proc/${started.child.pid}/fd/0`), /^pipe:/);
    started.stdin!.end('in\n');
    assert.deepEqual(await run(started), { code: 0, out: 'in\n', err: '' });
  });

  test("without the addon's pipe(), Node's own pipes are used", async () => {
    const r = await run(await startProgram(spec('/bin/echo', { args: ['x'] }), () => undefined));
    assert.deepEqual(r, { code: 0, out: 'x\n', err: '' });
  });

  test('no descriptor is left behind by a failed start', async () => {
    const before = new Set(readdirFds());
    await failure(startProgram(spec('/no/such/program', { stdin: 'pipe' })));
    assert.deepEqual(
      readdirFds().filter((fd) => !before.has(fd)),
      [],
    );
  });

  test('without capture, stdout and stderr go to /dev/null', async () => {
    const started = await startProgram(spec('/bin/sh', { args: ['-c', 'sleep 0.2'], output: 'ignore' }));
    assert.equal(started.stdout, undefined);
    assert.equal(readlinkSync(`/proc/${started.child.pid}/fd/1`), '/dev/null');
    assert.equal(readlinkSync(`/proc/${started.child.pid}/fd/2`), '/dev/null');
    await once(started.child, 'exit');
  });
});

/** This process's open descriptors (the one readdir itself opens drops out: it is gone by the time it is checked). */
function readdirFds(): string[] {
  return readdirSync('/proc/self/fd').filter((fd) => {
    try {
      readlinkSync(`/proc/self/fd/${fd}`);
      return true;
    } catch {
      return false;
    }
  });
}
