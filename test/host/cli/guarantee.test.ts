// The CLI's guarantees around a frozen guest, end to end with the built CLI (dist/src/bin.js) as real
// processes: the emergency brake against a stopped or healthy run, a zombie owner, signals after the
// thaw, unwritable outputs, a squatted lock, bad --wait. Each runs against qemu-ga and quiesce-agent.
//
// Safety: the only filesystem ever frozen is this suite's own ext4 loop mount, made in a private mount
// namespace (test/helpers/loop-mounts.ts) so that no other suite's qemu-ga thaw reaches it and its
// agent's thaw reaches nothing else made later; the root thaw guard runs meanwhile. Every process
// started here is killed by pid (SIGCONT first) in `finally` / afterEach, and the mount is thawed,
// unmounted and deleted in `after`.
import { after, afterEach, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { haveQemuGa, startAgent, type AgentKind, type RunningAgent } from '../../helpers/agents.js';
import {
  loopMountSkipReason,
  startWrite,
  thawFully,
  useLoopMounts,
  writeCompletes,
  type LoopMount,
} from '../../helpers/loop-mounts.js';

const BIN = fileURLToPath(new URL('../../../dist/src/bin.js', import.meta.url));
const KINDS: AgentKind[] = ['qemu-ga', 'quiesce'];
const SKIP =
  loopMountSkipReason(['ext4']) ||
  (!haveQemuGa() ? 'needs /usr/sbin/qemu-ga' : !existsSync(BIN) ? 'needs the build (npm run build)' : false);
/** Runs a command as user nobody: setpriv (util-linux) or runuser. */
const AS_NOBODY: string[] | undefined = existsSync('/usr/bin/setpriv')
  ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
  : existsSync('/usr/sbin/runuser')
    ? ['runuser', '-u', 'nobody', '--']
    : undefined;

/** The root default lock directory (no QUIESCE_RUN_DIR: root runs share /run/quiesce). */
const ENV: NodeJS.ProcessEnv = { ...process.env };
delete ENV['QUIESCE_RUN_DIR'];

interface Done {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  /** From spawn to exit. */
  readonly ms: number;
}

interface Started {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly done: Promise<Done>;
  stdout(): string;
}

/** Every process this file started and may still need to end (SIGCONT, then SIGKILL, by pid). */
const children = new Set<ChildProcess>();
/** Process groups started by the CLI on our behalf (snapshot / backup commands that recorded their pid). */
const groupFiles = new Set<string>();

function start(args: readonly string[], opts: { prefix?: readonly string[]; cwd?: string } = {}): Started {
  const t0 = Date.now();
  const [cmd, ...rest] = [...(opts.prefix ?? [process.execPath, BIN]), ...args];
  const child = spawn(cmd!, rest, { stdio: ['ignore', 'pipe', 'pipe'], env: ENV, cwd: opts.cwd ?? tmpdir() });
  children.add(child);
  let out = '';
  let err = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<Done>((resolve) =>
    child.once('close', (code, signal) => {
      children.delete(child);
      resolve({ code, signal, stdout: out, stderr: err, ms: Date.now() - t0 });
    }),
  );
  return { child, pid: child.pid!, done, stdout: () => out };
}

/** Runs the CLI to its end (killed after `timeoutMs`). */
async function cli(args: readonly string[], timeoutMs = 60_000): Promise<Done> {
  const s = start(args);
  const t = setTimeout(() => s.child.kill('SIGKILL'), timeoutMs);
  try {
    return await s.done;
  } finally {
    clearTimeout(t);
  }
}

function endChild(c: ChildProcess): void {
  if (c.exitCode !== null || c.signalCode !== null || c.pid === undefined) return;
  for (const s of ['SIGCONT', 'SIGKILL'] as const) {
    try {
      process.kill(c.pid, s);
    } catch {
      // Gone.
    }
  }
}

/** State letter and process group of a pid (undefined when gone). */
function procStat(pid: number): { state: string; pgrp: number } | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return { state: f[0]!, pgrp: Number(f[2]) };
  } catch {
    return undefined;
  }
}

