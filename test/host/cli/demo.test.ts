import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CliContext } from '../../../src/cli/context.js';
import { runDemo } from '../../../src/cli/demo.js';
import type { RunReport } from '../../../src/workflow/results.js';
import { canLoopMount } from '../../helpers/loop-fs.js';

const STEPS = ['connect', 'preflight', 'freeze', 'snapshot', 'thaw', 'prove-thaw', 'verify', 'prune'];

test(
  'the README main job (run --demo): frozen copy of a loop-mounted ext4, verified clean, report written, unmounted after',
  { skip: canLoopMount() ? false : 'needs root for loop mounts' },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), 'demo-'));
    const out: string[] = [];
    try {
      const ctx = new CliContext({ json: true }, (text) => out.push(text));
      const code = await runDemo(ctx, dir);
      assert.equal(code, 0, out.join(''));
      const report = JSON.parse(out.join('')) as RunReport;
      const g = report.guests[0]!;
      assert.equal(g.consistency, 'filesystem');
      assert.equal(g.thawProven, true);
      assert.deepEqual(
        g.steps.map((s) => [s.name, s.ok]),
        STEPS.map((n) => [n, true]),
      );
      const backups = readdirSync(join(dir, 'backups'));
      assert.equal(backups.length, 1);
      assert.match(backups[0]!, /^demo-\d{8}T\d{6}Z\.img$/);
      assert.ok(existsSync(join(dir, 'state', 'last.json')));
      assert.match(
        readFileSync(join(dir, 'state', 'quiesce.prom'), 'utf8'),
        /quiesce_last_run_success\{job="demo",guest="demo"\} 1/,
      );
      assert.ok(!readFileSync('/proc/self/mountinfo', 'utf8').includes(join(dir, 'mnt')), 'unmounted after the run');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
