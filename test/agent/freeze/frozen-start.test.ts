// An agent created over a state dir holding the frozen-state marker, in process. Its include list is
// empty, so its thaw touches no filesystem; only the agent's own state is under test here.
import { describe, test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, AFTER_REPLY_DELAY_MS } from '../../../agent/src/agent.js';
import { parseOptions, type AgentConfig } from '../../../agent/src/config/options.js';
import { AgentLog } from '../../../agent/src/log.js';
import { MARKER_NAME } from '../../../agent/src/freeze/marker.js';
import type { JsonOut, QObject } from '../../../agent/src/protocol/index.js';

let statedir: string;
beforeEach(() => (statedir = mkdtempSync(join(tmpdir(), 'quiesce-frozen-start-'))));
afterEach(() => rmSync(statedir, { recursive: true, force: true }));

function config(extra: string[] = []): AgentConfig {
  return parseOptions(
    ['-m', 'unix-listen', '-p', join(statedir, 's'), '-t', statedir, '--fsfreeze-include=', ...extra],
    {
      QGA_CONF: join(statedir, 'none.conf'),
    },
  ).config;
}

async function call(agent: Agent, execute: string): Promise<JsonOut | undefined> {
  const request = new Map<string, QObject>([['execute', execute]]);
  const { outcome } = await agent.execute(request);
  return outcome ? ('return' in outcome.reply ? outcome.reply.return : outcome.reply.error) : undefined;
}

describe('starting over a frozen-state marker', () => {
  test('comes up frozen: only freeze-safe commands, log held, pidfile work deferred, until a thaw', async () => {
    writeFileSync(join(statedir, MARKER_NAME), '');
    const logfile = join(statedir, 'agent.log');
    const cfg = config(['-l', logfile, '-v']);
    const agent = await Agent.create(cfg, new AgentLog(cfg.verbose, cfg.logfile));
    try {
      assert.equal(agent.context.isFrozen(), true);
      let deferred = 0;
      agent.whenThawed(() => deferred++);
      assert.equal(await call(agent, 'guest-fsfreeze-status'), 'frozen');
      assert.deepEqual(await call(agent, 'guest-get-fsinfo'), {
        class: 'CommandNotFound',
        desc: 'Command guest-get-fsinfo has been disabled: the agent is in frozen state',
      });
      assert.equal(existsSync(logfile), false, 'the logfile is not even created while frozen');
      assert.equal(deferred, 0);
      assert.equal(await call(agent, 'guest-fsfreeze-thaw'), 0);
      assert.equal(deferred, 1, 'deferred work ran at the thaw');
      assert.equal(existsSync(join(statedir, MARKER_NAME)), true, 'kept until the reply is out');
      // The marker goes AFTER_REPLY_DELAY_MS after the reply.
      await sleep(AFTER_REPLY_DELAY_MS + 20);
      assert.equal(existsSync(join(statedir, MARKER_NAME)), false);
      assert.equal(await call(agent, 'guest-fsfreeze-status'), 'thawed');
      assert.ok(Array.isArray(await call(agent, 'guest-get-fsinfo')));
      agent.logger.close();
      assert.match(
        (await import('node:fs')).readFileSync(logfile, 'utf8'),
        /previous session indicates guest may have been frozen[\s\S]*running command guest-fsfreeze-status/,
      );
    } finally {
      await agent.close();
    }
  });

  test('without a marker it comes up thawed and runs deferred work at once', async () => {
    const agent = await Agent.create(config(), new AgentLog(false, undefined));
    try {
      assert.equal(agent.context.isFrozen(), false);
      let ran = 0;
      agent.whenThawed(() => ran++);
      assert.equal(ran, 1);
    } finally {
      await agent.close();
    }
  });

  test('-b applied while starting frozen: a blocked command answers without the frozen reason, like qemu-ga', async () => {
    writeFileSync(join(statedir, MARKER_NAME), '');
    const agent = await Agent.create(config(['-b', 'guest-get-fsinfo']), new AgentLog(false, undefined));
    try {
      assert.deepEqual(await call(agent, 'guest-get-fsinfo'), {
        class: 'CommandNotFound',
        desc: 'Command guest-get-fsinfo has been disabled',
      });
      assert.deepEqual(await call(agent, 'guest-fsfreeze-freeze'), {
        class: 'CommandNotFound',
        desc: 'Command guest-fsfreeze-freeze has been disabled: the agent is in frozen state',
      });
    } finally {
      await agent.close();
    }
  });
});