/** Live (not zombie) members of process group `pgid`. */
function liveInGroup(pgid: number): number[] {
  const out: number[] = [];
  for (const n of readdirSync('/proc')) {
    if (!/^\d+$/.test(n)) continue;
    const st = procStat(Number(n));
    if (st && st.pgrp === pgid && st.state !== 'Z' && st.state !== 'X') out.push(Number(n));
  }
  return out;
}

/** Kills the group a command recorded in `file` (its `$$`, the group leader), if it still has members. */
function killRecordedGroup(file: string): void {
  let pgid: number;
  try {
    pgid = Number(readFileSync(file, 'utf8').trim());
  } catch {
    return;
  }
  if (!Number.isInteger(pgid) || pgid <= 1) return;
  if (liveInGroup(pgid).length === 0) return;
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // Gone.
  }
}

async function until(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string, stepMs = 50) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

function journalFiles(stateDir: string, guest = 'a'): string[] {
  try {
    return readdirSync(join(stateDir, 'journal')).filter((n) => n.endsWith(`--${guest}.json`));
  } catch {
    return [];
  }
}

interface GuestReport {
  guest: string;
  ok: boolean;
  consistency: string;
  thawProven?: boolean;
  errors: { code: string; message: string; step?: string }[];
}
interface Report {
  runId: string;
  exitCode: number;
  interruptedBy?: string;
  errors: { code: string; message: string }[];
  guests: GuestReport[];
}
const readReport = (file: string): Report => JSON.parse(readFileSync(file, 'utf8')) as Report;

