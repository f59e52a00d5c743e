import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EXIT, exitCodeFor, worseExit } from '../../../src/workflow/exit-code.js';
import type { GuestResult, RunError, RunReport } from '../../../src/workflow/results.js';

function guest(ok: boolean, errors: RunError[] = [], thawProven?: boolean): GuestResult {
  return {
    guest: 'g',
    address: 'a',
    unit: 'g',
    ok,
    consistency: ok ? 'filesystem' : 'none',
    ...(thawProven !== undefined ? { thawProven } : {}),
    steps: [],
    errors,
  };
}

function report(guests: GuestResult[], extra: Partial<RunReport> = {}): RunReport {
  return {
    runId: 'r',
    job: 'j',
    configSource: 'c',
    budgetMs: 10_000,
    startedAt: '',
    endedAt: '',
    durationMs: 0,
    exitCode: 0,
    recovered: [],
    errors: [],
    units: [],
    guests,
    ...extra,
  };
}

const failed: RunError = { code: 'STEP_FAILED', message: 'snapshot: boom', step: 'snapshot' };
const locked: RunError = { code: 'LOCKED', message: 'connect: in use', step: 'connect' };
const writeFailed: RunError = { code: 'REPORT_WRITE', message: 'cannot write the metrics file' };

const cases: [string, RunReport, number | undefined, number][] = [
  ['all ok', report([guest(true), guest(true)]), undefined, EXIT.OK],
  ['some failed', report([guest(true), guest(false, [failed])]), undefined, EXIT.PARTIAL],
  ['all failed', report([guest(false, [failed])]), undefined, EXIT.FAILED],
  ['all locked (by code, whatever the text)', report([guest(false, [locked])]), undefined, EXIT.LOCKED],
  ['locked and failed', report([guest(false, [locked]), guest(false, [failed])]), undefined, EXIT.FAILED],
  ['a thaw unproven beats everything', report([guest(false, [failed], false), guest(true)]), 143, EXIT.THAW_UNPROVEN],
  [
    'a failed recovery is 5',
    report([guest(true)], { recovered: [{ guest: 'x', runId: 'r', ok: false }] }),
    undefined,
    5,
  ],
  [
    'a busy record of a live run is not a failed recovery',
    report([guest(true)], { recovered: [{ guest: 'x', runId: 'r', ok: false, busy: { pid: 1 } }] }),
    undefined,
    EXIT.OK,
  ],
  ['a signal beats failures', report([guest(false, [failed])]), 130, 130],
  ['a metrics write failure makes a success 3', report([guest(true)], { errors: [writeFailed] }), undefined, 3],
  ['a write failure never hides 5', report([guest(false, [], false)], { errors: [writeFailed] }), undefined, 5],
  ['a write failure never hides a signal', report([guest(true)], { errors: [writeFailed] }), 143, 143],
  [
    'an unproven thaw recorded only as an error code is still 5',
    report([guest(false, [{ code: 'THAW_UNPROVEN', message: 'x' }])]),
    undefined,
    5,
  ],
];

for (const [title, r, signal, expected] of cases) {
  test(`exit code: ${title} → ${expected}`, () => {
    assert.equal(exitCodeFor(r, signal), expected);
  });
}

test('worseExit orders 5 above signals above 4, 3, 2, 1, 0', () => {
  const order = [0, 1, 2, 3, 4, 130, 5];
  for (let i = 0; i < order.length; i++)
    for (let j = 0; j < order.length; j++) assert.equal(worseExit(order[i]!, order[j]!), order[Math.max(i, j)]);
});
