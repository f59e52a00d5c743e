// Finds and runs test files for scripts/run-tests.mjs and test/helpers/run-unit-tests.mjs.
//
// Each file runs as its own `node --test-reporter=tap FILE` (through tsx), one after another, and this
// script adds up the files' summaries, checking each against the results it lists. One `node --test`
// for all files with --test-force-exit reported fewer tests than ran, with no failure and exit 0: its
// forced exit came before the report was written out (nodejs/node#64833), and it ends a file before
// tests registered after a top-level await have run. So nothing here forces an exit: a file ends when
// its event loop is empty, and its report is then complete. A file that stops reporting for a long
// time (a test that hangs, or a handle left open that keeps the process alive after its last test) is
// ended and fails the run, named; so does a file whose summary is missing or incomplete.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const COUNTS = ['tests', 'suites', 'pass', 'fail', 'cancelled', 'skipped', 'todo'];

/** Every *.test.ts under dir, sorted. */
export function findTestFiles(dir) {
  const walk = (d) =>
    readdirSync(d, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(join(d, e.name)) : e.name.endsWith('.test.ts') ? [join(d, e.name)] : [],
    );
  return walk(dir).sort();
}

/**
 * The summary of a TAP report: the last `# tests N`, `# pass N`, ... lines at the start of a line (nested
 * tests' lines are indented). Null when a line of it is missing (`# duration_ms` is the last), or when the
 * report has fewer `ok`/`not ok` lines than the summary's tests and suites: part of it was lost.
 */
export function parseSummary(text) {
  const summary = {};
  for (const m of text.matchAll(/^# (\w+) (\d+(?:\.\d+)?)$/gm)) summary[m[1]] = Number(m[2]);
  if (summary.duration_ms === undefined || COUNTS.some((k) => summary[k] === undefined)) return null;
  const results = text.match(/^ *(?:not )?ok \d+ - /gm)?.length ?? 0;
  return results === summary.tests + summary.suites ? summary : null;
}

function runFile(file, env, idleMs) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--test-reporter=tap', file], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env,
    });
    let out = '';
    let idle = false;
    const watchdog = () =>
      setTimeout(() => {
        idle = true;
        child.kill('SIGKILL');
      }, idleMs);
    let timer = watchdog();
    child.stdout.on('data', (chunk) => {
      process.stdout.write(chunk);
      out += chunk;
      clearTimeout(timer);
      timer = watchdog();
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ summary: parseSummary(out), code, signal, idle });
    });
  });
}

/**
 * Runs the files one by one; prints a total summary and returns the exit status of the run. A file that
 * writes nothing to its report for idleMs is ended.
 */
export async function runTestFiles(files, { env = process.env, idleMs = 15 * 60_000 } = {}) {
  const totals = Object.fromEntries(COUNTS.map((k) => [k, 0]));
  const failed = [];
  const started = Date.now();
  for (const file of files) {
    console.log(`# file ${file}`);
    const r = await runFile(file, env, idleMs);
    if (r.idle) {
      failed.push(
        `${file}: reported nothing for ${idleMs / 1000} s and was ended: a test hangs, or a handle left open keeps it alive after its last test`,
      );
      continue;
    }
    if (r.summary === null) {
      failed.push(`${file}: no summary (exit ${r.code ?? r.signal}): its results are incomplete`);
      continue;
    }
    for (const k of COUNTS) totals[k] += r.summary[k];
    if (r.summary.fail > 0 || r.summary.cancelled > 0)
      failed.push(`${file}: ${r.summary.fail} failed, ${r.summary.cancelled} cancelled`);
    else if (r.code !== 0) failed.push(`${file}: exit ${r.code ?? r.signal} after a passing summary`);
  }
  console.log(`# files ${files.length}`);
  for (const k of COUNTS) console.log(`# ${k} ${totals[k]}`);
  console.log(`# duration_ms ${Date.now() - started}`);
  for (const f of failed) console.log(`# FAILED ${f}`);
  return failed.length === 0 ? 0 : 1;
}
