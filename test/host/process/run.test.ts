import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { captureLogger } from '../../../src/log/logger.js';
import type { LogEvent } from '../../../src/log/events.js';
import { killGroup, MAX_OUTPUT_BYTES, runProcess, warmUpSpawn, type ProcessOptions } from '../../../src/process/run.js';

/** Slack for time assertions on a shared, slow machine. */
const SLACK_MS = 1500;

function opts(
  extra: Partial<Omit<ProcessOptions, 'log'>> = {},
): ProcessOptions & { log: ReturnType<typeof captureLogger> } {
  return { timeoutMs: 10_000, guest: 'vm1', step: 'snapshot', ...extra, log: captureLogger() };
}

/** State letter from /proc/PID/stat, or undefined when the pid is gone. */
function procState(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  } catch {
    return undefined;
  }
}

/** Running (not gone, not a zombie: orphans may stay unreaped where PID 1 does not reap). */
function running(pid: number): boolean {
  const s = procState(pid);
  return s !== undefined && s !== 'Z' && s !== 'X';
}

/** Running processes in group `pgid`, read from /proc independently of the code under test. */
function groupRunning(pgid: number): number[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
        const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        return Number(pgrp) === pgid && state !== 'Z' && state !== 'X';
      } catch {
        return false;
      }
    });
}

async function waitUntil(cond: () => boolean, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (cond()) return true;
    await sleep(20);
  }
  return cond();
}

const warnings = (events: LogEvent[]): string[] => events.flatMap((e) => (e.kind === 'warning' ? [e.message] : []));
const output = (events: LogEvent[], stream: 'stdout' | 'stderr'): string[] =>
  events.flatMap((e) => (e.kind === 'command-output' && e.stream === stream ? [e.text] : []));

