/**
 * Backup chains through libvirt, quiesce against virtnbdbackup (issue 16), side by side in one run:
 *   virtnbdbackup   `virtnbdbackup -d DOM -l full|inc -o DIR -F /data` (pull mode: libvirt's NBD export,
 *                   read by the tool), restored with `virtnbdrestore -i DIR -o OUT`;
 *   quiesce         `quiesce run` with the libvirt provider in backup mode and a repository (push mode,
 *                   checkpoints quiesce-<id>), restored with `quiesce restore vm --to OUT --format qcow2`.
 * Two identical TCG guests under libvirtd (qemu-ga, a 1 GiB qcow2 data disk with BENCH_DATA_MB of data
 * written by dd in the guest). Two guests, not one: virtnbdbackup refuses to start a full, inc or diff while
 * the domain has a checkpoint it did not create ("Foreign checkpoint found"), and quiesce keeps its chain's
 * base checkpoint between runs. The guests swap tools every round, the tool that goes first alternates every
 * two rounds, and each step (full, +BENCH_INC_MB written in both guests, incremental, empty incremental,
 * restore of the whole chain) runs for both tools before the next step starts.
 * Measured per backup: wall time (process start → exit), how long guest writes blocked (a probe in the guest:
 * 4 KiB write + fdatasync to /data every 5 ms, the longest one during the backup), the incremental's bytes
 * against the data written and against the bitmap's dirty size just before it (checkpoint-dumpxml --size);
 * the restore's wall time, and the restored image's files against their checksums in the guest.
 * quiesce runs from the source through tsx (as the e2e tests do), whose start-up (printed apart) its wall
 * times then include; BENCH_QUIESCE_JS=path/to/src/bin.js runs a compiled build instead (dist/, or a private
 * `tsc -p . --outDir DIR` with package.json and node_modules reachable from DIR).
 * Needs root, libvirtd, qemu-ga in the guest image and virtnbdbackup.
 *   npx tsx bench/libvirt-chain.ts      (BENCH_N rounds, default 4; BENCH_DATA_MB, default 300; BENCH_INC_MB, default 10;
 *   BENCH_WORK_DIR, default /var/tmp: where both tools' backups and restores go)
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { RunReport } from '../src/workflow/results.js';
import { haveQemuGa } from '../test/helpers/agents.js';
import {
  defineGuest,
  ensureLibvirtd,
  LIBVIRT_URI,
  libvirtUnavailable,
  virsh,
  type LibvirtGuest,
} from '../test/helpers/libvirt.js';
import { imageChecksums } from '../test/helpers/vm/disks.js';
import { diffChecksums, guestChecksums, guestSh, type Checksums } from '../test/helpers/vm/guest-ops.js';
import { PROBE, PROBE_LINE, PROBE_STARTED } from './lib/write-probe.js';

const N = Number(process.env['BENCH_N'] ?? 4);
const DATA_MB = Number(process.env['BENCH_DATA_MB'] ?? 300);
const INC_MB = Number(process.env['BENCH_INC_MB'] ?? 10);
const PAUSE_MS = Number(process.env['BENCH_PAUSE_MS'] ?? 1000);
const MiB = 1 << 20;
const JS = process.env['BENCH_QUIESCE_JS'];
const BIN = JS ?? fileURLToPath(new URL('../src/bin.ts', import.meta.url));

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const f = (x: number, d = 0): string => x.toFixed(d);

const have = (cmd: string): boolean => spawnSync(cmd, ['--version']).status === 0;
const why =
  libvirtUnavailable() ??
  (haveQemuGa() ? undefined : 'no qemu-ga') ??
  (have('virtnbdbackup') && have('virtnbdrestore') ? undefined : 'no virtnbdbackup/virtnbdrestore');
if (why) {
  console.log(`libvirt-chain: skipped: ${why}`);
  process.exit(0);
}

type Tool = 'quiesce' | 'virtnbdbackup';
const TOOLS: Tool[] = ['quiesce', 'virtnbdbackup'];
type Op = 'full' | 'inc' | 'empty' | 'restore';

interface Sample {
  wallMs: number;
  blockedMs: number;
  /** Backups: bytes of the backup's data; the bitmap's dirty bytes just before it. */
  bytes?: number;
  dirty?: number;
  /** quiesce: its report's freeze call, backup-begin, thaw call and whole window. */
  freezeMs?: number;
  snapshotMs?: number;
  thawMs?: number;
  windowMs?: number;
  /** quiesce: its report's steps, name → ms. */
  steps?: Record<string, number>;
}

