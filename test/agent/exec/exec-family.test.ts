/**
 * guest-exec and guest-exec-status in process, without a transport: every
 * child is reaped whether or not anyone asks about it, a status lives until
 * the first reply that says exited, output is drained as it comes (a 20 MB
 * writer never blocks, nor does the event loop), and children that outlive
 * the agent's interest neither keep it alive nor become zombies.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { execCommands } from '../../../agent/src/commands/exec.js';
import type { AgentContext } from '../../../agent/src/context.js';
import type { AgentLogEvent } from '../../../agent/src/log.js';
import { QgaError } from '../../../agent/src/qapi/errors.js';

const logs: AgentLogEvent[] = [];
const ctx = { log: (e: AgentLogEvent) => void logs.push(e) } as unknown as AgentContext;

type Family = ReturnType<typeof execCommands>;
const families: Family[] = [];
after(() => {
  for (const f of families) void f.close?.();
});

function family(outputLimit?: number): Family {
  const f = execCommands(ctx, outputLimit === undefined ? {} : { outputLimit });
  families.push(f);
  return f;
}

type Status = { [key: string]: unknown; exited: boolean };

async function exec(f: Family, args: Record<string, unknown>): Promise<number> {
  const r = (await f.commands.find((c) => c.name === 'guest-exec')!.run(args, ctx)) as { pid: number };
  return r.pid;
}

function status(f: Family, pid: number | bigint): Status {
  return f.commands.find((c) => c.name === 'guest-exec-status')!.run({ pid: BigInt(pid) }, ctx) as Status;
}

async function waitExited(f: Family, pid: number, ms = 10_000): Promise<Status> {
  const deadline = Date.now() + ms;
  for (;;) {
    const s = status(f, pid);
    if (s.exited) return s;
    if (Date.now() > deadline) assert.fail(`pid ${pid} did not exit within ${ms} ms`);
    await sleep(10);
  }
}

/** State and parent of a process, or undefined once it is gone (reaped). */
function proc(pid: number): { state: string; ppid: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: state!, ppid: Number(ppid) };
  } catch {
    return undefined;
  }
}

/** This process's children that are zombies (exited, not reaped). */
function zombieChildren(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = proc(Number(name));
    if (p && p.ppid === process.pid && p.state === 'Z') out.push(Number(name));
  }
  return out;
}

function assertQgaError(fn: () => unknown, message: string): void {
  assert.throws(fn, (err: unknown) => err instanceof QgaError && err.message === message);
}

describe('reaping', () => {
  test('children nobody asks about are reaped as they end: no zombie is left', async () => {
    const f = family();
    const pids: number[] = [];
    for (let i = 0; i < 30; i++) {
      const capture = i % 2 === 0;
      pids.push(await exec(f, { path: '/bin/sh', arg: ['-c', `exit ${i}`], 'capture-output': capture }));
    }
    const deadline = Date.now() + 10_000;
    while (pids.some((pid) => proc(pid) !== undefined) && Date.now() < deadline) await sleep(20);
    assert.deepEqual(
      pids.filter((pid) => proc(pid) !== undefined),
      [],
      'every child is gone from /proc',
    );
    assert.deepEqual(zombieChildren(), []);
    // Reaped, but their statuses wait to be asked for, as in the reference.
    assert.equal(f.table.size, 30);
    for (const [i, pid] of pids.entries()) assert.equal((await waitExited(f, pid)).exitcode, i);
    assert.equal(f.table.size, 0);
  });

  test('a killed child is reaped and reports the signal', async () => {
    const f = family();
    const pid = await exec(f, { path: 'sleep', arg: ['30'] });
    assert.deepEqual(status(f, pid), { exited: false });
    process.kill(pid, 'SIGKILL');
    const s = await waitExited(f, pid);
    assert.deepEqual(JSON.parse(JSON.stringify(s)), { exited: true, signal: 9 });
    assert.equal(proc(pid), undefined);
    assert.deepEqual(zombieChildren(), []);
  });
});

