// The freeze guard against scripted agents and a spied journal: the order of records, freezes, the
// snapshot, thaws and window callbacks on one timeline. No socket, no root, nothing frozen.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { QuiesceError } from '../../../src/errors.js';
import { WATCHDOG_GET_RECORD, WATCHDOG_SET_LIMIT } from '../../../src/guest/capabilities.js';
import { captureLogger } from '../../../src/log/logger.js';
import { freezeGuard, type GuardOutcome } from '../../../src/workflow/freeze-guard.js';
import { GuestRun } from '../../../src/workflow/guest-run.js';
import { Journal, type JournalRecord } from '../../../src/workflow/journal.js';
import { newRunId, plan } from '../../../src/workflow/plan.js';
import { SignalGuard, type HandledSignal } from '../../../src/workflow/signals.js';
import { infoReply, RecordingAgent, Timeline } from '../../helpers/recording-agent.js';
import type { Step } from '../../helpers/scripted-agent.js';
import { FREEZE_LIST_COMMANDS, healthyScript, scratchDir, testConfig } from '../../helpers/workflow-rig.js';

const scratch = scratchDir('freeze-guard');

/** The real journal, with every call marked on the timeline; writes can be made to fail, updates slow. */
class SpyJournal extends Journal {
  constructor(
    stateDir: string,
    private readonly tl: Timeline,
    private readonly o: { failWrite?: readonly string[]; updateDelayMs?: number; failRemove?: boolean } = {},
  ) {
    super(stateDir);
  }

  override async write(r: Parameters<Journal['write']>[0]): Promise<JournalRecord> {
    this.tl.mark(`journal-write:${r.guest}`);
    if (this.o.failWrite?.includes(r.guest))
      throw new QuiesceError('JOURNAL', `cannot write the journal record of ${r.guest}: no space left on device`);
    const record = await super.write(r);
    this.tl.mark(`journal-written:${r.guest}`);
    return record;
  }

  override async update(record: JournalRecord, patch: Pick<JournalRecord, 'frozen'>): Promise<void> {
    this.tl.mark(`journal-update:${record.guest}:${patch.frozen}`);
    if (this.o.updateDelayMs) await sleep(this.o.updateDelayMs);
    await super.update(record, patch);
    this.tl.mark(`journal-updated:${record.guest}`);
  }

  override async remove(runId: string, guest: string): Promise<void> {
    this.tl.mark(`journal-remove:${guest}`);
    if (this.o.failRemove) throw new Error('EACCES: permission denied');
    await super.remove(runId, guest);
  }

  /** The records on disk now, by guest. */
  onDisk(): Map<string, JournalRecord> {
    let names: string[] = [];
    try {
      names = readdirSync(this.dir).filter((n) => n.endsWith('.json'));
    } catch {
      // No directory yet: no record.
    }
    const records = names.map((n) => JSON.parse(readFileSync(join(this.dir, n), 'utf8')) as JournalRecord);
    return new Map(records.map((r) => [r.guest, r]));
  }
}

interface Rig {
  readonly signals: SignalGuard;
  readonly tl: Timeline;
}

interface GuardOptions {
  /** One member runs solo; several form a consistency group, in this order. */
  members?: string[];
  /** Per member: commands replacing the healthy script's. */
  scripts?: Record<string, Record<string, Step[]>>;
  delays?: Record<string, Record<string, number | number[]>>;
  /** Runs when a member's agent receives a request. */
  before?: (guest: string, command: string, journal: SpyJournal) => unknown;
  budgetMs?: number;
  journal?: { failWrite?: string[]; updateDelayMs?: number; failRemove?: boolean };
  /** The snapshot of one member (default: done at once). */
  snapshot?: (guest: string, signal: AbortSignal, rig: Rig) => Promise<void>;
  /** A signal received before the guard starts. */
  signalFirst?: HandledSignal;
}

let n = 0;