describe('runProcess', { skip: existsSync('/proc/self/stat') ? false : 'needs Linux /proc' }, () => {
  test('succeeds on exit status 0 and logs the output lines', async () => {
    const o = opts();
    const r = await runProcess(['sh', '-c', 'echo one; echo two; echo warn >&2'], o);
    assert.equal(r.ok, true);
    assert.equal(r.exitCode, 0);
    assert.equal(r.signal, undefined);
    assert.equal(r.error, undefined);
    assert.equal(r.leftovers, false);
    assert.equal(r.stdout, 'one\ntwo');
    assert.equal(r.stderr, 'warn');
    assert.deepEqual(output(o.log.events, 'stdout'), ['one', 'two']);
    assert.deepEqual(output(o.log.events, 'stderr'), ['warn']);
    assert.ok(o.log.events.every((e) => e.kind !== 'command-output' || (e.guest === 'vm1' && e.step === 'snapshot')));
  });

  test('fails on a non-zero status and quotes the last stderr line', async () => {
    const r = await runProcess(['sh', '-c', 'echo first >&2; echo "lvcreate: no space" >&2; echo >&2; exit 5'], opts());
    assert.equal(r.ok, false);
    assert.equal(r.exitCode, 5);
    assert.equal(r.error, 'sh exited with status 5: lvcreate: no space');
  });

  test('names the signal that killed the command', async () => {
    const r = await runProcess(['sh', '-c', 'kill -USR1 $$'], opts());
    assert.equal(r.ok, false);
    assert.equal(r.exitCode, undefined);
    assert.equal(r.signal, 'SIGUSR1');
    assert.equal(r.error, 'sh was killed by SIGUSR1');
  });

  test('reports a missing executable without throwing', async () => {
    const r = await runProcess(['quiesce-no-such-command', '--flag'], opts());
    assert.equal(r.ok, false);
    assert.equal(r.pid, undefined);
    assert.match(r.error ?? '', /^quiesce-no-such-command: spawn quiesce-no-such-command ENOENT/);
  });

  test('never passes argv through a shell', async () => {
    const r = await runProcess(['echo', '$HOME', '`id`', ';', 'true'], opts());
    assert.equal(r.stdout, '$HOME `id` ; true');
  });

  test('keeps at most 64 KiB per stream and logs at most 50 lines per stream', async () => {
    const o = opts();
    const script =
      'i=0; while [ $i -lt 120 ]; do echo "line $i"; echo "err $i" >&2; i=$((i+1)); done; head -c 200000 /dev/zero | tr "\\0" x; echo; echo "the real last line" >&2';
    const r = await runProcess(['sh', '-c', script], o);
    assert.equal(r.ok, true);
    assert.equal(Buffer.byteLength(r.stdout), MAX_OUTPUT_BYTES);
    assert.ok(r.stdout.startsWith('line 0\nline 1\n'));
    assert.equal(output(o.log.events, 'stdout').length, 50);
    assert.equal(output(o.log.events, 'stderr').length, 50);
    assert.equal(output(o.log.events, 'stderr')[49], 'err 49');
    const failing = await runProcess(['sh', '-c', `${script}; exit 1`], opts());
    assert.equal(failing.error, 'sh exited with status 1: the real last line');
  });

  test('passes the given environment', async () => {
    // The grandchild prints its pid once its trap is set; head waits for that line.
    const r = await runProcess(
      ['sh', '-c', 'echo "$QUIESCE_TEST_VAR:${HOME-unset}"'],
      opts({ env: { PATH: process.env.PATH, QUIESCE_TEST_VAR: 'xyz' } }),
    );
    assert.equal(r.stdout, 'xyz:unset');
  });

  test('returns the exit status with inherited stdio', async () => {
    const r = await runProcess(['sh', '-c', 'exit 7'], opts({ stdio: 'inherit' }));
    assert.equal(r.exitCode, 7);
    assert.equal(r.error, 'sh exited with status 7');
    assert.equal(r.stdout, '');
  });

  test('runs the command in its own process group', async () => {
    const r = await runProcess(['sh', '-c', 'read -r stat < /proc/$$/stat; set -- $stat; echo $5'], opts());
    assert.equal(Number(r.stdout.trim()), r.pid);
    assert.notEqual(r.pid, process.pid);
  });

  test('a timeout ends a command that ignores SIGTERM within timeout + grace, and the group is gone', async () => {
    const o = opts({ timeoutMs: 500, graceMs: 300 });
    const t0 = performance.now();
    const r = await runProcess(['sh', '-c', 'trap "" TERM; echo $$; sleep 30'], o);
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 500 + 300 - 50, `resolved after ${elapsed} ms, before the grace ran out`);
    assert.ok(elapsed < 500 + 300 + SLACK_MS, `resolved after ${elapsed} ms`);
    assert.equal(r.timedOut, true);
    assert.equal(r.cancelled, false);
    assert.equal(r.ok, false);
    assert.equal(r.signal, 'SIGKILL');
    assert.equal(r.error, 'sh timed out after 500 ms');
    const pid = Number(r.stdout);
    assert.equal(pid, r.pid);
    assert.equal(running(pid), false);
    assert.equal(r.leftovers, false);
    // SIGKILL takes a moment to land on the rest of the group.
    assert.ok(
      await waitUntil(() => groupRunning(pid).length === 0, 500),
      `still running: ${groupRunning(pid).join(' ')}`,
    );
    assert.ok(warnings(o.log.events).some((m) => /ignored SIGTERM for 300 ms; sent SIGKILL/.test(m)));
  });

  test('a timeout ends a command that honours SIGTERM without waiting for the grace', async () => {
    const t0 = performance.now();
    const r = await runProcess(['sleep', '30'], opts({ timeoutMs: 200, graceMs: 5000 }));
    const elapsed = performance.now() - t0;
    assert.ok(elapsed < 200 + SLACK_MS, `resolved after ${elapsed} ms`);
    assert.equal(r.timedOut, true);
    assert.equal(r.signal, 'SIGTERM');
  });

  test('an abort signal ends the group and the error names the reason', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(new Error('frozen longer than the 2000 ms budget')), 200);
    const t0 = performance.now();
    // The grandchild prints its pid once its trap is set; head waits for that line.
    const r = await runProcess(
      ['sh', '-c', 'trap "" TERM; echo $$; sleep 30'],
      opts({ signal: ac.signal, graceMs: 300 }),
    );
    const elapsed = performance.now() - t0;
    assert.ok(elapsed < 200 + 300 + SLACK_MS, `resolved after ${elapsed} ms`);
    assert.equal(r.cancelled, true);
    assert.equal(r.timedOut, false);
    assert.equal(r.error, 'sh was cancelled (frozen longer than the 2000 ms budget)');
    assert.equal(running(Number(r.stdout)), false);
    assert.ok(await waitUntil(() => groupRunning(r.pid!).length === 0, 500), 'the group is still running');
  });

  test('an already aborted signal spawns nothing', async () => {
    const ac = new AbortController();
    ac.abort(new Error('interrupted'));
    const o = opts({ signal: ac.signal });
    const r = await runProcess(['sh', '-c', 'echo should-not-run'], o);
    assert.equal(r.cancelled, true);
    assert.equal(r.pid, undefined);
    assert.equal(r.error, 'sh was cancelled (interrupted)');
    assert.deepEqual(o.log.events, []);
  });

  test('ends when the command exits although a grandchild still holds stdout, and terminates the grandchild', async () => {
    const o = opts();
    const t0 = performance.now();
    const r = await runProcess(['sh', '-c', 'sleep 30 & echo $!'], o);
    const elapsed = performance.now() - t0;
    assert.ok(elapsed < 1000, `resolved after ${elapsed} ms`);
    assert.equal(r.ok, true);
    assert.equal(r.leftovers, true);
    const grandchild = Number(r.stdout);
    assert.ok(grandchild > 1);
    assert.ok(
      warnings(o.log.events).some((m) =>
        /exited but left processes running in its group \d+; terminating them/.test(m),
      ),
    );
    assert.ok(await waitUntil(() => !running(grandchild), 1000), 'the grandchild is still running');
  });

  test('SIGKILLs a leftover grandchild that ignores SIGTERM after the grace', async () => {
    const o = opts({ graceMs: 400 });
    const t0 = performance.now();
    // The grandchild prints its pid once its trap is set; head waits for that line, so sh exits after it.
    const r = await runProcess(['sh', '-c', `{ sh -c 'trap "" TERM; echo $$; exec sleep 30' & } | head -n 1`], o);
    assert.ok(performance.now() - t0 < 1000, 'did not resolve at the exit of sh');
    assert.equal(r.leftovers, true);
    const grandchild = Number(r.stdout);
    await sleep(100);
    assert.equal(running(grandchild), true, 'SIGKILL came before the grace ran out');
    assert.ok(await waitUntil(() => !running(grandchild), 400 + SLACK_MS), 'the grandchild survived SIGKILL');
    assert.ok(await waitUntil(() => groupRunning(r.pid!).length === 0, 500), 'the group is still running');
    assert.ok(warnings(o.log.events).some((m) => /1 process\(es\) ignored SIGTERM for 400 ms; sent SIGKILL/.test(m)));
  });

  test('does not count an exited grandchild that nobody reaped as a leftover', async () => {
    // Where PID 1 does not reap orphans, the exited `true` stays a zombie in the group.
    const r = await runProcess(['sh', '-c', '(true &); sleep 0.1; echo done'], opts());
    assert.equal(r.stdout, 'done');
    assert.equal(r.leftovers, false);
  });

  test('leaves no abort listener on a signal reused across 100 runs', async () => {
    const ac = new AbortController();
    await runProcess(['true'], opts());
    const exitListeners = process.listenerCount('exit');
    // Ten batches of ten at once: one of each batch fails to spawn, one times out.
    for (let batch = 0; batch < 10; batch++) {
      const runs = Array.from({ length: 10 }, (_, i) =>
        runProcess(
          i === 0 ? ['quiesce-no-such-command'] : i === 1 ? ['sleep', '5'] : ['true'],
          opts({ signal: ac.signal, timeoutMs: i === 1 ? 50 : 10_000 }),
        ),
      );
      assert.ok(getEventListeners(ac.signal, 'abort').length > 0);
      const results = await Promise.all(runs);
      assert.equal(results.filter((r) => r.ok).length, 8);
    }
    assert.equal(getEventListeners(ac.signal, 'abort').length, 0);
    assert.equal(process.listenerCount('exit'), exitListeners);
  });

  test('warmUpSpawn runs once per process', async () => {
    const a = warmUpSpawn();
    assert.equal(warmUpSpawn(), a);
    await a;
  });
});

describe('killGroup', () => {
  test('returns false for a group that is gone', async () => {
    const r = await runProcess(['true'], opts());
    assert.equal(killGroup(r.pid!, 'SIGTERM'), false);
  });

  test('refuses group ids that would signal our own group or every process', () => {
    for (const pgid of [0, 1, -5, 1.5]) assert.throws(() => killGroup(pgid, 'SIGTERM'), RangeError);
  });
});
