// `quiesce thaw GUEST [--force]` (emergencyThaw) against a scripted agent, with the guest's channel
// lock free or held by a real child process of this test (test/helpers/lock-holder.ts: one that
// exits on SIGTERM, one that ignores it, stopped ones). No socket, no root.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeConnector } from '../../../src/config/connector.js';
import type { ResolvedGuest } from '../../../src/config/types.js';
import { QuiesceError } from '../../../src/errors.js';
import { acquireGuestLock, lockDir } from '../../../src/guest/lock.js';
import { captureLogger } from '../../../src/log/logger.js';
import { ownStart, processInfo } from '../../../src/process/pid.js';
import { emergencyThaw, TAKEOVER_GRACE_MS } from '../../../src/workflow/emergency.js';
import type { JournalRecord } from '../../../src/workflow/journal.js';
import { startLockHolder, type LockHolderProcess } from '../../helpers/lock-holder.js';
import { RecordingAgent } from '../../helpers/recording-agent.js';
import type { Step } from '../../helpers/scripted-agent.js';
import { scratchDir, testConfig } from '../../helpers/workflow-rig.js';

const scratch = scratchDir('emergency');

/** A guest of its own (its own channel, so its own lock). */
function guestNamed(key: string): ResolvedGuest {
  const config = testConfig({
    stateDir: scratch.path('unused'),
    guests: { g: { connector: { type: 'socket', path: `/nonexistent/emergency-${process.pid}-${key}.sock` } } },
    jobs: {},
  });
  return config.guests.get('g')!;
}

interface Holder extends LockHolderProcess {
  readonly guest: ResolvedGuest;
}

const holders = new Map<string, Holder>();
before(async () => {
  // Started together, each holding the lock of a guest of its own.
  const wanted: [string, { ignoreTerm?: boolean; stopped?: boolean }][] = [
    ['refuse', {}],
    ['refuse-stopped', { stopped: true }],
    ['force-term', {}],
    ['force-kill', { ignoreTerm: true }],
    ['force-stopped', { stopped: true }],
  ];
  await Promise.all(
    wanted.map(async ([key, o]) => {
      const guest = guestNamed(key);
      const h = await startLockHolder(describeConnector(guest.connector), o);
      holders.set(key, Object.assign(h, { guest }));
    }),
  );
});
after(() => {
  for (const h of holders.values()) h.kill();
});

let n = 0;

/** Runs emergencyThaw on `guest` with a scripted agent; journal records can be put in its state dir first. */
function rig(guest: ResolvedGuest, script: Record<string, Step[]> = {}) {
  const stateDir = scratch.path(`state-${++n}`);
  const dir = join(stateDir, 'journal');
  const agent = new RecordingAgent({
    'guest-fsfreeze-thaw': [{ reply: 2 }],
    'guest-fsfreeze-status': [{ reply: 'thawed' }],
    ...script,
  });
  const log = captureLogger();
  let asked = 0;
  return {
    agent,
    dir,
    events: log.events,
    asked: () => asked,
    record(g: string, owner: { pid: number; pidStart: string }, runId: string, frozen?: number): string {
      mkdirSync(dir, { recursive: true });
      const r: JournalRecord = {
        version: 1,
        runId,
        job: 'j',
        guest: g,
        address: describeConnector(guest.connector),
        connector: guest.connector,
        ...owner,
        startedAt: new Date().toISOString(),
        ...(frozen !== undefined ? { frozen } : {}),
      };
      const name = `${runId}--${g}.json`;
      writeFileSync(join(dir, name), JSON.stringify(r));
      return name;
    },
    files: () => {
      try {
        return readdirSync(dir).sort();
      } catch {
        return [];
      }
    },
    thaw: (force: boolean) =>
      emergencyThaw(guest, {
        stateDir,
        log,
        force,
        agent: () => {
          asked++;
          return agent;
        },
      }),
  };
}

const DEAD = { pid: 0x3fffff, pidStart: '1' };
const SELF = () => ({ pid: process.pid, pidStart: ownStart() });

describe('the channel free', () => {
  test('thaws and proves, removes the dead owners’ records of this guest only, releases the lock, closes the agent', async () => {
    const guest = guestNamed('free');
    const r = rig(guest);
    r.record('g', DEAD, 'R1', 2);
    r.record('g', DEAD, 'R2');
    const live = r.record('g', SELF(), 'R3', 2);
    const other = r.record('other', DEAD, 'R4', 1);
    const { outcome, tookOverFrom } = await r.thaw(false);
    assert.equal(outcome.proven, true);
    assert.equal(outcome.thawed, 2);
    assert.equal(tookOverFrom, undefined);
    assert.deepEqual(r.files(), [live, other].sort());
    assert.deepEqual(r.agent.commands(), ['guest-fsfreeze-thaw', 'guest-fsfreeze-status']);
    assert.equal(r.agent.closed, true);
    await (await acquireGuestLock(describeConnector(guest.connector))).release();
  });

  for (const [what, frozen, thawReply, proven] of [
    ['the record’s frozen count thawed', 2, 2, true],
    ['fewer than the record’s frozen count', 2, 1, false],
    ['0 with status thawed (someone thawed first)', 2, 0, true],
    ['no record, 0 thawed', undefined, 0, true],
  ] as const) {
    test(`the proof checks the thaw count against a dead owner's record: ${what} → ${proven ? 'proven' : 'unproven, records kept'}`, async () => {
      const r = rig(guestNamed(`count-${what}`), { 'guest-fsfreeze-thaw': [{ reply: thawReply }] });
      if (frozen !== undefined) r.record('g', DEAD, 'R1', frozen);
      const before = r.files();
      const { outcome } = await r.thaw(false);
      assert.equal(outcome.proven, proven);
      if (!proven) {
        assert.equal(outcome.error?.code, 'THAW_UNPROVEN');
        assert.deepEqual(r.files(), before);
      } else assert.deepEqual(r.files(), []);
      assert.equal(r.agent.closed, true);
    });
  }

  test('an unproven thaw still releases the lock', async () => {
    const guest = guestNamed('unproven');
    const r = rig(guest, { 'guest-fsfreeze-status': [{ reply: 'frozen' }] });
    const { outcome } = await r.thaw(false);
    assert.equal(outcome.proven, false);
    await (await acquireGuestLock(describeConnector(guest.connector))).release();
  });
});

