/**
 * guest-exec in the agent bundle as it ships: the agent keeps answering
 * while a child writes 20 MB, leaves no zombie among its children, and stops
 * promptly on SIGTERM while a child it started runs on (as the reference's
 * do: nothing kills them).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { AGENT_BUNDLE } from '../../helpers/agents.js';
import { launch, type Side } from './system-rig.js';

const SKIP = existsSync(AGENT_BUNDLE)
  ? false
  : `needs the agent bundle ${AGENT_BUNDLE} (npm run bundle -w quiesce-agent)`;

function proc(pid: number): { state: string; ppid: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: state!, ppid: Number(ppid) };
  } catch {
    return undefined;
  }
}

function children(parent: number): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const p = proc(Number(name));
    if (p?.ppid === parent) out.push({ pid: Number(name), state: p.state });
  }
  return out;
}

async function exec(side: Side, args: object): Promise<number> {
  const reply = await side.client.request({ execute: 'guest-exec', arguments: args });
  const m = /^\{"return": \{"pid": (\d+)\}\}$/.exec(reply);
  assert.ok(m, reply);
  return Number(m[1]);
}

async function status(side: Side, pid: number): Promise<Record<string, unknown>> {
  const reply = await side.client.request({ execute: 'guest-exec-status', arguments: { pid } });
  return (JSON.parse(reply) as { return: Record<string, unknown> }).return;
}

describe('guest-exec in the running agent', { skip: SKIP }, () => {
  let side: Side;
  const started: number[] = [];
  before(async () => {
    side = await launch('quiesce', { args: ['--fsfreeze-include='] });
  });
  after(async () => {
    side?.client.close();
    await side?.agent.stop();
    for (const pid of started) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Gone already.
      }
    }
  });

  test('answers guest-ping at once while a child writes 20 MB', async () => {
    const pid = await exec(side, {
      path: 'sh',
      arg: [
        '-c',
        'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do head -c 1000000 /dev/zero; sleep 0.05; done',
      ],
      'capture-output': true,
    });
    let pings = 0;
    let slowest = 0;
    let s = await status(side, pid);
    while (!s['exited']) {
      const t0 = performance.now();
      assert.equal(await side.client.request({ execute: 'guest-ping' }), '{"return": {}}');
      slowest = Math.max(slowest, performance.now() - t0);
      pings++;
      await sleep(20);
      s = await status(side, pid);
    }
    assert.ok(pings >= 5, `${pings} pings while it ran`);
    assert.ok(slowest < 1000, `slowest ping ${slowest} ms`);
    assert.equal(s['exitcode'], 0);
    assert.equal(s['out-truncated'], true);
    assert.equal(Buffer.from(s['out-data'] as string, 'base64').length, 16 * 1024 * 1024);
  });

  test('no zombie among its children, asked about or not', async () => {
    const agent = side.agent.child.pid!;
    const pids: number[] = [];
    for (let i = 0; i < 20; i++) pids.push(await exec(side, { path: '/bin/true', 'capture-output': i % 2 === 0 }));
    const deadline = Date.now() + 10_000;
    while (pids.some((pid) => proc(pid)) && Date.now() < deadline) await sleep(20);
    assert.deepEqual(
      children(agent).filter((c) => c.state === 'Z'),
      [],
    );
    for (const pid of pids) assert.equal((await status(side, pid))['exitcode'], 0);
  });

  test('stops promptly on SIGTERM while its child runs on', async () => {
    const other = await launch('quiesce', { args: ['--fsfreeze-include='] });
    const pid = await exec(other, { path: 'sleep', arg: ['30'], 'capture-output': true });
    started.push(pid);
    assert.equal(proc(pid)?.ppid, other.agent.child.pid);
    other.client.close();
    const t0 = Date.now();
    other.agent.child.kill('SIGTERM');
    await new Promise((r) => other.agent.child.once('exit', r));
    assert.ok(Date.now() - t0 < 2500, `stopped after ${Date.now() - t0} ms`);
    await other.agent.stop();
    // Still there (reparented), not killed by the agent.
    const p = proc(pid);
    assert.ok(p && p.state !== 'Z', 'the child runs on');
    process.kill(pid, 'SIGKILL');
  });
});