/** Connects every member to its scripted agent, then runs the guard over them; returns all there is to see. */
async function guard(o: GuardOptions = {}) {
  const members = o.members ?? ['a'];
  const stateDir = scratch.path(`state-${++n}`);
  const config = testConfig({
    stateDir,
    guests: Object.fromEntries(members.map((m) => [m, {}])),
    jobs: { j: members.length > 1 ? { groups: [members] } : { guests: members } },
  });
  const now = new Date();
  const p = plan(config, 'j', { runId: newRunId(now), now });
  const unit = p.units[0]!;
  const tl = new Timeline();
  const log = captureLogger();
  const journal = new SpyJournal(stateDir, tl, o.journal);
  const agents = new Map(
    members.map((m) => [
      m,
      new RecordingAgent(healthyScript(o.scripts?.[m]), {
        name: m,
        timeline: tl,
        ...(o.delays?.[m] ? { delays: o.delays[m] } : {}),
        before: (command) => o.before?.(m, command, journal),
      }),
    ]),
  );
  const runs = unit.guests.map((g) => new GuestRun(g, unit.name, log, () => agents.get(g.name)!, 0, p.runId));
  const signals = new SignalGuard(log);
  const rig: Rig = { signals, tl };
  const windows: boolean[] = [];
  const snapshotSignals = new Map<string, AbortSignal>();
  let outcome: GuardOutcome;
  try {
    for (const r of runs) await r.connectAndCheck();
    if (o.signalFirst) signals.trigger(o.signalFirst);
    tl.mark('guard-start');
    outcome = await freezeGuard(
      unit.name,
      runs,
      {
        runId: p.runId,
        job: p.job,
        budgetMs: o.budgetMs ?? 3000,
        journal,
        signals,
        log,
        spawnsInWindow: false,
        onWindow: (open) => {
          windows.push(open);
          tl.mark(open ? 'window-open' : 'window-close');
        },
      },
      async (m, signal) => {
        snapshotSignals.set(m.plan.name, signal);
        tl.mark(`${m.plan.name}:snapshot`);
        try {
          await o.snapshot?.(m.plan.name, signal, rig);
        } finally {
          tl.mark(`${m.plan.name}:snapshot:done`);
        }
      },
    );
    tl.mark('guard-end');
  } finally {
    for (const r of runs) await r.close();
  }
  const result = (m: string) => runs.find((r) => r.plan.name === m)!.result;
  return { outcome, unit, runs, agents, tl, journal, windows, events: log.events, signals, snapshotSignals, result };
}

/** A snapshot that ends only `extraMs` after it was told to stop (a process group being killed). */
const slowToStop =
  (extraMs: number, trigger?: (rig: Rig) => void) =>
  async (_g: string, signal: AbortSignal, rig: Rig): Promise<void> => {
    if (trigger) setTimeout(() => trigger(rig), 30);
    await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    await sleep(extraMs);
    throw signal.reason;
  };

const thawed = (agent: RecordingAgent) => agent.commands(/^guest-fsfreeze-thaw$/).length > 0;
const frozenCommands = (agent: RecordingAgent) => agent.commands(/^guest-fsfreeze-freeze/);

