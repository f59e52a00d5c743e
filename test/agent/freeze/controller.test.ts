// The freeze state machine against a fake FIFREEZE backend and mount table: nothing here touches a real filesystem.
import { describe, test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FreezeController } from '../../../agent/src/freeze/controller.js';
import { HookError, type FreezePhase, type HookRunner } from '../../../agent/src/freeze/hooks.js';
import type { FreezeBackend, FreezeResult } from '../../../agent/src/freeze/ioctl.js';
import { MARKER_NAME } from '../../../agent/src/freeze/marker.js';
import type { FsMount } from '../../../agent/src/freeze/mounts.js';
import type { AgentLogEvent } from '../../../agent/src/log.js';
import { QgaError } from '../../../agent/src/qapi/errors.js';

const mount = (dir: string, type = 'ext4'): FsMount => ({ dir, type, source: '/dev/x', major: 7, minor: 0 });

/** A kernel stand-in: freeze depth per path, scripted failures. */
class FakeBackend implements FreezeBackend {
  readonly name = 'addon' as const;
  readonly depth = new Map<string, number>();
  readonly calls: string[] = [];
  readonly failures = new Map<string, FreezeResult>();

  freeze(path: string): FreezeResult {
    this.calls.push(`freeze ${path}`);
    const f = this.failures.get(path);
    if (f) return f;
    if ((this.depth.get(path) ?? 0) > 0)
      return { ok: false, stage: 'ioctl', code: 'EBUSY', text: 'Device or resource busy' };
    this.depth.set(path, 1);
    return { ok: true };
  }

  thaw(path: string): number {
    this.calls.push(`thaw ${path}`);
    const n = this.depth.get(path) ?? 0;
    this.depth.set(path, 0);
    return n;
  }

  frozen(): string[] {
    return [...this.depth].filter(([, n]) => n > 0).map(([p]) => p);
  }
}

class FakeHooks implements HookRunner {
  configured = true;
  readonly calls: string[] = [];
  freezeResult: FreezePhase = { started: ['h1', 'h2'] };
  thawError: HookError | undefined;

  async freeze(): Promise<FreezePhase> {
    this.calls.push('freeze');
    return this.freezeResult;
  }

  async thaw(only?: readonly string[]): Promise<HookError | undefined> {
    this.calls.push(only ? `thaw ${only.join(',')}` : 'thaw all');
    return this.thawError;
  }
}

interface Rig {
  controller: FreezeController;
  backend: FakeBackend;
  hooks: FakeHooks;
  frozen: { value: boolean; changes: boolean[] };
  events: AgentLogEvent[];
  statedir: string;
  mounts: FsMount[];
  /** The agent's part: runs what waits for the running command's reply, as once it is written. */
  replyWritten: () => void;
}

let statedir: string;
beforeEach(() => {
  statedir = mkdtempSync(join(tmpdir(), 'quiesce-controller-'));
});
afterEach(() => rmSync(statedir, { recursive: true, force: true }));

function rig(opts: { include?: string[]; limit?: number; mounts?: FsMount[]; statedir?: string } = {}): Rig {
  const backend = new FakeBackend();
  const hooks = new FakeHooks();
  const frozen = { value: false, changes: [] as boolean[] };
  const events: AgentLogEvent[] = [];
  const mounts = opts.mounts ?? [mount('/'), mount('/a'), mount('/a/b', 'xfs'), mount('/c', 'btrfs')];
  const afterReply: (() => void)[] = [];
  const controller = new FreezeController({
    statedir: opts.statedir ?? statedir,
    include: opts.include,
    limitSeconds: opts.limit ?? 0,
    hooks,
    backend,
    log: (e) => events.push(e),
    setFrozen: (f) => {
      frozen.value = f;
      frozen.changes.push(f);
    },
    isFrozen: () => frozen.value,
    afterReply: (fn) => afterReply.push(fn),
    mounts: () => mounts,
  });
  const replyWritten = () => {
    for (const fn of afterReply.splice(0)) fn();
  };
  return { controller, backend, hooks, frozen, events, statedir: opts.statedir ?? statedir, mounts, replyWritten };
}

const markerThere = (dir: string) => existsSync(join(dir, MARKER_NAME));

