// One peer's stream through the real agent: a request whose command and write complete synchronously
// is answered before feed() returns (the thaw's reply leaves in its own turn), and the replies keep
// their order whenever a command or a write is asynchronous.
import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent } from '../../agent/src/agent.js';
import { parseOptions } from '../../agent/src/config/options.js';
import { AgentLog } from '../../agent/src/log.js';
import { Session, type Peer } from '../../agent/src/session.js';

let dir: string;
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'quiesce-session-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** An agent that may freeze nothing (empty include list); the freeze hook, when given, sleeps 0.2 s. */
async function agent(slowHook = false): Promise<Agent> {
  const args = ['-m', 'unix-listen', '-p', join(dir, 's'), '-t', dir, '--fsfreeze-include='];
  if (slowHook) {
    const hook = join(dir, 'hook');
    writeFileSync(hook, '#!/bin/sh\nsleep 0.2\n');
    chmodSync(hook, 0o755);
    args.push(`--fsfreeze-hook=${hook}`);
  }
  return Agent.create(parseOptions(args, { QGA_CONF: join(dir, 'none.conf') }).config, new AgentLog(false, undefined));
}

/** Records each write; `hold` makes writes asynchronous until released. */
function recorder() {
  const lines: string[] = [];
  let release: (() => void) | undefined;
  const state = { hold: false };
  const peer: Peer = {
    write: (data) => {
      lines.push(data.toString('latin1'));
      if (!state.hold) return;
      return new Promise<void>((r) => (release = r));
    },
    pause: () => undefined,
    resume: () => undefined,
  };
  return { peer, lines, state, release: () => release?.() };
}

describe('session', () => {
  test('synchronous commands are answered before feed() returns, in order', async () => {
    const a = await agent();
    try {
      const rec = recorder();
      const session = new Session(a, rec.peer);
      session.feed(Buffer.from('{"execute":"guest-ping"}{"execute":"guest-fsfreeze-thaw","id":3}{"execute":'));
      assert.deepEqual(rec.lines, ['{"return": {}}\n', '{"return": 0, "id": 3}\n']);
      session.feed(Buffer.from('"guest-fsfreeze-status"}'));
      assert.deepEqual(rec.lines.slice(2), ['{"return": "thawed"}\n']);
    } finally {
      await a.close();
    }
  });

  test('a parse error is answered at once with the reference text', async () => {
    const a = await agent();
    try {
      const rec = recorder();
      new Session(a, rec.peer).feed(Buffer.from('}'));
      assert.deepEqual(rec.lines, [
        '{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}\n',
      ]);
    } finally {
      await a.close();
    }
  });

  test('an asynchronous command holds back the replies behind it', async () => {
    const a = await agent(true);
    try {
      const rec = recorder();
      const session = new Session(a, rec.peer);
      session.feed(Buffer.from('{"execute":"guest-fsfreeze-freeze"}{"execute":"guest-ping"}'));
      assert.deepEqual(rec.lines, [], 'the freeze runs its hook first');
      session.feed(Buffer.from('{"execute":"guest-fsfreeze-status"}'));
      assert.deepEqual(rec.lines, [], 'still behind the freeze');
      await session.idle();
      assert.deepEqual(rec.lines, ['{"return": 0}\n', '{"return": {}}\n', '{"return": "thawed"}\n']);
    } finally {
      await a.close();
    }
  });

  test('a write that has not completed holds back the next reply', async () => {
    const a = await agent();
    try {
      const rec = recorder();
      const session = new Session(a, rec.peer);
      rec.state.hold = true;
      session.feed(Buffer.from('{"execute":"guest-ping","id":1}{"execute":"guest-ping","id":2}'));
      assert.deepEqual(rec.lines, ['{"return": {}, "id": 1}\n']);
      rec.state.hold = false;
      rec.release();
      await session.idle();
      assert.deepEqual(rec.lines, ['{"return": {}, "id": 1}\n', '{"return": {}, "id": 2}\n']);
      session.feed(Buffer.from('{"execute":"guest-ping","id":3}'));
      assert.equal(rec.lines.length, 3, 'synchronous again once the write is done');
    } finally {
      await a.close();
    }
  });
});
