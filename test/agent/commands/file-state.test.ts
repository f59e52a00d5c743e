/**
 * The file-handle counter in STATEDIR/qga.state: format, restarts, what a
 * hand-edited file means, and a state directory that cannot be written,
 * compared with qemu-ga where the reference's behaviour is the spec.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isRoot, startAgent, type AgentKind, type RunningAgent } from '../../helpers/agents.js';
import { LineClient, SKIP_NO_QEMU_GA } from './file-rig.js';

const KINDS: AgentKind[] = ['quiesce', 'qemu-ga'];

let root: string;
let target: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'quiesce-file-state-'));
  target = join(root, 'target');
  writeFileSync(target, 'x');
});
after(() => rmSync(root, { recursive: true, force: true }));

/** Starts `kind` on `statedir`, runs `fn` with a client, stops it. */
async function withAgent<T>(
  kind: AgentKind,
  statedir: string,
  fn: (c: LineClient, a: RunningAgent) => Promise<T>,
): Promise<T> {
  const agent = await startAgent(kind, { statedir });
  const client = await LineClient.open(agent.socket);
  try {
    return await fn(client, agent);
  } finally {
    client.close();
    await agent.stop();
  }
}

const openTarget = (c: LineClient): Promise<string> =>
  c.request({ execute: 'guest-file-open', arguments: { path: target } });

function stateDir(kind: AgentKind, name: string): string {
  const dir = join(root, `${kind}-${name}`);
  rmSync(dir, { recursive: true, force: true });
  return mkdtempSync(`${dir}-`);
}

