import { test } from 'node:test';
import assert from 'node:assert/strict';
import childProcess from 'node:child_process';
import net from 'node:net';
import { syncBuiltinESMExports } from 'node:module';
import fc from 'fast-check';
import { ConfigError, resolveConfig } from '../../../src/config/load.js';
import { DURATION_RANGES } from '../../../src/config/duration.js';
import { describeConnector } from '../../../src/config/connector.js';
import { QuiesceError } from '../../../src/errors.js';
import { plan, type Plan } from '../../../src/workflow/plan.js';
import type { ResolvedConfig } from '../../../src/config/types.js';

const NUM_RUNS = 300;

/** Nothing under it exists on the host, so the local guest's freeze list touches nothing quiesce writes. */
const NOWHERE = '/nonexistent-quiesce-property';

/** A valid config using every connector, both snapshot providers, a group and every duration key. */
function valid(): Record<string, unknown> {
  return {
    stateDir: `${NOWHERE}/state`,
    metricsFile: `${NOWHERE}/q.prom`,
    lockWait: '5s',
    defaults: {
      budget: '10s',
      concurrency: 2,
      timeouts: { connect: '5s', freeze: '60s', thaw: '30s', command: '10s', step: '1h' },
    },
    guests: {
      a: {
        connector: { type: 'socket', path: '/run/a.sock' },
        freeze: ['/', '/var'],
        hooks: { pre: [['flush', '{guest}']], post: [] },
        snapshot: { provider: 'command', argv: ['lvcreate', '{guest}-{timestamp}'], timeout: '5s' },
        backup: { argv: ['copy', '/b/{guest}-{runId}.img'], timeout: '2h' },
        verify: { argv: ['verify', '/b/{guest}-{runId}.img'], timeout: '10m' },
        prune: { dir: '/b', match: '{guest}-*.img', keepLast: 3 },
        timeouts: { connect: '3s', freeze: '30s', thaw: '20s', command: '5s', step: '3h' },
      },
      b: {
        connector: { type: 'tcp', host: '192.0.2.1', port: 4444 },
        freeze: 'all',
        snapshot: { provider: 'qmp', socket: '/run/b/qmp.sock', target: '/b/{guest}-{disk}.img', timeout: '1h' },
      },
      c: {
        connector: { type: 'libvirt', domain: 'c', uri: 'qemu:///system' },
        freeze: ['/data'],
        snapshot: { provider: 'command', argv: ['virsh', 'snapshot-create-as', '{guest}'] },
      },
      l: {
        connector: { type: 'local' },
        freeze: [`${NOWHERE}/mnt`],
        snapshot: { provider: 'command', argv: ['true'] },
      },
    },
    jobs: {
      nightly: { guests: ['a', 'l'], groups: [['b', 'c']], budget: '10s', notify: ['notify', '{job}', '{runId}'] },
      weekly: { guests: ['c'], budget: 60 },
    },
  };
}

type Path = (string | number)[];
type Json = Record<string | number, unknown>;

function isContainer(v: unknown): v is Json {
  return typeof v === 'object' && v !== null;
}

/** Every key path in the object (objects and arrays), deepest last. */
function paths(v: unknown, at: Path = []): Path[] {
  if (!isContainer(v)) return [];
  return Object.keys(v).flatMap((k) => {
    const key = Array.isArray(v) ? Number(k) : k;
    return [[...at, key], ...paths(v[key], [...at, key])];
  });
}

function get(v: unknown, path: Path): unknown {
  return path.reduce<unknown>((o, k) => (isContainer(o) ? o[k] : undefined), v);
}

/** Sets a value, creating objects on the way (a mutation may add a key path that was absent). */
function set(v: Json, path: Path, value: unknown): void {
  let o: Json = v;
  for (const k of path.slice(0, -1)) {
    if (!isContainer(o[k])) o[k] = {};
    o = o[k] as Json;
  }
  o[path.at(-1)!] = value;
}

function remove(v: Json, path: Path): void {
  const parent = get(v, path.slice(0, -1));
  const k = path.at(-1)!;
  if (Array.isArray(parent) && typeof k === 'number') parent.splice(k, 1);
  else if (isContainer(parent)) delete parent[k];
}

const DURATION_KEYS: Path[] = [
  ['lockWait'],
  ['defaults', 'budget'],
  ...['connect', 'freeze', 'thaw', 'command', 'step'].flatMap((t): Path[] => [
    ['defaults', 'timeouts', t],
    ['guests', 'a', 'timeouts', t],
    ['guests', 'c', 'timeouts', t],
  ]),
  ['guests', 'a', 'snapshot', 'timeout'],
  ['guests', 'a', 'backup', 'timeout'],
  ['guests', 'a', 'verify', 'timeout'],
  ['guests', 'b', 'snapshot', 'timeout'],
  ['jobs', 'nightly', 'budget'],
  ['jobs', 'weekly', 'budget'],
];