function run(cmd: string, args: string[], what: string): { wallMs: number; stdout: string } {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 600_000, maxBuffer: 64 * MiB });
  const wallMs = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${what} failed (${r.status ?? r.signal}): ${r.stderr}\n${r.stdout}`);
  return { wallMs, stdout: r.stdout };
}

const quiesce = (args: string[], what: string): { wallMs: number; stdout: string } =>
  run(process.execPath, [...(JS ? [] : ['--import', 'tsx']), BIN, ...args], what);

/** Bytes changed since the domain's newest checkpoint, as its bitmap counts them (0 without one). */
async function dirtyBytes(dom: string): Promise<number> {
  const leaves = (await virsh(['checkpoint-list', dom, '--name', '--leaves'])).split('\n').filter(Boolean);
  if (leaves.length !== 1) return NaN;
  const xml = await virsh(['checkpoint-dumpxml', dom, leaves[0]!, '--size', '--no-domain']);
  return [...xml.matchAll(/<disk [^>]*size='(\d+)'/g)].reduce((a, m) => a + Number(m[1]), 0);
}

async function dropCheckpoints(dom: string): Promise<void> {
  // Leaves first: a checkpoint with children merges its bitmap into theirs on deletion.
  for (;;) {
    const names = (await virsh(['checkpoint-list', dom, '--name', '--leaves'])).split('\n').filter(Boolean);
    if (!names.length) return;
    for (const n of names) await virsh(['checkpoint-delete', dom, n]);
  }
}

await ensureLibvirtd();
// BENCH_WORK_DIR: where both tools write their backups and restores (default /var/tmp, the images' filesystem).
const work = mkdtempSync(join(process.env['BENCH_WORK_DIR'] ?? '/var/tmp', 'bench-libvirt-chain-'));
const guests: LibvirtGuest[] = [];
const samples = new Map<string, Sample[]>();
const put = (t: Tool, op: Op, s: Sample): void => {
  const k = `${t}/${op}`;
  samples.set(k, [...(samples.get(k) ?? []), s]);
};
const verified = { quiesce: 0, virtnbdbackup: 0 };
let startMs = NaN;
try {
  for (let i = 0; i < 2; i++)
    guests.push(await defineGuest({ agent: 'qemu-ga', dataDiskMB: 1024, dataFormat: 'qcow2', bootTimeoutMs: 300_000 }));
  // The data: BENCH_DATA_MB of random bytes in 10 MiB files, written and synced in each guest.
  const fill = `i=0; while [ $i -lt ${Math.ceil(DATA_MB / 10)} ]; do dd if=/dev/urandom of=/data/fill-$i bs=1M count=10 2>/dev/null || exit 1; i=$((i+1)); done; sync`;
  const t0 = performance.now();
  await Promise.all(guests.map((g) => guestSh(g, fill, [], { timeoutMs: 1_800_000 })));
  console.log(`libvirt-chain: ${DATA_MB} MiB written in each guest in ${f((performance.now() - t0) / 1000, 1)} s`);
  const sums: Checksums[] = [];
  for (const g of guests) {
    const s = await guestChecksums(g);
    s.delete('/probe');
    sums.push(s);
  }
  for (const g of guests) {
    await g.agentCommand('guest-exec', { path: '/usr/bin/node', arg: ['-e', PROBE] });
    await g.waitForConsole(PROBE_STARTED, 120_000);
  }
  await sleep(2000);
  // quiesce's start-up (tsx's included when run from the source), part of each of its wall times.
  const ver: number[] = [];
  for (let i = 0; i < 3; i++) ver.push(quiesce(['--version'], 'quiesce --version').wallMs);
  startMs = median(ver);

  for (let r = 0; r < N; r++) {
    const round = join(work, `r${r}`);
    mkdirSync(round);
    const on = (t: Tool): LibvirtGuest => guests[(r + (t === 'quiesce' ? 0 : 1)) % 2]!;
    const order: Tool[] = Math.floor(r / 2) % 2 ? ['virtnbdbackup', 'quiesce'] : ['quiesce', 'virtnbdbackup'];
    const vnbDir = join(round, 'vnb');
    const repo = join(round, 'repo');
    const cfg = (level: 'full' | 'auto'): string => {
      const file = join(round, `q-${level}.json`);
      writeFileSync(
        file,
        JSON.stringify({
          stateDir: join(round, 'state'),
          guests: {
            vm: {
              connector: { type: 'libvirt', domain: on('quiesce').name, uri: LIBVIRT_URI },
              freeze: ['/data'],
              snapshot: {
                provider: 'libvirt',
                disks: ['vda'],
                repository: repo,
                ...(level === 'full' ? { level } : {}),
              },
              timeouts: { freeze: '60s', thaw: '30s', command: '60s' },
            },
          },
          jobs: { bench: { guests: ['vm'], budget: '120s' } },
        }),
      );
      return file;
    };
    const cfgs = { full: cfg('full'), auto: cfg('auto') };

    const backup = async (t: Tool, op: Exclude<Op, 'restore'>): Promise<void> => {
      const g = on(t);
      await sleep(PAUSE_MS);
      const dirty = op === 'full' ? undefined : await dirtyBytes(g.name);
      const since = g.consoleOffset();
      let s: Sample;
      if (t === 'quiesce') {
        const { wallMs, stdout } = quiesce(
          ['run', '--config', op === 'full' ? cfgs.full : cfgs.auto, '--json'],
          `quiesce run (${op})`,
        );
        const vm = (JSON.parse(stdout) as RunReport).guests[0]!;
        const want = op === 'full' ? 'full' : 'incremental';
        if (vm.backup?.level !== want)
          throw new Error(`quiesce took a ${vm.backup?.level}, not a ${want}: ${vm.backup?.reason}`);
        s = {
          wallMs,
          blockedMs: 0,
          bytes: vm.backup.bytesWritten!,
          freezeMs: vm.freezeMs!,
          snapshotMs: vm.snapshotMs!,
          thawMs: vm.thawMs!,
          windowMs: vm.frozenWindowMs!,
          steps: Object.fromEntries(vm.steps.map((x) => [x.name, x.durationMs])),
        };
      } else {
        mkdirSync(vnbDir, { recursive: true });
        const before = new Set(readdirSync(vnbDir));
        const { wallMs } = run(
          'virtnbdbackup',
          ['-U', LIBVIRT_URI, '-d', g.name, '-l', op === 'full' ? 'full' : 'inc', '-o', vnbDir, '-F', '/data', '-n'],
          `virtnbdbackup (${op})`,
        );
        const added = readdirSync(vnbDir).filter((n) => !before.has(n) && n.endsWith('.data'));
        if (!added.length) throw new Error(`virtnbdbackup (${op}) wrote no data file`);
        s = {
          wallMs,
          blockedMs: 0,
          bytes: added.reduce((a, n) => a + statSync(join(vnbDir, n)).size, 0),
        };
      }
      if (dirty !== undefined) s.dirty = dirty;
      // The blocked write reports itself once it completes, after the thaw.
      await sleep(500);
      const lines = [...g.console().slice(since).matchAll(PROBE_LINE)].map((x) => Number(x[2]));
      s.blockedMs = lines.length ? Math.max(...lines) : 0;
      put(t, op, s);
    };

    for (const t of order) await backup(t, 'full');
    // The same new data in both guests; its checksums join the guest's.
    const file = `/data/inc-${r}`;
    for (const [i, g] of guests.entries()) {
      const out = await guestSh(
        g,
        `dd if=/dev/urandom of="$1" bs=1M count=${INC_MB} conv=fsync 2>/dev/null && sync && sha256sum "$1"`,
        [file],
      );
      sums[i]!.set(`/inc-${r}`, out.split(' ')[0]!);
    }
    for (const t of order) await backup(t, 'inc');
    for (const t of order) await backup(t, 'empty');

    for (const t of order) {
      await sleep(PAUSE_MS);
      const out = join(round, `restored-${t}`);
      let image: string;
      let wallMs: number;
      if (t === 'quiesce') {
        wallMs = quiesce(
          ['restore', 'vm', '--config', cfgs.auto, '--to', out, '--format', 'qcow2'],
          'quiesce restore',
        ).wallMs;
        image = join(out, 'vda.qcow2');
      } else {
        wallMs = run(
          'virtnbdrestore',
          ['-U', LIBVIRT_URI, '-i', vnbDir, '-o', out, '-n', '-L', join(round, 'vnr.log')],
          'virtnbdrestore',
        ).wallMs;
        const img = readdirSync(out).find((n) => !n.endsWith('.xml') && !n.endsWith('.log'));
        if (!img) throw new Error(`virtnbdrestore left no image in ${out}: ${readdirSync(out).join(', ')}`);
        image = join(out, img);
      }
      put(t, 'restore', { wallMs, blockedMs: 0 });
      const got = imageChecksums(image, 'qcow2');
      got.delete('/probe');
      const want = sums[guests.indexOf(on(t))]!;
      const diff = diffChecksums(want, got, ['guest', `${t}'s restore`]);
      if (diff.length) throw new Error(`round ${r}: ${t}'s restored chain differs from the guest:\n${diff.join('\n')}`);
      verified[t] += got.size;
    }
    console.log(
      `round ${r + 1}/${N}: ` +
        TOOLS.map((t) => {
          const last = (op: Op): Sample => samples.get(`${t}/${op}`)!.at(-1)!;
          return `${t} full ${f(last('full').wallMs)} / inc ${f(last('inc').wallMs)} (${f(last('inc').bytes! / MiB, 2)} MiB) / empty ${f(last('empty').wallMs)} / restore ${f(last('restore').wallMs)} ms, blocked ${['full', 'inc', 'empty'].map((o) => f(last(o as Op).blockedMs)).join('/')} ms`;
        }).join('; '),
    );
    for (const g of guests) await dropCheckpoints(g.name);
    rmSync(round, { recursive: true, force: true });
  }
} finally {
  for (const g of guests) await dropCheckpoints(g.name).catch(() => undefined);
  for (const g of guests) await g.destroy();
  rmSync(work, { recursive: true, force: true });
}

