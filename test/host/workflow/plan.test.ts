// plan() and formatPlan() on resolved configs: pure functions, no agent, no process, no root.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULTS } from '../../../src/config/defaults.js';
import type { ResolvedConfig } from '../../../src/config/types.js';
import { QuiesceError } from '../../../src/errors.js';
import { formatPlan, newRunId, plan, type GuestPlan, type Plan } from '../../../src/workflow/plan.js';
import { testConfig } from '../../helpers/workflow-rig.js';

const NOW = new Date('2026-11-25T05:47:00.123Z');
const RUN = '20261125T054700Z-abc123';
const STATE = '/var/tmp/quiesce-plan-test';

/** Three guests: a and b in a consistency group, c on its own; every step uses placeholders. */
function fullConfig(over: { job?: Record<string, unknown>; guest?: Record<string, unknown> } = {}): ResolvedConfig {
  const guest = (name: string) => ({
    freeze: name === 'c' ? 'all' : ['/srv', '/var/lib/db'],
    hooks: { pre: [['pre', '{guest}', '{job}']], post: [['post', '{runId}']] },
    snapshot: { provider: 'command', argv: ['snap', '{guest}-{timestamp}', '{date}', '{stateDir}', '{{lit}}'] },
    backup: { argv: ['backup', '/b/{guest}/{runId}'], timeout: '2h' },
    verify: { argv: ['verify', '{guest}'] },
    prune: { dir: '/b', match: '{guest}-*', keepLast: 3 },
    ...over.guest,
  });
  return testConfig({
    stateDir: STATE,
    guests: { a: guest('a'), b: guest('b'), c: guest('c') },
    jobs: {
      nightly: {
        groups: [['a', 'b']],
        guests: ['c'],
        budget: '2s',
        notify: ['notify', '{job}', '{runId}'],
        ...over.job,
      },
      other: { guests: ['c'] },
    },
  });
}

const planOf = (config: ResolvedConfig, job = 'nightly', runId = RUN, now = NOW): Plan =>
  plan(config, job, { runId, now });

function guestPlan(p: Plan, name: string): GuestPlan {
  const g = p.units.flatMap((u) => u.guests).find((x) => x.name === name);
  assert.ok(g, `guest ${name} is in the plan`);
  return g;
}

