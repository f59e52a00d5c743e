// Progress through the real CLI: `quiesce run` backs up a bare QEMU's disk through QMP (block jobs)
// for a fake guest agent that freezes nothing; `progress` events off a terminal, a live display on one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { Socket } from 'node:net';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { answerSync, HostileAgent, type HostileRequest } from '../../helpers/hostile-agent.js';
import { bareQemuUnavailable, startBareQemu, type BareQemu } from '../../helpers/vm/bare-qemu.js';

// The built CLI when it has the progress sink, else the source through tsx.
const DIST = fileURLToPath(new URL('../../../dist/src/bin.js', import.meta.url));
const SRC = fileURLToPath(new URL('../../../src/bin.ts', import.meta.url));
const BIN_ARGS = existsSync(DIST.replace(/bin\.js$/, 'cli/progress.js')) ? [DIST] : ['--import', 'tsx', SRC];
const havePty = spawnSync('python3', ['-c', 'import pty']).status === 0;
const MiB = 1 << 20;

/** A pattern with ESC for the escape character (a regex literal may not hold control characters). */
const ansi = (source: string): RegExp => new RegExp(source.replaceAll('ESC', '\x1b'));
/** The disk, read through a throttle: its copy takes a few seconds. */
const DISK = 64 * MiB;

