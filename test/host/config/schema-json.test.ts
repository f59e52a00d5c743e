import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv } from 'ajv';
import { cosmiconfig } from 'cosmiconfig';
import fc from 'fast-check';
import {
  configJsonSchema,
  configJsonSchemaText,
  DURATION_PATTERN,
  SCHEMA_FILE,
} from '../../../scripts/gen-config-schema.js';
import { ConfigError, resolveConfig } from '../../../src/config/load.js';
import { parseDuration } from '../../../src/config/duration.js';

const CONFIG_DIR = new URL('../../../config/', import.meta.url).pathname;
const EXAMPLES = readdirSync(CONFIG_DIR)
  .filter((f) => /\.ya?ml$/.test(f))
  .map((f) => join(CONFIG_DIR, f));

const ajv = new Ajv({ allErrors: true, strict: true });
const validate = ajv.compile(JSON.parse(readFileSync(SCHEMA_FILE, 'utf8')) as object);

function schemaErrors(raw: unknown): string[] {
  return validate(raw) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message}`);
}

function resolveProblems(raw: unknown): string[] {
  try {
    resolveConfig(raw, 'f.yaml', {});
    return [];
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return [...err.problems];
  }
}

test('config/quiesce.schema.json is what scripts/gen-config-schema.ts generates now (run it after changing src/config/schema.ts)', async () => {
  const committed = readFileSync(SCHEMA_FILE, 'utf8');
  assert.deepEqual(JSON.parse(committed), configJsonSchema());
  // The same formatting too, so `prettier --check .` and a regeneration never disagree.
  assert.equal(committed, await configJsonSchemaText());
});

test('every example config names the schema on its first line and passes both the JSON schema and resolveConfig', async () => {
  assert.ok(EXAMPLES.length > 0, 'no config/*.yaml found');
  const explorer = cosmiconfig('quiesce');
  for (const file of EXAMPLES) {
    assert.equal(
      readFileSync(file, 'utf8').split('\n')[0],
      '# yaml-language-server: $schema=./quiesce.schema.json',
      file,
    );
    const loaded = await explorer.load(file);
    assert.ok(loaded, file);
    assert.deepEqual(schemaErrors(loaded.config), [], file);
    assert.deepEqual(resolveProblems(loaded.config), [], file);
  }
});

const guest = (extra: Record<string, unknown> = {}) => ({
  connector: { type: 'socket', path: '/run/a.sock' },
  freeze: 'all',
  snapshot: { provider: 'command', argv: ['true'] },
  ...extra,
});
const config = (extra: Record<string, unknown> = {}, g: Record<string, unknown> = {}) => ({
  stateDir: '/tmp/q',
  guests: { a: guest(g) },
  jobs: { j: { guests: ['a'] } },
  ...extra,
});

test('a minimal config passes both', () => {
  assert.deepEqual(schemaErrors(config()), []);
  assert.deepEqual(resolveProblems(config()), []);
});

// What the JSON schema can say: shapes, enums, patterns, integer ranges, required and unknown keys.
const rejectedByBoth: [string, unknown][] = [
  ['no guests key', { stateDir: '/tmp/q' }],
  ['an unknown top-level key', config({ stateDirectory: '/tmp/q' })],
  ['a relative stateDir', config({ stateDir: 'var/lib/quiesce' })],
  ['an unknown connector type', config({}, { connector: { type: 'ssh', host: 'h' } })],
  ['a TCP port above 65535', config({}, { connector: { type: 'tcp', host: 'h', port: 70000 } })],
  ['an empty freeze list', config({}, { freeze: [] })],
  ['freeze: "everything"', config({}, { freeze: 'everything' })],
  ['a snapshot argv that is empty', config({}, { snapshot: { provider: 'command', argv: [] } })],
  ['a budget that is not a duration', config({ defaults: { budget: '10 sec' } })],
  ['a negative timeout', config({}, { timeouts: { thaw: -5 } })],
  ['a guest name with a space', { stateDir: '/tmp/q', guests: { 'web 01': guest() } }],
  ['a consistency group of one guest', config({ jobs: { j: { groups: [['a']] } } })],
  ['concurrency 0', config({ defaults: { concurrency: 0 } })],
  ['an unknown qmp format', config({}, { snapshot: { provider: 'qmp', socket: '/q', target: '/b', format: 'vmdk' } })],
];

for (const [what, raw] of rejectedByBoth) {
  test(`rejected by the JSON schema and by resolveConfig: ${what}`, () => {
    assert.notDeepEqual(schemaErrors(raw), [], 'the JSON schema accepted it');
    assert.notDeepEqual(resolveProblems(raw), [], 'resolveConfig accepted it');
  });
}

// Where the JSON schema is looser: zod refinements, transforms with ranges and resolveConfig's
// cross-key checks have no JSON Schema form. An editor shows no error; `quiesce plan` does.
const onlyResolveRejects: [string, unknown][] = [
  // durationIn(range): ranges differ per setting and the string's unit varies.
  ['a zero budget (durations are above 0)', config({ defaults: { budget: '0s' } })],
  ['a budget above 24h', config({ jobs: { j: { guests: ['a'], budget: '25h' } } })],
  ['a step timeout above 7d', config({}, { backup: { argv: ['cp'], timeout: '8d' } })],
  // superRefine / refine.
  ['a mountpoint listed twice', config({}, { freeze: ['/var', '/var/'] })],
  ['a prune that keeps nothing', config({}, { prune: { dir: '/b', match: 'a-*' } })],
  [
    'a disk listed twice',
    config({}, { snapshot: { provider: 'qmp', socket: '/q', disks: ['vda', 'vda'], target: '/b/{disk}' } }),
  ],
  // resolveConfig: references between keys, placeholders, connector-dependent rules.
  ['a job naming an unknown guest', config({ jobs: { j: { guests: ['nope'] } } })],
  ['a job with no guests and no groups', config({ jobs: { j: {} } })],
  ['a guest both alone and in a group', { ...config(), jobs: { j: { guests: ['a'], groups: [['a', 'a']] } } }],
  ['an unknown placeholder', config({}, { snapshot: { provider: 'command', argv: ['snap', '{host}'] } })],
  [
    'qmp disks "all" without {disk} in the target',
    config({}, { snapshot: { provider: 'qmp', socket: '/q', target: '/b/x.img' } }),
  ],
  ['freeze: all with a local connector', config({}, { connector: { type: 'local' } })],
];

for (const [what, raw] of onlyResolveRejects) {
  test(`looser JSON schema: accepts what resolveConfig rejects: ${what}`, () => {
    assert.deepEqual(schemaErrors(raw), []);
    assert.notDeepEqual(resolveProblems(raw), []);
  });
}

test('the schema duration pattern accepts exactly the strings parseDuration reads', () => {
  const pattern = new RegExp(DURATION_PATTERN);
  const agrees = (s: string) => pattern.test(s) === (parseDuration(s) !== undefined);
  const piece = fc.constantFrom('', ' ', '-', '.', '0', '1', '10', '2.5', '007', 'ms', 's', 'm', 'h', 'd', 'x', 'sec');
  fc.assert(fc.property(fc.array(piece, { maxLength: 5 }), (parts) => agrees(parts.join(''))));
  fc.assert(fc.property(fc.string({ maxLength: 12 }), agrees));
  for (const s of ['10', '10s', ' 500ms ', '2m', '1h', '7d', '1.5h']) assert.ok(pattern.test(s), s);
  for (const s of ['10 sec', '-1s', '1e3', '', '1.s', 'h']) assert.ok(!pattern.test(s), s);
});