const anyDuration: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(
    0,
    -1,
    -0.5,
    1e300,
    Infinity,
    -Infinity,
    Number.NaN,
    '0',
    '0s',
    '-5s',
    '1000h',
    '8d',
    '25h',
    'NaN',
    'Infinity',
    '1e300',
    '',
    'soon',
    '1ms',
    '24h',
    '7d',
    '2147483647ms',
  ),
  fc.double(),
  fc.integer({ min: -1_000_000, max: 10_000_000 }),
  fc.tuple(fc.nat({ max: 100_000 }), fc.constantFrom('ms', 's', 'm', 'h', 'd', '', ' s')).map(([n, u]) => `${n}${u}`),
);

const wrongType: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(null, true, false, [], {}, 'all', '', '/abs', 'rel/path'),
  fc.integer(),
  fc.string({ maxLength: 6 }),
  fc.array(fc.string({ maxLength: 4 }), { maxLength: 2 }),
);

const GUESTS = ['a', 'b', 'c', 'l'] as const;
const guestName = fc.constantFrom(...GUESTS);

/** One change to a config; applied in place. */
type Mutation = { readonly name: string; apply(c: Json): void };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.nat().map((i) => ({
    name: `remove key #${i}`,
    apply(c: Json) {
      const all = paths(c);
      if (all.length) remove(c, all[i % all.length]!);
    },
  })),
  fc.tuple(fc.constantFrom(...DURATION_KEYS), anyDuration).map(([path, value]) => ({
    name: `${path.join('.')} = ${typeof value === 'string' ? JSON.stringify(value) : String(value)}`,
    apply: (c: Json) => set(c, path, value),
  })),
  guestName.map((g) => ({
    name: `duplicate a mountpoint of ${g}`,
    apply(c: Json) {
      const f = get(c, ['guests', g, 'freeze']);
      if (Array.isArray(f) && f.length) f.push(`${f[0]}/`);
    },
  })),
  fc.tuple(fc.nat(), fc.constantFrom('stateDri', 'timeout_s', 'frezze', 'extra')).map(([i, key]) => ({
    name: `unknown key ${key} in object #${i}`,
    apply(c: Json) {
      const objects = [[], ...paths(c)].filter((p) => {
        const v = get(c, p);
        return isContainer(v) && !Array.isArray(v);
      });
      set(c, [...objects[i % objects.length]!, key], 'x');
    },
  })),
  fc
    .tuple(guestName, fc.constantFrom('{nope1}', '{a_b}', '{gest}', '{Guest}', '{1}', '{print $1}', '{}'))
    .map(([g, token]) => ({
      name: `placeholder ${token} in ${g}'s snapshot`,
      apply(c: Json) {
        const argv = get(c, ['guests', g, 'snapshot', 'argv']);
        if (Array.isArray(argv)) argv.push(`/x/${token}`);
        else set(c, ['guests', g, 'snapshot', 'target'], `/x/{disk}${token}`);
      },
    })),
  fc.tuple(guestName, guestName).map(([from, to]) => ({
    name: `${to} takes ${from}'s connector`,
    apply(c: Json) {
      const conn = get(c, ['guests', from, 'connector']);
      if (isContainer(conn)) set(c, ['guests', to, 'connector'], structuredClone(conn));
    },
  })),
  fc.tuple(guestName, fc.constantFrom('nightly', 'weekly')).map(([g, job]) => ({
    name: `${g} also listed alone in ${job}`,
    apply(c: Json) {
      const list = get(c, ['jobs', job, 'guests']);
      if (Array.isArray(list)) list.push(g);
      else set(c, ['jobs', job, 'guests'], [g]);
    },
  })),
  guestName.map((g) => ({
    name: `${g} freezes all`,
    apply: (c: Json) => set(c, ['guests', g, 'freeze'], 'all'),
  })),
  fc.tuple(fc.nat(), wrongType).map(([i, value]) => ({
    name: `key #${i} = ${JSON.stringify(value)}`,
    apply(c: Json) {
      const all = paths(c);
      if (all.length) set(c, all[i % all.length]!, value);
    },
  })),
);

const mutations = fc.array(mutation, { minLength: 1, maxLength: 4 });

function mutated(ms: readonly Mutation[]): Json {
  const c = valid() as Json;
  for (const m of ms) m.apply(c);
  return c;
}

