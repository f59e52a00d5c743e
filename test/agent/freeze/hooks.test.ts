// The fsfreeze hook runner with scripts of its own in a temporary directory (nothing is frozen here).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FreezeHooks, HOOK_OUTPUT_LIMIT } from '../../../agent/src/freeze/hooks.js';
import type { AgentLogEvent } from '../../../agent/src/log.js';

let dir: string;
let trace: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'quiesce-hooks-'));
  trace = join(dir, 'trace');
});
after(() => rmSync(dir, { recursive: true, force: true }));

function script(path: string, body: string, mode = 0o755): string {
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, mode);
  return path;
}

function hooks(path: string | undefined, timeoutMs = 5000): { hooks: FreezeHooks; events: AgentLogEvent[] } {
  const events: AgentLogEvent[] = [];
  return { hooks: new FreezeHooks({ path, timeoutMs, log: (e) => events.push(e) }), events };
}

/** Running (a killed process whose reaper has not collected it yet is a zombie: not running). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const traced = (): string[] => (existsSync(trace) ? readFileSync(trace, 'utf8').trim().split('\n') : []);
const messages = (events: AgentLogEvent[]) => events.map((e) => ('message' in e ? e.message : e.kind));

describe('fsfreeze hooks', () => {
  test('no hook configured: nothing runs, nothing fails', async () => {
    const { hooks: h } = hooks(undefined);
    assert.deepEqual(await h.freeze(), { started: [] });
    assert.equal(await h.thaw(), undefined);
  });

  test('a single script gets "freeze" then "thaw" as its argument', async () => {
    rmSync(trace, { force: true });
    const s = script(join(dir, 'single'), `echo "single $1" >> ${trace}`);
    const { hooks: h } = hooks(s);
    assert.deepEqual(await h.freeze(), { started: [s] });
    assert.equal(await h.thaw(), undefined);
    assert.deepEqual(traced(), ['single freeze', 'single thaw']);
  });

  test('a directory runs its executables in name order for freeze and reverse order for thaw', async () => {
    rmSync(trace, { force: true });
    const d = join(dir, 'hook.d');
    mkdirSync(d);
    for (const name of ['20-b', '10-a', '30-c']) script(join(d, name), `echo "${name} $1" >> ${trace}`);
    script(join(d, '15-not-executable'), `echo "never $1" >> ${trace}`, 0o644);
    script(join(d, '.hidden'), `echo "hidden $1" >> ${trace}`);
    mkdirSync(join(d, '25-a-directory'));
    const { hooks: h } = hooks(d);
    const phase = await h.freeze();
    assert.deepEqual(
      phase.started,
      ['10-a', '20-b', '30-c'].map((n) => join(d, n)),
    );
    assert.equal(await h.thaw(), undefined);
    assert.deepEqual(traced(), ['10-a freeze', '20-b freeze', '30-c freeze', '30-c thaw', '20-b thaw', '10-a thaw']);
  });

  test('a failing freeze script stops the phase; its error names the reference text and, in a directory, the script', async () => {
    rmSync(trace, { force: true });
    const d = join(dir, 'fail.d');
    mkdirSync(d);
    script(join(d, '1-ok'), `echo "1-ok $1" >> ${trace}`);
    script(join(d, '2-fails'), `echo "2-fails $1" >> ${trace}; [ "$1" = thaw ] || exit 3`);
    script(join(d, '3-never'), `echo "3-never $1" >> ${trace}`);
    const { hooks: h } = hooks(d);
    const phase = await h.freeze();
    assert.equal(phase.error?.message, `fsfreeze hook has failed with status 3 (${join(d, '2-fails')})`);
    assert.deepEqual(phase.started, [join(d, '1-ok'), join(d, '2-fails')]);
    // The controller then thaws the scripts that were started, in reverse.
    assert.equal(await h.thaw(phase.started), undefined);
    assert.deepEqual(traced(), ['1-ok freeze', '2-fails freeze', '2-fails thaw', '1-ok thaw']);
  });

  test('a single failing script gives exactly the reference text', async () => {
    const { hooks: h } = hooks(script(join(dir, 'exit7'), 'exit 7'));
    assert.equal((await h.freeze()).error?.message, 'fsfreeze hook has failed with status 7');
    const { hooks: k } = hooks(script(join(dir, 'killed'), 'kill -TERM $$'));
    assert.equal((await k.freeze()).error?.message, 'fsfreeze hook has terminated abnormally');
  });

  test('a missing or non-executable hook answers the reference\'s "can\'t access" text', async () => {
    const { hooks: h } = hooks(join(dir, 'missing'));
    assert.equal(
      (await h.freeze()).error?.message,
      `can't access fsfreeze hook '${join(dir, 'missing')}': No such file or directory`,
    );
    const { hooks: k } = hooks(script(join(dir, 'plain'), 'true', 0o644));
    // root may execute only when some x bit is set: EACCES either way.
    assert.equal(
      (await k.freeze()).error?.message,
      `can't access fsfreeze hook '${join(dir, 'plain')}': Permission denied`,
    );
  });

  test('thaw runs every script even when one fails and reports the first failure', async () => {
    rmSync(trace, { force: true });
    const d = join(dir, 'thawfail.d');
    mkdirSync(d);
    script(join(d, 'a'), `echo "a $1" >> ${trace}; exit 4`);
    script(join(d, 'b'), `echo "b $1" >> ${trace}; exit 5`);
    const { hooks: h } = hooks(d);
    assert.equal((await h.thaw())?.message, `fsfreeze hook has failed with status 5 (${join(d, 'b')})`);
    assert.deepEqual(traced(), ['b thaw', 'a thaw']);
  });

  test('a hung script is killed at its timeout, with the processes it started', async () => {
    const pidfile = join(dir, 'grandchild.pid');
    const s = script(join(dir, 'hang'), `sleep 300 & echo $! > ${pidfile}; wait`);
    const { hooks: h, events } = hooks(s, 500);
    const t0 = Date.now();
    const phase = await h.freeze();
    const took = Date.now() - t0;
    assert.equal(phase.error?.message, 'fsfreeze hook has timed out after 0.5 s and was killed');
    assert.ok(took >= 450 && took < 2500, `took ${took} ms`);
    const grandchild = Number(readFileSync(pidfile, 'utf8'));
    await sleep(100);
    assert.equal(alive(grandchild), false, 'the background sleep was killed too');
    assert.ok(messages(events).some((m) => m.includes('timed out')));
  });

  test("a script's stdout and stderr go to the log line by line, bounded", async () => {
    const s = script(join(dir, 'talk'), 'echo "to stdout $1"; echo "to stderr $1" >&2; printf "no newline"');
    const { hooks: h, events } = hooks(s);
    await h.freeze();
    const lines = messages(events);
    assert.ok(lines.includes(`fsfreeze hook ${s} freeze: to stdout freeze`), JSON.stringify(lines));
    assert.ok(lines.includes(`fsfreeze hook ${s} freeze: to stderr freeze`));
    assert.ok(lines.includes(`fsfreeze hook ${s} freeze: no newline`));
    const big = script(join(dir, 'big'), `head -c ${HOOK_OUTPUT_LIMIT + 1000} /dev/zero | tr '\\0' 'x'`);
    const { hooks: b, events: be } = hooks(big);
    await b.freeze();
    const kept = messages(be).filter((m) => m.startsWith(`fsfreeze hook ${big} freeze: x`));
    assert.equal(kept.join('').length - kept.length * `fsfreeze hook ${big} freeze: `.length, HOOK_OUTPUT_LIMIT);
    assert.ok(messages(be).includes(`fsfreeze hook ${big} freeze: (1000 more bytes of output not logged)`));
  });

  test('a script that exits while a background child holds its output still finishes promptly', async () => {
    const s = script(join(dir, 'bg'), 'sleep 5 & exit 0');
    const { hooks: h } = hooks(s);
    const t0 = Date.now();
    assert.equal((await h.freeze()).error, undefined);
    assert.ok(Date.now() - t0 < 2000, `${Date.now() - t0} ms`);
  });
});
