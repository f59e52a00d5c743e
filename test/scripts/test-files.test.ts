import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
// @ts-expect-error: a plain .mjs script without type declarations
import { parseSummary } from '../../scripts/test-files.mjs';

type Run = { status: number | null; out: string };

const SCRIPT = new URL('../../scripts/test-files.mjs', import.meta.url).href;

/** Runs fixture files through runTestFiles in a process of its own, its stdout captured. */
function run(files: string[], idleMs = 60_000): Run {
  const code = `const m = await import(${JSON.stringify(SCRIPT)}); process.exitCode = await m.runTestFiles(${JSON.stringify(files)}, { idleMs: ${idleMs} });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout };
}

const SUMMARY = '# tests 2\n# suites 0\n# pass 1\n# fail 0\n# cancelled 0\n# skipped 1\n# todo 0\n# duration_ms 3.5\n';

describe('parseSummary', () => {
  it('reads the counts of the top-level summary, not indented lines', () => {
    assert.deepEqual(parseSummary(`ok 1 - a\n    # tests 9\nok 2 - b # SKIP why\n${SUMMARY}`), {
      tests: 2,
      suites: 0,
      pass: 1,
      fail: 0,
      cancelled: 0,
      skipped: 1,
      todo: 0,
      duration_ms: 3.5,
    });
  });
  it('is null when the summary is cut short', () => {
    assert.equal(parseSummary(`ok 1 - a\nok 2 - b\n${SUMMARY.split('# duration_ms')[0]}`), null);
    assert.equal(parseSummary('ok 1 - a\n'), null);
  });
  it('is null when results are missing from the report', () => {
    assert.equal(parseSummary(`ok 1 - a\n${SUMMARY}`), null);
  });
});

describe('runTestFiles', () => {
  let dir: string;
  const file = (name: string, body: string) => {
    const path = join(dir, name);
    writeFileSync(path, `import { test } from 'node:test';\n${body}\n`);
    return path;
  };
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'quiesce-test-files-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('adds up the files and passes when every file passes', () => {
    const a = file('a.mjs', "test('one', () => {}); test('two', () => {});");
    const b = file('b.mjs', "test('three', () => {}); test('skipped', { skip: 'why' }, () => {});");
    const r = run([a, b]);
    assert.equal(r.status, 0);
    assert.match(r.out, /^# files 2\n# tests 4\n# suites 0\n# pass 3\n# fail 0\n# cancelled 0\n# skipped 1\n/m);
    assert.doesNotMatch(r.out, /FAILED/);
  });

  it('fails and names the file when a test fails', () => {
    const a = file('ok.mjs', "test('one', () => {});");
    const b = file('bad.mjs', "test('broken', () => { throw new Error('no'); });");
    const r = run([a, b]);
    assert.equal(r.status, 1);
    assert.match(r.out, /^# fail 1$/m);
    assert.match(r.out, new RegExp(`^# FAILED ${b}: 1 failed`, 'm'));
  });

  it('fails when a file exits before its summary', () => {
    const a = file('exits.mjs', "test('one', () => {}); test('exits', () => { process.exit(0); });");
    const r = run([a]);
    assert.equal(r.status, 1);
    assert.match(r.out, new RegExp(`^# FAILED ${a}: no summary \\(exit 0\\)`, 'm'));
  });

  it('counts tests registered after a top-level await', () => {
    const a = file(
      'late.mjs',
      "test('early', () => {}); await new Promise((r) => setTimeout(r, 300)); test('late', () => {});",
    );
    const r = run([a]);
    assert.equal(r.status, 0);
    assert.match(r.out, /^# tests 2$/m);
  });

  it('ends a file that stays alive after its last test, fails the run and names the file', () => {
    const a = file('leaks.mjs', "test('leaks a timer', () => { setInterval(() => {}, 1000); });");
    const started = Date.now();
    const r = run([a], 1500);
    assert.ok(Date.now() - started < 30_000);
    assert.equal(r.status, 1);
    assert.match(r.out, new RegExp(`^# FAILED ${a}: reported nothing for 1.5 s and was ended`, 'm'));
  });
});
