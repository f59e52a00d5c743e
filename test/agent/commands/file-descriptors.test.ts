/**
 * What guest-file-open does to descriptors: flags like the reference's
 * (non-blocking, close-on-exec), new files 0666 whatever the umask, a cap on
 * open handles, and nothing leaked by errors, guest-file-close or the agent
 * stopping.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startAgent, type AgentKind, type RunningAgent } from '../../helpers/agents.js';
import { InProcessAgent, SAFE_COMMANDS } from '../../helpers/in-process-agent.js';
import { FileTable } from '../../../agent/src/file/file-table.js';
import { HandleCounter } from '../../../agent/src/file/handle-counter.js';
import { LineClient, SKIP_NO_QEMU_GA } from './file-rig.js';

const FILE_COMMANDS = [
  'guest-file-open',
  'guest-file-close',
  'guest-file-read',
  'guest-file-write',
  'guest-file-seek',
  'guest-file-flush',
];
const MODES = ['r', 'rb', 'w', 'wb', 'a', 'ab', 'r+', 'rb+', 'r+b', 'w+', 'wb+', 'w+b', 'a+', 'ab+', 'a+b'];

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'quiesce-file-fds-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

function openFds(pid: number | 'self'): string[] {
  return readdirSync(`/proc/${pid}/fd`);
}

/** The flags word (octal, from fdinfo) of the descriptor `pid` has open on `path`. */
function fdFlags(pid: number, path: string): string {
  for (const fd of openFds(pid)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) !== path) continue;
      return /^flags:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))![1]!;
    } catch {
      // Closed meanwhile.
    }
  }
  throw new Error(`${pid} has no descriptor on ${path}`);
}

describe('descriptor flags and creation mode against qemu-ga', { skip: SKIP_NO_QEMU_GA }, () => {
  const agents = new Map<AgentKind, RunningAgent>();
  const clients = new Map<AgentKind, LineClient>();
  let oldUmask: number;

  before(async () => {
    // Both agents inherit a strict umask: created files must still be 0666 (the reference's fchmod).
    oldUmask = process.umask(0o077);
    try {
      for (const kind of ['quiesce', 'qemu-ga'] as const) {
        agents.set(
          kind,
          await startAgent(kind, {
            args: ['-b', 'guest-shutdown,guest-suspend-ram,guest-suspend-disk,guest-suspend-hybrid'],
          }),
        );
        clients.set(kind, await LineClient.open(agents.get(kind)!.socket));
      }
    } finally {
      process.umask(oldUmask);
    }
  });
  after(async () => {
    for (const c of clients.values()) c.close();
    for (const a of agents.values()) await a.stop();
  });

  for (const mode of MODES) {
    test(`mode ${mode}: the same open(2) flags as the reference (O_NONBLOCK, O_CLOEXEC), new files 0666 under umask 077`, async () => {
      const flags: string[] = [];
      const perms: string[] = [];
      for (const kind of ['quiesce', 'qemu-ga'] as const) {
        const dir = mkdtempSync(join(root, `${kind}-`));
        const path = join(dir, 'f');
        if (mode.startsWith('r')) writeFileSync(path, 'data');
        const reply = JSON.parse(
          await clients.get(kind)!.request({ execute: 'guest-file-open', arguments: { path, mode } }),
        ) as {
          return: number;
        };
        flags.push(fdFlags(agents.get(kind)!.child.pid!, path));
        perms.push((statSync(path).mode & 0o777).toString(8));
        await clients.get(kind)!.request({ execute: 'guest-file-close', arguments: { handle: reply.return } });
      }
      assert.equal(flags[0], flags[1]);
      // O_NONBLOCK (04000) and O_CLOEXEC (02000000) are set.
      assert.equal(Number.parseInt(flags[0]!, 8) & 0o2004000, 0o2004000);
      assert.equal(perms[0], perms[1]);
      if (!mode.startsWith('r')) assert.equal(perms[0], '666');
    });
  }
});

describe('open handles are capped and never leak', () => {
  test('the table refuses past its limit, with a clear error, and accepts again after a close', () => {
    const dir = mkdtempSync(join(root, 'table-'));
    const path = join(dir, 'f');
    writeFileSync(path, 'x');
    const table = new FileTable(new HandleCounter(join(dir, 'qga.state')), 3);
    const handles = [table.open(path, 'r'), table.open(path, 'r'), table.open(path, 'r')];
    assert.deepEqual(handles, [1000n, 1001n, 1002n]);
    assert.throws(() => table.open(path, 'r'), {
      message: `failed to open file '${path}' (mode: 'r'): too many open handles (at most 3; close some with guest-file-close)`,
    });
    // A refused open neither opens anything nor uses up a handle.
    table.close(1001n);
    assert.equal(table.open(path, 'r'), 1003n);
    assert.equal(table.size, 3);
    table.closeAll();
    assert.equal(table.size, 0);
  });

  test('the agent allows 1024 open handles; closing them all gives every descriptor back', async () => {
    const agent = await startAgent('quiesce');
    const client = await LineClient.open(agent.socket);
    try {
      const path = join(root, 'many');
      writeFileSync(path, 'x');
      const pid = agent.child.pid!;
      const open = (): Promise<string> => client.request({ execute: 'guest-file-open', arguments: { path } });
      // One open and close first: Node opens a few descriptors of its own on first use.
      const first = (JSON.parse(await open()) as { return: number }).return;
      await client.request({ execute: 'guest-file-close', arguments: { handle: first } });
      const baseline = openFds(pid).length;
      const handles: number[] = [];
      for (let i = 0; i < 1024; i++) handles.push((JSON.parse(await open()) as { return: number }).return);
      assert.equal(handles.length, 1024);
      assert.equal(openFds(pid).length, baseline + 1024);
      assert.equal(
        await open(),
        `{"error": {"class": "GenericError", "desc": "failed to open file '${path}' (mode: 'r'): too many open handles (at most 1024; close some with guest-file-close)"}}`,
      );
      for (const h of handles) {
        assert.equal(await client.request({ execute: 'guest-file-close', arguments: { handle: h } }), '{"return": {}}');
      }
      assert.equal(openFds(pid).length, baseline);
      // Failing opens and failing I/O leave nothing open either.
      for (let i = 0; i < 20; i++) {
        await client.request({ execute: 'guest-file-open', arguments: { path: join(root, 'missing', String(i)) } });
        await client.request({ execute: 'guest-file-open', arguments: { path, mode: 'bogus' } });
      }
      assert.equal(openFds(pid).length, baseline);
    } finally {
      client.close();
      await agent.stop();
    }
  });

  test('stopping the agent closes the files it still has open', async () => {
    const agent = await InProcessAgent.create({ allowRpcs: [...SAFE_COMMANDS, ...FILE_COMMANDS] });
    const path = join(root, 'left-open');
    writeFileSync(path, 'x');
    const baseline = openFds('self').length;
    const lines = await agent.lines(
      ...['r', 'w', 'a+'].map((mode) => JSON.stringify({ execute: 'guest-file-open', arguments: { path, mode } })),
    );
    assert.deepEqual(lines, ['{"return": 1000}', '{"return": 1001}', '{"return": 1002}']);
    assert.equal(openFds('self').length, baseline + 3);
    await agent.close();
    assert.equal(openFds('self').length, baseline);
  });
});