describe('journal records', () => {
  test('every member’s record is on disk before the first freeze is sent', async () => {
    const seen = new Map<string, string[]>();
    const { tl, outcome } = await guard({
      members: ['a', 'b', 'c'],
      before: (guest, command, journal) => {
        if (command.startsWith('guest-fsfreeze-freeze')) seen.set(guest, [...journal.onDisk().keys()].sort());
      },
    });
    assert.equal(outcome.snapshotOk, true);
    for (const g of ['a', 'b', 'c']) assert.deepEqual(seen.get(g), ['a', 'b', 'c'], `records on disk when ${g} froze`);
    const firstFreeze = Math.min(...['a', 'b', 'c'].map((g) => tl.index(`${g}:guest-fsfreeze-freeze-list`)));
    for (const g of ['a', 'b', 'c']) assert.ok(tl.index(`journal-written:${g}`) < firstFreeze, tl.order().join(', '));
  });

  test('a record that cannot be written: no member is frozen, every member gets the JOURNAL error, the written records go', async () => {
    const { agents, result, journal, windows, outcome } = await guard({
      members: ['a', 'b'],
      journal: { failWrite: ['b'] },
    });
    for (const g of ['a', 'b']) {
      assert.deepEqual(frozenCommands(agents.get(g)!), [], `${g} not frozen`);
      assert.ok(!thawed(agents.get(g)!), `${g} not thawed either: nothing was sent`);
      assert.deepEqual(
        result(g).errors.map((e) => e.code),
        ['JOURNAL'],
      );
      assert.equal(result(g).thawProven, undefined);
    }
    assert.deepEqual([...journal.onDisk().keys()], [], "a's record, written, is removed");
    assert.deepEqual(windows, [], 'the window never opened');
    assert.equal(outcome.snapshotOk, false);
  });

  test('the frozen count is written after the freeze reply, and the thaw does not wait for that write', async () => {
    const { tl, journal, result } = await guard({ journal: { updateDelayMs: 150 } });
    assert.ok(tl.index('a:guest-fsfreeze-freeze-list:done') < tl.index('journal-update:a:2'), tl.order().join(', '));
    assert.ok(tl.index('a:guest-fsfreeze-thaw') < tl.index('journal-updated:a'), 'thawed while the update was slow');
    assert.ok(tl.index('journal-updated:a') < tl.index('journal-remove:a'), 'the removal comes after the update');
    assert.equal(result('a').thawProven, true);
    assert.deepEqual([...journal.onDisk().keys()], []);
  });

  for (const [what, over, proven, kept] of [
    ['a proven thaw removes the record', {}, true, false],
    [
      'a thaw of fewer filesystems than frozen keeps it, with the frozen count for recovery',
      { 'guest-fsfreeze-thaw': [{ reply: 1 }] },
      false,
      true,
    ],
    [
      'status still frozen after the thaw keeps it',
      { 'guest-fsfreeze-status': [{ reply: 'thawed' }, { reply: 'frozen' }] },
      false,
      true,
    ],
    ['a thaw whose reply never comes keeps it', { 'guest-fsfreeze-thaw': [{ lost: true }] }, false, true],
  ] as [string, Record<string, Step[]>, boolean, boolean][]) {
    test(what, async () => {
      const { journal, result } = await guard({ scripts: { a: over } });
      assert.equal(result('a').thawProven, proven);
      const onDisk = journal.onDisk();
      assert.equal(onDisk.has('a'), kept);
      if (kept) {
        assert.equal(onDisk.get('a')?.frozen, 2);
        assert.equal(onDisk.get('a')?.pid, process.pid);
        assert.ok(result('a').errors.some((e) => e.code === 'THAW_UNPROVEN'));
      }
    });
  }

  test('a record that cannot be removed is a warning, not a failure of the guard', async () => {
    const { outcome, events, result } = await guard({ journal: { failRemove: true } });
    assert.equal(outcome.snapshotOk, true);
    assert.equal(result('a').thawProven, true);
    assert.ok(events.some((e) => e.kind === 'warning' && /journal: EACCES/.test(e.message)));
  });
});