describe('the handle counter against qemu-ga', { skip: SKIP_NO_QEMU_GA }, () => {
  test('first handle 1000; the file holds the next one in key-file format, rewritten atomically on each open', async () => {
    for (const kind of KINDS) {
      const dir = stateDir(kind, 'fresh');
      const replies = await withAgent(kind, dir, async (c) => {
        const out = [await openTarget(c), await openTarget(c), await openTarget(c)];
        out.push(readFileSync(join(dir, 'qga.state'), 'utf8'));
        return out;
      });
      assert.deepEqual(
        replies,
        ['{"return": 1000}', '{"return": 1001}', '{"return": 1002}', '[global]\nfd_counter=1003\n'],
        kind,
      );
      // g_file_set_contents(): 0666 minus the umask, and no temporary file left behind.
      assert.equal((statSync(join(dir, 'qga.state')).mode & 0o777).toString(8), (0o666 & ~process.umask()).toString(8));
      assert.deepEqual(
        spawnSync('ls', [dir])
          .stdout.toString()
          .split('\n')
          .filter((n) => n.startsWith('qga.state')),
        ['qga.state'],
      );
    }
  });

  test('handles are never reused across restarts, even after kill -9', async () => {
    for (const kind of KINDS) {
      const dir = stateDir(kind, 'restart');
      const first = await startAgent(kind, { statedir: dir });
      const c1 = await LineClient.open(first.socket);
      assert.equal(await openTarget(c1), '{"return": 1000}');
      assert.equal(await openTarget(c1), '{"return": 1001}');
      c1.close();
      await first.kill();
      const second = await withAgent(kind, dir, async (c) => [await openTarget(c), await openTarget(c)]);
      assert.deepEqual(second, ['{"return": 1002}', '{"return": 1003}'], kind);
    }
  });

  // What a state file someone edited means: the reference's GLib parse, which both follow.
  const presets: [string, string, string][] = [
    ['[global]\nfd_counter=5000\n', '{"return": 5000}', '[global]\nfd_counter=5001\n'],
    ['[global]\nfd_counter=abc\n', '{"return": 0}', '[global]\nfd_counter=1\n'],
    ['[global]\nfd_counter=12x\n', '{"return": 0}', '[global]\nfd_counter=1\n'],
    ['[global]\nfd_counter=0x10\n', '{"return": 0}', '[global]\nfd_counter=1\n'],
    ['[global]\nfd_counter= 12 \n', '{"return": 12}', '[global]\nfd_counter=13\n'],
    ['[global]\nfd_counter=+12\n', '{"return": 12}', '[global]\nfd_counter=13\n'],
    ['[global]\n', '{"return": 1000}', '[global]\nfd_counter=1001\n'],
    ['', '{"return": 1000}', '[global]\nfd_counter=1001\n'],
    ['# comment\n[other]\nx=1\n[global]\nfd_counter=7\nfoo=bar\n', '{"return": 7}', '[global]\nfd_counter=8\n'],
  ];
  for (const [content, reply, saved] of presets) {
    test(`state file ${JSON.stringify(content)}: handle and rewrite as the reference`, async () => {
      for (const kind of KINDS) {
        const dir = stateDir(kind, 'preset');
        writeFileSync(join(dir, 'qga.state'), content);
        const got = await withAgent(kind, dir, async (c) => [
          await openTarget(c),
          readFileSync(join(dir, 'qga.state'), 'utf8'),
        ]);
        assert.deepEqual(got, [reply, saved], kind);
      }
    });
  }

  test('deliberate: counters past 2^31 keep counting (the reference reads an int and restarts at 0)', async () => {
    const results: Record<string, string[]> = {};
    for (const kind of KINDS) {
      const dir = stateDir(kind, 'big');
      writeFileSync(join(dir, 'qga.state'), '[global]\nfd_counter=99999999999\n');
      results[kind] = await withAgent(kind, dir, async (c) => [
        await openTarget(c),
        readFileSync(join(dir, 'qga.state'), 'utf8'),
      ]);
    }
    assert.deepEqual(results['quiesce'], ['{"return": 99999999999}', '[global]\nfd_counter=100000000000\n']);
    assert.deepEqual(results['qemu-ga'], ['{"return": 0}', '[global]\nfd_counter=1\n']);
  });

  test('deliberate: an unreadable state file fails guest-file-open; the reference refuses to start', async () => {
    const ref = stateDir('qemu-ga', 'garbage');
    writeFileSync(join(ref, 'qga.state'), 'garbage');
    await assert.rejects(startAgent('qemu-ga', { statedir: ref }), /failed to load persistent state/);

    const ours = stateDir('quiesce', 'garbage');
    writeFileSync(join(ours, 'qga.state'), 'garbage');
    const got = await withAgent('quiesce', ours, async (c) => [
      await c.request({ execute: 'guest-ping' }),
      await openTarget(c),
      readFileSync(join(ours, 'qga.state'), 'utf8'),
    ]);
    assert.deepEqual(got, [
      '{"return": {}}',
      `{"error": {"class": "GenericError", "desc": "failed to load persistent state from ${ours}/qga.state: Key file contains line \\u201Cgarbage\\u201D which is not a key-value pair, group, or comment"}}`,
      'garbage',
    ]);
  });

  test('deliberate: the state file is written at the first open, not at start', async () => {
    const dir = stateDir('quiesce', 'lazy');
    await withAgent('quiesce', dir, async (c) => {
      assert.equal(existsSync(join(dir, 'qga.state')), false);
      await openTarget(c);
      assert.equal(readFileSync(join(dir, 'qga.state'), 'utf8'), '[global]\nfd_counter=1001\n');
    });
    const ref = stateDir('qemu-ga', 'lazy');
    await withAgent('qemu-ga', ref, async () => {
      assert.equal(readFileSync(join(ref, 'qga.state'), 'utf8'), '[global]\nfd_counter=1000\n');
    });
  });

  test(
    'a state dir that cannot be written: "failed to commit persistent state to disk", the number used up, nothing left open',
    { skip: isRoot() ? false : 'needs root for chattr +i' },
    async (t) => {
      for (const kind of KINDS) {
        const dir = stateDir(kind, 'immutable');
        const replies = await withAgent(kind, dir, async (c, agent) => {
          const out = [await openTarget(c)];
          const fds = (): number =>
            spawnSync('ls', [`/proc/${agent.child.pid}/fd`])
              .stdout.toString()
              .split('\n').length;
          const before = fds();
          if (spawnSync('chattr', ['+i', dir]).status !== 0) return undefined;
          try {
            out.push(await openTarget(c), await openTarget(c));
            // The descriptor opened for the refused handle is closed again.
            assert.equal(fds(), before, `${kind} leaked a descriptor`);
          } finally {
            spawnSync('chattr', ['-i', dir]);
          }
          out.push(await openTarget(c), readFileSync(join(dir, 'qga.state'), 'utf8'));
          return out;
        });
        if (replies === undefined) return t.skip('chattr +i is not supported on this filesystem');
        const failed = '{"error": {"class": "GenericError", "desc": "failed to commit persistent state to disk"}}';
        assert.deepEqual(
          replies,
          ['{"return": 1000}', failed, failed, '{"return": 1003}', '[global]\nfd_counter=1004\n'],
          kind,
        );
      }
    },
  );
});
