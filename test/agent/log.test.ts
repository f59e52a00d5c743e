import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentLog, FROZEN_BUFFER_LINES } from '../../agent/src/log.js';

describe('AgentLog', () => {
  const dir = mkdtempSync(join(tmpdir(), 'quiesce-log-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  const newLog = (verbose = false): { log: AgentLog; lines: () => string[] } => {
    const file = join(dir, `agent-${n++}.log`);
    const log = new AgentLog(verbose, file);
    return { log, lines: () => readFileSync(file, 'utf8').split('\n').filter(Boolean) };
  };
  const seconds = (line: string): number => Number(line.split(':')[0]);

  test('writes `seconds.micros: level: text` lines, debug ones only when verbose', () => {
    const { log, lines } = newLog();
    const before = Date.now() / 1000;
    log.log({ kind: 'info', message: 'one' });
    log.log({ kind: 'request', command: 'guest-ping' });
    log.log({ kind: 'write-failed', reason: 'EPIPE' });
    log.close();
    const out = lines();
    assert.deepEqual(
      out.map((l) => l.replace(/^\d+\.\d{6}: /, '')),
      ['info: one', 'warning: error sending response: EPIPE'],
    );
    assert.ok(Math.abs(seconds(out[0]!) - before) < 1, out[0]);

    const verbose = newLog(true);
    verbose.log.log({ kind: 'request', command: 'guest-ping' });
    verbose.log.close();
    assert.match(verbose.lines()[0]!, /^\d+\.\d{6}: debug: running command guest-ping$/);
  });

  test('while held writes nothing; the release writes the held lines in order, stamped when logged', async () => {
    const { log, lines } = newLog();
    log.log({ kind: 'info', message: 'before' });
    log.hold();
    const logged = Date.now() / 1000;
    log.log({ kind: 'info', message: 'frozen 1' });
    log.log({ kind: 'warning', message: 'frozen 2' });
    assert.deepEqual(lines().length, 1);
    await sleep(1200);
    const released = Date.now() / 1000;
    log.release();
    log.log({ kind: 'info', message: 'after' });
    log.close();
    const out = lines();
    assert.deepEqual(
      out.map((l) => l.replace(/^\d+\.\d{6}: /, '')),
      ['info: before', 'info: frozen 1', 'warning: frozen 2', 'info: after'],
    );
    // The stamp is the time of the log call, not of the release a second later.
    assert.ok(Math.abs(seconds(out[1]!) - logged) < 0.5, `${out[1]} vs ${logged}`);
    assert.ok(released - seconds(out[2]!) > 1, `${out[2]} vs ${released}`);
  });

  test(`keeps the newest ${FROZEN_BUFFER_LINES} lines while held and says how many were dropped`, () => {
    const { log, lines } = newLog();
    log.hold();
    for (let i = 0; i < FROZEN_BUFFER_LINES + 5; i++) log.log({ kind: 'info', message: `line ${i}` });
    log.release();
    log.close();
    const out = lines();
    assert.equal(out.length, FROZEN_BUFFER_LINES + 1);
    assert.equal(out[0], `${FROZEN_BUFFER_LINES} log lines kept, 5 older ones dropped while frozen`);
    assert.match(out[1]!, /: info: line 5$/);
    assert.match(out.at(-1)!, new RegExp(`: info: line ${FROZEN_BUFFER_LINES + 4}$`));
  });
});