describe('plan()', () => {
  test('is pure: the same config, job, run id and time give the same plan, and the config is not changed', () => {
    const config = fullConfig();
    const before = JSON.stringify([...config.guests], (_k, v: unknown) => (v instanceof Map ? [...v] : v));
    const first = planOf(config);
    const second = planOf(config);
    assert.deepEqual(second, first);
    assert.notEqual(second, first, 'a new object each time');
    assert.equal(
      JSON.stringify([...config.guests], (_k, v: unknown) => (v instanceof Map ? [...v] : v)),
      before,
    );
  });

  test('depends on nothing but its inputs: another run id or time changes exactly what uses them', () => {
    const config = fullConfig();
    const first = planOf(config);
    const later = planOf(config, 'nightly', 'RUN-2', new Date('2027-01-02T03:04:05Z'));
    assert.equal(later.runId, 'RUN-2');
    assert.equal(later.createdAt, '2027-01-02T03:04:05.000Z');
    assert.deepEqual(guestPlan(later, 'a').snapshot, {
      provider: 'command',
      argv: ['snap', 'a-20270102T030405Z', '2027-01-02', STATE, '{lit}'],
      timeoutMs: 2000,
    });
    assert.deepEqual(guestPlan(later, 'a').preHooks, guestPlan(first, 'a').preHooks, 'no placeholder of time in it');
  });

  for (const name of ['a', 'b', 'c']) {
    test(`fills the placeholders of every step with guest ${name}'s own values`, () => {
      const g = guestPlan(planOf(fullConfig()), name);
      assert.deepEqual(g.snapshot.provider === 'command' && g.snapshot.argv, [
        'snap',
        `${name}-20261125T054700Z`,
        '2026-11-25',
        STATE,
        '{lit}',
      ]);
      assert.deepEqual(
        g.preHooks.map((h) => h.argv),
        [['pre', name, 'nightly']],
      );
      assert.deepEqual(
        g.postHooks.map((h) => h.argv),
        [['post', RUN]],
      );
      assert.deepEqual(g.backup?.argv, ['backup', `/b/${name}/${RUN}`]);
      assert.deepEqual(g.verify, { kind: 'command', argv: ['verify', name], timeoutMs: DEFAULTS.stepMs });
      assert.equal(g.prune?.match, `${name}-*`);
      assert.equal(g.prune?.dir, '/b');
      assert.equal(g.prune?.keepLast, 3);
    });
  }

  test('consistency groups come first as one unit each ("groupN:a+b"), then every solo guest as its own unit', () => {
    const p = planOf(
      testConfig({
        stateDir: STATE,
        guests: { a: {}, b: {}, c: {}, d: {}, e: {}, f: {} },
        jobs: {
          j: {
            guests: ['e', 'c'],
            groups: [
              ['a', 'b'],
              ['f', 'd'],
            ],
          },
        },
      }),
      'j',
    );
    assert.deepEqual(
      p.units.map((u) => [u.kind, u.name, u.guests.map((g) => g.name)]),
      [
        ['group', 'group1:a+b', ['a', 'b']],
        ['group', 'group2:f+d', ['f', 'd']],
        ['guest', 'e', ['e']],
        ['guest', 'c', ['c']],
      ],
    );
  });

  test('carries the job settings: budget, concurrency and failure policy, from the job or the defaults', () => {
    const fromJob = planOf(fullConfig({ job: { concurrency: 2, failurePolicy: 'crash-consistent' } }));
    assert.equal(fromJob.budgetMs, 2000);
    assert.equal(fromJob.concurrency, 2);
    assert.equal(fromJob.failurePolicy, 'crash-consistent');
    const fromDefaults = planOf(fullConfig(), 'other');
    assert.equal(fromDefaults.budgetMs, DEFAULTS.budgetMs);
    assert.equal(fromDefaults.concurrency, DEFAULTS.concurrency);
    assert.equal(fromDefaults.failurePolicy, DEFAULTS.failurePolicy);
    assert.equal(fromDefaults.job, 'other');
    assert.equal(fromDefaults.stateDir, STATE);
    assert.equal(fromDefaults.configSource, 'test');
  });

  for (const [what, snapshotTimeout, budget, expected] of [
    ['a snapshot timeout longer than the budget is cut to the budget', '5s', '2s', 2000],
    ['a snapshot timeout within the budget stays', '1500ms', '2s', 1500],
    ['no snapshot timeout (the step default, an hour): the budget', undefined, '3s', 3000],
  ] as const) {
    test(`the in-window snapshot is bounded by the budget: ${what}`, () => {
      const p = planOf(
        fullConfig({
          job: { budget },
          guest: {
            snapshot: { provider: 'command', argv: ['snap'], ...(snapshotTimeout ? { timeout: snapshotTimeout } : {}) },
          },
        }),
      );
      for (const g of p.units.flatMap((u) => u.guests)) assert.equal(g.snapshot.timeoutMs, expected, g.name);
    });
  }

  test('a QMP copy runs after the thaw: its timeout is not cut to the budget; QMP timeouts come from the guest', () => {
    const p = planOf(
      fullConfig({
        guest: {
          snapshot: { provider: 'qmp', socket: '/run/qmp.sock', target: '/b/{guest}-{disk}.img', timeout: '1h' },
          timeouts: { connect: '3s', command: '4s' },
        },
      }),
    );
    const s = guestPlan(p, 'a').snapshot;
    assert.equal(s.provider, 'qmp');
    assert.equal(s.timeoutMs, 3_600_000);
    assert.equal(s.provider === 'qmp' && s.target, '/b/a-{disk}.img', '{disk} is left for when the disks are known');
    assert.equal(s.provider === 'qmp' && s.connectTimeoutMs, 3000);
    assert.equal(s.provider === 'qmp' && s.commandTimeoutMs, 4000);
  });

  for (const [what, timeouts, hookMs] of [
    ['the default command timeout', undefined, DEFAULTS.timeouts.commandMs * DEFAULTS.hookTimeoutFactor],
    ["the guest's command timeout", { command: '2s' }, 2000 * DEFAULTS.hookTimeoutFactor],
    ['the defaults section', 'defaults', 3000 * DEFAULTS.hookTimeoutFactor],
  ] as const) {
    test(`hooks get ${DEFAULTS.hookTimeoutFactor}x the agent command timeout (${what}); notify gets DEFAULTS.notifyMs`, () => {
      const config = testConfig({
        stateDir: STATE,
        guests: {
          a: {
            hooks: { pre: [['pre']], post: [['post1'], ['post2']] },
            timeouts: timeouts === 'defaults' ? undefined : timeouts,
          },
        },
        jobs: { j: { guests: ['a'], notify: ['n'] } },
        ...(timeouts === 'defaults' ? { defaults: { timeouts: { command: '3s' } } } : {}),
      });
      const p = planOf(config, 'j');
      const g = guestPlan(p, 'a');
      assert.deepEqual(
        [...g.preHooks, ...g.postHooks].map((h) => h.timeoutMs),
        [hookMs, hookMs, hookMs],
      );
      assert.equal(p.notify?.timeoutMs, DEFAULTS.notifyMs);
    });
  }

  test('backup and verify keep their own timeouts, or the step default', () => {
    const g = guestPlan(planOf(fullConfig()), 'a');
    assert.equal(g.backup?.timeoutMs, 2 * 3_600_000);
    assert.equal(g.verify?.timeoutMs, DEFAULTS.stepMs);
  });

  test('steps a guest does not configure are absent: no hooks, backup, verify, prune or notify', () => {
    const p = planOf(testConfig({ stateDir: STATE, guests: { a: {} }, jobs: { j: { guests: ['a'] } } }), 'j');
    const g = guestPlan(p, 'a');
    assert.deepEqual([g.preHooks, g.postHooks], [[], []]);
    assert.equal(g.backup, undefined);
    assert.equal(g.verify, undefined);
    assert.equal(g.prune, undefined);
    assert.equal(p.notify, undefined);
  });

  test('notify is filled with the job and run, and an empty guest', () => {
    const p = planOf(fullConfig({ job: { notify: ['notify', '{job}', '{runId}', '[{guest}]'] } }));
    assert.deepEqual(p.notify?.argv, ['notify', 'nightly', RUN, '[]']);
  });

  for (const [connector, address] of [
    [{ type: 'socket', path: '/run/g.sock' }, 'unix:/run/g.sock'],
    [{ type: 'tcp', host: 'h', port: 4444 }, 'tcp:h:4444'],
    [{ type: 'libvirt', domain: 'vm1', uri: 'qemu:///system' }, 'libvirt:qemu:///system/vm1'],
    [{ type: 'libvirt', domain: 'vm1' }, 'libvirt:default/vm1'],
  ] as const) {
    test(`a ${connector.type} connector is addressed as ${address}; freeze, timeouts and reply limit come from the guest`, () => {
      const p = planOf(
        testConfig({
          stateDir: STATE,
          guests: { a: { connector, freeze: ['/x'], maxReplyBytes: 4096, timeouts: { freeze: '7s' } } },
          jobs: { j: { guests: ['a'] } },
        }),
        'j',
      );
      const g = guestPlan(p, 'a');
      assert.equal(g.address, address);
      assert.deepEqual(g.freeze, ['/x']);
      assert.equal(g.maxReplyBytes, 4096);
      assert.equal(g.timeouts.freezeMs, 7000);
      assert.equal(g.timeouts.thawMs, DEFAULTS.timeouts.thawMs);
    });
  }

  for (const [what, jobs, message] of [
    [
      'names the job, the file and the jobs there are',
      true,
      /^no job named 'nope' in \/etc\/q\.yaml \(jobs: nightly, other\)$/,
    ],
    ['says so plainly when the file has no jobs', false, /^no job named 'nope' in \/etc\/q\.yaml$/],
  ] as const) {
    test(`an unknown job is a CONFIG error that ${what}`, () => {
      const config = testConfig(
        {
          stateDir: STATE,
          guests: { c: {} },
          jobs: jobs ? { nightly: { guests: ['c'] }, other: { guests: ['c'] } } : {},
        },
        '/etc/q.yaml',
      );
      assert.throws(
        () => plan(config, 'nope', { runId: RUN, now: NOW }),
        (err: unknown) => err instanceof QuiesceError && err.code === 'CONFIG' && message.test(err.message),
      );
    });
  }
});