const med = (t: Tool, op: Op, k: Exclude<keyof Sample, 'steps'>): number =>
  median(
    samples
      .get(`${t}/${op}`)!
      .map((s) => s[k] ?? NaN)
      .filter((x) => !Number.isNaN(x)),
  );
const ratio = (op: Op, k: Exclude<keyof Sample, 'steps'>): string =>
  (med('quiesce', op, k) / med('virtnbdbackup', op, k)).toFixed(2);
console.log(
  `\nlibvirt-chain: ${N} rounds, two TCG guests (qemu-ga, 1 GiB qcow2 vda, ${DATA_MB} MiB data, +${INC_MB} MiB before the incremental), medians; quiesce ${JS ? `compiled (${JS})` : 'through tsx'}: \`quiesce --version\` takes ${f(startMs)} ms, part of its wall times`,
);
console.log('| what | quiesce | virtnbdbackup | ratio | target |');
console.log('| --- | --- | --- | --- | --- |');
const row = (
  what: string,
  op: Op,
  k: Exclude<keyof Sample, 'steps'>,
  target: string,
  unit = 'ms',
  scale = 1,
  d = 0,
): void =>
  console.log(
    `| ${what} | ${f(med('quiesce', op, k) / scale, d)} ${unit} | ${f(med('virtnbdbackup', op, k) / scale, d)} ${unit} | ${ratio(op, k)}× | ${target} |`,
  );
