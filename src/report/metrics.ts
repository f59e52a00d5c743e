import { readFileSync, statSync } from 'node:fs';
import type { RunReport } from '../workflow/results.js';
import { writeAtomic } from './report.js';

function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

type Sample = { labels: Record<string, string>; value: number };

/** Every metric quiesce writes: name → [type, help] (the alert rules and dashboard are tested against it). */
export const METRIC_HELP: Record<string, [string, string]> = {
  quiesce_last_run_timestamp_seconds: ['gauge', 'When the guest was last part of a run.'],
  quiesce_last_success_timestamp_seconds: ['gauge', 'When the guest last had a successful backup.'],
  quiesce_last_run_success: ['gauge', '1 if the last run of the guest succeeded, else 0.'],
  quiesce_frozen_window_seconds: ['gauge', 'Frozen window of the last run (freeze sent to thaw proven).'],
  quiesce_thaw_proven: ['gauge', '1 if the last thaw was proven, 0 if the guest may still be frozen.'],
  quiesce_step_duration_seconds: ['gauge', 'Duration of each step of the last run.'],
  quiesce_consistency_level: ['gauge', 'Consistency of the last backup: 3 application, 2 filesystem, 1 crash, 0 none.'],
  quiesce_run_exit_code: ['gauge', 'Exit code of the last run of the job.'],
  quiesce_budget_seconds: [
    'gauge',
    "Budget in force for the guest's unit in the last run (the longest it may stay frozen).",
  ],
  quiesce_step_success: ['gauge', 'Outcome of each step of the last run: 1 succeeded, 0 failed.'],
  quiesce_backup_size_bytes: ['gauge', 'Bytes the files of the last snapshot or backup take on disk.'],
  quiesce_verify_success: [
    'gauge',
    "Outcome of the last run's verify step per kind (command, fsck, boot): 1 passed, 0 failed.",
  ],
  quiesce_verify_duration_seconds: ['gauge', "Duration of the last run's verify step."],
  quiesce_verify_boot_seconds: ['gauge', 'Verify by boot: QEMU started to the agent answering guest-ping.'],
};

const LEVEL = { application: 3, filesystem: 2, crash: 1, none: 0 } as const;

/**
 * node_exporter textfile-collector format. Samples of other jobs and guests
 * already in the file are kept; the last success time survives failed runs.
 */
export function writeMetrics(path: string, report: RunReport): void {
  const existing = parse(path);
  const now = Date.parse(report.endedAt) / 1000;
  const mine = (s: Sample) => s.labels['job'] === report.job;
  const keepSuccess = new Map(
    existing
      .filter((e) => e.name === 'quiesce_last_success_timestamp_seconds' && mine(e.sample))
      .map((e) => [e.sample.labels['guest'], e.sample.value]),
  );
  const out = existing.filter((e) => !mine(e.sample));
  const add = (name: string, labels: Record<string, string>, value: number) =>
    out.push({ name, sample: { labels, value } });
  add('quiesce_run_exit_code', { job: report.job }, report.exitCode);
  for (const g of report.guests) {
    const l = { job: report.job, guest: g.guest };
    add('quiesce_last_run_timestamp_seconds', l, now);
    add('quiesce_last_run_success', l, g.ok ? 1 : 0);
    const lastOk = g.ok ? now : keepSuccess.get(g.guest);
    if (lastOk !== undefined) add('quiesce_last_success_timestamp_seconds', l, lastOk);
    if (g.frozenWindowMs !== undefined) add('quiesce_frozen_window_seconds', l, g.frozenWindowMs / 1000);
    if (g.thawProven !== undefined) add('quiesce_thaw_proven', l, g.thawProven ? 1 : 0);
    add('quiesce_consistency_level', l, LEVEL[g.consistency]);
    add('quiesce_budget_seconds', l, report.budgetMs / 1000);
    for (const s of g.steps) {
      add('quiesce_step_duration_seconds', { ...l, step: s.name }, s.durationMs / 1000);
      add('quiesce_step_success', { ...l, step: s.name }, s.ok ? 1 : 0);
    }
    if (g.verify) {
      const v = { ...l, kind: g.verify.kind };
      add('quiesce_verify_success', v, g.verify.ok ? 1 : 0);
      add('quiesce_verify_duration_seconds', v, g.verify.durationMs / 1000);
      if (g.verify.bootMs !== undefined) add('quiesce_verify_boot_seconds', v, g.verify.bootMs / 1000);
    }
    const bytes = allocatedBytes(g.snapshotFiles);
    if (bytes !== undefined) add('quiesce_backup_size_bytes', l, bytes);
  }
  const lines: string[] = [];
  for (const name of Object.keys(METRIC_HELP)) {
    const samples = out.filter((e) => e.name === name);
    if (!samples.length) continue;
    lines.push(`# HELP ${name} ${METRIC_HELP[name]![1]}`, `# TYPE ${name} ${METRIC_HELP[name]![0]}`);
    for (const { sample } of samples) {
      const labels = Object.entries(sample.labels)
        .map(([k, v]) => `${k}="${esc(v)}"`)
        .join(',');
      lines.push(`${name}{${labels}} ${sample.value}`);
    }
  }
  writeAtomic(path, `${lines.join('\n')}\n`);
}

/** What the snapshot's files take on disk (a raw target is sparse: its size is the disk's, not the data's). */
function allocatedBytes(files: readonly string[] | undefined): number | undefined {
  if (!files?.length) return undefined;
  let total = 0;
  for (const f of files) {
    try {
      total += statSync(f).blocks * 512;
    } catch {
      return undefined;
    }
  }
  return total;
}

function parse(path: string): { name: string; sample: Sample }[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return [];
  }
  const out: { name: string; sample: Sample }[] = [];
  for (const line of text.split('\n')) {
    const m = /^(quiesce_[a-z_]+)\{(.*)\} (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of m[2]!.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, sample: { labels, value: Number(m[3]) } });
  }
  return out;
}
