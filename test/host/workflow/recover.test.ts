// Recovery of journal records left by runs that are gone, against scripted agents injected through
// recover()'s factory. Owners are real processes of this test: exited, zombie, reused pid, running,
// stopped. No socket, no root.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeConnector, type ConnectorSpec } from '../../../src/config/connector.js';
import { acquireGuestLock } from '../../../src/guest/lock.js';
import { captureLogger } from '../../../src/log/logger.js';
import { ownStart, processInfo } from '../../../src/process/pid.js';
import { exitCodeFor, EXIT } from '../../../src/workflow/exit-code.js';
import type { JournalRecord } from '../../../src/workflow/journal.js';
import { recover } from '../../../src/workflow/recover.js';
import type { RecoveryResult, RunReport } from '../../../src/workflow/results.js';
import { RecordingAgent } from '../../helpers/recording-agent.js';
import type { Step } from '../../helpers/scripted-agent.js';
import { scratchDir } from '../../helpers/workflow-rig.js';

const scratch = scratchDir('recover');

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) {
    c.kill('SIGCONT');
    c.kill('SIGKILL');
  }
});

type Owner = { pid: number; pidStart: string };

/** A process that has exited and been reaped: its pid is gone (or, rarely, someone else's: the start time differs). */
async function goneOwner(): Promise<Owner> {
  const c = spawn('true');
  await once(c, 'exit');
  return { pid: c.pid!, pidStart: '1' };
}

/** A running child of this test (sleep), optionally stopped with SIGSTOP. */
async function liveOwner(stopped = false): Promise<Owner> {
  const c = spawn('sleep', ['30'], { stdio: 'ignore' });
  children.push(c);
  await once(c, 'spawn');
  const pid = c.pid!;
  const pidStart = processInfo(pid)!.start;
  // Asleep in its nanosleep (S), or stopped (T): a loaded machine may still show it starting (R).
  const want = stopped ? 'T' : 'S';
  if (stopped) c.kill('SIGSTOP');
  for (let i = 0; i < 200 && processInfo(pid)?.state !== want; i++) await sleep(10);
  assert.equal(processInfo(pid)?.state, want);
  return { pid, pidStart };
}