describe('newRunId()', () => {
  test('is the UTC timestamp and six random hex digits: sortable by time, distinct within a second', () => {
    const ids = new Set(Array.from({ length: 20 }, () => newRunId(NOW)));
    for (const id of ids) assert.match(id, /^20261125T054700Z-[0-9a-f]{6}$/);
    assert.ok(ids.size > 1);
  });
});

const fullPlan = planOf(fullConfig());
const fullPlanText = await formatPlan(fullPlan);

describe('formatPlan()', () => {
  const planned = fullPlan;
  const text = fullPlanText;
  const lines = text.split('\n');

  test('opens with the job, run, source, budget, concurrency, failure policy and state dir; ends with a newline', () => {
    assert.deepEqual(lines.slice(0, 2), [
      `job nightly (run ${RUN}) from test`,
      `budget 2s frozen per unit, concurrency ${DEFAULTS.concurrency}, on failure: fail, state in ${STATE}`,
    ]);
    assert.ok(text.endsWith('\n') && !text.endsWith('\n\n'));
  });

  test('a group is announced once and its members’ steps are prefixed with their names and numbered per guest', () => {
    const start = lines.indexOf('consistency group group1:a+b: freeze all, snapshot all, thaw all in reverse order');
    assert.ok(start > 0, text);
    assert.equal(lines[start - 1], '', 'a blank line between units');
    const a = lines.filter((l) => l.startsWith('  [a] '));
    const b = lines.filter((l) => l.startsWith('  [b] '));
    assert.equal(a.length, b.length);
    assert.deepEqual(
      a.map((l) => /^ {2}\[a\] (\d+)\. /.exec(l)?.[1]),
      a.map((_l, i) => String(i + 1)),
    );
  });

  test('every step of a guest, in the order run() takes them, with resolved argv and timeouts', () => {
    const c = lines.slice(lines.indexOf('guest c') + 1).filter((l) => /^ {2}\d+\. /.test(l));
    const addr = guestPlan(planned, 'c').address;
    assert.deepEqual(c, [
      `  1. connect ${addr} and sync (timeout 300ms)`,
      '  2. preflight: freeze commands enabled, status thawed, mountpoints exist',
      '  3. pre-hook: pre c nightly (timeout 1200ms)',
      '  4. freeze all filesystems (timeout 1s) — budget 2s starts',
      `  5. snapshot (command): snap c-20261125T054700Z 2026-11-25 ${STATE} '{lit}' (timeout 2s)`,
      '  6. thaw (timeout 200ms, retried), prove: status thawed and thaw count = freeze count',
      `  7. backup: backup /b/c/${RUN} (timeout 7200s)`,
      `  8. verify: verify c (timeout ${DEFAULTS.stepMs / 1000}s)`,
      '  9. prune /b/c-*: keep last 3, daily 0, weekly 0',
      `  10. post-hook: post ${RUN} (timeout 1200ms)`,
    ]);
  });

  test('a freeze list names its mountpoints; notify comes last after a blank line', () => {
    assert.ok(
      lines.some((l) => l.startsWith('  [a] 4. freeze /srv, /var/lib/db (timeout 1s)')),
      text,
    );
    assert.deepEqual(lines.slice(-3), ['', `notify: notify nightly ${RUN}`, '']);
  });

  test('arguments a shell would split or expand are quoted, and a quote inside is escaped', async () => {
    const t = await formatPlan(
      planOf(
        testConfig({
          stateDir: STATE,
          guests: { a: { hooks: { pre: [['echo', 'two words', "it's", '$HOME', 'plain-arg_1.0/x=y']] } } },
          jobs: { j: { guests: ['a'] } },
        }),
        'j',
      ),
    );
    assert.match(t, /pre-hook: echo 'two words' 'it'\\''s' '\$HOME' plain-arg_1\.0\/x=y \(timeout 1200ms\)/);
  });
});