/** Figures measured, printed at the end of the file for the record. */
const figures: string[] = [];
function figure(t: TestContext, text: string): void {
  figures.push(`${t.name}: ${text}`);
  t.diagnostic(text);
}
after(() => {
  if (figures.length) process.stdout.write(`\n# figures\n${figures.map((f) => `# ${f}`).join('\n')}\n`);
});

for (const kind of KINDS) {
  describe(`CLI guarantees against ${kind}`, { skip: SKIP }, () => {
    let agent: RunningAgent | undefined;
    let m: LoopMount;
    let dir: string;
    const note = (t: TestContext, text: string) => figure(t, `[${kind}] ${text}`);

    // Registered before useLoopMounts' hooks, so it runs first: every process ends before the mount goes.
    after(async () => {
      for (const c of children) endChild(c);
      for (const f of groupFiles) killRecordedGroup(f);
      if (agent) {
        agent.child.kill('SIGCONT');
        await agent.stop();
      }
      if (dir) rmSync(dir, { recursive: true, force: true });
    });
    const mounts = useLoopMounts(['ext4']);
    before(async () => {
      m = mounts[0]!;
      agent = await startAgent(kind, {
        wrap: m.wrap,
        args: kind === 'quiesce' ? [`--fsfreeze-include=${m.mnt}`] : [],
      });
      dir = mkdtempSync(join(tmpdir(), `guarantee-${kind}-`));
    });

    // Whatever a failed test left: its processes end, the agent is told to thaw, the mount is thawed.
    afterEach(async () => {
      const left = [...children];
      for (const c of left) endChild(c);
      for (const f of groupFiles) killRecordedGroup(f);
      groupFiles.clear();
      await Promise.all(left.map((c) => new Promise((r) => (c.exitCode !== null ? r(0) : c.once('close', r)))));
      if (!(await writeCompletes(m, 500))) {
        await cli(['thaw', 'a', '--force', '--config', config('reset', { snapshot: ['true'] })], 30_000);
        thawFully(m);
      }
    });

    const thawedNow = async (what: string) => assert.ok(await writeCompletes(m, 5000), `${what}: writable`);
    const frozenNow = async () => !(await writeCompletes(m, 300));

    interface GuestSpec {
      snapshot: string[];
      backup?: string[];
      verify?: string[];
      post?: string[][];
    }

    /** A config with one guest `a` (our agent, our mount) and job `nightly`; returns its path. */
    function config(
      name: string,
      g: GuestSpec,
      o: { budget?: string; metricsFile?: string; stateDir?: string } = {},
    ): string {
      const stateDir = o.stateDir ?? join(dir, `${name}-state`);
      const cfg = {
        stateDir,
        ...(o.metricsFile ? { metricsFile: o.metricsFile } : {}),
        guests: {
          a: {
            connector: { type: 'socket', path: agent!.socket },
            freeze: [m.mnt],
            snapshot: { provider: 'command', argv: g.snapshot },
            ...(g.backup ? { backup: { argv: g.backup } } : {}),
            ...(g.verify ? { verify: { argv: g.verify } } : {}),
            ...(g.post ? { hooks: { post: g.post } } : {}),
            timeouts: { thaw: '5s', command: '5s', connect: '5s' },
          },
        },
        jobs: { nightly: { guests: ['a'], budget: o.budget ?? '60s' } },
      };
      const file = join(dir, `${name}.json`);
      writeFileSync(file, JSON.stringify(cfg));
      return file;
    }
    const stateOf = (name: string) => join(dir, `${name}-state`);

    /** A snapshot command that records its group and then sleeps (ended by the run, or by us). */
    function sleepingSnapshot(name: string, seconds: number): string[] {
      const pidFile = join(dir, `${name}-snap.pid`);
      groupFiles.add(pidFile);
      return ['sh', '-c', 'echo $$ > "$0"; exec sleep "$1"', pidFile, String(seconds)];
    }

    async function waitFrozen(stateDir: string, s: Started, timeoutMs = 30_000): Promise<void> {
      await until(
        async () => {
          if (s.child.exitCode !== null) throw new Error(`the run exited early: ${s.child.exitCode}`);
          return journalFiles(stateDir).length > 0 && (await frozenNow());
        },
        timeoutMs,
        'the run to freeze the loop mount',
        100,
      );
    }

    test('a stopped run: thaw refuses naming the pid, recover leaves it, status says STOPPED, thaw --force thaws', async (t) => {
      const file = config('stopped', { snapshot: sleepingSnapshot('stopped', 30) }, { budget: '60s' });
      const stateDir = stateOf('stopped');
      const run = start(['run', 'nightly', '--config', file]);
      try {
        await waitFrozen(stateDir, run);
        process.kill(run.pid, 'SIGSTOP');
        await until(() => procStat(run.pid)?.state === 'T', 5000, 'the run to stop');

        const refused = await cli(['thaw', 'a', '--config', file]);
        assert.equal(refused.code, 4, refused.stderr + refused.stdout);
        assert.ok(refused.ms < 3000, `thaw refused after ${refused.ms} ms`);
        const text = refused.stderr + refused.stdout;
        assert.match(text, new RegExp(`pid ${run.pid}\\b`));
        assert.match(text, /quiesce thaw a --force/);
        assert.match(text, /stopped/);
        note(t, `thaw (no --force) refused with exit 4 after ${refused.ms} ms`);

        const rec = await cli(['recover', '--config', file]);
        assert.equal(rec.code, 4, rec.stderr + rec.stdout);
        assert.match(rec.stdout, new RegExp(`^a \\(run .*\\): NOT TOUCHED: .*pid ${run.pid}\\b`, 'm'));
        assert.ok(await frozenNow(), 'recover did not thaw a guest whose owner lives');

        const st = await cli(['status', '--config', file]);
        assert.equal(st.code, 1, st.stderr + st.stdout);
        assert.match(st.stdout, new RegExp(`journal: a frozen by run \\S+ \\(pid ${run.pid}, still running, STOPPED`));
        assert.equal(journalFiles(stateDir).length, 1);

        // The brake: a write pending on the frozen mount measures how long it stays frozen from here.
        const t0 = Date.now();
        const pending = startWrite(m);
        const force = start(['thaw', 'a', '--force', '--config', file]);
        const released = pending.done.then(() => Date.now() - t0);
        const forced = await force.done;
        assert.equal(forced.code, 0, forced.stderr + forced.stdout);
        assert.ok(forced.ms < 6500, `thaw --force took ${forced.ms} ms`);
        assert.match(forced.stdout, new RegExp(`took over from pid ${run.pid} .*status thawed`));
        const frozenFor = await Promise.race([released, sleep(5000).then(() => -1)]);
        assert.ok(frozenFor >= 0, 'the pending write completed');
        await thawedNow('after thaw --force');
        const r = await Promise.race([run.done, sleep(5000).then(() => undefined)]);
        assert.ok(r, 'the stopped run is gone');
        assert.ok(procStat(run.pid) === undefined, 'no process left');
        assert.deepEqual(journalFiles(stateDir), []);
        const how = /SIGKILLed/.test(forced.stdout) ? 'SIGKILLed' : 'exited on SIGTERM';
        note(
          t,
          `thaw --force exit 0 after ${forced.ms} ms; frozen ${frozenFor} ms after it started; run ${how} (status ${r.code ?? r.signal})`,
        );
      } finally {
        endChild(run.child);
      }
    });

    test('a healthy run and thaw --force: the run thaws by itself on SIGTERM (143, interruptedBy SIGTERM)', async (t) => {
      const file = config('healthy', { snapshot: sleepingSnapshot('healthy', 30) }, { budget: '60s' });
      const stateDir = stateOf('healthy');
      const run = start(['run', 'nightly', '--config', file]);
      try {
        await waitFrozen(stateDir, run);
        const t0 = Date.now();
        const pending = startWrite(m);
        const released = pending.done.then(() => Date.now() - t0);
        const forced = await cli(['thaw', 'a', '--force', '--config', file]);
        assert.equal(forced.code, 0, forced.stderr + forced.stdout);
        assert.match(forced.stdout, new RegExp(`took over from pid ${run.pid} \\(.*, exited on SIGTERM\\)`));
        const r = await run.done;
        assert.equal(r.code, 143, r.stderr);
        const report = readReport(join(stateDir, 'last.json'));
        assert.equal(report.exitCode, 143);
        assert.equal(report.interruptedBy, 'SIGTERM');
        const g = report.guests[0]!;
        assert.equal(g.ok, false);
        assert.equal(g.thawProven, true);
        assert.ok(
          g.errors.some((e) => e.code === 'INTERRUPTED'),
          JSON.stringify(g.errors),
        );
        const frozenFor = await Promise.race([released, sleep(5000).then(() => -1)]);
        assert.ok(frozenFor >= 0);
        await thawedNow('after thaw --force');
        assert.deepEqual(journalFiles(stateDir), []);
        note(t, `thaw --force exit 0 after ${forced.ms} ms; frozen ${frozenFor} ms after it started`);
      } finally {
        endChild(run.child);
      }
    });

    test('a zombie owner: recover thaws the guest although the pid still exists as a zombie', async (t) => {
      const file = config('zombie', { snapshot: sleepingSnapshot('zombie', 30) }, { budget: '60s' });
      const stateDir = stateOf('zombie');
      // sh starts quiesce in the background, then becomes `sleep`, which never reaps it.
      const parent = start(
        [
          '-c',
          '"$0" "$1" run nightly --config "$2" >/dev/null 2>&1 & echo $!; exec sleep 120',
          process.execPath,
          BIN,
          file,
        ],
        { prefix: ['sh'] },
      );
      let qpid = 0;
      try {
        await until(() => /^\d+\n/.test(parent.stdout()), 10_000, 'the quiesce pid');
        qpid = Number(parent.stdout().trim().split('\n')[0]);
        await until(
          async () => journalFiles(stateDir).length > 0 && (await frozenNow()),
          30_000,
          'the run to freeze',
          100,
        );
        process.kill(qpid, 'SIGKILL');
        await until(() => procStat(qpid)?.state === 'Z', 5000, `pid ${qpid} to become a zombie`);
        assert.ok(await frozenNow(), 'still frozen after the owner died');
        const rec = await cli(['recover', '--config', file]);
        assert.equal(rec.code, 0, rec.stderr + rec.stdout);
        assert.match(rec.stdout, /^a \(run .*\): thawed 1$/m);
        await thawedNow('after recover');
        assert.equal(procStat(qpid)?.state, 'Z', 'the owner is still a zombie');
        assert.deepEqual(journalFiles(stateDir), []);
        note(t, `recover of a zombie owner: exit 0 after ${rec.ms} ms`);
      } finally {
        endChild(parent.child); // sleep, the zombie's parent: the zombie is reaped once it goes
        if (qpid) {
          try {
            process.kill(qpid, 'SIGKILL');
          } catch {
            // Gone.
          }
        }
      }
    });

    const NUM = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as const;
    for (const [sig, phase] of [
      ['SIGTERM', 'backup'],
      ['SIGINT', 'backup'],
      ['SIGHUP', 'backup'],
      ['SIGTERM', 'verify'],
    ] as const) {
      test(`${sig} during ${phase} (after the thaw): exits ${128 + NUM[sig]} at once, starts no further step, reports it`, async (t) => {
        const name = `sig-${sig}-${phase}`;
        const marker = join(dir, `${name}.running`);
        const later = join(dir, `${name}.later`);
        const post = join(dir, `${name}.post`);
        const pgFile = join(dir, `${name}.pgid`);
        groupFiles.add(pgFile);
        const slow = ['sh', '-c', 'echo $$ > "$1"; touch "$0"; sleep 30', marker, pgFile];
        const quick = (f: string) => ['sh', '-c', 'touch "$0"', f];
        const spec: GuestSpec =
          phase === 'backup'
            ? { snapshot: ['true'], backup: slow, verify: quick(later), post: [quick(post)] }
            : { snapshot: ['true'], backup: ['true'], verify: slow, post: [quick(later), quick(post)] };
        const file = config(name, spec);
        const stateDir = stateOf(name);
        const metrics = join(dir, `${name}.prom`);
        const run = start(['run', 'nightly', '--config', file, '--metrics-file', metrics]);
        try {
          await until(() => existsSync(marker) && existsSync(pgFile), 30_000, `the ${phase} step to start`);
          const pgid = Number(readFileSync(pgFile, 'utf8').trim());
          assert.ok(liveInGroup(pgid).length >= 1, `the ${phase} group runs`);
          const t0 = Date.now();
          process.kill(run.pid, sig);
          const r = await run.done;
          const exitMs = Date.now() - t0;
          assert.equal(r.code, 128 + NUM[sig], r.stderr);
          assert.ok(exitMs < 3000, `exited ${exitMs} ms after ${sig}`);
          await sleep(500);
          assert.ok(!existsSync(later), 'no later step started');
          assert.ok(!existsSync(post), 'no post-hook started');
          await until(() => liveInGroup(pgid).length === 0, 3000, `the ${phase} group (${pgid}) to be gone`);
          const report = readReport(join(stateDir, 'last.json'));
          assert.equal(report.exitCode, r.code);
          assert.equal(report.interruptedBy, sig);
          const g = report.guests.find((x) => x.guest === 'a')!;
          assert.equal(g.ok, false);
          assert.equal(g.thawProven, true);
          assert.ok(
            g.errors.some((e) => e.code === 'INTERRUPTED' && (e.step === undefined || e.step === phase)),
            JSON.stringify(g.errors),
          );
          const prom = readFileSync(metrics, 'utf8');
          assert.match(prom, /^quiesce_last_run_success\{job="nightly",guest="a"\} 0$/m);
          assert.match(prom, new RegExp(`^quiesce_run_exit_code\\{job="nightly"\\} ${r.code}$`, 'm'));
          await thawedNow('after the run');
          assert.deepEqual(journalFiles(stateDir), []);
          note(t, `exit ${r.code} ${exitMs} ms after ${sig} during ${phase}`);
        } finally {
          endChild(run.child);
        }
      });
    }

    test('a metrics file that cannot be written (its parent is a file): exit 3, said on stderr, last.json says 3', async () => {
      const notDir = join(dir, 'metrics-parent-is-a-file');
      writeFileSync(notDir, 'x');
      const metrics = join(notDir, 'quiesce.prom');
      const file = config('nometrics', { snapshot: ['true'] }, { metricsFile: metrics });
      const r = await cli(['run', 'nightly', '--config', file]);
      assert.equal(r.code, 3, r.stderr + r.stdout);
      assert.match(r.stderr, /cannot write the metrics file .*metrics-parent-is-a-file\/quiesce\.prom.*ENOTDIR/);
      const report = readReport(join(stateOf('nometrics'), 'last.json'));
      assert.equal(report.exitCode, 3);
      assert.ok(report.errors.some((e) => e.code === 'REPORT_WRITE'));
      assert.equal(report.guests[0]!.ok, true, 'the backup itself succeeded');
      await thawedNow('after the run');
    });

    test('a report that cannot be written (STATEDIR/runs is a file): exit 3, a clear message, metrics say 3', async () => {
      const stateDir = stateOf('noreport');
      mkdirSync(stateDir, { recursive: true });
      writeFileSync(join(stateDir, 'runs'), 'not a directory');
      const metrics = join(dir, 'noreport.prom');
      const file = config('noreport', { snapshot: ['true'] }, { metricsFile: metrics });
      const r = await cli(['run', 'nightly', '--config', file]);
      assert.equal(r.code, 3, r.stderr + r.stdout);
      assert.match(r.stderr, new RegExp(`cannot write the run report in ${stateDir}`));
      assert.ok(!existsSync(join(stateDir, 'last.json')));
      assert.match(readFileSync(metrics, 'utf8'), /^quiesce_run_exit_code\{job="nightly"\} 3$/m);
      await thawedNow('after the run');
    });

    test('an unproven thaw (thawed behind its back) plus an unwritable metrics file: exit 5, last.json says 5', async () => {
      const notDir = join(dir, 'unproven-parent-is-a-file');
      writeFileSync(notDir, 'x');
      const file = config(
        'unproven',
        { snapshot: [...m.wrap, 'fsfreeze', '-u', m.mnt] },
        { metricsFile: join(notDir, 'quiesce.prom') },
      );
      const stateDir = stateOf('unproven');
      const r = await cli(['run', 'nightly', '--config', file]);
      assert.equal(r.code, 5, r.stderr + r.stdout);
      assert.match(r.stderr, /cannot write the metrics file/);
      const report = readReport(join(stateDir, 'last.json'));
      assert.equal(report.exitCode, 5);
      assert.equal(report.guests[0]!.thawProven, false);
      assert.ok(report.errors.some((e) => e.code === 'REPORT_WRITE'));
      await thawedNow('thawed by the snapshot command');
      // The run kept its journal record (thaw not proven); the next command proves the guest thawed and drops it.
      assert.equal(journalFiles(stateDir).length, 1);
      const rec = await cli(['recover', '--config', file]);
      assert.equal(rec.code, 0, rec.stderr + rec.stdout);
      assert.deepEqual(journalFiles(stateDir), []);
    });

    test('locks another user squats under every name computable without the secret do not stop a root run', async (t) => {
      if (!AS_NOBODY) return t.skip('needs setpriv or runuser');
      const file = config('squat', { snapshot: ['true'] });
      const stateDir = stateOf('squat');
      const address = `unix:${agent!.socket}`;
      const names = [`guest:${address}`, `job:${stateDir}:nightly`];
      // The old scheme (sha256 of the name alone) and the bare names.
      const abstract = [
        ...names.map((n) => `\0quiesce/${createHash('sha256').update(n).digest('hex').slice(0, 40)}`),
        ...names.map((n) => `\0quiesce/${n}`.slice(0, 107)),
      ];
      const script = `
        const fs = require('fs'), net = require('net');
        let secret;
        try { fs.readFileSync('/run/quiesce/secret'); secret = 'READ'; } catch (e) { secret = e.code; }
        const names = JSON.parse(process.env.SQUAT);
        let bound = 0;
        const servers = names.map((n) => {
          const s = net.createServer();
          s.on('error', (e) => { console.log(JSON.stringify({ error: e.code, name: n })); process.exit(1); });
          s.listen(n, () => { if (++bound === names.length) console.log(JSON.stringify({ secret, bound, uid: process.getuid() })); });
          return s;
        });
        setInterval(() => {}, 1000);
      `;
      const squatter = spawn(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), process.execPath, '-e', script], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { PATH: process.env['PATH'], SQUAT: JSON.stringify(abstract) },
        cwd: '/',
      });
      children.add(squatter);
      squatter.once('close', () => children.delete(squatter));
      let out = '';
      let err = '';
      squatter.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      squatter.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      try {
        await until(() => out.includes('\n') || squatter.exitCode !== null, 15_000, 'the squatter');
        const said = JSON.parse(out.split('\n')[0]!) as {
          secret?: string;
          bound?: number;
          uid?: number;
          error?: string;
        };
        assert.deepEqual(said, { secret: 'EACCES', bound: abstract.length, uid: 65534 }, err);
        // The names really are taken: root cannot bind them either.
        for (const n of abstract) {
          const s: Server = createServer();
          const code = await new Promise<string>((resolve) => {
            s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
            s.listen(n, () => resolve('bound'));
          });
          s.close();
          assert.equal(code, 'EADDRINUSE', `the squatter holds ${JSON.stringify(n)}`);
        }
        const r = await cli(['run', 'nightly', '--config', file]);
        assert.equal(r.code, 0, r.stderr + r.stdout);
        assert.equal(readReport(join(stateDir, 'last.json')).exitCode, 0);
        const d = statSync('/run/quiesce');
        const s = statSync('/run/quiesce/secret');
        assert.equal(d.mode & 0o777, 0o700);
        assert.equal(s.mode & 0o777, 0o600);
        assert.equal(s.uid, 0);
        await thawedNow('after the run');
      } finally {
        endChild(squatter);
      }
    });

    test('a root-held job lock: a second run exits 4 at once naming the first run pid', async (t) => {
      const file = config('held', { snapshot: sleepingSnapshot('held', 4) }, { budget: '60s' });
      const stateDir = stateOf('held');
      const first = start(['run', 'nightly', '--config', file]);
      try {
        await waitFrozen(stateDir, first);
        const second = await cli(['run', 'nightly', '--config', file]);
        assert.equal(second.code, 4, second.stderr + second.stdout);
        assert.ok(second.ms < 2000, `refused after ${second.ms} ms`);
        assert.match(
          second.stderr,
          new RegExp(`job nightly is in use by another quiesce process \\(pid ${first.pid}:`),
        );
        note(t, `second run refused with exit 4 after ${second.ms} ms`);
        const r = await first.done;
        assert.equal(r.code, 0, r.stderr);
        await thawedNow('after the first run');
      } finally {
        endChild(first.child);
      }
    });

    for (const bad of ['abc', '-5']) {
      test(`run --wait ${bad} exits 2 and contacts no guest`, async () => {
        const name = `wait${bad}`;
        const snapMark = join(dir, `${name}.snapshot-ran`);
        const file = config(name, { snapshot: ['touch', snapMark] });
        const stateDir = stateOf(name);
        const r = await cli(['run', 'nightly', '--config', file, '--wait', bad]);
        assert.equal(r.code, 2, r.stderr + r.stdout);
        assert.match(r.stderr, /--wait: /);
        assert.ok(!existsSync(snapMark), 'no snapshot ran');
        assert.ok(!existsSync(stateDir), 'no journal, no report: the state dir was never made');
        await thawedNow('never frozen');
      });
    }
  });
}