describe('freeze controller', () => {
  test('freezes in reverse mount order, thaws in mount order, and counts both', async () => {
    const r = rig({ include: ['/a', '/a/b', '/c'] });
    assert.equal(await r.controller.freeze(), 3);
    assert.deepEqual(r.backend.calls, ['freeze /c', 'freeze /a/b', 'freeze /a']);
    assert.equal(r.controller.status(), 'frozen');
    r.backend.calls.length = 0;
    assert.equal(await r.controller.thaw(), 3);
    assert.deepEqual(r.backend.calls, ['thaw /a', 'thaw /a/b', 'thaw /c']);
    assert.equal(r.controller.status(), 'thawed');
    assert.deepEqual(r.backend.frozen(), []);
  });

  test('creates the marker (empty, 0600) before the first FIFREEZE and removes it after the thaw', async () => {
    const r = rig({ include: ['/a'] });
    r.backend.freeze = function (path) {
      // Checked at the moment of the ioctl.
      assert.ok(markerThere(r.statedir), 'marker exists when FIFREEZE runs');
      assert.equal(r.frozen.value, true, 'frozen mode is on when FIFREEZE runs');
      return FakeBackend.prototype.freeze.call(this, path);
    };
    await r.controller.freeze();
    const st = statSync(join(r.statedir, MARKER_NAME));
    assert.equal(st.size, 0);
    assert.equal(st.mode & 0o777, 0o600);
    await r.controller.thaw();
    assert.equal(r.controller.status(), 'thawed');
    assert.ok(markerThere(r.statedir), 'kept until the reply is out');
    r.replyWritten();
    assert.equal(markerThere(r.statedir), false);
  });

  test('a thaw without hooks answers synchronously; with hooks it gives a promise', async () => {
    const r = rig({ include: ['/a'] });
    r.hooks.configured = false;
    await r.controller.freeze();
    assert.equal(r.controller.thaw(), 1, 'the count itself, in the caller turn');
    r.hooks.configured = true;
    await r.controller.freeze();
    const thawed = r.controller.thaw();
    assert.ok(thawed instanceof Promise);
    assert.equal(await thawed, 1);
    assert.deepEqual(r.hooks.calls, ['freeze', 'freeze', 'thaw all']);
  });

  test('a freeze right behind a thaw keeps its marker (the removal runs first)', async () => {
    const r = rig({ include: ['/a'] });
    await r.controller.freeze();
    const thawed = r.controller.thaw();
    const frozen = r.controller.freeze();
    assert.equal(await thawed, 1);
    assert.equal(await frozen, 1);
    r.replyWritten();
    assert.ok(markerThere(r.statedir), 'the second freeze has its marker');
    assert.equal(await r.controller.thaw(), 1);
    r.replyWritten();
    assert.equal(markerThere(r.statedir), false);
  });

  test('skips EOPNOTSUPP and EBUSY without counting them', async () => {
    const r = rig();
    r.backend.failures.set('/a', { ok: false, stage: 'ioctl', code: 'EOPNOTSUPP', text: 'Operation not supported' });
    r.backend.failures.set('/c', { ok: false, stage: 'ioctl', code: 'EBUSY', text: 'Device or resource busy' });
    assert.equal(await r.controller.freeze(), 2);
    assert.deepEqual(r.backend.frozen().sort(), ['/', '/a/b']);
    assert.deepEqual(r.controller.record?.mountpoints, ['/a/b', '/']);
    await r.controller.thaw();
  });

  test('any other FIFREEZE error thaws everything and answers "failed to freeze"', async () => {
    const r = rig();
    r.backend.failures.set('/a', { ok: false, stage: 'ioctl', code: 'EIO', text: 'Input/output error' });
    await assert.rejects(r.controller.freeze(), new QgaError('failed to freeze /a: Input/output error'));
    // /c and /a/b were frozen before /a failed; all are thawed again.
    assert.deepEqual(r.backend.frozen(), []);
    assert.ok(r.backend.calls.includes('thaw /c') && r.backend.calls.includes('thaw /a/b'));
    assert.equal(r.controller.status(), 'thawed');
    assert.equal(markerThere(r.statedir), false);
    assert.deepEqual(r.hooks.calls, ['freeze', 'thaw h1,h2']);
    assert.equal(r.controller.record?.error, 'failed to freeze /a: Input/output error');
  });

  test('a mount that cannot be opened answers "failed to open" and thaws', async () => {
    const r = rig({ include: ['/a', '/c'] });
    r.backend.failures.set('/a', { ok: false, stage: 'open', code: 'ENOENT', text: 'No such file or directory' });
    await assert.rejects(r.controller.freeze(), new QgaError('failed to open /a: No such file or directory'));
    assert.deepEqual(r.backend.frozen(), []);
    assert.equal(r.controller.status(), 'thawed');
  });

  test('a freeze that counts 0 leaves the agent thawed, the marker gone and the thaw hooks run', async () => {
    const r = rig({ include: ['/nowhere'] });
    assert.equal(await r.controller.freeze(), 0);
    assert.equal(r.controller.status(), 'thawed');
    assert.deepEqual(r.frozen.changes, [true, false]);
    assert.equal(markerThere(r.statedir), false);
    assert.deepEqual(r.hooks.calls, ['freeze', 'thaw h1,h2']);
    assert.deepEqual(r.backend.calls, []);
  });

  test('freeze-list freezes only listed mounts; a listed non-mount is ignored', async () => {
    const r = rig();
    assert.equal(await r.controller.freeze(['/c', '/not-a-mount', '/a']), 2);
    assert.deepEqual(r.backend.calls, ['freeze /c', 'freeze /a']);
    await r.controller.thaw();
  });

  test('the include option limits freeze, freeze-list and thaw', async () => {
    const r = rig({ include: ['/c'] });
    assert.equal(await r.controller.freeze(['/', '/a', '/c']), 1);
    assert.deepEqual(r.backend.calls, ['freeze /c']);
    r.backend.depth.set('/a', 1); // frozen by someone else: not ours to thaw
    r.backend.calls.length = 0;
    assert.equal(await r.controller.thaw(), 1);
    assert.deepEqual(r.backend.calls, ['thaw /c']);
    assert.deepEqual(r.backend.frozen(), ['/a']);
    assert.ok(
      r.events.some((e) => e.kind === 'warning' && e.message.includes('not freezing /a: not in fsfreeze-include')),
    );
  });

  test('thaw counts a filesystem once even when it needed several FITHAWs, and 0 when nothing was frozen', async () => {
    const r = rig({ include: ['/a', '/c'] });
    r.backend.depth.set('/a', 2);
    assert.equal(await r.controller.thaw(), 1);
    assert.equal(await r.controller.thaw(), 0);
    assert.deepEqual(r.hooks.calls, ['thaw all', 'thaw all']);
  });

  test('a failing freeze hook freezes nothing, creates no marker and thaws the hooks it started', async () => {
    const r = rig({ include: ['/a'] });
    r.hooks.freezeResult = { started: ['h1', 'h2'], error: new HookError('fsfreeze hook has failed with status 3') };
    await assert.rejects(r.controller.freeze(), new QgaError('fsfreeze hook has failed with status 3'));
    assert.deepEqual(r.backend.calls, []);
    assert.deepEqual(r.frozen.changes, []);
    assert.equal(markerThere(r.statedir), false);
    assert.deepEqual(r.hooks.calls, ['freeze', 'thaw h1,h2']);
  });

  test('a failing thaw hook is the reply, but the filesystems are thawed and the record says so', async () => {
    const r = rig({ include: ['/a'] });
    await r.controller.freeze();
    r.hooks.thawError = new HookError('fsfreeze hook has failed with status 1');
    await assert.rejects(async () => r.controller.thaw(), new QgaError('fsfreeze hook has failed with status 1'));
    assert.equal(r.controller.status(), 'thawed');
    assert.deepEqual(r.backend.frozen(), []);
    assert.equal(r.controller.record?.thawed, 1);
  });

  test('refuses to freeze when the marker cannot be created', async () => {
    const r = rig({ include: ['/a'], statedir: join(statedir, 'missing') });
    await assert.rejects(
      r.controller.freeze(),
      /^QgaError: unable to create .*qga\.state\.isfrozen: No such file or directory$/,
    );
    assert.deepEqual(r.backend.calls, []);
    assert.equal(r.controller.status(), 'thawed');
    assert.deepEqual(r.hooks.calls, ['freeze', 'thaw h1,h2']);
  });

  test('comes up frozen when a marker is there, and a thaw removes it', async () => {
    writeFileSync(join(statedir, MARKER_NAME), '');
    const r = rig({ include: ['/a', '/c'] });
    assert.equal(r.controller.recover(), true);
    assert.equal(r.controller.status(), 'frozen');
    assert.equal(r.controller.record?.recovered, true);
    r.backend.depth.set('/a', 1);
    r.backend.depth.set('/c', 1);
    assert.equal(await r.controller.thaw(), 2);
    r.replyWritten();
    assert.equal(markerThere(statedir), false);
    assert.equal(r.controller.status(), 'thawed');
  });

  test('comes up thawed without a marker', () => {
    const r = rig();
    assert.equal(r.controller.recover(), false);
    assert.equal(r.controller.status(), 'thawed');
    assert.equal(r.controller.record, undefined);
  });

  test('the watchdog thaws on its own after the limit and records it', async () => {
    const r = rig({ include: ['/a'], limit: 1 });
    const t0 = Date.now();
    await r.controller.freeze();
    assert.ok(r.controller.deadline! >= t0 + 1000);
    await sleep(700);
    assert.equal(r.controller.status(), 'frozen');
    await sleep(700);
    assert.equal(r.controller.status(), 'thawed');
    assert.deepEqual(r.backend.frozen(), []);
    const rec = r.controller.record!;
    assert.equal(rec.autoThawed, true);
    assert.equal(rec.limit, 1);
    assert.equal(rec.thawed, 1);
    assert.ok(rec.end! - rec.start >= 1000 && rec.end! - rec.start < 1500, `${rec.end! - rec.start} ms`);
    assert.equal(markerThere(statedir), false);
    assert.ok(r.events.some((e) => e.kind === 'warning' && /watchdog/.test(e.message)));
  });

  test('a thaw disarms the watchdog; a next-freeze limit applies once', async () => {
    const r = rig({ include: ['/a'], limit: 0 });
    r.controller.setNextLimit(1);
    await r.controller.freeze();
    assert.equal(r.controller.record?.limit, 1);
    await r.controller.thaw();
    assert.equal(r.controller.deadline, undefined);
    await sleep(1200);
    assert.equal(r.controller.record?.autoThawed, false);
    await r.controller.freeze();
    assert.equal(r.controller.record?.limit, 0);
    assert.equal(r.controller.deadline, undefined);
    await r.controller.thaw();
  });

  test('without a hook path the thaw does not ask the hooks; with one it does', async () => {
    const r = rig({ include: ['/a'] });
    r.hooks.configured = false;
    await r.controller.freeze();
    assert.equal(await r.controller.thaw(), 1);
    assert.deepEqual(r.hooks.calls, ['freeze']);
    r.hooks.configured = true;
    await r.controller.freeze();
    assert.equal(await r.controller.thaw(), 1);
    assert.deepEqual(r.hooks.calls, ['freeze', 'freeze', 'thaw all']);
  });

  test('requests run one at a time: a thaw issued during a freeze waits for it, in order', async () => {
    const r = rig({ include: ['/a'] });
    const order: string[] = [];
    const f = r.controller.freeze().then((n) => order.push(`freeze ${n}`));
    const t = Promise.resolve(r.controller.thaw()).then((n) => order.push(`thaw ${n}`));
    const s = r.controller.close().then(() => order.push('close'));
    await Promise.all([f, t, s]);
    assert.deepEqual(order, ['freeze 1', 'thaw 1', 'close']);
    assert.deepEqual(r.backend.calls, ['freeze /a', 'thaw /a']);
  });

  test('close() thaws when frozen (the stop path) and does nothing when thawed', async () => {
    const r = rig({ include: ['/a'] });
    await r.controller.close();
    assert.deepEqual(r.backend.calls, []);
    await r.controller.freeze();
    await r.controller.close();
    assert.equal(r.controller.status(), 'thawed');
    assert.deepEqual(r.backend.frozen(), []);
    // Removed before close() resolves: the process exits right after it.
    assert.equal(markerThere(statedir), false);
  });

  test('crashThaw() thaws in the caller turn past a held lock, without hooks, and removes the marker', async () => {
    const r = rig({ include: ['/a', '/c'] });
    assert.equal(await r.controller.freeze(), 2);
    // A second freeze stuck in its hooks holds the lock while frozen.
    r.hooks.freeze = () => new Promise<FreezePhase>(() => undefined);
    void r.controller.freeze();
    await sleep(10);
    r.hooks.calls.length = 0;
    r.controller.crashThaw();
    assert.deepEqual(r.backend.frozen(), []);
    assert.equal(r.controller.status(), 'thawed');
    assert.equal(markerThere(r.statedir), false);
    assert.deepEqual(r.hooks.calls, [], 'no hook runs');
    assert.equal(r.controller.record?.thawed, 2);
    const messages = r.events.map((e) => ('message' in e ? e.message : e.kind));
    assert.ok(messages.includes('internal error while frozen: thawing before exiting'), messages.join('\n'));
    assert.ok(messages.includes('thawed 2 filesystem(s) (crash)'), messages.join('\n'));
  });

  test('crashThaw() while thawed touches no filesystem but removes a marker still waiting for its reply', async () => {
    const r = rig({ include: ['/a'] });
    r.hooks.configured = false;
    await r.controller.freeze();
    assert.equal(r.controller.thaw(), 1);
    assert.ok(markerThere(r.statedir));
    r.backend.calls.length = 0;
    r.controller.crashThaw();
    assert.deepEqual(r.backend.calls, []);
    assert.equal(markerThere(r.statedir), false);
  });

  test('a thaw requested while a freeze is still running its hooks waits for it', async () => {
    const r = rig({ include: ['/a'] });
    let release!: () => void;
    r.hooks.freeze = async () => {
      r.hooks.calls.push('freeze');
      await new Promise<void>((res) => (release = res));
      return { started: [] };
    };
    const freezing = r.controller.freeze();
    const thawing = r.controller.thaw();
    await sleep(20);
    release();
    assert.equal(await freezing, 1);
    assert.equal(await thawing, 1);
    assert.deepEqual(r.backend.calls, ['freeze /a', 'thaw /a']);
  });
});