row('full, wall', 'full', 'wallMs', '≤ 0.8×');
row(`incremental after ${INC_MB} MiB, wall`, 'inc', 'wallMs', '≤ 0.5×');
row('empty incremental, wall', 'empty', 'wallMs', '≤ 0.5×');
row('restore of the chain (full + 2 incrementals), wall', 'restore', 'wallMs', '≤ 1.0×');
for (const op of ['full', 'inc', 'empty'] as const) row(`guest writes blocked, ${op}`, op, 'blockedMs', '≤ 0.5×');
row(`incremental after ${INC_MB} MiB, bytes`, 'inc', 'bytes', '—', 'MiB', MiB, 2);
row('empty incremental, bytes', 'empty', 'bytes', '—', 'KiB', 1024, 0);
for (const t of TOOLS)
  console.log(
    `${t}: incremental ${f(med(t, 'inc', 'bytes') / MiB, 2)} MiB = ${(med(t, 'inc', 'bytes') / (INC_MB * MiB)).toFixed(3)}× the ${INC_MB} MiB written, ${(med(t, 'inc', 'bytes') / med(t, 'inc', 'dirty')).toFixed(3)}× the bitmap's dirty ${f(med(t, 'inc', 'dirty') / MiB, 2)} MiB (target ≤ 1.1×); files verified in restores: ${verified[t]}`,
  );
console.log(
  `quiesce's frozen window (report, medians) ${['full', 'inc', 'empty'].map((o) => f(med('quiesce', o as Op, 'windowMs'), 1)).join('/')} ms: freeze call ${['full', 'inc', 'empty'].map((o) => f(med('quiesce', o as Op, 'freezeMs'), 1)).join('/')} ms, backup-begin ${['full', 'inc', 'empty'].map((o) => f(med('quiesce', o as Op, 'snapshotMs'), 1)).join('/')} ms, thaw call ${['full', 'inc', 'empty'].map((o) => f(med('quiesce', o as Op, 'thawMs'), 1)).join('/')} ms (full/inc/empty)`,
);
// Where quiesce's wall time goes: each step of its report (medians), beside the wall time.
for (const op of ['full', 'inc', 'empty'] as const) {
  const runs = samples.get(`quiesce/${op}`)!;
  const names = [...new Set(runs.flatMap((x) => Object.keys(x.steps ?? {})))];
  console.log(
    `quiesce ${op}: wall ${f(med('quiesce', op, 'wallMs'))} ms; steps ${names.map((n) => `${n} ${f(median(runs.map((x) => x.steps?.[n] ?? 0)))}`).join(', ')} ms; wall of each run ${runs.map((x) => f(x.wallMs)).join(' ')} ms`,
  );
}
