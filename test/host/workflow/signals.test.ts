// SignalGuard: what a SIGINT/SIGTERM/SIGHUP does to the controllers of running steps, and the exit
// code it leaves. Triggered by hand, and once through a real signal to this process.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { QuiesceError } from '../../../src/errors.js';
import { captureLogger } from '../../../src/log/logger.js';
import { SignalGuard, type HandledSignal } from '../../../src/workflow/signals.js';

const SIGNALS = [
  ['SIGINT', 130],
  ['SIGTERM', 143],
  ['SIGHUP', 129],
] as const;

function guard() {
  const log = captureLogger();
  return { signals: new SignalGuard(log), events: log.events };
}

function assertInterrupted(c: AbortController, sig: HandledSignal): void {
  assert.equal(c.signal.aborted, true);
  const reason: unknown = c.signal.reason;
  assert.ok(reason instanceof QuiesceError, `a QuiesceError, not ${String(reason)}`);
  assert.equal(reason.code, 'INTERRUPTED');
  assert.equal(reason.message, `received ${sig}`);
}

describe('SignalGuard', () => {
  for (const [sig, code] of SIGNALS) {
    test(`${sig} aborts every registered controller with INTERRUPTED and leaves exit code ${code}`, () => {
      const { signals } = guard();
      const a = new AbortController();
      const b = new AbortController();
      signals.register(a);
      signals.register(b);
      assert.equal(signals.exitCode(), undefined);
      signals.trigger(sig);
      assertInterrupted(a, sig);
      assertInterrupted(b, sig);
      assert.equal(signals.received, sig);
      assert.equal(signals.exitCode(), code);
    });
  }

  test('no signal: nothing aborted, no exit code of its own', () => {
    const { signals } = guard();
    const c = new AbortController();
    signals.register(c);
    assert.equal(c.signal.aborted, false);
    assert.equal(signals.received, undefined);
    assert.equal(signals.exitCode(), undefined);
  });

  test('an unregistered controller is not aborted by a later signal', () => {
    const { signals } = guard();
    const kept = new AbortController();
    const gone = new AbortController();
    signals.register(kept);
    signals.register(gone);
    signals.unregister(gone);
    signals.trigger('SIGTERM');
    assert.equal(kept.signal.aborted, true);
    assert.equal(gone.signal.aborted, false);
  });

  test('unregistering a controller that was never registered is harmless', () => {
    const { signals } = guard();
    signals.unregister(new AbortController());
    signals.trigger('SIGINT');
    assert.equal(signals.received, 'SIGINT');
  });

  for (const [sig] of SIGNALS) {
    test(`a ${sig} received earlier aborts a controller registered later, at once`, () => {
      const { signals } = guard();
      signals.trigger(sig);
      const late = new AbortController();
      signals.register(late);
      assertInterrupted(late, sig);
    });
  }

  test('the first signal decides the exit code; a second still aborts what registered since', () => {
    const { signals } = guard();
    const first = new AbortController();
    signals.register(first);
    signals.trigger('SIGINT');
    const between = new AbortController();
    signals.register(between);
    signals.trigger('SIGTERM');
    assert.equal(signals.received, 'SIGINT');
    assert.equal(signals.exitCode(), 130);
    assertInterrupted(first, 'SIGINT');
    assertInterrupted(between, 'SIGINT');
  });

  test('every signal is logged, saying the guard stops steps and thaws before exiting', () => {
    const { signals, events } = guard();
    signals.trigger('SIGHUP');
    signals.trigger('SIGINT');
    const logged = events.filter((e) => e.kind === 'signal');
    assert.deepEqual(
      logged.map((e) => e.kind === 'signal' && e.signal),
      ['SIGHUP', 'SIGINT'],
    );
    assert.match(logged[0]!.kind === 'signal' ? logged[0]!.action : '', /thawing what is frozen, then exiting/);
  });

  test('installed, a real signal to this process is caught (the process lives) and aborts; uninstalled, the handlers are gone', async () => {
    const { signals } = guard();
    const before = Object.fromEntries(SIGNALS.map(([s]) => [s, process.listenerCount(s)]));
    signals.install();
    try {
      for (const [s] of SIGNALS) assert.equal(process.listenerCount(s), before[s]! + 1, s);
      const c = new AbortController();
      signals.register(c);
      const aborted = once(c.signal, 'abort');
      process.kill(process.pid, 'SIGHUP');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        aborted,
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no abort within 2 s')), 2000))),
      ]).finally(() => clearTimeout(timer));
      assertInterrupted(c, 'SIGHUP');
      assert.equal(signals.exitCode(), 129);
    } finally {
      signals.uninstall();
    }
    for (const [s] of SIGNALS) assert.equal(process.listenerCount(s), before[s], `${s} handler removed`);
  });
});