describe('the status lifetime', () => {
  test('exited: false while running, the full status once, then the pid is unknown', async () => {
    const f = family();
    const pid = await exec(f, { path: '/bin/sh', arg: ['-c', 'sleep 0.3; echo done; exit 7'], 'capture-output': true });
    assert.deepEqual(status(f, pid), { exited: false });
    assert.deepEqual(status(f, pid), { exited: false });
    const s = await waitExited(f, pid);
    assert.deepEqual(
      { ...s },
      {
        exited: true,
        exitcode: 7,
        'out-data': 'ZG9uZQo=',
        'out-truncated': false,
        'err-data': undefined,
        'err-truncated': undefined,
      },
    );
    assertQgaError(() => status(f, pid), "Invalid parameter 'pid'");
  });

  test("unknown pids: the reference's error, whatever the number", () => {
    const f = family();
    for (const pid of [0n, -1n, 1n << 40n, -(1n << 63n)])
      assertQgaError(() => status(f, pid), "Invalid parameter 'pid'");
  });

  test('a grandchild holding the output pipe keeps the status at exited: false', async () => {
    const f = family();
    const pid = await exec(f, { path: '/bin/sh', arg: ['-c', 'sleep 0.6 & echo started'], 'capture-output': true });
    // The shell itself is gone (reaped) long before the grandchild lets go of the pipe.
    const deadline = Date.now() + 5000;
    while (proc(pid) !== undefined && Date.now() < deadline) await sleep(10);
    assert.equal(proc(pid), undefined);
    assert.deepEqual(status(f, pid), { exited: false });
    const s = await waitExited(f, pid);
    assert.equal(s['out-data'], Buffer.from('started\n').toString('base64'));
  });

  test('without capture the status is complete as soon as the child is reaped', async () => {
    const f = family();
    const pid = await exec(f, { path: '/bin/sh', arg: ['-c', 'sleep 5 & exit 2'] });
    const s = await waitExited(f, pid, 3000);
    assert.equal(s.exitcode, 2);
  });

  test('the commands log as the reference does', async () => {
    const f = family();
    logs.length = 0;
    const pid = await exec(f, { path: '/bin/echo', arg: ['a', 'b c'] });
    await waitExited(f, pid);
    assert.deepEqual(logs[0], { kind: 'info', message: 'guest-exec called: "/bin/echo a b c"' });
    assert.deepEqual(logs[1], { kind: 'info', message: `guest-exec-status called, pid: ${pid}` });
    assertQgaError(() => status(f, -1n), "Invalid parameter 'pid'");
    assert.deepEqual(logs.at(-1), { kind: 'info', message: 'guest-exec-status called, pid: 4294967295' });
  });
});

describe('output', () => {
  test('20 MB of output: drained as it comes (the writer ends), 16 MiB kept, the event loop never held up', async () => {
    const f = family();
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const pid = await exec(f, { path: 'head', arg: ['-c', '20000000', '/dev/zero'], 'capture-output': true });
    const s = await waitExited(f, pid, 20_000);
    delay.disable();
    assert.equal(s.exitcode, 0);
    assert.equal(s['out-truncated'], true);
    assert.equal(Buffer.from(s['out-data'] as string, 'base64').length, 16 * 1024 * 1024);
    // Generous: a busy machine stalls everything now and then, but nothing here waits on the child.
    assert.ok(delay.max < 1e9, `longest event-loop stall ${delay.max / 1e6} ms`);
  });

  test('stdout and stderr each have their own limit and flag', async () => {
    const f = family(8);
    const pid = await exec(f, {
      path: '/bin/sh',
      arg: ['-c', 'printf 12345678; printf 123456789 >&2'],
      'capture-output': true,
    });
    const s = await waitExited(f, pid);
    assert.equal(s['out-data'], Buffer.from('12345678').toString('base64'));
    assert.equal(s['out-truncated'], false);
    assert.equal(s['err-data'], Buffer.from('12345678').toString('base64'));
    assert.equal(s['err-truncated'], true);
  });

  test('input-data reaches stdin; a child that does not read it still ends', async () => {
    const f = family();
    const cat = await exec(f, {
      path: 'cat',
      'input-data': Buffer.from('in put').toString('base64'),
      'capture-output': true,
    });
    assert.equal((await waitExited(f, cat))['out-data'], Buffer.from('in put').toString('base64'));
    const big = Buffer.alloc(4 * 1024 * 1024, 1).toString('base64');
    const ignores = await exec(f, { path: '/bin/sh', arg: ['-c', 'exit 4'], 'input-data': big });
    assert.equal((await waitExited(f, ignores)).exitcode, 4);
  });

  test('bad base64 in input-data fails before anything starts', async () => {
    const f = family();
    await assert.rejects(
      exec(f, { path: '/bin/true', 'input-data': '@@@' }),
      (err: unknown) => err instanceof QgaError && err.message === 'Base64 data contains invalid characters',
    );
    assert.equal(f.table.size, 0);
  });
});

describe('children that outlive the agent', () => {
  test('closing the family lets go of running children: they go on, are not waited for, and are still reaped', async () => {
    const f = family();
    const pid = await exec(f, { path: 'sleep', arg: ['30'], 'capture-output': true });
    await f.close!();
    assert.equal(f.table.size, 0);
    assert.equal(proc(pid)?.state !== undefined && proc(pid)?.state !== 'Z', true, 'still running');
    process.kill(pid, 'SIGKILL');
    const deadline = Date.now() + 5000;
    while (existsSync(`/proc/${pid}`) && Date.now() < deadline) await sleep(10);
    assert.equal(proc(pid), undefined, 'reaped after the kill');
    assert.deepEqual(zombieChildren(), []);
  });
});
