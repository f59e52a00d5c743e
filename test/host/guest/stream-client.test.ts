import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StreamAgentClient } from '../../../src/guest/stream-client.js';
import type { ClientEvent } from '../../../src/log/events.js';
import { openSocket } from '../../../src/guest/connectors/socket.js';
import { AgentError, QuiesceError } from '../../../src/errors.js';
import { parseCapabilities, isEnabled } from '../../../src/guest/capabilities.js';
import { haveQemuGa, startAgent, type AgentKind, type RunningAgent } from '../../helpers/agents.js';
import { answerSync, HostileAgent } from '../../helpers/hostile-agent.js';

function client(path: string, extra: Partial<ConstructorParameters<typeof StreamAgentClient>[0]> = {}) {
  const events: ClientEvent[] = [];
  const c = new StreamAgentClient({
    address: path,
    open: () => openSocket({ path }),
    onEvent: (e) => events.push(e),
    ...extra,
  });
  return { c, events };
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<QuiesceError> {
  const err = await p.then(
    () => assert.fail(`expected ${code}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof QuiesceError, `expected a QuiesceError, got ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

for (const kind of ['quiesce', 'qemu-ga'] as AgentKind[]) {
  describe(
    `client against ${kind}`,
    { skip: kind === 'qemu-ga' && !haveQemuGa() ? 'qemu-ga is not installed' : false },
    () => {
      let agent: RunningAgent;
      before(async () => {
        agent = await startAgent(kind);
      });
      after(async () => agent.stop());

      test('syncs past stale replies left in the channel and runs commands', async () => {
        const { c } = client(agent.socket, {
          open: async () => {
            const ch = await openSocket({ path: agent.socket });
            // A previous client left requests whose replies nobody read, and half a request.
            await ch.write(
              Buffer.from('{"execute":"guest-ping"}{"execute":"guest-sync","arguments":{"id":42}}{"execute":"guest-in'),
            );
            await sleep(100);
            return ch;
          },
        });
        try {
          assert.deepEqual(await c.execute('guest-ping'), {});
          const caps = parseCapabilities(await c.execute('guest-info'));
          assert.ok(isEnabled(caps, 'guest-ping'));
          assert.equal(await c.execute('guest-sync', { id: 77 }), 77);
        } finally {
          await c.close();
        }
      });

      test('an agent error reply becomes an AgentError with class and text', async () => {
        const { c } = client(agent.socket);
        try {
          const err = await c.execute('guest-nope').catch((e: unknown) => e);
          assert.ok(err instanceof AgentError);
          assert.equal(err.errorClass, 'CommandNotFound');
          assert.equal(err.desc, 'The command guest-nope has not been found');
          // The channel stays in sync after an error.
          assert.deepEqual(await c.execute('guest-ping'), {});
        } finally {
          await c.close();
        }
      });

      test('int64 arguments and results keep full precision', async () => {
        const { c } = client(agent.socket);
        try {
          assert.equal(await c.execute('guest-sync', { id: 9223372036854775807n }), 9223372036854775807n);
          assert.equal(await c.execute('guest-sync', { id: -5 }), -5);
        } finally {
          await c.close();
        }
      });

      test('reconnects after the agent restarts on the same socket', async () => {
        const statedir = mkdtempSync(join(tmpdir(), 'reconnect-'));
        let own = await startAgent(kind, { statedir });
        let opens = 0;
        const { c } = client(own.socket, {
          open: () => {
            opens++;
            return openSocket({ path: own.socket });
          },
        });
        try {
          assert.deepEqual(await c.execute('guest-ping'), {});
          await own.stop();
          own = await startAgent(kind, { statedir });
          assert.deepEqual(await c.execute('guest-ping'), {});
          assert.equal(opens, 2);
        } finally {
          await c.close();
          await own.stop();
          rmSync(statedir, { recursive: true, force: true });
        }
      });
    },
  );
}

describe('client against a hostile agent', () => {
  const agents: HostileAgent[] = [];
  after(async () => {
    for (const a of agents) await a.stop();
  });
  const hostile = async (b: Parameters<typeof HostileAgent.start>[0]) => {
    const a = await HostileAgent.start(b);
    agents.push(a);
    return a;
  };

  test('times out on a command that gets no reply, then resyncs and ignores the late reply', async () => {
    const a = await hostile((req, s) => {
      if (answerSync(req, s)) return;
      if (req.execute === 'slow') setTimeout(() => s.write('{"return": "late"}\n'), 300);
      else s.write('{"return": "fresh"}\n');
    });
    const { c } = client(a.path);
    try {
      const t0 = Date.now();
      await rejectsWith(c.execute('slow', undefined, { timeoutMs: 100 }), 'TIMEOUT');
      assert.ok(Date.now() - t0 < 1000);
      await sleep(400); // the late reply arrives while out of sync
      assert.equal(await c.execute('quick'), 'fresh');
    } finally {
      await c.close();
    }
  });

  test('a reply larger than the cap is refused with bounded memory', async () => {
    const chunk = Buffer.alloc(1024 * 1024, 0x61);
    const a = await hostile((req, s) => {
      if (answerSync(req, s)) return;
      s.write('{"return": "');
      for (let i = 0; i < 64; i++) s.write(chunk);
      s.write('"}\n');
    });
    const { c } = client(a.path, { maxReplyBytes: 1024 * 1024 });
    try {
      global.gc?.();
      const before = process.memoryUsage().rss;
      await rejectsWith(c.execute('big'), 'REPLY_TOO_LARGE');
      const grown = process.memoryUsage().rss - before;
      assert.ok(grown < 48 * 1024 * 1024, `RSS grew by ${grown} bytes`);
    } finally {
      await c.close();
    }
  });

  test('an endless line without structure is cut at the cap', async () => {
    const a = await hostile((req, s) => {
      if (answerSync(req, s)) return;
      const spam = Buffer.alloc(256 * 1024, 0x20); // whitespace forever
      const timer = setInterval(() => (s.destroyed ? clearInterval(timer) : s.write(spam)), 1);
      s.on('close', () => clearInterval(timer));
    });
    const { c } = client(a.path, { maxReplyBytes: 2 * 1024 * 1024 });
    try {
      await rejectsWith(c.execute('spam', undefined, { timeoutMs: 5000 }), 'REPLY_TOO_LARGE');
    } finally {
      await c.close();
    }
  });

  test('sync replies with the wrong id never count: out of sync within the timeout', async () => {
    const a = await hostile((req, s) => {
      if (req.execute === 'guest-sync-delimited')
        s.write(Buffer.concat([Buffer.of(0xff), Buffer.from(`{"return": ${req.syncId! + 1n}}\n`)]));
    });
    const { c } = client(a.path, { syncTimeoutMs: 200, retries: 0 });
    try {
      const t0 = Date.now();
      await rejectsWith(c.execute('guest-ping'), 'OUT_OF_SYNC');
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      await c.close();
    }
  });

  test('garbage and a half-written reply before the sync reply are skipped', async () => {
    const a = await hostile((req, s) => {
      if (req.execute === 'guest-sync-delimited') {
        s.write('garbage}{"return": {"half": ');
        answerSync(req, s);
        return;
      }
      s.write('@@@\n{"return": {"ok": true}}\n');
    });
    const { c, events } = client(a.path);
    try {
      assert.deepEqual(await c.execute('x'), { ok: true });
      assert.ok(events.some((e) => e.kind === 'guest-garbage'));
    } finally {
      await c.close();
    }
  });

  test('a disconnect in the middle of a reply is a typed error, not a hang', async () => {
    const a = await hostile((req, s) => {
      if (answerSync(req, s)) return;
      s.write('{"return": {"part');
      setTimeout(() => s.destroy(), 20);
    });
    const { c } = client(a.path, { retries: 0 });
    try {
      await rejectsWith(c.execute('freeze-like', undefined, { timeoutMs: 5000 }), 'CHANNEL_GONE');
    } finally {
      await c.close();
    }
  });

  test('a command that is not safe to repeat is sent once even when its reply is lost', async () => {
    let sent = 0;
    const a = await hostile((req, s) => {
      if (answerSync(req, s)) return;
      sent++;
    });
    const { c } = client(a.path);
    try {
      await rejectsWith(c.execute('guest-fsfreeze-freeze', undefined, { timeoutMs: 100 }), 'TIMEOUT');
      assert.equal(sent, 1);
    } finally {
      await c.close();
    }
  });

  test('a no-reply command succeeds on silence and fails on an error reply', async () => {
    const a = await hostile((req, s) => {
      if (answerSync(req, s)) return;
      if (req.execute === 'guest-suspend-ram')
        s.write(
          '{"error": {"class": "GenericError", "desc": "the requested suspend mode is not supported by the guest"}}\n',
        );
    });
    const { c } = client(a.path);
    try {
      assert.equal(await c.execute('guest-shutdown'), undefined);
      const err = await c.execute('guest-suspend-ram').catch((e: unknown) => e);
      assert.ok(err instanceof AgentError);
      assert.equal(err.desc, 'the requested suspend mode is not supported by the guest');
    } finally {
      await c.close();
    }
  });

  test('a no-reply command succeeds when the guest goes away', async () => {
    const a = await hostile((req, s) => {
      if (answerSync(req, s)) return;
      if (req.execute === 'guest-shutdown') s.destroy();
    });
    const { c } = client(a.path, { retries: 0 });
    try {
      assert.equal(await c.execute('guest-shutdown', { mode: 'powerdown' }), undefined);
    } finally {
      await c.close();
    }
  });
});