describe('the channel held by another process', () => {
  test('without --force: refused at once with LOCKED, naming the holder’s pid and how to take over; nothing touched', async () => {
    const h = holders.get('refuse')!;
    const r = rig(h.guest);
    const t0 = Date.now();
    const err = await r.thaw(false).catch((e: unknown) => e);
    assert.ok(err instanceof QuiesceError && err.code === 'LOCKED', String(err));
    assert.ok(Date.now() - t0 < 1000, 'at once');
    const pid = h.pid;
    assert.match(err.message, new RegExp(`held by pid ${pid}: quiesce.*run HOLDER-RUN`));
    assert.match(err.message, /a healthy run thaws g itself within its budget/);
    assert.match(err.message, new RegExp(`quiesce thaw g --force \\(terminates pid ${pid}, then thaws and proves\\)`));
    assert.equal(r.asked(), 0, 'the agent was never asked');
    assert.ok(h.alive(), 'the holder is left alone');
  });

  test('without --force, a stopped holder: the refusal says it will not thaw until it is continued', async () => {
    const h = holders.get('refuse-stopped')!;
    const err = await rig(h.guest)
      .thaw(false)
      .catch((e: unknown) => e);
    assert.ok(err instanceof QuiesceError && err.code === 'LOCKED');
    assert.match(err.message, new RegExp(`pid ${h.pid}, stopped: `));
    assert.match(err.message, /that process is stopped and will not thaw it until it is continued/);
    assert.equal(processInfo(h.pid)?.state, 'T', 'still stopped');
  });

  test('with --force: SIGTERM ends the holder, then the guest is thawed and proven; the result names whom it took over from', async () => {
    const h = holders.get('force-term')!;
    const r = rig(h.guest);
    const t0 = Date.now();
    const { outcome, tookOverFrom } = await r.thaw(true);
    assert.ok(Date.now() - t0 < TAKEOVER_GRACE_MS, 'no grace waited');
    assert.equal(outcome.proven, true);
    assert.equal(tookOverFrom?.pid, h.pid);
    assert.equal(tookOverFrom?.runId, 'HOLDER-RUN');
    assert.equal(tookOverFrom?.killed, false);
    assert.deepEqual(await h.exited, [null, 'SIGTERM']);
    assert.ok(r.events.some((e) => e.kind === 'warning' && /taking over from pid \d+.*: SIGTERM/.test(e.message)));
    assert.deepEqual(r.agent.commands(), ['guest-fsfreeze-thaw', 'guest-fsfreeze-status']);
  });

  test('with --force, a stopped holder is continued and ends on SIGTERM', async () => {
    const h = holders.get('force-stopped')!;
    const { outcome, tookOverFrom } = await rig(h.guest).thaw(true);
    assert.equal(outcome.proven, true);
    assert.equal(tookOverFrom?.killed, false);
    assert.deepEqual(await h.exited, [null, 'SIGTERM']);
  });

  test(`with --force, a holder that ignores SIGTERM is killed (SIGKILL) after the ${TAKEOVER_GRACE_MS} ms grace, then the thaw proceeds`, async () => {
    const h = holders.get('force-kill')!;
    const r = rig(h.guest);
    const t0 = Date.now();
    const { outcome, tookOverFrom } = await r.thaw(true);
    const took = Date.now() - t0;
    assert.ok(took >= TAKEOVER_GRACE_MS && took < TAKEOVER_GRACE_MS + 1500, `${took} ms`);
    assert.equal(tookOverFrom?.killed, true);
    assert.equal(tookOverFrom?.pid, h.pid);
    assert.deepEqual(await h.exited, [null, 'SIGKILL']);
    assert.equal(outcome.proven, true);
    assert.equal(r.agent.closed, true);
  });

  test('with --force, a holder that did not name itself is refused: there is no pid to end', async () => {
    const guest = guestNamed('anonymous');
    const held = await acquireGuestLock(describeConnector(guest.connector), 0, 'ANON');
    try {
      // Its name tag gone (it could not write it), the lock itself stays.
      for (const f of readdirSync(lockDir()).filter((x) => x.endsWith('.holder.json'))) {
        const path = join(lockDir(), f);
        if ((JSON.parse(readFileSync(path, 'utf8')) as { runId?: string }).runId === 'ANON') unlinkSync(path);
      }
      const r = rig(guest);
      const err = await r.thaw(true).catch((e: unknown) => e);
      assert.ok(err instanceof QuiesceError && err.code === 'LOCKED', String(err));
      assert.match(err.message, /held by a quiesce process that did not name itself/);
      assert.match(err.message, /Wait for it, or end that process/);
      assert.equal(r.asked(), 0);
    } finally {
      await held.release();
    }
  });
});
