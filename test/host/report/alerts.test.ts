import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultLoaders } from 'cosmiconfig';
import { METRIC_HELP, writeMetrics } from '../../../src/report/metrics.js';
import type { GuestResult, RunReport } from '../../../src/workflow/results.js';

const ROOT = new URL('../../../', import.meta.url).pathname;
const RULES = join(ROOT, 'config/prometheus/quiesce.rules.yml');
const RULE_TESTS = join(ROOT, 'config/prometheus/quiesce.rules.test.yml');
const DASHBOARD = join(ROOT, 'config/grafana/quiesce-dashboard.json');

/** The metric names quiesce writes. */
const WRITTEN = Object.keys(METRIC_HELP);
const KNOWN = new Set(WRITTEN);

const promtool = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
const NO_PROMTOOL = promtool.error
  ? 'promtool is not installed (Debian: apt-get install prometheus; .ci/run installs it)'
  : false;

function run(args: string[], input?: string) {
  const r = spawnSync('promtool', args, { encoding: 'utf8', ...(input !== undefined ? { input } : {}) });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const yaml = (file: string) => defaultLoaders['.yaml'](file, readFileSync(file, 'utf8')) as Record<string, unknown>;

/** Every metric name an expression reads: identifiers that are not functions, keywords, label names or durations. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
    .replace(/\[[^\]]*\]/g, '');
  const keywords = new Set([
    'by',
    'without',
    'on',
    'ignoring',
    'group_left',
    'group_right',
    'bool',
    'and',
    'or',
    'unless',
    'offset',
  ]);
  return [...bare.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)\s*(\()?/g)]
    .filter((m) => !m[2] && !keywords.has(m[1]!) && !/^\d/.test(m[1]!))
    .map((m) => m[1]!);
}

type Rule = { alert?: string; expr: string; labels?: Record<string, string>; annotations?: Record<string, string> };
const rules = (yaml(RULES)['groups'] as { rules: Rule[] }[]).flatMap((g) => g.rules);

describe('Prometheus alerting rules (config/prometheus)', () => {
  test('promtool check rules accepts quiesce.rules.yml', { skip: NO_PROMTOOL }, () => {
    const r = run(['check', 'rules', RULES]);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, new RegExp(`SUCCESS: ${rules.length} rules found`));
  });

  test('promtool test rules passes quiesce.rules.test.yml', { skip: NO_PROMTOOL }, () => {
    const r = run(['test', 'rules', RULE_TESTS]);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /SUCCESS/);
  });

  test('every alert has a severity, a page label, a summary and a description naming a quiesce command', () => {
    assert.ok(rules.length >= 6);
    for (const r of rules) {
      assert.ok(r.alert, `a recording rule slipped in: ${r.expr}`);
      assert.match(r.labels?.['severity'] ?? '', /^(critical|warning)$/, r.alert);
      assert.equal(r.labels?.['page'], r.labels?.['severity'] === 'critical' ? 'true' : 'false', r.alert);
      assert.ok(r.annotations?.['summary'], r.alert);
      assert.match(r.annotations?.['description'] ?? '', /`quiesce (thaw|status|recover|run|plan)\b/, r.alert);
    }
    const paging = rules.filter((r) => r.labels?.['page'] === 'true').map((r) => r.alert);
    assert.deepEqual(paging.sort(), ['QuiesceRunThawUnproven', 'QuiesceThawNotProven']);
  });

  test('every alert is unit-tested both firing and quiet', () => {
    type Case = { alertname: string; exp_alerts?: unknown[] };
    const cases = (yaml(RULE_TESTS)['tests'] as { alert_rule_test?: Case[] }[]).flatMap((t) => t.alert_rule_test ?? []);
    for (const r of rules) {
      const mine = cases.filter((c) => c.alertname === r.alert);
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length > 0),
        `${r.alert} is never expected to fire`,
      );
      assert.ok(
        mine.some((c) => (c.exp_alerts ?? []).length === 0),
        `${r.alert} is never expected to stay quiet`,
      );
    }
  });

  test('the rules read only metrics quiesce writes', () => {
    for (const r of rules)
      for (const name of metricNames(r.expr)) assert.ok(KNOWN.has(name), `${r.alert}: unknown metric ${name}`);
  });
});

function guest(name: string, over: Partial<GuestResult> = {}, without: (keyof GuestResult)[] = []): GuestResult {
  const at = '2026-11-25T02:30:00.000Z';
  const g: GuestResult = {
    guest: name,
    address: `/run/${name}.sock`,
    unit: name,
    ok: true,
    consistency: 'application',
    frozenFilesystems: 2,
    thawedFilesystems: 2,
    thawProven: true,
    frozenWindowMs: 812.25,
    steps: ['connect', 'preflight', 'freeze', 'snapshot', 'thaw', 'prove-thaw', 'backup', 'verify', 'prune'].map(
      (step, i) => ({ name: step, ok: true, startedAt: at, durationMs: 10 * (i + 1) }),
    ),
    verify: { kind: 'boot', ok: true, durationMs: 21_500, bootMs: 7_250, backup: '20261125T023000Z-00a1' },
    errors: [],
    // A file that exists, for the allocated-bytes metric.
    snapshotFiles: [RULES],
    ...over,
  };
  for (const k of without) delete g[k];
  return g;
}

function report(job: string, endedAt: string, exitCode: number, guests: GuestResult[]): RunReport {
  return {
    runId: `${job}-${endedAt}`,
    job,
    configSource: '/etc/quiesce/quiesce.config.yaml',
    budgetMs: 10_000,
    startedAt: endedAt,
    endedAt,
    durationMs: 1000,
    exitCode,
    errors: [],
    recovered: [],
    units: [],
    guests,
  };
}

describe('metrics textfile (src/report/metrics.ts) against promtool check metrics', () => {
  const reports: RunReport[] = [
    report('nightly', '2026-11-25T02:30:00.000Z', 0, [guest('web01'), guest('db01', { consistency: 'filesystem' })]),
    // A thaw not proven, a failed verify and a guest never frozen (crash-consistent), in one run.
    report('nightly', '2026-11-26T02:30:00.000Z', 5, [
      guest('web01', {
        ok: false,
        thawProven: false,
        errors: [{ code: 'THAW_UNPROVEN', message: 'thaw not proven' }],
      }),
      guest('db01', {
        ok: false,
        steps: [{ name: 'verify', ok: false, startedAt: '2026-11-26T02:30:00.000Z', durationMs: 5, error: 'exit 1' }],
        verify: { kind: 'command', ok: false, durationMs: 5 },
        errors: [{ code: 'STEP_FAILED', message: 'verify: exit 1', step: 'verify' }],
      }),
      guest('app01', { consistency: 'crash' }, ['thawProven', 'frozenWindowMs']),
    ]),
    // Another job, and label values that need escaping.
    report('weekly "full"', '2026-11-27T03:00:00.000Z', 1, [guest('vm\\01\nb', { ok: false, consistency: 'none' })]),
  ];

  test(
    'a textfile written from synthetic runs passes promtool check metrics with no problem',
    { skip: NO_PROMTOOL },
    () => {
      const dir = mkdtempSync(join(tmpdir(), 'alerts-'));
      const file = join(dir, 'quiesce.prom');
      try {
        for (const r of reports) writeMetrics(file, r);
        const text = readFileSync(file, 'utf8');
        // The synthetic runs exercise every metric of the HELP table.
        const names = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
        assert.deepEqual([...names].sort(), [...WRITTEN].sort());
        // promtool prints lint findings (and parse errors) and exits 1; no finding is tolerated.
        const r = run(['check', 'metrics'], text);
        assert.equal(r.out.trim(), '');
        assert.equal(r.status, 0);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

type Target = { expr?: string; refId?: string; datasource?: { type?: string; uid?: string } };
type Panel = {
  type: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
};

describe('Grafana dashboard (config/grafana/quiesce-dashboard.json)', () => {
  const dash = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    uid?: string;
    title?: string;
    panels: Panel[];
    templating: { list: { name: string; type: string; query?: unknown; datasource?: { uid?: string } }[] };
  };
  const all = dash.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  const dataPanels = all.filter((p) => p.type !== 'row');
  const exprs = dataPanels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr ?? '' })));

  test('has a uid, a title and a Prometheus datasource variable', () => {
    assert.ok(dash.uid && dash.title);
    const ds = dash.templating.list.find((v) => v.type === 'datasource');
    assert.equal(ds?.name, 'datasource');
    assert.equal(ds?.query, 'prometheus');
    for (const v of dash.templating.list.filter((x) => x.type === 'query'))
      assert.equal(v.datasource?.uid, '${datasource}', `variable ${v.name}`);
  });

  test('every panel has targets, and panels and targets use the datasource variable', () => {
    assert.ok(dataPanels.length >= 8);
    for (const p of dataPanels) {
      assert.ok(p.targets?.length, `${p.title}: no targets`);
      assert.deepEqual(p.datasource, { type: 'prometheus', uid: '${datasource}' }, `${p.title}`);
      for (const t of p.targets) {
        assert.deepEqual(t.datasource, { type: 'prometheus', uid: '${datasource}' }, `${p.title} ${t.refId}`);
        assert.ok(t.expr?.trim(), `${p.title} ${t.refId}: no expr`);
      }
    }
  });

  test('the dashboard shows every metric quiesce writes', () => {
    const used = new Set(exprs.flatMap((e) => metricNames(e.expr)));
    for (const name of WRITTEN) assert.ok(used.has(name), `no panel shows ${name}`);
  });

  test('every expression and variable query reads only metrics quiesce writes', () => {
    // Variables: label_values(SELECTOR, label).
    const variables = dash.templating.list
      .filter((v) => v.type === 'query')
      .map((v) => ({
        panel: `variable ${v.name}`,
        expr: /^label_values\((.*),\s*\w+\)$/.exec((v.query as { query: string }).query)?.[1] ?? '',
      }));
    for (const { panel, expr } of [...exprs, ...variables]) {
      const names = metricNames(expr);
      assert.ok(names.length > 0, `${panel}: ${expr} reads no metric`);
      for (const name of names) assert.ok(KNOWN.has(name), `${panel}: unknown metric ${name} in ${expr}`);
    }
  });

  test('every expression is valid PromQL (parsed by promtool as a recording rule)', { skip: NO_PROMTOOL }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'dashboard-'));
    try {
      // Grafana's variables: $__interval and friends are durations, $job and $guest sit in regex matchers.
      const promql = (e: string) => e.replace(/\$__\w+/g, '5m').replace(/\$\{?\w+\}?/g, '.*');
      const file = join(dir, 'dashboard.rules.yml');
      const rulesText = [
        'groups:',
        '  - name: dashboard',
        '    rules:',
        ...exprs.map((e, i) => `      - record: dashboard:expr${i}\n        expr: ${JSON.stringify(promql(e.expr))}`),
      ].join('\n');
      writeFileSync(file, `${rulesText}\n`);
      const r = run(['check', 'rules', file]);
      assert.equal(r.status, 0, r.out);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

test('metricNames finds metric names and skips functions, labels, keywords and durations', () => {
  assert.deepEqual(
    metricNames(
      'max by (job, guest) (rate(a_total{job=~"$job",x="y z"}[5m])) > on(job) group_left b unless c and time()',
    ),
    ['a_total', 'b', 'c'],
  );
});