/** A process that exited but was never reaped by its parent (sh exec'd into sleep): state Z, pid still there. */
async function zombieOwner(): Promise<Owner> {
  const parent = spawn('sh', ['-c', 'sleep 0.05 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  children.push(parent);
  const [line] = (await once(parent.stdout!, 'data')) as [Buffer];
  const pid = Number(line.toString().trim());
  const pidStart = processInfo(pid)?.start ?? '';
  for (let i = 0; i < 100 && processInfo(pid)?.state !== 'Z'; i++) await sleep(10);
  assert.equal(processInfo(pid)?.state, 'Z', 'the owner is a zombie');
  return { pid, pidStart };
}

/** A pid that runs, but is not the process that wrote the record (another start time). */
async function reusedPidOwner(): Promise<Owner> {
  const live = await liveOwner();
  return { pid: live.pid, pidStart: String(Number(live.pidStart) + 1) };
}

let n = 0;

/** A state dir of its own with a scripted agent per guest, reachable only through the factory. */
function rig() {
  const stateDir = scratch.path(`state-${++n}`);
  const dir = join(stateDir, 'journal');
  const agents = new Map<string, RecordingAgent>();
  const asked: ConnectorSpec[] = [];
  const log = captureLogger();
  const id = n;
  const connectorOf = (guest: string): ConnectorSpec => ({ kind: 'socket', path: `/nonexistent/${id}-${guest}.sock` });
  const rig = {
    stateDir,
    dir,
    events: log.events,
    asked,
    agents,
    /** Writes a record as a run would have, owned by `owner`. */
    record(guest: string, owner: Owner, o: { frozen?: number; runId?: string; script?: Record<string, Step[]> } = {}) {
      mkdirSync(dir, { recursive: true });
      const runId = o.runId ?? `RUN-${guest}`;
      const r: JournalRecord = {
        version: 1,
        runId,
        job: 'nightly',
        guest,
        address: `unix:/nonexistent/${id}-${guest}.sock`,
        connector: connectorOf(guest),
        ...owner,
        startedAt: new Date().toISOString(),
        ...(o.frozen !== undefined ? { frozen: o.frozen } : {}),
      };
      const file = join(dir, `${runId}--${encodeURIComponent(guest)}.json`);
      writeFileSync(file, `${JSON.stringify(r)}\n`, { mode: 0o600 });
      agents.set(
        r.address,
        new RecordingAgent({
          'guest-fsfreeze-thaw': [{ reply: o.frozen ?? 1 }],
          'guest-fsfreeze-status': [{ reply: 'thawed' }],
          ...o.script,
        }),
      );
      return { record: r, file };
    },
    recover() {
      return recover(stateDir, log, (connector) => {
        asked.push(connector);
        const a = agents.get(`unix:${(connector as { path: string }).path}`);
        assert.ok(a, 'an agent for the connector of a record');
        return a;
      });
    },
    files: () => (existsSync(dir) ? readdirSync(dir).sort() : []),
  };
  return rig;
}

/** The exit code a run with these recovery results (and nothing else) ends with. */
function exitWith(recovered: RecoveryResult[]): number {
  const report: RunReport = {
    runId: 'R',
    job: 'j',
    configSource: 'test',
    budgetMs: 1000,
    startedAt: '',
    endedAt: '',
    durationMs: 0,
    exitCode: 0,
    recovered,
    errors: [],
    units: [],
    guests: [],
  };
  return exitCodeFor(report, undefined);
}

describe('records of owners that are gone', () => {
  for (const [what, owner] of [
    ['exited', goneOwner],
    ['a zombie (exited, not reaped)', zombieOwner],
    ['a reused pid (another process now)', reusedPidOwner],
  ] as const) {
    test(`owner ${what}: the guest is thawed through its own connector, proven, and the record removed`, async () => {
      const r = rig();
      const { record } = r.record('web', await owner(), { frozen: 2 });
      const results = await r.recover();
      assert.deepEqual(results, [{ guest: 'web', runId: 'RUN-web', ok: true, thawed: 2 }]);
      assert.deepEqual(r.files(), []);
      assert.deepEqual(r.asked, [record.connector]);
      const agent = r.agents.get(record.address)!;
      assert.deepEqual(agent.commands(), ['guest-fsfreeze-thaw', 'guest-fsfreeze-status']);
      assert.equal(agent.closed, true);
      assert.ok(r.events.some((e) => e.kind === 'recovered' && e.guest === 'web' && e.ok && e.thawed === 2));
      assert.equal(exitWith(results), EXIT.OK);
      // The guest's lock was released: a run can take it at once.
      await (await acquireGuestLock(record.address)).release();
    });
  }

  for (const [what, frozen, thawReply, ok, thawed] of [
    ['all it froze thawed', 2, 2, true, 2],
    ['a thaw count of 0 with status thawed (the owner or the watchdog thawed first)', 2, 0, true, 0],
    ['no frozen count written (it died during the freeze), 0 thawed', undefined, 0, true, 0],
    ['more thawed than it froze (another tool froze one too)', 1, 3, true, 3],
    ['fewer thawed than it froze, not zero', 2, 1, false, undefined],
  ] as const) {
    test(`zero is thawed in recovery: ${what} → ${ok ? 'recovered' : 'unproven, record kept'}`, async () => {
      const r = rig();
      r.record('db', await goneOwner(), {
        ...(frozen !== undefined ? { frozen } : {}),
        script: { 'guest-fsfreeze-thaw': [{ reply: thawReply }] },
      });
      const [result] = await r.recover();
      assert.equal(result?.ok, ok);
      assert.equal(result?.thawed, thawed);
      assert.equal(r.files().length, ok ? 0 : 1);
      if (!ok) {
        assert.match(result?.error ?? '', /thawed 1 filesystem\(s\) but 2 were frozen/);
        assert.equal(result?.busy, undefined, 'a failure, not busy');
        assert.equal(exitWith([result!]), EXIT.THAW_UNPROVEN);
      }
    });
  }

  test('status still frozen after the thaw: not recovered, the record kept, exit 5', async () => {
    const r = rig();
    r.record('db', await goneOwner(), {
      frozen: 1,
      script: { 'guest-fsfreeze-status': [{ reply: 'frozen' }] },
    });
    const results = await r.recover();
    assert.equal(results.length, 1);
    assert.equal(results[0]!.ok, false);
    assert.match(results[0]!.error ?? '', /status is frozen after the thaw/);
    assert.equal(r.files().length, 1);
    assert.ok(r.events.some((e) => e.kind === 'recovered' && !e.ok && /status is frozen/.test(e.error ?? '')));
    assert.equal(exitWith(results), EXIT.THAW_UNPROVEN);
  });

  test('every record is handled, in order, each through its own agent', async () => {
    const r = rig();
    r.record('a', await goneOwner(), { runId: 'R1', frozen: 1 });
    r.record('b', await goneOwner(), { runId: 'R2', frozen: 1, script: { 'guest-fsfreeze-thaw': [{ reply: 0 }] } });
    r.record('c', await liveOwner(), { runId: 'R3' });
    const results = await r.recover();
    assert.deepEqual(
      results.map((x) => [x.guest, x.ok, x.busy !== undefined]),
      [
        ['a', true, false],
        ['b', true, false],
        ['c', false, true],
      ],
    );
    assert.deepEqual(
      r.asked.map((c) => (c as { path: string }).path.split('-').pop()),
      ['a.sock', 'b.sock'],
    );
    assert.deepEqual(r.files(), ['R3--c.json']);
  });
});

describe('records of owners still running', () => {
  for (const [what, stopped, state] of [
    ['running', false, 'S'],
    ['stopped (SIGSTOP)', true, 'T'],
  ] as const) {
    test(`an owner ${what} is reported busy with its pid and state, and its guest is not touched`, async () => {
      const r = rig();
      const owner = await liveOwner(stopped);
      r.record('web', owner);
      const results = await r.recover();
      assert.equal(results.length, 1);
      const [res] = results;
      assert.equal(res!.ok, false);
      assert.deepEqual(res!.busy, { pid: owner.pid, state });
      assert.match(res!.error ?? '', new RegExp(`pid ${owner.pid}${stopped ? ', stopped' : ''}\\) is still running`));
      assert.match(res!.error ?? '', /quiesce thaw web --force/);
      assert.deepEqual(r.asked, [], 'no agent contacted');
      assert.deepEqual(r.files(), ['RUN-web--web.json']);
      assert.ok(r.events.some((e) => e.kind === 'journal-busy' && e.pid === owner.pid));
      assert.equal(exitWith(results), EXIT.OK, 'busy is not a failed thaw');
    });
  }

  test('this process’s own records are skipped (a run does not recover itself)', async () => {
    const r = rig();
    r.record('self', { pid: process.pid, pidStart: ownStart() });
    assert.deepEqual(await r.recover(), []);
    assert.deepEqual(r.asked, []);
    assert.deepEqual(r.files(), ['RUN-self--self.json']);
  });

  test('a dead owner’s guest whose channel another process holds: busy with the holder’s pid, not touched', async () => {
    const r = rig();
    const { record } = r.record('web', await goneOwner(), { frozen: 1 });
    const held = await acquireGuestLock(record.address, 0, 'OTHER-RUN');
    try {
      const results = await r.recover();
      assert.equal(results.length, 1);
      assert.equal(results[0]!.ok, false);
      assert.deepEqual(results[0]!.busy, { pid: process.pid });
      assert.match(
        results[0]!.error ?? '',
        /left frozen by run RUN-web, but its agent is in use: .*run OTHER-RUN.*not touching it/,
      );
      assert.deepEqual(r.asked, []);
      assert.equal(r.files().length, 1);
      assert.ok(r.events.some((e) => e.kind === 'warning' && e.guest === 'web'));
    } finally {
      await held.release();
    }
  });
});

describe('unreadable records', () => {
  test('each is reported (a failed result: its guest may be frozen) and left in place; the readable ones are still recovered', async () => {
    const r = rig();
    r.record('ok', await goneOwner(), { frozen: 1 });
    const bad = {
      'garbage.json': '{not json',
      'future.json': JSON.stringify({ version: 2, guest: 'x' }),
      'no-guest.json': JSON.stringify({ version: 1, runId: 'R' }),
    };
    for (const [name, text] of Object.entries(bad)) writeFileSync(join(r.dir, name), text);
    writeFileSync(join(r.dir, 'notes.txt'), 'not a record');
    const results = await r.recover();
    assert.deepEqual(results.map((x) => [x.guest, x.ok]).sort(), [
      ['future', false],
      ['garbage', false],
      ['no-guest', false],
      ['ok', true],
    ]);
    const warned = r.events.filter((e) => e.kind === 'warning').map((e) => e.message);
    for (const name of Object.keys(bad))
      assert.ok(
        warned.some((m) => m === `unreadable journal record ${join(r.dir, name)}: inspect it and remove it by hand`),
        `${name} reported: ${warned.join(' | ')}`,
      );
    assert.equal(warned.length, 3, 'the .txt file is not a record');
    assert.deepEqual(r.files(), ['future.json', 'garbage.json', 'no-guest.json', 'notes.txt']);
  });

  test('a record without a connector is reported, and does not stop the recovery of the others', {}, async () => {
    const r = rig();
    mkdirSync(r.dir, { recursive: true });
    const dead = await goneOwner();
    writeFileSync(
      join(r.dir, 'A--broken.json'),
      JSON.stringify({ version: 1, runId: 'A', job: 'j', guest: 'broken', ...dead, startedAt: '' }),
    );
    r.record('fine', await goneOwner(), { runId: 'B', frozen: 1 });
    // As the default factory does: guestAgent() starts with describeConnector(), which throws on no connector.
    const results = await recover(r.stateDir, captureLogger(), (c) => r.agents.get(describeConnector(c))!);
    assert.deepEqual(
      results.map((x) => [x.guest, x.ok]),
      [
        ['broken', false],
        ['fine', true],
      ],
    );
  });

  test('no journal directory: nothing to recover, no agent contacted', async () => {
    const r = rig();
    assert.deepEqual(await r.recover(), []);
    assert.deepEqual(r.asked, []);
  });
});
