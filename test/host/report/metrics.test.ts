import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeMetrics } from '../../../src/report/metrics.js';
import type { GuestResult, RunReport } from '../../../src/workflow/results.js';

function report(job: string, ok: boolean, endedAt: string): RunReport {
  const g: GuestResult = {
    guest: 'web"01',
    address: 'x',
    unit: 'web01',
    ok,
    consistency: ok ? 'filesystem' : 'none',
    frozenFilesystems: 1,
    thawedFilesystems: 1,
    thawProven: true,
    frozenWindowMs: 42.5,
    steps: [{ name: 'freeze', ok: true, startedAt: endedAt, durationMs: 3 }],
    errors: ok ? [] : [{ code: 'STEP_FAILED', message: 'snapshot: boom', step: 'snapshot' }],
  };
  return {
    runId: 'r',
    job,
    configSource: 'c',
    budgetMs: 10_000,
    startedAt: endedAt,
    endedAt,
    durationMs: 1,
    exitCode: ok ? 0 : 3,
    errors: [],
    recovered: [],
    units: [],
    guests: [g],
  };
}

test('metrics: textfile format, escaped labels, success time kept across a failed run, other jobs kept', () => {
  const dir = mkdtempSync(join(tmpdir(), 'metrics-'));
  const file = join(dir, 'q.prom');
  try {
    writeMetrics(file, report('nightly', true, '2026-11-25T02:30:00.000Z'));
    writeMetrics(file, report('weekly', true, '2026-11-25T03:00:00.000Z'));
    writeMetrics(file, report('nightly', false, '2026-11-26T02:30:00.000Z'));
    const text = readFileSync(file, 'utf8');
    const success = Date.parse('2026-11-25T02:30:00.000Z') / 1000;
    assert.match(
      text,
      new RegExp(`^quiesce_last_success_timestamp_seconds\\{job="nightly",guest="web\\\\"01"\\} ${success}$`, 'm'),
    );
    assert.match(text, /^quiesce_last_run_success\{job="nightly",guest="web\\"01"\} 0$/m);
    assert.match(text, /^quiesce_last_run_success\{job="weekly",guest="web\\"01"\} 1$/m);
    assert.match(text, /^quiesce_frozen_window_seconds\{job="nightly",guest="web\\"01"\} 0\.0425$/m);
    assert.match(text, /^quiesce_step_duration_seconds\{job="nightly",guest="web\\"01",step="freeze"\} 0\.003$/m);
    assert.match(text, /^quiesce_run_exit_code\{job="nightly"\} 3$/m);
    // Each metric has exactly one HELP and TYPE line.
    assert.equal(text.match(/^# TYPE quiesce_last_run_success gauge$/gm)?.length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