/** An agent that answers like a guest's, freezing nothing: freeze-list and thaw report one filesystem. */
function fakeGuest(req: HostileRequest, socket: Socket): void {
  if (answerSync(req, socket)) return;
  const commands = [
    'guest-ping',
    'guest-info',
    'guest-fsfreeze-freeze-list',
    'guest-fsfreeze-thaw',
    'guest-fsfreeze-status',
  ];
  const replies: Record<string, unknown> = {
    'guest-ping': {},
    'guest-info': {
      version: '9.0.0',
      supported_commands: commands.map((name) => ({ name, enabled: true, 'success-response': true })),
    },
    'guest-fsfreeze-freeze-list': 1,
    'guest-fsfreeze-thaw': 1,
    'guest-fsfreeze-status': 'thawed',
  };
  socket.write(`${JSON.stringify({ return: replies[req.execute] ?? {} })}\n`);
}

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('progress through the CLI (quiesce run, QMP block jobs)', { skip: bareQemuUnavailable() }, () => {
  let qemu: BareQemu | undefined;
  let agent: HostileAgent;
  let dir: string;
  let image: string;
  let n = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'progress-cli-'));
    // Data, not holes: QEMU copies holes at once, data as fast as the throttle lets it read.
    image = join(dir, 'data.img');
    writeFileSync(image, Buffer.alloc(DISK, 0xa5));
    agent = await HostileAgent.start(fakeGuest);
  });
  after(async () => {
    await agent?.stop();
    await qemu?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * A config for a fresh QEMU (the previous one stopped): its throttle holds only the first
   * copy of a QEMU to its rate (later ones went at full speed here).
   */
  async function config(): Promise<string> {
    await qemu?.stop();
    qemu = await startBareQemu({ dataImage: image, readBytesPerSec: 16 * MiB });
    const name = `c${++n}`;
    const file = join(dir, `${name}.json`);
    writeFileSync(
      file,
      JSON.stringify({
        stateDir: join(dir, `${name}-state`),
        guests: {
          web1: {
            connector: { type: 'socket', path: agent.path },
            freeze: ['/data'],
            snapshot: {
              provider: 'qmp',
              socket: qemu.qmpSocket,
              disks: ['vda'],
              target: join(dir, `${name}-{disk}.img`),
            },
          },
        },
        jobs: { nightly: { guests: ['web1'], budget: '5s' } },
      }),
    );
    return file;
  }

  /** `quiesce run` with stderr a pipe (not a terminal). */
  async function run(args: string[], env: Record<string, string> = {}): Promise<Ran> {
    const child = spawn(process.execPath, [...BIN_ARGS, 'run', 'nightly', ...args], {
      env: { ...process.env, ...env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((done) => child.on('close', done));
    return { code, stdout, stderr };
  }

  const events = (stderr: string): Record<string, unknown>[] =>
    stderr
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);

  test('off a terminal: progress events with bytes, rate and ETA, at most one per interval per guest', async () => {
    const interval = 1000;
    const r = await run(['--config', await config()], { QUIESCE_PROGRESS_INTERVAL_MS: String(interval) });
    assert.equal(r.code, 0, r.stderr);
    const progress = events(r.stderr).filter((e) => e['kind'] === 'progress');
    // The first poll comes as the wait starts, while 64 MiB of data is still being copied; more
    // follow when the throttle holds the copy to its rate (it did so only some of the time here).
    assert.ok(progress.length >= 1, `progress events in:\n${r.stderr}`);
    for (const p of progress) {
      assert.equal(p['guest'], 'web1');
      assert.equal(p['step'], 'snapshot-complete');
      assert.equal(p['total'], DISK);
      assert.ok(typeof p['done'] === 'number' && p['done'] <= DISK);
      assert.ok(p['rateBytesPerSec'] === null || typeof p['rateBytesPerSec'] === 'number');
      assert.ok(p['etaSec'] === null || typeof p['etaSec'] === 'number');
      assert.equal(p['level'], 'info');
    }
    const times = progress.map((p) => Date.parse(String(p['timestamp'])));
    for (let i = 1; i < times.length; i++)
      assert.ok(times[i]! - times[i - 1]! >= interval - 50, `events ${times[i]! - times[i - 1]!} ms apart`);
    // The copy took seconds: it was polled every second, yet fewer events were written than polls made.
    const copy = events(r.stderr).find((e) => e['kind'] === 'step-end' && e['step'] === 'snapshot-complete');
    const copyMs = Number(copy?.['durationMs']);
    assert.ok(progress.length <= Math.floor(copyMs / interval) + 1, `${progress.length} events in ${copyMs} ms`);
  });

  test('with the default interval a copy of a few seconds logs one progress event; --quiet none', async () => {
    let r = await run(['--config', await config()]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(events(r.stderr).filter((e) => e['kind'] === 'progress').length, 1);
    r = await run(['--config', await config(), '--quiet']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(events(r.stderr).filter((e) => e['kind'] === 'progress').length, 0);
    assert.ok(
      events(r.stderr).some((e) => e['kind'] === 'run-end'),
      'the rest of the log is there',
    );
  });

  test(
    'on a terminal: a live display redrawn in place; --quiet draws none',
    { skip: !havePty && 'needs python3' },
    async () => {
      const ptyRun = async (extra: string[]): Promise<string> => {
        const child = spawn('python3', [
          '-c',
          'import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)',
          process.execPath,
          ...BIN_ARGS,
          'run',
          'nightly',
          '--config',
          await config(),
          ...extra,
        ]);
        let out = '';
        child.stdout.on('data', (c: Buffer) => (out += c.toString()));
        await new Promise((done) => child.on('close', done));
        return out;
      };
      const shown = await ptyRun([]);
      assert.match(shown, /run .* done in .*: 1 ok, 0 failed \(exit 0\)/);
      // Redrawn in place: cursor up over the display, clear to the end of the screen, the guest's line.
      assert.match(shown, ansi(String.raw`ESC\[1A\rESC\[J {2}web1 {2}`));
      assert.match(shown, /web1 {2}snapshot-complete {2}[\d.]+ [KMG]?i?B of 64 MiB \(\d+%\)/);
      assert.ok(!/\{"kind":"progress"/.test(shown), 'no progress events on a terminal');
      const quiet = await ptyRun(['--quiet']);
      assert.match(quiet, /run .* done in .*: 1 ok, 0 failed \(exit 0\)/);
      assert.ok(!quiet.includes('\x1b['), `no cursor movement with --quiet:\n${JSON.stringify(quiet)}`);
      assert.doesNotMatch(quiet, /snapshot-complete {2}/);
    },
  );
});