describe('groups', () => {
  test('every member’s freeze is sent before any reply: frozen in parallel, the skew measured', async () => {
    const { tl, outcome, events, unit } = await guard({
      members: ['a', 'b'],
      delays: { a: { 'guest-fsfreeze-freeze-list': 150 }, b: { 'guest-fsfreeze-freeze-list': 50 } },
    });
    const firstReply = Math.min(
      tl.index('a:guest-fsfreeze-freeze-list:done'),
      tl.index('b:guest-fsfreeze-freeze-list:done'),
    );
    assert.ok(tl.index('a:guest-fsfreeze-freeze-list') < firstReply);
    assert.ok(tl.index('b:guest-fsfreeze-freeze-list') < firstReply);
    assert.ok(outcome.skewMs !== undefined && outcome.skewMs >= 80 && outcome.skewMs < 1000, `skew ${outcome.skewMs}`);
    assert.ok(events.some((e) => e.kind === 'group-frozen' && e.group === unit.name && e.skewMs === outcome.skewMs));
    assert.ok(tl.index('b:snapshot') > tl.index('a:guest-fsfreeze-freeze-list:done'), 'the snapshot waits for all');
  });

  test('a solo unit has no skew', async () => {
    const { outcome } = await guard();
    assert.equal(outcome.skewMs, undefined);
  });

  test('members are thawed in the reverse order of the group', async () => {
    const { tl, result } = await guard({ members: ['a', 'b', 'c'] });
    assert.deepEqual(tl.order(/^\w:guest-fsfreeze-thaw$/), [
      'c:guest-fsfreeze-thaw',
      'b:guest-fsfreeze-thaw',
      'a:guest-fsfreeze-thaw',
    ]);
    for (const g of ['a', 'b', 'c']) assert.equal(result(g).thawProven, true);
  });

  for (const [what, step, code] of [
    ['an agent error', { error: 'Device or resource busy' }, 'AGENT_ERROR'],
    ['a lost reply (it may have frozen)', { lost: true }, 'CHANNEL_GONE'],
    ['a freeze of 1 of the 2 filesystems', { reply: 1 }, 'FREEZE_INCOMPLETE'],
  ] as const) {
    test(`one member's failed freeze (${what}) thaws every member, the snapshot never starts, all report ${code}`, async () => {
      const { agents, tl, result, outcome, journal } = await guard({
        members: ['a', 'b', 'c'],
        scripts: { b: { 'guest-fsfreeze-freeze-list': [step], 'guest-fsfreeze-thaw': [{ reply: 1 }] } },
      });
      for (const g of ['a', 'b', 'c']) {
        assert.ok(thawed(agents.get(g)!), `${g} thawed`);
        assert.ok(
          result(g).errors.some((e) => e.code === code),
          `${g}: ${JSON.stringify(result(g).errors)}`,
        );
        assert.equal(result(g).thawProven, true, `${g}: ${JSON.stringify(result(g).errors)}`);
      }
      assert.ok(!tl.order().some((w) => w.endsWith(':snapshot')), 'no snapshot');
      assert.equal(outcome.snapshotOk, false);
      assert.deepEqual([...journal.onDisk().keys()], []);
    });
  }

  test('a failure before any freeze (the agent refused to arm its watchdog): nothing is thawed, the records go', async () => {
    const watchdog = infoReply([...FREEZE_LIST_COMMANDS, WATCHDOG_SET_LIMIT, WATCHDOG_GET_RECORD]);
    const { agents, result, journal, windows } = await guard({
      members: ['a', 'b'],
      scripts: { b: { 'guest-info': [watchdog], [WATCHDOG_SET_LIMIT]: [{ error: 'limit out of range' }] } },
    });
    for (const g of ['a', 'b']) {
      assert.deepEqual(frozenCommands(agents.get(g)!), []);
      assert.ok(!thawed(agents.get(g)!));
      assert.ok(result(g).errors.some((e) => e.code === 'AGENT_ERROR' && /limit out of range/.test(e.message)));
    }
    assert.deepEqual([...journal.onDisk().keys()], []);
    assert.deepEqual(windows, []);
  });

  test('a member whose freeze hangs does not keep the others frozen past the budget', {}, async () => {
    const { tl } = await guard({
      members: ['a', 'b'],
      budgetMs: 150,
      delays: { b: { 'guest-fsfreeze-freeze-list': 500 } },
    });
    const frozenFor = tl.at('a:guest-fsfreeze-thaw') - tl.at('a:guest-fsfreeze-freeze-list');
    assert.ok(frozenFor < 150 + 300, `a stayed frozen ${Math.round(frozenFor)} ms with a 150 ms budget`);
  });
});