/** Every problem starts with the key path it concerns. */
const KEY_PATH = /^(\(top level\)|(stateDir|metricsFile|lockWait|defaults|guests|jobs|stdout|stderr)([.[][^:]*)?): \S/;

type Outcome = { config: ResolvedConfig; plans: Plan[] } | { error: ConfigError };

function attempt(raw: unknown): Outcome {
  try {
    const config = resolveConfig(raw, 'p.yaml', {});
    const now = new Date('2026-11-25T05:47:00Z');
    return { config, plans: [...config.jobs.keys()].map((j) => plan(config, j, { runId: 'r1', now })) };
  } catch (err) {
    // Pure validation: a CONFIG error or a bug, never an I/O or agent error.
    if (err instanceof ConfigError) return { error: err };
    if (err instanceof QuiesceError && err.code === 'CONFIG')
      assert.fail(`plan() refused a resolved config: ${err.message}`);
    throw err;
  }
}

/** Checks every limit a run relies on: the timers it arms and what it would freeze. */
function assertWithinRanges(config: ResolvedConfig, plans: readonly Plan[]): void {
  const inRange = (what: string, ms: number, r: { min: number; max: number }) =>
    assert.ok(Number.isInteger(ms) && ms >= r.min && ms <= r.max, `${what} = ${ms}`);
  inRange('lockWaitMs', config.lockWaitMs, DURATION_RANGES.lockWait);
  for (const p of plans) {
    inRange(`${p.job}.budgetMs`, p.budgetMs, DURATION_RANGES.budget);
    const addresses = new Set<string>();
    const names = new Set<string>();
    for (const u of p.units)
      for (const g of u.guests) {
        assert.ok(!names.has(g.name), `${g.name} planned twice in ${p.job}`);
        names.add(g.name);
        assert.ok(!addresses.has(g.address), `${g.address} planned twice in ${p.job}`);
        addresses.add(g.address);
        assert.equal(g.address, describeConnector(g.connector));
        for (const [k, ms] of Object.entries(g.timeouts)) inRange(`${g.name}.${k}`, ms, DURATION_RANGES.agent);
        inRange(`${g.name}.snapshot`, g.snapshot.timeoutMs, DURATION_RANGES.step);
        if (g.snapshot.provider === 'command') assert.ok(g.snapshot.timeoutMs <= p.budgetMs);
        for (const s of [g.backup, g.verify, ...g.preHooks, ...g.postHooks])
          if (s) assert.ok(s.timeoutMs >= 1 && s.timeoutMs <= 2_147_483_647, `${g.name} step ${s.timeoutMs}`);
        for (const s of [g.backup, g.verify]) if (s) inRange(`${g.name} step`, s.timeoutMs, DURATION_RANGES.step);
        if (g.freeze === 'all') assert.notEqual(g.connector.kind, 'local');
        else {
          assert.ok(g.freeze.length > 0);
          assert.equal(new Set(g.freeze).size, g.freeze.length);
        }
        // Only a qmp target keeps {disk}, filled once QEMU lists the disks.
        const templates =
          g.snapshot.provider === 'command' ? g.snapshot.argv : [(g.snapshot.target ?? '').replace('{disk}', '')];
        for (const a of templates) assert.doesNotMatch(a, /\{[A-Za-z0-9_]+\}/, `unfilled placeholder in ${a}`);
      }
    // The agent's watchdog is armed at budget + 30 s, within its 1..2147483 s.
    assert.ok((p.budgetMs + 30_000) / 1000 <= 2_147_483);
  }
}

/** Fails the test if anything tries to reach a guest or run a program while `fn` runs. */
function withoutContact<T>(fn: () => T): T {
  const contacts: string[] = [];
  const patched: [object, string, unknown][] = [];
  const trap = (o: Record<string, unknown>, names: string[]) => {
    for (const n of names) {
      patched.push([o, n, o[n]]);
      o[n] = (...args: unknown[]) => {
        contacts.push(`${n}(${JSON.stringify(args[0])})`);
        throw new Error(`${n} called during validation`);
      };
    }
  };
  trap(net as unknown as Record<string, unknown>, ['connect', 'createConnection']);
  trap(childProcess as unknown as Record<string, unknown>, ['spawn', 'spawnSync', 'execFile', 'execFileSync', 'exec']);
  // ESM named imports of builtins follow the patched functions only after this.
  syncBuiltinESMExports();
  try {
    return fn();
  } finally {
    for (const [o, n, f] of patched) (o as Record<string, unknown>)[n] = f;
    syncBuiltinESMExports();
    assert.deepEqual(contacts, [], 'validation contacted something');
  }
}

test('the base config of the property tests is valid and plans every job', () => {
  const r = attempt(valid());
  assert.ok('config' in r, 'error' in r ? r.error.message : '');
  assert.equal(r.plans.length, 2);
  assertWithinRanges(r.config, r.plans);
});

test('any mutation of a valid config is refused with key paths, or plans within every range', () => {
  let refused = 0;
  withoutContact(() =>
    fc.assert(
      fc.property(mutations, (ms) => {
        const r = attempt(mutated(ms));
        if ('error' in r) {
          refused++;
          assert.equal(r.error.file, 'p.yaml');
          assert.equal(r.error.code, 'CONFIG');
          assert.ok(r.error.problems.length > 0);
          for (const p of r.error.problems) assert.match(p, KEY_PATH);
        } else {
          assertWithinRanges(r.config, r.plans);
        }
      }),
      { numRuns: NUM_RUNS },
    ),
  );
  // Both outcomes happen: the mutations are not all fatal.
  assert.ok(refused > 0 && refused < NUM_RUNS, `${refused} of ${NUM_RUNS} refused`);
});

test('each kind of bad input is refused naming the key it concerns', () => {
  const rows: [string, (c: Json) => void, RegExp][] = [
    ['missing freeze', (c) => remove(c, ['guests', 'c', 'freeze']), /^guests\.c\.freeze: required/],
    ['zero budget', (c) => set(c, ['jobs', 'weekly', 'budget'], 0), /^jobs\.weekly\.budget: must be between/],
    ['huge timeout', (c) => set(c, ['guests', 'a', 'timeouts', 'thaw'], 1e300), /^guests\.a\.timeouts\.thaw: must be/],
    [
      'duplicated mountpoint',
      (c) => set(c, ['guests', 'a', 'freeze'], ['/', '/']),
      /^guests\.a\.freeze\[1\]: \/ is listed twice/,
    ],
    ['unknown key', (c) => set(c, ['guests', 'b', 'frezze'], 'all'), /^guests\.b: unknown key\(s\) 'frezze'/],
    [
      'unknown placeholder',
      (c) => set(c, ['jobs', 'nightly', 'notify'], ['n', '{job_id}']),
      /^jobs\.nightly\.notify\[1\]: unknown placeholder \{job_id\}/,
    ],
    [
      'shared address',
      (c) => set(c, ['guests', 'c', 'connector'], { type: 'tcp', host: '192.0.2.1', port: 4444 }),
      /^jobs\.nightly\.groups\[0\]\[1\]: guests 'b' and 'c' share/,
    ],
    [
      'solo and grouped',
      (c) => set(c, ['jobs', 'nightly', 'guests'], ['a', 'b']),
      /^jobs\.nightly\.guests\[1\]: guest 'b' is also in groups\[0\]/,
    ],
    ['wrong type', (c) => set(c, ['defaults', 'concurrency'], 'four'), /^defaults\.concurrency: Expected number/],
    [
      'local freezes all',
      (c) => set(c, ['guests', 'l', 'freeze'], 'all'),
      /^guests\.l\.freeze: "all" is refused for a local connector/,
    ],
  ];
  for (const [what, change, re] of rows) {
    const c = valid() as Json;
    change(c);
    const r = attempt(c);
    assert.ok('error' in r, `${what} was accepted`);
    assert.ok(
      r.error.problems.some((p) => re.test(p)),
      `${what}: ${JSON.stringify(r.error.problems)}`,
    );
  }
});

test('durations anywhere in their ranges are accepted and planned as given', () => {
  const inRange = (r: { min: number; max: number }) =>
    fc.oneof(
      fc.integer({ min: Math.max(r.min, 0), max: r.max }).map((ms) => `${ms}ms`),
      fc.integer({ min: Math.ceil(r.min / 1000), max: Math.floor(r.max / 1000) }).filter((s) => s * 1000 >= r.min),
    );
  const toMs = (v: string | number) => (typeof v === 'number' ? v * 1000 : Number(v.slice(0, -2)));
  withoutContact(() =>
    fc.assert(
      fc.property(
        inRange(DURATION_RANGES.budget),
        inRange(DURATION_RANGES.agent),
        inRange(DURATION_RANGES.step),
        inRange(DURATION_RANGES.lockWait),
        (budget, thaw, step, lockWait) => {
          const c = valid() as Json;
          set(c, ['jobs', 'nightly', 'budget'], budget);
          set(c, ['guests', 'a', 'timeouts', 'thaw'], thaw);
          set(c, ['guests', 'a', 'backup', 'timeout'], step);
          set(c, ['lockWait'], lockWait);
          const r = attempt(c);
          assert.ok('config' in r, 'error' in r ? r.error.message : '');
          const p = r.plans.find((x) => x.job === 'nightly')!;
          assert.equal(p.budgetMs, toMs(budget));
          const a = p.units.flatMap((u) => u.guests).find((g) => g.name === 'a')!;
          assert.equal(a.timeouts.thawMs, toMs(thaw));
          assert.equal(a.backup!.timeoutMs, toMs(step));
          assert.equal(r.config.lockWaitMs, toMs(lockWait));
          assertWithinRanges(r.config, r.plans);
        },
      ),
      { numRuns: NUM_RUNS },
    ),
  );
});