describe('the budget and signals', () => {
  test('the budget aborts the snapshot and thaws at once, without waiting for the snapshot to end', async () => {
    const { tl, outcome, result, snapshotSignals, events, unit, journal } = await guard({
      budgetMs: 150,
      snapshot: slowToStop(200),
    });
    const frozenFor = tl.at('a:guest-fsfreeze-thaw') - tl.at('a:guest-fsfreeze-freeze-list');
    assert.ok(frozenFor >= 140 && frozenFor < 150 + 600, `thawed ${Math.round(frozenFor)} ms after the freeze`);
    assert.ok(tl.at('a:guest-fsfreeze-thaw:done') < tl.at('a:snapshot:done'), 'thawed while the snapshot still ran');
    assert.ok(tl.at('window-close') < tl.at('a:snapshot:done'), 'the window closed before the snapshot ended');
    assert.ok(tl.at('guard-end') >= tl.at('a:snapshot:done'), 'the guard returns once the snapshot ended');
    assert.equal(outcome.budgetExceeded, true);
    assert.equal(outcome.snapshotOk, false);
    const reason: unknown = snapshotSignals.get('a')?.reason;
    assert.ok(reason instanceof QuiesceError && reason.code === 'BUDGET_EXCEEDED', String(reason));
    assert.ok(result('a').errors.some((e) => e.code === 'BUDGET_EXCEEDED'));
    assert.equal(result('a').thawProven, true);
    assert.ok(events.some((e) => e.kind === 'budget-exceeded' && e.unit === unit.name && e.budgetMs === 150));
    assert.deepEqual([...journal.onDisk().keys()], []);
  });

  test('a snapshot that ends in time: snapshot ok, no budget exceeded, the window measured', async () => {
    const { outcome, result } = await guard({ budgetMs: 1000, snapshot: () => sleep(50) });
    assert.equal(outcome.snapshotOk, true);
    assert.equal(outcome.budgetExceeded, false);
    assert.ok(outcome.frozenWindowMs !== undefined && outcome.frozenWindowMs >= 50);
    assert.deepEqual(result('a').errors, []);
  });

  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    test(`${sig} during the snapshot aborts it with INTERRUPTED and thaws every member at once`, async () => {
      const { tl, outcome, result, snapshotSignals } = await guard({
        members: ['a', 'b'],
        snapshot: slowToStop(150, (rig) => {
          rig.tl.mark('signal');
          rig.signals.trigger(sig);
        }),
      });
      for (const g of ['a', 'b']) {
        const after = tl.at(`${g}:guest-fsfreeze-thaw`) - tl.at('signal');
        assert.ok(after < 250, `${g} thawed ${Math.round(after)} ms after the signal`);
        assert.ok(tl.at(`${g}:guest-fsfreeze-thaw`) < tl.at(`${g}:snapshot:done`));
        assert.ok(result(g).errors.some((e) => e.code === 'INTERRUPTED' && e.message === `received ${sig}`));
        assert.equal(result(g).thawProven, true);
        const reason: unknown = snapshotSignals.get(g)?.reason;
        assert.ok(reason instanceof QuiesceError && reason.code === 'INTERRUPTED');
      }
      assert.equal(outcome.budgetExceeded, false);
      assert.equal(outcome.snapshotOk, false);
    });
  }

  test('a signal received before the guard: records written, nothing frozen, the records removed, INTERRUPTED', async () => {
    const { agents, tl, result, journal, windows } = await guard({ signalFirst: 'SIGTERM' });
    assert.ok(tl.has('journal-written:a'));
    assert.deepEqual(frozenCommands(agents.get('a')!), []);
    assert.ok(!thawed(agents.get('a')!));
    assert.ok(result('a').errors.some((e) => e.code === 'INTERRUPTED' && /before the freeze/.test(e.message)));
    assert.deepEqual([...journal.onDisk().keys()], []);
    assert.deepEqual(windows, []);
  });

  test('the guard’s controller is unregistered afterwards: a later signal does not reach it', async () => {
    const { signals, snapshotSignals } = await guard();
    signals.trigger('SIGINT');
    assert.equal(snapshotSignals.get('a')?.aborted, false);
  });
});

describe('onWindow', () => {
  for (const [what, o, expected] of [
    ['a good run', {}, [true, false]],
    ['a failed freeze', { scripts: { a: { 'guest-fsfreeze-freeze-list': [{ error: 'EIO' }] } } }, [true, false]],
    ['a budget exceeded', { budgetMs: 100, snapshot: slowToStop(100) }, [true, false]],
    ['an unproven thaw', { scripts: { a: { 'guest-fsfreeze-thaw': [{ reply: 0 }] } } }, [true, false]],
    ['a record that cannot be written', { journal: { failWrite: ['a'] } }, []],
    ['a signal before the freeze', { signalFirst: 'SIGINT' }, []],
  ] as [string, GuardOptions, boolean[]][]) {
    test(`${what}: ${expected.length ? 'opens before the first freeze, closes once after the last thaw' : 'never opens'}`, async () => {
      const { windows, tl } = await guard({ members: ['a', 'b'], ...o });
      assert.deepEqual(windows, expected);
      if (expected.length) {
        const freezes = tl.order(/^\w:guest-fsfreeze-freeze-list$/).map((w) => tl.index(w));
        const thaws = tl.order(/^\w:guest-fsfreeze-thaw:done$/).map((w) => tl.index(w));
        assert.ok(tl.index('window-open') < Math.min(...freezes), tl.order().join(', '));
        assert.ok(tl.index('window-close') > Math.max(...thaws), tl.order().join(', '));
      }
    });
  }
});
